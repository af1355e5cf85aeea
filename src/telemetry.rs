//! Logs (tracing to stderr, text or JSON) and metrics (Prometheus text on `/metrics`).

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::cli::LogFormat;

/// `LARDER_LOG` filters (default `info`); colours only on a terminal.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("LARDER_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs the global metrics recorder; the handle renders the Prometheus text format.
pub fn install_metrics() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets(&[0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])?
        .install_recorder()?;
    metrics::describe_counter!("larder_requests_total", "Requests by route and status");
    metrics::describe_counter!(
        "larder_cache_total",
        "Page and file answers by cache outcome (HIT, MISS, STALE, REVALIDATED)"
    );
    metrics::describe_counter!("larder_bytes_served_total", "Response body bytes by where they came from");
    metrics::describe_counter!("larder_ahead_total", "Pages and metadata fetched ahead of the clients, by kind");
    metrics::describe_counter!(
        "larder_upstream_permit_timeouts_total",
        "Upstream requests that waited too long for a connection slot (pages then serve stale)"
    );
    metrics::describe_counter!(
        "larder_page_bodies_total",
        "Project pages served, by content coding (identity, gzip, zstd)"
    );
    metrics::describe_counter!(
        "larder_upstream_throttled_total",
        "Requests not sent upstream because it asked for a pause (429 / Retry-After), by upstream"
    );
    metrics::describe_counter!(
        "larder_webhook_deliveries_total",
        "Webhook deliveries by webhook and result (delivered, failed after every retry)"
    );
    metrics::describe_counter!(
        "larder_webhook_dropped_total",
        "Webhook events dropped because the webhook's queue was full, by webhook"
    );
    metrics::describe_counter!(
        "larder_audit_failures_total",
        "Audit events that could not be written, by destination (log, bucket)"
    );
    metrics::describe_counter!("larder_upstream_requests_total", "Requests sent upstream, by kind and upstream");
    metrics::describe_histogram!("larder_upstream_seconds", "Upstream response time (headers), by kind and upstream");
    metrics::describe_counter!("larder_upstream_bytes_total", "File bytes downloaded from upstream, by upstream");
    metrics::describe_counter!("larder_blocked_total", "Requests refused by the block list, by kind (project, file)");
    metrics::describe_gauge!("larder_block_rules", "Entries in the block list in force");
    metrics::describe_counter!("larder_held_back_total", "File requests refused because of min_release_age");
    metrics::describe_counter!(
        "larder_bucket_reads_total",
        "Blobs read from the bucket on a local-cache miss (S3 store)"
    );
    metrics::describe_counter!(
        "larder_integrity_failures_total",
        "Stored blobs found not to match their sha256 while served (the download is cut)"
    );
    metrics::describe_counter!(
        "larder_record_conflicts_total",
        "Private record writes that lost a race to another writer and were retried (S3 store)"
    );
    metrics::describe_counter!("larder_coalesced_waits_total", "Requests that joined a download already under way");
    metrics::describe_counter!("larder_metadata_extracted_total", "Wheels whose METADATA Larder extracted itself");
    metrics::describe_counter!(
        "larder_metadata_mismatch_total",
        "Range-read METADATA that differed from the stored wheel's own (replaced)"
    );
    metrics::describe_counter!(
        "larder_page_writes_skipped_total",
        "Upstream pages served but not stored because the pages waiting to be written hold their budget"
    );
    metrics::describe_counter!(
        "larder_page_html_renders_total",
        "Pages whose HTML was rendered because a client asked for it (once per page change)"
    );
    metrics::describe_counter!(
        "larder_page_model_reads_total",
        "Page models read back from the store (misses, policy views, re-renders; never a hit)"
    );
    metrics::describe_counter!("larder_store_errors_total", "Store operations that failed, by op (read, write)");
    metrics::describe_counter!("larder_bad_records_total", "Records skipped at start-up because they are not valid");
    metrics::describe_counter!(
        "larder_metadata_prefetch_total",
        "Background range fetches of wheel METADATA, by result"
    );
    metrics::describe_gauge!(
        "larder_memory_allocated_bytes",
        "Bytes the allocator has handed out and not had back (what the process holds)"
    );
    metrics::describe_gauge!(
        "larder_memory_resident_bytes",
        "Bytes the allocator keeps resident (in use, its caches and freed pages not yet returned)"
    );
    metrics::describe_gauge!(
        "larder_memory_active_bytes",
        "Bytes in the allocator's pages that hold live data (active minus allocated: fragmentation)"
    );
    metrics::describe_gauge!("larder_memory_metadata_bytes", "Bytes of the allocator's own bookkeeping");
    metrics::describe_gauge!(
        "larder_memory_cache_bytes",
        "Bytes held by each memory cache (page heads, models, hot bodies, small files, page writes waiting), as they weigh them"
    );
    metrics::describe_gauge!(
        "larder_tasks_alive",
        "Tasks alive in the runtime (requests, downloads, background work): flat on a steady load"
    );
    // Histogram samples queue in the recorder until upkeep folds them into buckets; with no
    // exporter task of its own (`install_recorder`), nothing else would, and an unscraped
    // Larder would keep every sample it ever took.
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
            // Sampled here rather than at scrape time so the pages for people see it too.
            let tasks = tokio::runtime::Handle::current().metrics().num_alive_tasks();
            metrics::gauge!("larder_tasks_alive").set(tasks as f64);
            allocator_upkeep();
        }
    });
    Ok(handle)
}

/// Returns what the C libraries freed to the system (see main.rs), then samples the
/// allocator's view of memory, so an operator can tell data held (allocated) from memory the
/// allocator has not returned yet (resident minus allocated) when RSS looks high.
#[cfg(unix)]
fn allocator_upkeep() {
    use tikv_jemalloc_ctl::{epoch, stats};
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
    if epoch::advance().is_err() {
        return;
    }
    if let (Ok(allocated), Ok(resident)) = (stats::allocated::read(), stats::resident::read()) {
        metrics::gauge!("larder_memory_allocated_bytes").set(allocated as f64);
        metrics::gauge!("larder_memory_resident_bytes").set(resident as f64);
    }
    if let (Ok(active), Ok(meta)) = (stats::active::read(), stats::metadata::read()) {
        metrics::gauge!("larder_memory_active_bytes").set(active as f64);
        metrics::gauge!("larder_memory_metadata_bytes").set(meta as f64);
    }
}

#[cfg(not(unix))]
fn allocator_upkeep() {}
