//! Command-line interface: the clap structs, nothing else. Every setting can also come from the
//! environment (`LARDER_*`) or the config file; `config::Config::load` merges them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "larder",
    version,
    about = "A caching pull-through proxy for the Python Package Index",
    long_about = "Larder answers the Python \"simple\" repository API (pip, uv, poetry, pdm) from a local \
content store, filling it from an upstream index on a miss. URLs follow GitLab's PyPI package \
registry layout; `/simple/` and `/files/` are short aliases for the default project.\n\n\
Settings are read, in rising priority, from built-in defaults, a TOML file (--config), \
LARDER_* environment variables, and flags. Access tokens are configured in the TOML file; \
LARDER_TOKEN (environment only) adds one read+write token for every project."
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "LARDER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the proxy server.
    Serve(ServeArgs),
    /// Fill the store from pinned requirements, lock files (pylock.toml, uv.lock) or
    /// name==version arguments: every file of each pinned version, with its metadata.
    Warm(WarmArgs),
    /// Write a bundle (tar, or tar.zst) of the whole store, or of what lock files and pins name,
    /// to carry across an air gap.
    Export(ExportArgs),
    /// Import a bundle: every hash is checked before anything becomes visible; safe to repeat.
    Import(ImportArgs),
    /// Re-hash every stored file and record; report (and with --remove, delete) corrupt ones.
    Verify(VerifyArgs),
    /// Security advisories from OSV: `larder advisories import all.zip` (OSV's PyPI export,
    /// a directory of OSV JSON records, or one record). MAL- (malicious package) advisories
    /// block the files they name; all are served through OSV's API under /-/osv/.
    #[command(subcommand)]
    Advisories(AdvisoriesCommand),
    /// Yank a private file (PEP 592) on a running Larder. Token from LARDER_TOKEN.
    Yank(ManageArgs),
    /// Undo a yank on a running Larder. Token from LARDER_TOKEN.
    Unyank(ManageArgs),
    /// Delete a private file on a running Larder; its name stays private. Token from LARDER_TOKEN.
    Delete(ManageArgs),
    /// Apply a project's retention policy now on a running Larder (`--dry-run`: print what it
    /// would delete). Token from LARDER_TOKEN (write access to the project).
    Retention(RetentionArgs),
    /// Print a shell completion script, e.g. `larder completions bash > /etc/bash_completion.d/larder`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `larder man > larder.1 && man ./larder.1`.
    Man,
}

/// Which releases (and which of their wheels) `warm` and `export` work on.
#[derive(Args, Debug, Default)]
pub struct SelectionArgs {
    /// Pinned requirements file (`name==version`, `--hash` optional). Repeatable.
    #[arg(short = 'r', long = "requirement", value_name = "FILE")]
    pub requirements: Vec<PathBuf>,

    /// Lock file: `pylock.toml` (PEP 751) or `uv.lock`. Repeatable.
    #[arg(long, value_name = "FILE")]
    pub lock: Vec<PathBuf>,

    /// Pinned releases, as name==version.
    #[arg(value_name = "NAME==VERSION")]
    pub pins: Vec<String>,

    /// Only wheels for these platform tags (plus pure `any` wheels); sdists always. Repeatable.
    #[arg(long, value_name = "TAG")]
    pub platform: Vec<String>,

    /// Only wheels for these Python versions, e.g. `3.12` (plus py3 wheels). Repeatable.
    #[arg(long, value_name = "X.Y")]
    pub python_version: Vec<String>,
}

impl SelectionArgs {
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty() && self.lock.is_empty() && self.pins.is_empty()
    }
}

#[derive(Args, Debug)]
pub struct WarmArgs {
    #[command(flatten)]
    pub settings: Settings,

    #[command(flatten)]
    pub selection: SelectionArgs,

    /// Downloads under way at once.
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// The bundle to write; `.tar.zst` compresses.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// Without a selection, the whole store is exported; with one, what it names plus every
    /// private package.
    #[command(flatten)]
    pub selection: SelectionArgs,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// The bundle written by `larder export`.
    #[arg(value_name = "BUNDLE")]
    pub bundle: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum AdvisoriesCommand {
    /// Import OSV records into the store, merged with what is there (a newer `modified` wins,
    /// withdrawn records drop; safe to run again). Running servers on the same store pick
    /// them up within 30 seconds (or at once on SIGHUP); bad records are reported and skipped.
    Import(AdvisoriesImportArgs),
}

#[derive(Args, Debug)]
pub struct AdvisoriesImportArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// OSV's export for PyPI (`all.zip`), a directory of OSV JSON records, or one record.
    pub path: PathBuf,
}

#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub settings: Settings,

    /// Delete corrupt files, so that they are fetched again on the next request.
    #[arg(long)]
    pub remove: bool,

    /// Repair what can be repaired: corrupt files and damaged records that came from the
    /// upstream are removed (fetched again), a page whose rendered bodies are lost is rendered
    /// again, an unreadable format stamp is rewritten. Private uploads and advisories exist
    /// nowhere else: they are reported with what to do. Without it, verify says what it would do.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Args, Debug)]
pub struct ManageArgs {
    /// The distribution filename, e.g. `my_pkg-1.0-py3-none-any.whl`.
    pub filename: String,

    /// Larder's base URL.
    #[arg(long, env = "LARDER_SERVER", default_value = "http://127.0.0.1:3141")]
    pub server: url::Url,

    /// The project that holds the file.
    #[arg(long, default_value = "default")]
    pub project: String,

    /// Why the file is yanked (yank only).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Args, Debug)]
pub struct RetentionArgs {
    /// Larder's base URL.
    #[arg(long, env = "LARDER_SERVER", default_value = "http://127.0.0.1:3141")]
    pub server: url::Url,

    /// The project whose `retention` policy to apply.
    #[arg(long, default_value = "default")]
    pub project: String,

    /// Only print what would be deleted.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub settings: Settings,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The settings every subcommand shares. Each is optional here: unset means "take it from the
/// environment, the config file, or the default", in that order.
#[derive(Args, Debug, Default, Clone)]
pub struct Settings {
    /// TOML config file. Default: `config/larder.toml` when that file exists.
    #[arg(long, env = "LARDER_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:3141].
    #[arg(long, env = "LARDER_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Never connect to the upstream, whatever happens: serve what the store has, however old
    /// (for air-gapped build farms). Also LARDER_OFFLINE=1.
    #[arg(long, env = "LARDER_OFFLINE", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          value_parser = clap::builder::BoolishValueParser::new())]
    pub offline: Option<bool>,

    /// Upstream simple-API base URL, e.g. `https://<upstream>/simple/`. With none, Larder serves
    /// only what it already has.
    #[arg(long, env = "LARDER_UPSTREAM", value_name = "URL")]
    pub upstream: Option<url::Url>,

    /// Username for an upstream that needs HTTP Basic auth (instead of putting it in the URL).
    /// Sent only to the upstream's own host.
    #[arg(long, env = "LARDER_UPSTREAM_USERNAME", value_name = "NAME")]
    pub upstream_username: Option<String>,

    /// Password or token for the upstream. Prefer the environment variable
    /// LARDER_UPSTREAM_PASSWORD to a flag (flags show up in `ps`). Never logged.
    #[arg(long, env = "LARDER_UPSTREAM_PASSWORD", value_name = "SECRET", hide_env_values = true)]
    pub upstream_password: Option<String>,

    /// Upstream file requests and downloads under way at once, for all clients together; more
    /// wait up to 30 s. Page fetches and revalidations have as many slots of their own (a page
    /// waits up to 5 s, then is served stale) [default: 32].
    #[arg(long, env = "LARDER_MAX_UPSTREAM_CONNECTIONS", value_name = "N")]
    pub max_upstream_connections: Option<usize>,

    /// Downloads of large files (16 MiB or more, or of unknown size) one client may have
    /// started from the upstream at once; more wait for one of its own to end (up to 5 min,
    /// then 503). A client is its address (IPv6: its /64), or its token when it sent a valid
    /// one: give a build farm behind one NAT a token. Joining a download under way is free.
    /// 0: no limit [default: 8].
    #[arg(long, env = "LARDER_MAX_DOWNLOADS_PER_CLIENT", value_name = "N")]
    pub max_downloads_per_client: Option<usize>,

    /// Largest upstream project page accepted, after decompression, e.g. `64MiB` [default: 64MiB].
    #[arg(long, env = "LARDER_MAX_PAGE_SIZE", value_name = "SIZE")]
    pub max_page_size: Option<crate::byte_size::ByteSize>,

    /// Most files one upstream project page may list; a page with more is refused with a 502
    /// naming this setting (the largest real pages list tens of thousands) [default: 100000].
    #[arg(long, env = "LARDER_MAX_PAGE_FILES", value_name = "N")]
    pub max_page_files: Option<usize>,

    /// Largest upstream file accepted when neither its page nor the upstream announces its size
    /// (a file is never allowed past the size announced) [default: 20GiB].
    #[arg(long, env = "LARDER_MAX_FILE_SIZE", value_name = "SIZE")]
    pub max_file_size: Option<crate::byte_size::ByteSize>,

    /// Serve HTTPS: the PEM certificate chain (leaf first). Needs --tls-key.
    #[arg(long, env = "LARDER_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// Serve HTTPS: the PEM private key of --tls-cert.
    #[arg(long, env = "LARDER_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Directory for the content store [default: ./larder-data].
    #[arg(long, env = "LARDER_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// How long an upstream project page is served before Larder revalidates it [default: 10m].
    #[arg(long, env = "LARDER_INDEX_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub index_ttl: Option<Duration>,

    /// How long past its TTL a page may still be served while the upstream fails [default: 7d].
    #[arg(long, env = "LARDER_STALE_IF_ERROR", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub stale_if_error: Option<Duration>,

    /// How long an upstream "no such project" answer is remembered [default: 1m].
    #[arg(long, env = "LARDER_NOT_FOUND_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub not_found_ttl: Option<Duration>,

    /// Give up on an upstream request after this long without progress [default: 30s].
    #[arg(long, env = "LARDER_UPSTREAM_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Option<Duration>,

    /// Memory for project pages, in MiB [default: 16]: half for page heads, a quarter for page
    /// models, a quarter for hot page bodies. Bodies themselves are blobs in the store, read
    /// back at about the speed of memory (the OS caches them), so more buys little. Pages
    /// waiting to be written may hold up to twice this more (at least 256 MiB); past that a page
    /// is served but not stored.
    #[arg(long, env = "LARDER_PAGE_CACHE_MIB", value_name = "MIB")]
    pub page_cache_mib: Option<u64>,

    /// Memory for small files (up to 1 MiB) served from memory on a hit, in MiB [default: 8].
    #[arg(long, env = "LARDER_FILE_CACHE_MIB", value_name = "MIB")]
    pub file_cache_mib: Option<u64>,

    /// Store size limit, e.g. `50GiB`: above it, least-recently-used files cached from upstream
    /// are evicted (private uploads never are) [default: no limit].
    #[arg(long, env = "LARDER_MAX_STORE_SIZE", value_name = "SIZE")]
    pub max_store_size: Option<crate::byte_size::ByteSize>,

    /// Project id served by the short `/simple/` and `/files/` aliases [default: default].
    #[arg(long, env = "LARDER_DEFAULT_PROJECT", value_name = "ID")]
    pub default_project: Option<String>,

    /// Largest accepted upload, in MiB; bigger ones get 413 [default: 4096].
    #[arg(long, env = "LARDER_MAX_UPLOAD_MIB", value_name = "MIB")]
    pub max_upload_mib: Option<u64>,

    /// A client must send a whole request head within this [default: 15s].
    #[arg(long, env = "LARDER_HEADER_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub header_timeout: Option<Duration>,

    /// A connection with no request under way and nothing sent or received for this long is
    /// closed; also a stalled upload body [default: 60s].
    #[arg(long, env = "LARDER_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// On SIGTERM (or SIGINT), first go on serving everything while /-/ready answers 503 for
    /// this long, so that a load balancer or Kubernetes stops sending clients here [default:
    /// 5s]. A second signal skips what is left of it.
    #[arg(long, env = "LARDER_DRAIN_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub drain_delay: Option<Duration>,

    /// Then stop accepting connections, and give open requests (downloads included), page
    /// writes and fills under way this long to finish before exiting [default: 30s]. Set the
    /// orchestrator's grace period above drain_delay + shutdown_timeout.
    #[arg(long, env = "LARDER_SHUTDOWN_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Option<Duration>,

    /// Client connections served at once; more wait in the listen backlog [default: 8192].
    /// Larder raises its open-file limit to fit, as far as the system allows.
    #[arg(long, env = "LARDER_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<usize>,

    /// Require this token for `/metrics` (as a Bearer token or Basic password). Prefer the
    /// environment variable. Default: /metrics is open.
    #[arg(long, env = "LARDER_METRICS_TOKEN", value_name = "SECRET", hide_env_values = true)]
    pub metrics_token: Option<String>,

    /// Write the audit log (one JSON line per upload, yank, delete, token mint, block-list
    /// reload, import and retention run) to this file, appending; `-` for standard output.
    /// On an S3 store every event is also an object under `<prefix>/audit/`. Default: none.
    #[arg(long, env = "LARDER_AUDIT_LOG", value_name = "PATH")]
    pub audit_log: Option<String>,

    /// Most members (files) read in one uploaded or upstream archive; more get 400 [default: 100000].
    #[arg(long, env = "LARDER_MAX_ARCHIVE_MEMBERS", value_name = "N")]
    pub max_archive_members: Option<u64>,

    /// Most bytes an uploaded sdist may unpack to while Larder looks for its PKG-INFO, e.g.
    /// `4GiB`; a compression bomb stops there with a 400 [default: 4GiB].
    #[arg(long, env = "LARDER_MAX_ARCHIVE_UNPACKED", value_name = "SIZE")]
    pub max_archive_unpacked: Option<crate::byte_size::ByteSize>,

    /// The URL clients reach this server at, e.g. `https://pypi.example.com` (or with a path
    /// prefix, behind a proxy). Used for the absolute URLs PEP 740 provenance needs and on the
    /// pages for people; without it, the request's Host header is used, which a shared cache in
    /// front must then key on.
    #[arg(long, env = "LARDER_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<url::Url>,

    /// Where blobs and records live: the local data directory (default), or an S3-compatible
    /// bucket, `s3://bucket/prefix`, that any number of Larder replicas share. Credentials come
    /// from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and the other AWS_* variables).
    #[arg(long, env = "LARDER_STORE", value_name = "URL")]
    pub store: Option<String>,

    /// The S3 endpoint, e.g. `http://127.0.0.1:8333` for a server other than AWS (also
    /// AWS_ENDPOINT). Plain http is allowed only when written here.
    #[arg(long, env = "LARDER_S3_ENDPOINT", value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// The bucket's region [default: AWS_REGION, else us-east-1].
    #[arg(long, env = "LARDER_S3_REGION", value_name = "REGION")]
    pub s3_region: Option<String>,

    /// With an S3 store: the most disk the local cache of hot blobs may use (under
    /// data_dir/cache), e.g. `20GiB` [default: 10GiB].
    #[arg(long, env = "LARDER_LOCAL_CACHE_SIZE", value_name = "SIZE")]
    pub local_cache_size: Option<crate::byte_size::ByteSize>,

    /// With an S3 store: how stale this replica's pages may be about uploads, yanks and
    /// deletes made on other replicas. 0s (default): they count on the very next request here,
    /// at the cost of one batched bucket round trip per page request; e.g. `1s`: at most one
    /// check per name per second.
    #[arg(long, env = "LARDER_REPLICA_LAG", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub replica_lag: Option<Duration>,

    /// With an S3 store: the same for file downloads this replica can answer from what it knows
    /// [default: 0s, never less than replica_lag]. With e.g. `1s`, warm small-file hits run at
    /// local speed, and a file deleted, or a name claimed, on another replica stays
    /// downloadable by its URL here for up to that long; a file it does not know is still
    /// checked at once (an upload through another replica downloads here at once).
    #[arg(long, env = "LARDER_REPLICA_FILE_LAG", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub replica_file_lag: Option<Duration>,

    /// With an S3 store: names nobody claimed are checked against the bucket on every
    /// request while that stays under 200 reads a second; beyond (a flood of random names, a
    /// group of many projects), they are answered from a listing of the private records at
    /// most this old [default: 1s], so a flood cannot multiply bucket calls, and a name
    /// claimed for the first time through another replica may take that long to be seen
    /// here. `0s`: always read each name. While the bucket does not answer, a name not shown
    /// unclaimed within this (or replica_lag) gets 503, never the upstream's page or files.
    #[arg(long, env = "LARDER_REPLICA_ABSENT_LAG", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub replica_absent_lag: Option<Duration>,

    /// Hold back upstream files uploaded more recently than this, e.g. `7d` (release cooldown:
    /// a compromised release is usually found and yanked within days). Uses the upstream's
    /// upload times (PEP 700); private uploads are never held back. [default: none]
    #[arg(long, env = "LARDER_MIN_RELEASE_AGE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub min_release_age: Option<Duration>,

    /// Project names that may be uploaded although the upstream has them (comma-separated).
    /// Without this, such uploads are refused: a private upload masks the upstream project.
    #[arg(long, env = "LARDER_ALLOW_SHADOWING", value_name = "NAMES", value_delimiter = ',')]
    pub allow_shadowing: Option<Vec<String>>,

    /// After fetching a project page, read the METADATA of its newest wheels with HTTP range
    /// requests in the background, so resolvers need no wheel downloads [default: true].
    #[arg(long, env = "LARDER_METADATA_PREFETCH", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub metadata_prefetch: Option<bool>,

    /// When a wheel's metadata passes through, fetch its requirements' pages before the client
    /// asks, and one level on their newest wheel's metadata (the upstream's PEP 658 file, or
    /// by range requests where it has none) and its requirements' pages (bounded: 6 at once,
    /// 64 per wheel, two levels). Off by default: against a real index it did not make a cold
    /// resolve measurably faster (benches/README.md) [default: false].
    #[arg(long, env = "LARDER_FETCH_AHEAD", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub fetch_ahead: Option<bool>,

    /// How many of a project's newest versions the metadata prefetch covers [default: 3].
    #[arg(long, env = "LARDER_METADATA_PREFETCH_VERSIONS", value_name = "N")]
    pub metadata_prefetch_versions: Option<usize>,
}
