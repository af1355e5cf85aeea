//! The config file as written (TOML): every key optional, unknown keys refused. Resolved
//! into `Config` by `Config::merge`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::ConfigError;
use serde::Deserialize;

use super::{ByteSize, publishing};

/// The config file as written: every key optional, unknown keys rejected.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub upstream: Option<url::Url>,
    pub upstream_username: Option<String>,
    pub upstream_password: Option<String>,
    pub max_upstream_connections: Option<usize>,
    pub max_downloads_per_client: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub header_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub drain_delay: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub shutdown_timeout: Option<Duration>,
    pub max_connections: Option<usize>,
    pub metrics_token: Option<String>,
    pub audit_log: Option<String>,
    /// `[[webhooks]]`: JSON POSTs, signed, for uploads, yanks and deletes.
    #[serde(default)]
    pub webhooks: Vec<publishing::WebhookConfig>,
    /// How often the retention job runs (default 1h).
    #[serde(default, with = "humantime_serde")]
    pub retention_interval: Option<Duration>,
    /// The audience OIDC tokens must name for trusted publishing (default: `public_url`'s host,
    /// else `larder`).
    pub oidc_audience: Option<String>,
    /// `[[trusted_publishers]]`: CI identities that may exchange OIDC tokens for upload tokens.
    #[serde(default)]
    pub trusted_publishers: Vec<crate::policy::publishers::PublisherConfig>,
    pub max_archive_members: Option<u64>,
    pub max_archive_unpacked: Option<ByteSize>,
    pub max_page_size: Option<ByteSize>,
    pub max_page_files: Option<usize>,
    pub max_file_size: Option<ByteSize>,
    pub offline: Option<bool>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub index_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub stale_if_error: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub not_found_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub upstream_timeout: Option<Duration>,
    pub page_cache_mib: Option<u64>,
    pub file_cache_mib: Option<u64>,
    pub max_store_size: Option<ByteSize>,
    pub default_project: Option<String>,
    pub max_upload_mib: Option<u64>,
    pub allow_shadowing: Option<Vec<String>>,
    pub metadata_prefetch: Option<bool>,
    pub fetch_ahead: Option<bool>,
    pub metadata_prefetch_versions: Option<usize>,
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    #[serde(default)]
    pub projects: BTreeMap<String, ProjectConfig>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupConfig>,
    /// More upstreams, each owning the names its `projects` patterns match (issue 14).
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default, with = "humantime_serde")]
    pub min_release_age: Option<Duration>,
    pub min_release_age_exempt: Option<Vec<String>>,
    pub min_release_age_unknown: Option<crate::policy::UnknownUploadTime>,
    /// Files listed without a sha256: "allow" or "refuse" (unset: refuse while sha256 block
    /// rules exist).
    pub unhashed_files: Option<crate::policy::UnhashedFiles>,
    /// Block list entries; reloaded on SIGHUP.
    #[serde(default)]
    pub block: Vec<crate::policy::BlockConfig>,
    /// `[advisories]`: which imported advisories block, and break-glass entries (issue 25).
    #[serde(default)]
    pub advisories: crate::advisories::PolicyConfig,
    /// `s3://bucket/prefix` for a shared S3 store (issue 13); unset: the local data dir.
    pub store: Option<String>,
    pub public_url: Option<url::Url>,
    pub s3_endpoint: Option<String>,
    pub s3_region: Option<String>,
    /// Virtual-hosted-style bucket addressing (`bucket.host`); default path style.
    pub s3_virtual_hosted: Option<bool>,
    pub local_cache_size: Option<ByteSize>,
    #[serde(default, with = "humantime_serde")]
    pub replica_lag: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub replica_file_lag: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub replica_absent_lag: Option<Duration>,
}

/// `[[upstreams]]`: another index, owning the project names its patterns match.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Used in `[projects.<id>] upstreams`, metrics and logs.
    pub name: String,
    /// Its simple-API base URL.
    pub url: url::Url,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The environment variable holding the password (keeps it out of the file).
    pub password_env: Option<String>,
    /// Project names, or patterns with `*`, served from this upstream alone.
    pub projects: Vec<String>,
    /// The cooldown for names from this upstream, unless a project sets its own.
    #[serde(default, with = "humantime_serde")]
    pub min_release_age: Option<Duration>,
}

/// `[[tokens]]`: an access token, sent as the password of HTTP Basic auth (any username).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// The secret itself, or …
    pub secret: Option<String>,
    /// … the environment variable that holds it.
    pub secret_env: Option<String>,
    /// `read`, `write`.
    pub scopes: Vec<TokenScope>,
    /// Project ids, or `*` for all.
    #[serde(default = "all_projects")]
    pub projects: Vec<String>,
}

fn all_projects() -> Vec<String> {
    vec!["*".into()]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    Read,
    Write,
}

/// `[projects.<id>]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Reads need a token with the `read` scope.
    #[serde(default)]
    pub private: bool,
    /// The upstreams this project is served from (`default` is `upstream = …`); `[]`: none,
    /// a purely private project. Default: all. A name whose owner is not listed is not
    /// found here; it is never fetched from another upstream instead.
    pub upstreams: Option<Vec<String>>,
    /// This project's cooldown, over the upstream's and the global one; "0s" turns it off.
    #[serde(default, with = "humantime_serde")]
    pub min_release_age: Option<Duration>,
    /// Names never held back in this project.
    #[serde(default)]
    pub min_release_age_exempt: Vec<String>,
    /// PEP 792 status of this project's private packages: `archived` (uploads refused) or
    /// `deprecated`.
    pub status: Option<PrivateStatus>,
    pub status_reason: Option<String>,
    /// Which private files a background job (and `larder retention`) deletes (issue 23).
    pub retention: Option<crate::policy::retention::Retention>,
}

/// The statuses a private project can be given (PEP 792).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivateStatus {
    Active,
    Archived,
    Deprecated,
}

impl PrivateStatus {
    pub fn marker(self) -> crate::index::StatusMarker {
        match self {
            PrivateStatus::Active => crate::index::StatusMarker::Active,
            PrivateStatus::Archived => crate::index::StatusMarker::Archived,
            PrivateStatus::Deprecated => crate::index::StatusMarker::Deprecated,
        }
    }
}

/// `[groups.<id>]`: a read-only view over the private packages of some projects.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub projects: Vec<String>,
    /// Reads need a token; by default, when any member project is private.
    pub private: Option<bool>,
}

pub(super) fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::File { path: path.to_path_buf(), source: Box::new(e) })
}
