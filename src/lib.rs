//! Larder: a caching pull-through proxy for the Python Package Index.
//!
//! # Layout
//! Data flows down (server → cache → store, upstream, index); news flows up as return values
//! and events. The module graph has no cycle (`tests/e2e/layout.rs` checks it).
//!
//! - `server`: the accept loop; `service` (span, `Route` parsing, access decided once,
//!   dispatch); `handlers` (HTTP adapters: request → one engine call → response: `simple`,
//!   `files`, `upload`, `manage`, `health`, `oidc`, `osv`, `pypi_json`); `respond` and `error`
//!   (the only places a status is chosen: a response, or a failure; `tests/e2e/layout.rs`
//!   checks it); `route`, `body`, `idle`, `tls`.
//!   `handlers::ui` serves the pages for people (`/-/ui/`), rendered by `ui`, with `stats`.
//! - `auth`: tokens, and who may read a scope or write to a project (`Reader`, `Writer`, or
//!   `Denied`); `oidc`: trusted publishing (OIDC tokens verified, upload tokens minted);
//!   `audit`: one JSON line per write (file, bucket, listeners); `webhooks`: signed POSTs of them.
//! - `cache`: the engine behind one facade, `Cache` (page, read_file, upload, yank, delete,
//!   warm, shutdown); the server names only the facade's types (checked). Inside: `pages`
//!   (memory, disk, upstream; freshness, stale), `private` (uploads, claimed names,
//!   tombstones), `links` (wheel → METADATA), `prefetch` (METADATA by range requests), `ahead`
//!   (requirements fetched before the client asks), `fill` (one hash-checked download per
//!   missing file), `files` (one call answers a file read: what a reader may see, where the
//!   bytes come from), `bodies` (page bodies as blobs, the freshness journal, the write
//!   queue), `upload`, `scope_policy` (a page as a scope sees it: blocks, cooldown, status),
//!   `provenance`, `advisories`,
//!   `retention`, `records` (every record key and schema, validated before use).
//! - `store`: the `Store` trait, `local` (cacache on disk), `s3` (a shared bucket, behind a
//!   `breaker` while it fails), `tiered` (a local cache of a bucket's blobs); layers with one
//!   job each: `health` (failures, for `/-/health`), `bounded` (the size limit); `format` (the
//!   store's format stamp). `upstream`: the upstream
//!   index client; `guard` (redirects, addresses, redaction), `ranges` (METADATA by range
//!   requests), `html` (PEP 503 parsing), `throttle` (an upstream's 429 pause).
//! - `index`: the page model, rendered to PEP 503 HTML and PEP 691 JSON (`PageModel`);
//!   `name`, `filename` (the one distribution-filename parser), `media_type`.
//! - `policy`: what a scope may be given of the upstreams: per-project upstreams, release
//!   cooldown, block lists (reloadable), project status; a pure page filter the engine caches.
//!   `publishers` (which OIDC claims may publish where), `retention` (which uploads go).
//!   `upstream::routes` decides which upstream owns a name.
//! - `metadata` (METADATA / PKG-INFO out of distributions), `archive` (bounded tar/zip reading),
//!   `coalesce` (one coalescer, one batcher), `clock`, `digest`, `scope`, `lockfile`, `bundle`
//!   (air-gap bundles), `advisories` (OSV advisories: import, blocks, the audit API),
//!   `byte_range` (HTTP ranges), `byte_size` (`500MiB` in settings); `fuzz` (tests only).
//! - `cli`, `config`: the command line, and the resolved `Config` (`config::file`: the TOML
//!   file as written; `config::resolve`: one resolver per concern; `ConfigError`: what to
//!   fix, typed); `commands`: one file per
//!   subcommand; `state`: what a handler gets; `stats` (the UI's counters); `ui` (pages for
//!   people); `telemetry`.
//!
//! Protocol rules are cited by their IDs in `../shared/standards.md` (ROUTE-02, NEG-08, …).
//! Public here is what the binary, the benchmarks and the tests use; the rest is crate-private.

pub mod advisories;
pub(crate) mod archive;
pub(crate) mod audit;
pub(crate) mod auth;
pub(crate) mod bundle;
pub(crate) mod byte_range;
pub mod byte_size;
pub mod cache;
pub mod cli;
pub mod clock;
pub(crate) mod coalesce;
pub mod commands;
pub mod config;
pub mod digest;
pub mod index;
pub(crate) mod lockfile;
pub(crate) mod metadata;
pub(crate) mod oidc;
pub mod policy;
pub(crate) mod scope;
pub mod server;
pub mod state;
pub(crate) mod stats;
pub mod store;
pub mod telemetry;
pub(crate) mod ui;
pub mod upstream;
pub(crate) mod webhooks;

#[cfg(test)]
mod fuzz;
