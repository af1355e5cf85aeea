//! Larder: a caching pull-through proxy for the Python Package Index.
//!
//! # Layout
//! - `cli`, `config`: the command line, the TOML file, and the resolved `Config`.
//! - `commands`: one file per subcommand (`serve`, and `manage` for yank/unyank/delete).
//! - `auth`: tokens, scopes, and who may read or upload.
//! - `server`: the accept loop, `route` (paths → `Route`), `body` and `respond` helpers.
//! - `handlers`: one file per endpoint family (`simple`, `files`, `upload`, `manage`, `health`).
//! - `private`: private uploads per project, the names they claim (masking), yanks, deletes.
//! - `records`: every record key and schema, validated before anything trusts it.
//! - `archive`: bounded reading of tar and zip archives from outside.
//! - `metadata`: distribution filenames and the core metadata inside wheels and sdists.
//! - `index`: the model of a project page, and PEP 503 HTML / PEP 691 JSON rendering;
//!   `name` (normalization), `media_type` (negotiation), `filename`.
//! - `pages`: project pages in memory, on disk and from upstream: freshness, staleness, coalescing.
//! - `fill`: one streamed, hash-checked download per missing file, shared by every client.
//! - `upstream`: the client for the upstream index (JSON first, HTML parsed with lol_html).
//! - `store`: the `Store` trait and its cacache-backed local implementation.
//! - `evict`: the store size limit (LRU of upstream files; private uploads never go).
//! - `core_metadata`: METADATA for upstream wheels (extracted on fill, prefetched by ranges).
//! - `telemetry`: logs and the Prometheus metrics recorder.
//! - `singleflight`, `digest`: small shared helpers.
//! - `error`: the one place a failure becomes an HTTP status.
//!
//! Protocol rules are cited by their IDs in `../shared/standards.md` (ROUTE-02, NEG-08, …).

pub mod archive;
pub mod auth;
pub mod bundle;
pub mod cache;
pub mod cli;
pub mod coalesce;
pub mod commands;
pub mod config;
pub mod digest;
pub mod index;
pub mod lockfile;
pub mod metadata;
pub mod scope;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod upstream;
