//! Larder: a caching pull-through proxy for the Python Package Index.
//!
//! # Layout
//! Data flows down (server → cache → store, upstream, index); news flows up as return values
//! and events. The module graph has no cycle (`tests/e2e/layout.rs` checks it).
//!
//! - `server`: the accept loop; `service` (span, `Route` parsing, access decided once,
//!   dispatch); `handlers` (HTTP adapters: `simple`, `files`, `upload`, `manage`, `health`);
//!   `error` (the one place a failure becomes a status); `route`, `body`, `respond`, `idle`, `tls`.
//!   `handlers::ui` serves the pages for people (`/-/ui/`), rendered by `ui`, with `stats`.
//! - `auth`: tokens, and who may read a scope or write to a project (`Reader`, `Writer`, or
//!   `Denied`); `oidc`: trusted publishing (OIDC tokens verified, upload tokens minted);
//!   `audit`: one JSON line per write (file, bucket, listeners); `webhooks`: signed POSTs of them.
//! - `cache`: the engine behind one facade, `Cache` (page, file, metadata, upload, yank,
//!   delete, warm, shutdown). Inside: `pages` (memory, disk, upstream; freshness, stale),
//!   `private` (uploads, claimed names, tombstones), `links` (wheel → METADATA), `prefetch`
//!   (METADATA by range requests), `fill` (one hash-checked download per missing file),
//!   `files` and `upload` (the facade's file and upload halves), `records` (every record key
//!   and schema, validated before use).
//! - `store`: the `Store` trait, `local` (cacache on disk), `s3` (a shared bucket, behind a
//!   `breaker` while it fails), `tiered` (a local cache of a bucket's blobs), `bounded` (the
//!   size limit, as a wrapper), `format` (the store's format stamp). `upstream`: the upstream
//!   index client; `guard` (redirects, addresses, redaction), `ranges` (METADATA by range
//!   requests), `html` (PEP 503 parsing), `throttle` (an upstream's 429 pause).
//! - `index`: the page model, rendered to PEP 503 HTML and PEP 691 JSON (`PageModel`);
//!   `name`, `filename` (the one distribution-filename parser), `media_type`.
//! - `policy`: what a scope may be given of the upstreams: per-project upstreams, release
//!   cooldown, block lists (reloadable), project status; a pure page filter the engine caches.
//!   `publishers` (which OIDC claims may publish where), `retention` (which uploads go).
//!   `upstream::routes` decides which upstream owns a name.
//! - `metadata` (METADATA / PKG-INFO out of distributions), `archive` (bounded tar/zip reading),
//!   `coalesce` (one coalescer), `clock`, `digest`, `scope`, `lockfile`, `bundle` (air-gap
//!   bundles), `advisories` (OSV advisories: import, blocks, the audit API); `fuzz` (tests only).
//! - `cli`, `config`: the command line, the TOML file, and the resolved `Config`;
//!   `commands`: one file per subcommand; `state`: what a handler gets; `telemetry`.
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
