//! End-to-end tests: a real `larder` process, real upstreams on loopback (pypiserver and an
//! in-process mock that speaks JSON and HTML), and the real pip and uv.
//!
//! The clients come from the venv that `scripts/test` builds (`LARDER_E2E_VENV`, default
//! `.venv-e2e`). A missing client fails the test; it never skips.

mod util;

// Pages: negotiation, headers, redirects, bad input.
mod simple_api;
// Pages served like files (issue 21): compressed, fresh across eviction and restarts.
mod page_store;
// Files: HEAD, Range, ETag, bad keys and names.
mod files_api;
// Pull-through with pip and uv: zero upstream requests when warm, coalescing, hash mismatch,
// stale pages, restart.
mod pull_through;
// Advisories from OSV (issue 25): import, MAL- blocks, OSV's API for uv audit.
mod advisories;
// PyPI's JSON API (issue 24), read by Dependabot-style and library clients.
mod json_api;
// Publishing for a platform team (issue 23): audit log, trusted publishing, retention, webhooks.
mod publishing;
// Private packages: uploads with twine and uv, masking, tokens, yank and delete.
mod private;
// Core metadata for every wheel: extraction, range prefetch, uv without wheel downloads.
mod core_metadata;
// The air gap: warm from lock files, export, import, offline; metrics.
mod air_gap;
// The shape of the code: no cycle in the module graph.
mod layout;
// Installing: the wheel with pip and uv tool; completions and the man page.
mod install;
// The command line's error messages.
mod cli;
// pypiserver as an HTML-only upstream.
mod pypiserver;
// Every file size around every threshold: serve, warm, export, import.
mod sizes;
// The engine in this process: a clock the test moves, a store that fails on command.
mod engine;
// kill -9 during uploads, fills, imports, page writes, evictions, yanks and deletes.
mod crash;
// Upgrades keep the store: golden stores of earlier formats, newer ones refused, verify --repair (issue 27).
mod upgrade;
// SIGTERM: drain, finish what is open, exit 0 (issue 27).
mod stopping;
// The container image and the compose files, run by a real Docker engine (issue 28).
mod image;
// Hostile and unlucky clients: bad heads, pipelining, aborted downloads; nothing leaks.
mod hostile;
// Attacks from the security review (issue 9), each reproduced against a running Larder.
mod security;
// The attacker's review, round three (issue 22).
mod attacks;
// The pages for people (issue 15), with a real headless Chromium.
mod ui;
// The supply-chain gateway (issue 14): routing, cooldown, block lists, provenance, status.
mod gateway;
// Replicas sharing one S3 bucket (issue 13), on a real S3 server (SeaweedFS).
mod replicas;
// A bucket and an upstream that fail (issue 27): a fault-injecting proxy, under load.
mod faults;
