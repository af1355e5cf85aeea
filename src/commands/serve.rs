//! `larder serve`: open the store, bind, and serve until SIGINT or SIGTERM; then drain
//! (`/-/ready` 503 for `drain_delay`), stop accepting, and let open requests and background
//! work finish within `shutdown_timeout` (issue 27).

use crate::audit;
use crate::config::Config;
use crate::state::AppState;

pub async fn run(config: Config) -> anyhow::Result<()> {
    let tls = match &config.tls {
        Some((cert, key)) => Some(crate::server::tls::acceptor(cert, key)?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}; pick another address with --listen", config.listen))?;
    let addr = listener.local_addr()?;
    match &config.default_upstream {
        _ if config.offline => {
            tracing::warn!("offline: Larder never contacts the upstream; serving only what is stored")
        }
        Some(up) => tracing::info!(upstream = %up.settings.base, "pulling through from upstream"),
        None => tracing::warn!(
            "no upstream configured (--upstream / LARDER_UPSTREAM): serving private packages and what is already stored only"
        ),
    }
    for route in &config.upstream_routes {
        let names: Vec<String> = route.projects.iter().map(|p| p.to_string()).collect();
        tracing::info!(upstream = %route.name, url = %route.settings.base, projects = %names.join(", "), "routing these names to this upstream only");
    }
    if let Some(age) = config.rules.min_release_age {
        tracing::info!(min_release_age = %humantime::format_duration(age), "holding back new upstream releases");
    }
    if !config.block.is_empty() {
        tracing::info!(rules = config.block.len(), "block list loaded; send SIGHUP to reload it from the config file");
    }
    if config.tokens.is_empty() && config.trusted_publishers.is_empty() {
        tracing::info!("no tokens configured: uploads are refused (set LARDER_TOKEN or [[tokens]] in the config)");
    }
    for p in &config.trusted_publishers {
        tracing::info!(publisher = %p.name, issuer = %p.issuer, projects = %p.projects.join(", "), "trusted publisher: its CI may exchange OIDC tokens for upload tokens");
    }
    raise_fd_limit(config.connection_limits.max_connections as u64 + 256);
    // Installed first, so that what the engine reports while it opens is recorded, and so that
    // a SIGHUP while the store opens is not fatal (its default action ends the process).
    let metrics = crate::telemetry::install_metrics()?;
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    #[cfg(not(unix))]
    let hangups = None::<()>;
    let mut state = AppState::new(config).await?;
    state.metrics = Some(metrics);
    tracing::info!(store = %state.cache.location(), "store opened");
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr}");
    let cache = state.cache.clone();
    let webhooks = crate::webhooks::Webhooks::start(&state.config.webhooks)?;
    cache.audit().add_listener(webhooks.clone());
    let reloader = tokio::spawn(reload_on_sighup(hangups, state.config.clone(), cache.clone()));
    // Advisories imported by `larder advisories import` (here or on another replica's bucket).
    let watcher = {
        let cache = cache.clone();
        tokio::spawn(async move {
            loop {
                cache.refresh_advisories_from_url().await;
                tokio::time::sleep(ADVISORIES_CHECK).await;
                cache.reload_advisories().await;
            }
        })
    };
    // Retention (issue 23): each project's policy, applied every `retention_interval`.
    let retention = {
        let (cache, every) = (cache.clone(), state.config.retention_interval);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for project in cache.retained_projects() {
                    let who = audit::Who::Server { job: "retention".into() };
                    match cache.apply_retention(&project, false, true, who, None).await {
                        Ok(run) if run.deleted > 0 || !run.failed.is_empty() => tracing::info!(
                            %project, deleted = run.deleted, failed = run.failed.len(), "retention applied"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(%project, error = %e, "retention not applied; tried again next time"),
                    }
                }
            }
        })
    };
    let stopping = state.config.stopping;
    let mut signals = Signals::install();
    let draining = state.draining.clone();
    let drained = async move {
        let signal = signals.next().await;
        draining.store(true, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            signal,
            drain_delay = %humantime::format_duration(stopping.drain_delay),
            "stopping: /-/ready answers 503 while everything is still served; then no new connections"
        );
        tokio::select! {
            _ = tokio::time::sleep(stopping.drain_delay) => {}
            signal = signals.next() => tracing::info!(signal, "a second signal: skipping the rest of the drain"),
        }
    };
    let deadline = crate::server::serve(listener, state, tls, drained, stopping.shutdown_timeout).await;
    reloader.abort();
    watcher.abort();
    retention.abort();
    // Page writes, downloads and metadata extraction under way finish before the process ends,
    // within what is left of the timeout: a stop must not wait for a multi-GB download.
    if tokio::time::timeout_at(deadline, cache.shutdown()).await.is_err() {
        tracing::warn!("background work did not finish in time; stopping anyway (unfinished downloads are not stored)");
        cache.flush_journal().await;
        // The audit trail's bucket writes still get a moment: they are the record of who did what.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), cache.audit().flush()).await;
    }
    // Queued webhook deliveries get what is left of the timeout.
    webhooks.close(deadline.saturating_duration_since(tokio::time::Instant::now())).await;
    tracing::info!("stopped");
    Ok(())
}

/// How often a server looks for newly imported advisories (one small record read).
const ADVISORIES_CHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// Raises the soft open-file limit to the hard one: each connection is a file descriptor, and
/// a soft limit of 1024 would cap connections far below `max_connections`.
fn raise_fd_limit(wanted: u64) {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: plain syscalls on a stack value.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return;
            }
            if lim.rlim_cur < lim.rlim_max {
                let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    lim = raised;
                }
            }
        }
        #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
        let open_files = lim.rlim_cur as u64;
        if open_files < wanted {
            tracing::warn!(
                open_files,
                wanted,
                "the open-file limit is below max_connections; raise it (ulimit -n) or lower max_connections"
            );
        }
    }
}

/// SIGHUP reads the config file's `[[block]]` list again and swaps it in whole; a list that
/// does not parse is refused and the one in force stays (the log says why).
#[cfg(unix)]
async fn reload_on_sighup(
    hangups: Option<tokio::signal::unix::Signal>,
    config: std::sync::Arc<Config>,
    cache: std::sync::Arc<crate::cache::Cache>,
) {
    {
        let Some(mut hup) = hangups else { return };
        while hup.recv().await.is_some() {
            cache.reload_advisories().await;
            match config.reload_advisories_policy() {
                Ok(policy) => cache.replace_advisory_policy(policy),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "[advisories] not reloaded; the previous policy stays in force")
                }
            }
            let event =
                audit::Event::new(audit::Action::BlockListReload, audit::Who::Operator { via: "SIGHUP".into() });
            match config.reload_block_list() {
                Ok(list) => {
                    let rules = list.len();
                    cache.replace_block_list(list);
                    cache.audit().record(event.ended(audit::Outcome::Ok, Some(format!("{rules} rules in force"))));
                }
                Err(e) => {
                    let reason = format!("{e:#}");
                    tracing::error!(error = %reason, "block list not reloaded; the previous one stays in force");
                    cache.audit().record(event.ended(audit::Outcome::Refused, Some(reason)));
                }
            }
        }
    }
}

#[cfg(not(unix))]
async fn reload_on_sighup(_: Option<()>, _: std::sync::Arc<Config>, _: std::sync::Arc<crate::cache::Cache>) {}

/// SIGTERM and SIGINT, installed once so that a second one is seen too.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
                int: signal(SignalKind::interrupt()).expect("SIGINT handler"),
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}
