//! `larder serve`: open the store, bind, and serve until SIGINT or SIGTERM.

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
    match &config.upstream {
        _ if config.offline => {
            tracing::warn!("offline: Larder never contacts the upstream; serving only what is stored")
        }
        Some(up) => tracing::info!(upstream = %up, "pulling through from upstream"),
        None => tracing::warn!(
            "no upstream configured (--upstream / LARDER_UPSTREAM): serving private packages and what is already stored only"
        ),
    }
    if config.tokens.is_empty() {
        tracing::info!("no tokens configured: uploads are refused (set LARDER_TOKEN or [[tokens]] in the config)");
    }
    let mut state = AppState::new(config).await?;
    state.metrics = Some(crate::telemetry::install_metrics()?);
    tracing::info!(store = %state.store.location(), "store opened");
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!("listening on {scheme}://{addr}");
    crate::server::serve(listener, state, tls, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
