//! Configuration: the TOML file layer and the resolved `Config`.
//!
//! Priority, lowest first: built-in defaults, the TOML file, `LARDER_*` environment variables,
//! flags. clap already folds the environment under the flags (`cli::Settings`), so resolving is
//! one pure function, `Config::merge(file, settings)`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;

use crate::cli::Settings;

pub mod publishing;

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
    /// The audience OIDC tokens must name for trusted publishing (default `larder`).
    pub oidc_audience: Option<String>,
    /// `[[trusted_publishers]]`: CI identities that may exchange OIDC tokens for upload tokens.
    #[serde(default)]
    pub trusted_publishers: Vec<crate::policy::publishers::PublisherConfig>,
    pub max_archive_members: Option<u64>,
    pub max_archive_unpacked: Option<String>,
    pub max_page_size: Option<String>,
    pub max_page_files: Option<usize>,
    pub max_file_size: Option<String>,
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
    pub max_store_size: Option<String>,
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
    pub local_cache_size: Option<String>,
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

/// A resolved token: the sha256 of its secret, compared in constant time.
#[derive(Clone)]
pub struct Token {
    pub name: String,
    pub secret_sha256: [u8; 32],
    pub read: bool,
    pub write: bool,
    /// `None`: every project.
    pub projects: Option<BTreeSet<String>>,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even its digest.
        f.debug_struct("Token").field("name", &self.name).field("read", &self.read).field("write", &self.write).finish()
    }
}

/// Resolved settings, ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// The upstream simple-API root, never with userinfo: credentials are in
    /// `upstream_credentials`, so that no log line or error body can show them (issue 9).
    pub upstream: Option<url::Url>,
    pub upstream_credentials: Option<crate::upstream::Credentials>,
    pub max_upstream_connections: usize,
    /// Large upstream downloads one client may have started at once (issue 22); 0: no limit.
    pub max_downloads_per_client: usize,
    pub max_page_bytes: u64,
    /// Most files one upstream page may list (issue 22: a hostile page's memory).
    pub max_page_files: usize,
    pub max_file_bytes: u64,
    /// Never contact the upstream (air gap): cached pages are served however old.
    pub offline: bool,
    /// Serve HTTPS with this PEM certificate chain and key.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub data_dir: PathBuf,
    pub index_ttl: Duration,
    pub stale_if_error: Duration,
    pub not_found_ttl: Duration,
    pub upstream_timeout: Duration,
    pub page_cache_bytes: u64,
    pub file_cache_bytes: u64,
    /// Evict least-recently-used upstream files above this size; `None`: no limit.
    pub max_store_bytes: Option<u64>,
    pub default_project: String,
    pub max_upload_bytes: u64,
    /// Timeouts and the connection cap of the server.
    pub connection_limits: ConnectionLimits,
    /// How a stop goes (SIGTERM): readiness first, then the open requests (issue 27).
    pub stopping: Stopping,
    /// `/metrics` needs this token (Bearer or Basic password) when set.
    pub metrics_token: Option<String>,
    /// Where the audit log goes (issue 23); `None`: only to the bucket (S3) and memory.
    pub audit_log: Option<publishing::Destination>,
    /// Where uploads, yanks and deletes are announced (issue 23).
    pub webhooks: Vec<publishing::Webhook>,
    /// How often projects' retention policies are applied in the background.
    pub retention_interval: Duration,
    /// Trusted publishing (issue 23): the audience tokens must name, and who may publish.
    pub oidc_audience: String,
    pub trusted_publishers: Vec<crate::policy::publishers::Publisher>,
    /// Bounds on reading uploaded and upstream archives.
    pub archive_limits: crate::archive::ArchiveLimits,
    /// Fetch the METADATA of new upstream wheels with range requests in the background.
    pub metadata_prefetch: bool,
    /// Requirements' pages fetched ahead of the clients (issue 21).
    pub fetch_ahead: bool,
    pub metadata_prefetch_versions: usize,
    /// Names that may be uploaded although they exist upstream (DC-4).
    pub allow_shadowing: BTreeSet<crate::index::ProjectName>,
    pub tokens: Vec<Token>,
    pub projects: BTreeMap<String, ProjectConfig>,
    pub groups: BTreeMap<String, GroupConfig>,
    /// The `[[upstreams]]` entries, in matching order (the default upstream is `upstream`).
    pub upstream_routes: Vec<crate::upstream::RouteConfig>,
    /// Cooldowns, per-project upstreams and statuses (issue 14).
    pub rules: Arc<crate::policy::Rules>,
    /// The block list as configured (checked here; the engine keeps the live one).
    pub block: Vec<crate::policy::BlockConfig>,
    /// What imported advisories do beyond blocking malicious packages (issue 25); reloaded
    /// on SIGHUP like the block list.
    pub advisories: crate::advisories::Policy,
    /// The config file read, if any: SIGHUP reads its block list again.
    pub config_file: Option<PathBuf>,
    /// The shared S3 store, when `store = "s3://…"` (issue 13).
    pub s3: Option<S3Settings>,
    /// With an S3 store: the local cache's size limit.
    pub local_cache_bytes: u64,
    /// Where clients reach this server (scheme, host and any path prefix, no trailing slash).
    pub public_url: Option<String>,
    /// With a shared store: how stale this replica's view of other replicas' private records
    /// may be for pages and listings (zero: checked on every request) …
    pub replica_lag: Duration,
    /// … and for file requests it can answer from what it knows (never less than replica_lag);
    pub replica_file_lag: Duration,
    /// … and how long a check that found a name unclaimed everywhere stands (negative caching).
    pub replica_absent_lag: Duration,
}

/// `spool_dir` of a data dir (for code that has the directory, not the config).
pub fn spool_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("spool")
}

/// A name no replica had claimed a second ago is taken as still unclaimed: random or repeated
/// names then cost at most one bucket read a second each (issue 22).
const DEFAULT_REPLICA_ABSENT_LAG: Duration = Duration::from_secs(1);

const DEFAULT_CONFIG_PATH: &str = "config/larder.toml";

impl Config {
    /// Where uploads, downloads and imports are written before they are whole (one directory,
    /// cleared at start-up, on the data dir's file system so a finished file is renamed).
    pub fn spool_dir(&self) -> PathBuf {
        spool_dir(&self.data_dir)
    }

    /// Reads the config file (the one named, or `config/larder.toml` when present) and merges.
    pub fn load(settings: &Settings) -> anyhow::Result<Config> {
        let path = match &settings.config {
            Some(path) => Some(path.clone()),
            None if Path::new(DEFAULT_CONFIG_PATH).is_file() => Some(PathBuf::from(DEFAULT_CONFIG_PATH)),
            None => None,
        };
        let file = match &path {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let env_token = std::env::var("LARDER_TOKEN").ok().filter(|t| !t.is_empty());
        let mut config = Config::merge(file, settings, env_token)?;
        config.config_file = path;
        Ok(config)
    }

    /// The block list of the config file as it is now (SIGHUP): the only setting that
    /// changes without a restart.
    pub fn reload_block_list(&self) -> anyhow::Result<crate::policy::BlockList> {
        let file = match &self.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        crate::policy::BlockList::parse(&file.block).map_err(|e| anyhow::anyhow!(e))
    }

    /// `[advisories]` read again from the config file (SIGHUP), e.g. a new break-glass entry.
    pub fn reload_advisories_policy(&self) -> anyhow::Result<crate::advisories::Policy> {
        let file = match &self.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        crate::advisories::Policy::from_config(&file.advisories).map_err(anyhow::Error::msg)
    }

    /// Flags and environment (`settings`) over the file over defaults. `env_token` is
    /// `LARDER_TOKEN`: one read+write token for every project (the CI sidecar's).
    pub fn merge(file: FileConfig, s: &Settings, env_token: Option<String>) -> anyhow::Result<Config> {
        let mut tokens = Vec::new();
        for t in &file.tokens {
            let secret = match (&t.secret, &t.secret_env) {
                (Some(secret), None) => secret.clone(),
                (None, Some(var)) => std::env::var(var)
                    .map_err(|_| anyhow::anyhow!("token `{}`: environment variable `{var}` is not set", t.name))?,
                _ => anyhow::bail!("token `{}`: set exactly one of `secret` and `secret_env`", t.name),
            };
            anyhow::ensure!(secret.len() >= 8, "token `{}`: the secret is shorter than 8 characters", t.name);
            let projects = (!t.projects.iter().any(|p| p == "*")).then(|| t.projects.iter().cloned().collect());
            tokens.push(Token {
                name: t.name.clone(),
                secret_sha256: crate::digest::secret_digest(&secret),
                read: t.scopes.contains(&TokenScope::Read) || t.scopes.contains(&TokenScope::Write),
                write: t.scopes.contains(&TokenScope::Write),
                projects,
            });
        }
        if let Some(secret) = env_token {
            tokens.push(Token {
                name: "LARDER_TOKEN".into(),
                secret_sha256: crate::digest::secret_digest(&secret),
                read: true,
                write: true,
                projects: None,
            });
        }
        for (id, project) in &file.projects {
            if let Some(r) = &project.retention {
                r.check().map_err(|e| anyhow::anyhow!("[projects.{id}]: {e}"))?;
            }
        }
        let mut allow_shadowing = BTreeSet::new();
        for raw in s.allow_shadowing.clone().or(file.allow_shadowing.clone()).unwrap_or_default() {
            let name =
                crate::index::ProjectName::parse(raw.trim()).map_err(|e| anyhow::anyhow!("allow_shadowing: {e}"))?;
            allow_shadowing.insert(name);
        }
        let default_project =
            s.default_project.clone().or(file.default_project.clone()).unwrap_or_else(|| "default".into());
        anyhow::ensure!(
            crate::scope::is_valid_id(&default_project),
            "invalid default_project `{default_project}`; use letters, digits, '.', '_', '-' or '%'"
        );
        let (upstream, upstream_credentials) = split_credentials(
            s.upstream.clone().or(file.upstream.clone()),
            s.upstream_username.clone().or(file.upstream_username.clone()),
            s.upstream_password.clone().or(file.upstream_password.clone()),
        )?;
        let upstream_timeout = s.upstream_timeout.or(file.upstream_timeout).unwrap_or(Duration::from_secs(30));
        let max_upstream_connections = s.max_upstream_connections.or(file.max_upstream_connections).unwrap_or(32);
        let size = |name: &str, flag: &Option<String>, file: Option<String>, default: &str| -> anyhow::Result<u64> {
            let raw = flag.clone().or(file).unwrap_or_else(|| default.to_string());
            parse_size(&raw).map_err(|e| anyhow::anyhow!("{name}: {e}"))
        };
        let max_page_bytes = size("max_page_size", &s.max_page_size, file.max_page_size.clone(), "64MiB")?;
        let max_file_bytes = size("max_file_size", &s.max_file_size, file.max_file_size.clone(), "20GiB")?;
        let max_page_files = s.max_page_files.or(file.max_page_files).unwrap_or(100_000);
        let mut upstream_routes = Vec::new();
        for u in &file.upstreams {
            let at = |what: String| anyhow::anyhow!("[[upstreams]] `{}`: {what}", u.name);
            anyhow::ensure!(
                crate::scope::is_valid_id(&u.name) && u.name != crate::upstream::routes::DEFAULT,
                "[[upstreams]]: invalid name `{}`; use letters, digits, '.', '_', '-' (and not `default`, the name of `upstream`)",
                u.name
            );
            anyhow::ensure!(
                !upstream_routes.iter().any(|r: &crate::upstream::RouteConfig| r.name == u.name),
                "[[upstreams]]: the name `{}` is used twice",
                u.name
            );
            anyhow::ensure!(
                !u.projects.is_empty(),
                "[[upstreams]] `{}`: list the project names it serves in `projects`",
                u.name
            );
            let password = match (&u.password, &u.password_env) {
                (p, None) => p.clone(),
                (None, Some(var)) => {
                    Some(std::env::var(var).map_err(|_| at(format!("environment variable `{var}` is not set")))?)
                }
                (Some(_), Some(_)) => return Err(at("set at most one of `password` and `password_env`".into())),
            };
            let (base, credentials) = split_credentials(Some(u.url.clone()), u.username.clone(), password)?;
            let projects = u
                .projects
                .iter()
                .map(|p| crate::index::NamePattern::parse(p).map_err(at))
                .collect::<anyhow::Result<Vec<_>>>()?;
            upstream_routes.push(crate::upstream::RouteConfig {
                name: u.name.clone(),
                projects,
                settings: crate::upstream::UpstreamSettings {
                    base: base.expect("given"),
                    credentials,
                    timeout: upstream_timeout,
                    max_connections: max_upstream_connections,
                    max_page_bytes,
                    max_page_files,
                    max_file_bytes,
                },
            });
        }
        crate::policy::BlockList::parse(&file.block).map_err(|e| anyhow::anyhow!(e))?;
        let rules = resolve_rules(&file, s)?;
        let s3 = match s.store.clone().or(file.store.clone()).filter(|u| !u.is_empty() && u != "local") {
            None => None,
            Some(url) => {
                let (bucket, prefix) =
                    S3Settings::parse_url(&url).map_err(|e| anyhow::anyhow!("store: {e}; write s3://bucket/prefix"))?;
                Some(S3Settings {
                    bucket,
                    prefix,
                    endpoint: s.s3_endpoint.clone().or(file.s3_endpoint.clone()),
                    region: s.s3_region.clone().or(file.s3_region.clone()),
                    virtual_hosted: file.s3_virtual_hosted.unwrap_or(false),
                })
            }
        };
        let local_cache_bytes = size("local_cache_size", &s.local_cache_size, file.local_cache_size.clone(), "10GiB")?;
        anyhow::ensure!(
            s3.is_none() || (s.max_store_size.is_none() && file.max_store_size.is_none()),
            "max_store_size limits a local store; with an S3 store the bucket's size is yours to manage (lifecycle rules), and local_cache_size limits the local cache"
        );
        Ok(Config {
            listen: s.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:3141".parse().unwrap()),
            upstream,
            upstream_credentials,
            max_upstream_connections,
            max_downloads_per_client: s.max_downloads_per_client.or(file.max_downloads_per_client).unwrap_or(8),
            max_page_bytes,
            max_page_files,
            max_file_bytes,
            offline: s.offline.or(file.offline).unwrap_or(false),
            tls: match (s.tls_cert.clone().or(file.tls_cert), s.tls_key.clone().or(file.tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => anyhow::bail!("TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)"),
            },
            data_dir: s.data_dir.clone().or(file.data_dir).unwrap_or_else(|| "larder-data".into()),
            index_ttl: s.index_ttl.or(file.index_ttl).unwrap_or(Duration::from_secs(600)),
            stale_if_error: s.stale_if_error.or(file.stale_if_error).unwrap_or(Duration::from_secs(7 * 86400)),
            not_found_ttl: s.not_found_ttl.or(file.not_found_ttl).unwrap_or(Duration::from_secs(60)),
            upstream_timeout,
            // Defaults that keep a busy server under ~200 MiB (the 1,000-client load: issue 10).
            page_cache_bytes: s.page_cache_mib.or(file.page_cache_mib).unwrap_or(32) * 1024 * 1024,
            file_cache_bytes: s.file_cache_mib.or(file.file_cache_mib).unwrap_or(16) * 1024 * 1024,
            max_store_bytes: match s.max_store_size.clone().or(file.max_store_size) {
                Some(size) => Some(parse_size(&size).map_err(|e| anyhow::anyhow!("max_store_size: {e}"))?),
                None => None,
            },
            default_project,
            max_upload_bytes: s.max_upload_mib.or(file.max_upload_mib).unwrap_or(4096) * 1024 * 1024,
            connection_limits: ConnectionLimits {
                header_timeout: s.header_timeout.or(file.header_timeout).unwrap_or(Duration::from_secs(15)),
                idle_timeout: s.idle_timeout.or(file.idle_timeout).unwrap_or(Duration::from_secs(60)),
                max_connections: s.max_connections.or(file.max_connections).unwrap_or(8192),
            },
            stopping: Stopping {
                drain_delay: s.drain_delay.or(file.drain_delay).unwrap_or(Duration::from_secs(5)),
                shutdown_timeout: s.shutdown_timeout.or(file.shutdown_timeout).unwrap_or(Duration::from_secs(30)),
            },
            metrics_token: s.metrics_token.clone().or(file.metrics_token).filter(|t| !t.is_empty()),
            webhooks: file
                .webhooks
                .iter()
                .map(publishing::Webhook::from_config)
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?,
            retention_interval: file
                .retention_interval
                .unwrap_or(Duration::from_secs(3600))
                .max(Duration::from_secs(1)),
            // Per deployment: a token minted for another Larder is not accepted here.
            oidc_audience: file.oidc_audience.clone().filter(|a| !a.trim().is_empty()).unwrap_or_else(|| {
                match s.public_url.clone().or(file.public_url.clone()).and_then(|u| u.host_str().map(str::to_string)) {
                    Some(host) => host,
                    None => "larder".into(),
                }
            }),
            trusted_publishers: file
                .trusted_publishers
                .iter()
                .map(crate::policy::publishers::Publisher::from_config)
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::msg)?,
            audit_log: s
                .audit_log
                .clone()
                .or(file.audit_log.clone())
                .filter(|p| !p.is_empty())
                .map(|p| publishing::Destination::parse(&p)),
            archive_limits: crate::archive::ArchiveLimits {
                max_members: s.max_archive_members.or(file.max_archive_members).unwrap_or(100_000),
                max_unpacked: size("max_archive_unpacked", &s.max_archive_unpacked, file.max_archive_unpacked, "4GiB")?,
            },
            metadata_prefetch: s.metadata_prefetch.or(file.metadata_prefetch).unwrap_or(true),
            fetch_ahead: s.fetch_ahead.or(file.fetch_ahead).unwrap_or(false),
            metadata_prefetch_versions: s.metadata_prefetch_versions.or(file.metadata_prefetch_versions).unwrap_or(3),
            allow_shadowing,
            tokens,
            projects: file.projects,
            groups: file.groups,
            upstream_routes,
            rules: Arc::new(rules),
            advisories: crate::advisories::Policy::from_config(&file.advisories).map_err(anyhow::Error::msg)?,
            block: file.block,
            config_file: None,
            s3,
            local_cache_bytes,
            replica_lag: s.replica_lag.or(file.replica_lag).unwrap_or(Duration::ZERO),
            replica_file_lag: s
                .replica_file_lag
                .or(file.replica_file_lag)
                .unwrap_or(Duration::ZERO)
                .max(s.replica_lag.or(file.replica_lag).unwrap_or(Duration::ZERO)),
            replica_absent_lag: s.replica_absent_lag.or(file.replica_absent_lag).unwrap_or(DEFAULT_REPLICA_ABSENT_LAG),
            public_url: match s.public_url.clone().or(file.public_url.clone()) {
                Some(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    Some(u.as_str().trim_end_matches('/').to_string())
                }
                Some(u) => anyhow::bail!("public_url `{u}` must be an http(s) URL with a host"),
                None => None,
            },
        })
    }
}

/// Resolves the cooldowns, per-project upstreams and statuses, checking every name.
fn resolve_rules(file: &FileConfig, s: &Settings) -> anyhow::Result<crate::policy::Rules> {
    use crate::policy::{Rules, ScopeRules};
    let patterns = |what: &str, list: &[String]| -> anyhow::Result<Vec<crate::index::NamePattern>> {
        list.iter().map(|p| crate::index::NamePattern::parse(p).map_err(|e| anyhow::anyhow!("{what}: {e}"))).collect()
    };
    let known = |name: &str| name == crate::upstream::routes::DEFAULT || file.upstreams.iter().any(|u| u.name == name);
    let mut rules = Rules {
        min_release_age: s.min_release_age.or(file.min_release_age),
        exempt: patterns("min_release_age_exempt", file.min_release_age_exempt.as_deref().unwrap_or_default())?,
        unknown_upload_time: file.min_release_age_unknown.unwrap_or_default(),
        unhashed_files: file.unhashed_files,
        upstream_ages: file.upstreams.iter().filter_map(|u| Some((u.name.clone(), u.min_release_age?))).collect(),
        ..Rules::default()
    };
    let mut next_id = 1;
    for (id, p) in &file.projects {
        let what = format!("[projects.{id}]");
        let upstreams = match &p.upstreams {
            None => None,
            Some(list) => {
                for u in list {
                    anyhow::ensure!(
                        known(u),
                        "{what} upstreams: no upstream is named `{u}` (names: default, or a [[upstreams]] name)"
                    );
                }
                Some(list.iter().cloned().collect())
            }
        };
        let status = p.status.map(|st| crate::index::ProjectStatus {
            status: st.marker(),
            reason: p.status_reason.clone().filter(|r| !r.trim().is_empty()),
        });
        let scope = ScopeRules {
            id: next_id,
            upstreams,
            min_release_age: p.min_release_age,
            exempt: patterns(&format!("{what} min_release_age_exempt"), &p.min_release_age_exempt)?,
            status,
            members: Vec::new(),
        };
        next_id += 1;
        rules.projects.insert(id.clone(), Arc::new(scope));
    }
    for (id, g) in &file.groups {
        let members: Vec<Arc<ScopeRules>> = g.projects.iter().map(|p| rules.for_project(p)).collect();
        rules.groups.insert(id.clone(), Arc::new(Rules::combine(next_id, &members)));
        next_id += 1;
    }
    Ok(rules)
}

/// Moves userinfo out of the upstream URL: credentials given apart win over those in the URL.
fn split_credentials(
    url: Option<url::Url>,
    username: Option<String>,
    password: Option<String>,
) -> anyhow::Result<(Option<url::Url>, Option<crate::upstream::Credentials>)> {
    let Some(mut url) = url else {
        anyhow::ensure!(username.is_none() && password.is_none(), "upstream credentials are set, but no upstream");
        return Ok((None, None));
    };
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let in_url = (!url.username().is_empty() || url.password().is_some())
        .then(|| (decode(url.username()), decode(url.password().unwrap_or_default())));
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let credentials = match (username, password, in_url) {
        (None, None, None) => None,
        (None, None, Some((username, password))) => Some(crate::upstream::Credentials { username, password }),
        (username, password, _) => Some(crate::upstream::Credentials {
            username: username.unwrap_or_default(),
            password: password.unwrap_or_default(),
        }),
    };
    Ok((Some(url), credentials))
}

impl Config {
    /// The default upstream (`upstream = …`) as a route, when one is configured.
    pub fn default_route(&self) -> Option<crate::upstream::RouteConfig> {
        Some(crate::upstream::RouteConfig {
            name: crate::upstream::routes::DEFAULT.to_string(),
            projects: Vec::new(),
            settings: self.upstream_settings()?,
        })
    }

    /// The default upstream client's settings, when an upstream is configured.
    pub fn upstream_settings(&self) -> Option<crate::upstream::UpstreamSettings> {
        Some(crate::upstream::UpstreamSettings {
            base: self.upstream.clone()?,
            credentials: self.upstream_credentials.clone(),
            timeout: self.upstream_timeout,
            max_connections: self.max_upstream_connections,
            max_page_bytes: self.max_page_bytes,
            max_page_files: self.max_page_files,
            max_file_bytes: self.max_file_bytes,
        })
    }
}

/// How long a client may take, and how many may be connected (issue 9: slow clients must not
/// hold the server).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// The whole request head (line and headers) must arrive within this; also bounds the TLS
    /// handshake.
    pub header_timeout: Duration,
    /// A connection with no request under way and no bytes moving for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub max_connections: usize,
}

/// A stop (SIGTERM, SIGINT) in two steps, so that a load balancer takes the replica out of
/// rotation before it stops accepting: nothing a client started is lost.
#[derive(Clone, Copy, Debug)]
pub struct Stopping {
    /// How long `/-/ready` answers 503 while everything is still served.
    pub drain_delay: Duration,
    /// Then, with no new connections: how long open requests (downloads included) and
    /// background work (page writes, fills) may take to finish.
    pub shutdown_timeout: Duration,
}

/// Parses a size such as `500MiB`, `2 GiB`, `100KB` or `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = (s[..split].trim(), s[split..].trim());
    let n: f64 = number.parse().map_err(|_| format!("invalid size `{s}`; write e.g. 500MiB or 20GB"))?;
    let factor: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000u64.pow(4),
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit in `{s}`; use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)")),
    };
    Ok((n * factor as f64) as u64)
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read config file `{}`", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file `{}`", path.display()))
}

/// Where the bucket is and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Settings {
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// `http(s)://host:port` of an S3-compatible server; unset: AWS itself (or `AWS_ENDPOINT`).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Virtual-hosted-style requests (`bucket.host`) instead of path style (`host/bucket`).
    pub virtual_hosted: bool,
}

impl S3Settings {
    /// Parses `s3://bucket/prefix`.
    pub fn parse_url(url: &str) -> Result<(String, String), String> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| format!("`{url}` is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !valid_bucket {
            return Err(format!("`{bucket}` is not a valid bucket name (3-63 lowercase letters, digits, '-', '.')"));
        }
        let prefix = prefix.trim_matches('/').to_string();
        if prefix.split('/').any(|p| p.is_empty() && !prefix.is_empty()) {
            return Err(format!("the prefix in `{url}` has an empty segment"));
        }
        Ok((bucket.to_string(), prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_env_override_file_override_defaults() {
        let file: FileConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\nupstream = \"http://127.0.0.1:1/simple/\"\nindex_ttl = \"5m\"\n",
        )
        .unwrap();
        let settings = Settings { listen: Some("127.0.0.1:9001".parse().unwrap()), ..Default::default() };
        let c = Config::merge(file, &settings, None).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.upstream.unwrap().as_str(), "http://127.0.0.1:1/simple/");
        assert_eq!(c.index_ttl, Duration::from_secs(300));
        assert_eq!(c.not_found_ttl, Duration::from_secs(60));
        assert_eq!(c.default_project, "default");
    }

    #[test]
    fn upstream_credentials_never_stay_in_the_url() {
        let url = |s: &str| Some(url::Url::parse(s).unwrap());
        let (u, c) = split_credentials(url("https://me:p%40ss@up.example/simple/"), None, None).unwrap();
        assert_eq!(u.unwrap().as_str(), "https://up.example/simple/");
        let c = c.unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("me", "p@ss"));
        assert!(!format!("{c:?}").contains("p@ss"));
        let (_, c) = split_credentials(url("https://me:old@up.example/simple/"), None, Some("new".into())).unwrap();
        assert_eq!(c.unwrap().password, "new", "settings win over the URL");
        assert!(split_credentials(None, None, Some("x".into())).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("500MiB").unwrap(), 500 << 20);
        assert_eq!(parse_size("2 GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    #[test]
    fn gateway_settings_resolve_and_bad_ones_say_why() {
        let base = r#"
upstream = "http://127.0.0.1:1/simple/"
min_release_age = "7d"
min_release_age_exempt = ["internal-*"]
[[upstreams]]
name = "vendor"
url = "http://me:pw@127.0.0.1:2/simple/"
projects = ["torch", "nvidia-*"]
min_release_age = "1d"
[[block]]
name = "evil"
reason = "typosquat"
[projects.ml]
upstreams = ["vendor"]
min_release_age = "0s"
[groups.all]
projects = ["ml", "other"]
"#;
        let merge = |text: &str| Config::merge(toml::from_str(text).unwrap(), &Settings::default(), None);
        let c = merge(base).unwrap();
        assert_eq!(c.upstream_routes.len(), 1);
        let vendor = &c.upstream_routes[0];
        assert_eq!(vendor.settings.base.as_str(), "http://127.0.0.1:2/simple/", "credentials moved out");
        assert!(vendor.settings.credentials.is_some());
        assert_eq!(c.rules.min_release_age, Some(Duration::from_secs(7 * 86400)));
        assert_eq!(c.rules.upstream_ages["vendor"], Duration::from_secs(86400));
        let ml = c.rules.for_project("ml");
        assert!(ml.uses("vendor") && !ml.uses("default"));
        assert!(c.rules.for_project("other").uses("default"), "no settings: every upstream");
        assert!(!c.rules.for_group("all").uses("default"), "a group: the strictest of its projects");
        assert_ne!(ml.id, c.rules.for_group("all").id);
        assert_eq!(c.block.len(), 1);

        for (change, why) in [
            (("name = \"vendor\"", "name = \"default\""), "invalid name `default`"),
            (("projects = [\"torch\", \"nvidia-*\"]", "projects = []"), "list the project names"),
            (("projects = [\"torch\", \"nvidia-*\"]", "projects = [\"a/b\"]"), "invalid project name pattern"),
            (("upstreams = [\"vendor\"]", "upstreams = [\"vendr\"]"), "no upstream is named `vendr`"),
            (("reason = \"typosquat\"", "reason = \"\""), "[[block]] entry 1"),
        ] {
            let text = base.replace(change.0, change.1);
            let err = format!("{:#}", merge(&text).err().unwrap_or_else(|| panic!("accepted: {text}")));
            assert!(err.contains(why), "{err}");
        }
        let twice =
            format!("{base}[[upstreams]]\nname = \"vendor\"\nurl = \"http://127.0.0.1:3/\"\nprojects = [\"x\"]\n");
        assert!(format!("{:#}", merge(&twice).err().unwrap()).contains("used twice"));
    }

    #[test]
    fn shipped_example_parses() {
        let text = include_str!("../../config/larder.toml");
        toml::from_str::<FileConfig>(text).expect("config/larder.toml must stay valid");
    }
}
