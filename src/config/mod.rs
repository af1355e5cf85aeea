//! Configuration: the TOML file layer and the resolved `Config`.
//!
//! Priority, lowest first: built-in defaults, the TOML file, `LARDER_*` environment variables,
//! flags. clap already folds the environment under the flags (`cli::Settings`), so resolving is
//! one function, `Config::merge(file, settings)`, one resolver per concern below it; it reads
//! the environment only where a setting names a variable (`secret_env`, `password_env`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::cli::Settings;

mod error;
mod file;
pub mod publishing;
mod resolve;

pub use error::ConfigError;
use error::ensure;

pub use crate::byte_size::ByteSize;
use file::read_file;
pub use file::{FileConfig, GroupConfig, PrivateStatus, ProjectConfig, TokenConfig, TokenScope, UpstreamConfig};
use resolve::{resolve_publishing, resolve_rules, resolve_store, resolve_tokens, resolve_upstreams};

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
    /// The default upstream (`upstream = …`), the one place it is held: its URL never with
    /// userinfo (credentials are apart, so that no log line or error body can show them,
    /// issue 9). Which upstream serves a name is the router's to say (`upstream::routes`).
    pub default_upstream: Option<crate::upstream::RouteConfig>,
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
    /// The block list as configured, parsed once (the engine keeps the live one: SIGHUP).
    pub block: crate::policy::BlockList,
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
    pub fn load(settings: &Settings) -> Result<Config, ConfigError> {
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
    pub fn reload_block_list(&self) -> Result<crate::policy::BlockList, ConfigError> {
        let file = match &self.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        crate::policy::BlockList::parse(&file.block).map_err(ConfigError::entry("block"))
    }

    /// `[advisories]` read again from the config file (SIGHUP), e.g. a new break-glass entry.
    pub fn reload_advisories_policy(&self) -> Result<crate::advisories::Policy, ConfigError> {
        let file = match &self.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        crate::advisories::Policy::from_config(&file.advisories).map_err(ConfigError::entry("advisories"))
    }

    /// Flags and environment (`settings`) over the file over defaults. `env_token` is
    /// `LARDER_TOKEN`: one read+write token for every project (the CI sidecar's).
    pub fn merge(file: FileConfig, s: &Settings, env_token: Option<String>) -> Result<Config, ConfigError> {
        let tokens = resolve_tokens(&file, env_token)?;
        for (id, project) in &file.projects {
            if let Some(r) = &project.retention {
                r.check().map_err(|e| ConfigError::invalid(format!("[projects.{id}]"), e))?;
            }
        }
        let mut allow_shadowing = BTreeSet::new();
        for raw in s.allow_shadowing.clone().or(file.allow_shadowing.clone()).unwrap_or_default() {
            let name =
                crate::index::ProjectName::parse(raw.trim()).map_err(|e| ConfigError::invalid("allow_shadowing", e))?;
            allow_shadowing.insert(name);
        }
        let default_project =
            s.default_project.clone().or(file.default_project.clone()).unwrap_or_else(|| "default".into());
        ensure(
            crate::scope::is_valid_id(&default_project),
            "default_project",
            format!("invalid id `{default_project}`; use letters, digits, '.', '_', '-' or '%'"),
        )?;
        let upstreams = resolve_upstreams(&file, s)?;
        let store = resolve_store(&file, s)?;
        let publishing = resolve_publishing(&file, s)?;
        let rules = Arc::new(resolve_rules(&file, s)?);
        let advisories =
            crate::advisories::Policy::from_config(&file.advisories).map_err(ConfigError::entry("advisories"))?;
        let block = crate::policy::BlockList::parse(&file.block).map_err(ConfigError::entry("block"))?;
        let replica_lag = s.replica_lag.or(file.replica_lag).unwrap_or(Duration::ZERO);
        Ok(Config {
            listen: s.listen.or(file.listen).unwrap_or_else(|| "127.0.0.1:3141".parse().unwrap()),
            default_upstream: upstreams.default,
            upstream_routes: upstreams.routes,
            max_upstream_connections: upstreams.max_connections,
            upstream_timeout: upstreams.timeout,
            max_page_bytes: upstreams.max_page_bytes,
            max_page_files: upstreams.max_page_files,
            max_file_bytes: upstreams.max_file_bytes,
            max_downloads_per_client: s.max_downloads_per_client.or(file.max_downloads_per_client).unwrap_or(8),
            offline: s.offline.or(file.offline).unwrap_or(false),
            tls: match (s.tls_cert.clone().or(file.tls_cert), s.tls_key.clone().or(file.tls_key)) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                _ => return Err(ConfigError::invalid("tls_cert, tls_key", "TLS needs both (--tls-cert, --tls-key)")),
            },
            data_dir: s.data_dir.clone().or(file.data_dir).unwrap_or_else(|| "larder-data".into()),
            index_ttl: s.index_ttl.or(file.index_ttl).unwrap_or(Duration::from_secs(600)),
            stale_if_error: s.stale_if_error.or(file.stale_if_error).unwrap_or(Duration::from_secs(7 * 86400)),
            not_found_ttl: s.not_found_ttl.or(file.not_found_ttl).unwrap_or(Duration::from_secs(60)),
            // Defaults that keep a busy server under ~200 MiB (the 1,000-client load: issue 10).
            page_cache_bytes: s.page_cache_mib.or(file.page_cache_mib).unwrap_or(16) * 1024 * 1024,
            file_cache_bytes: s.file_cache_mib.or(file.file_cache_mib).unwrap_or(8) * 1024 * 1024,
            s3: store.s3,
            max_store_bytes: store.max_store_bytes,
            local_cache_bytes: store.local_cache_bytes,
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
            metrics_token: s.metrics_token.clone().or(file.metrics_token.clone()).filter(|t| !t.is_empty()),
            webhooks: publishing.webhooks,
            retention_interval: publishing.retention_interval,
            oidc_audience: publishing.oidc_audience,
            trusted_publishers: publishing.trusted_publishers,
            audit_log: publishing.audit_log,
            archive_limits: crate::archive::ArchiveLimits {
                max_members: s.max_archive_members.or(file.max_archive_members).unwrap_or(100_000),
                max_unpacked: s.max_archive_unpacked.or(file.max_archive_unpacked).unwrap_or(ByteSize::gib(4)).0,
            },
            metadata_prefetch: s.metadata_prefetch.or(file.metadata_prefetch).unwrap_or(true),
            fetch_ahead: s.fetch_ahead.or(file.fetch_ahead).unwrap_or(false),
            metadata_prefetch_versions: s.metadata_prefetch_versions.or(file.metadata_prefetch_versions).unwrap_or(3),
            allow_shadowing,
            tokens,
            rules,
            advisories,
            block,
            config_file: None,
            replica_lag,
            replica_file_lag: s.replica_file_lag.or(file.replica_file_lag).unwrap_or(Duration::ZERO).max(replica_lag),
            replica_absent_lag: s.replica_absent_lag.or(file.replica_absent_lag).unwrap_or(DEFAULT_REPLICA_ABSENT_LAG),
            public_url: publishing.public_url,
            projects: file.projects,
            groups: file.groups,
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
    use super::resolve::split_credentials;
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
        assert_eq!(c.default_upstream.unwrap().settings.base.as_str(), "http://127.0.0.1:1/simple/");
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
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<FileConfig>("lisen = \"x\"").is_err());
    }

    /// Each kind of mistake is its own error, naming the file or the setting to fix.
    #[test]
    fn errors_say_which_setting_or_file_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.toml");
        let load = |path: &Path| Config::load(&Settings { config: Some(path.to_path_buf()), ..Default::default() });
        assert!(matches!(load(&missing), Err(ConfigError::Read { path, .. }) if path == missing));
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "lisen = 1\n").unwrap();
        let err = load(&bad).unwrap_err();
        assert!(matches!(&err, ConfigError::File { path, .. } if path == &bad));
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert!(chain.contains("bad.toml") && chain.contains("lisen"), "{chain}");

        let merge = |text: &str, s: &Settings| Config::merge(toml::from_str(text).unwrap(), s, None).unwrap_err();
        let tls = Settings { tls_cert: Some("c.pem".into()), ..Default::default() };
        assert!(matches!(merge("", &tls), ConfigError::Invalid { setting, .. } if setting == "tls_cert, tls_key"));
        let token = "[[tokens]]\nname = \"ci\"\nsecret_env = \"LARDER_TEST_UNSET_VARIABLE\"\nscopes = [\"read\"]\n";
        let err = merge(token, &Settings::default());
        assert!(matches!(&err, ConfigError::MissingVariable { var, .. } if var == "LARDER_TEST_UNSET_VARIABLE"));
        assert_eq!(err.to_string(), "token `ci`: environment variable `LARDER_TEST_UNSET_VARIABLE` is not set");
        let block = "[[block]]\nreason = \"no name\"\n";
        assert!(matches!(merge(block, &Settings::default()), ConfigError::Entry { section: "block", .. }));
        let err = merge("default_project = \"a/b\"\n", &Settings::default());
        assert!(matches!(&err, ConfigError::Invalid { setting, .. } if setting == "default_project"), "{err}");
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
