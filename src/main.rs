//! The `larder` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use larder::cli::{Cli, Command, LogFormat};
use larder::config::Config;
use larder::state::AppState;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // reqwest is built without a default TLS provider (ring instead of aws-lc-rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve(Config::load(&args.settings)?).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging(format: LogFormat) {
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

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot listen on {}: {e}; pick another address with --listen",
                config.listen
            )
        })?;
    let addr = listener.local_addr()?;
    match &config.upstream {
        Some(up) => tracing::info!(upstream = %up, "pulling through from upstream"),
        None => tracing::warn!(
            "no upstream configured (--upstream / LARDER_UPSTREAM): serving only what is already stored"
        ),
    }
    let state = AppState::new(config).await?;
    tracing::info!(store = %state.store.location(), "store opened");
    tracing::info!("listening on http://{addr}");
    larder::server::serve(listener, state, shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
