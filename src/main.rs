//! The `larder` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::Parser;
use larder::cli::{Cli, Command};
use larder::commands::{self, manage::Op};
use larder::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    larder::telemetry::init_logging(cli.log_format);
    // reqwest is built without a default TLS provider (ring instead of aws-lc-rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                commands::serve::run(Config::load(&args.settings)?).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Warm(args) => commands::warm::run(Config::load(&args.settings)?, args).await,
            Command::Export(args) => commands::bundle::export(Config::load(&args.settings)?, args).await,
            Command::Import(args) => commands::bundle::import(Config::load(&args.settings)?, args).await,
            Command::Verify(args) => commands::verify::run(Config::load(&args.settings)?, args).await,
            Command::Yank(args) => commands::manage::run(Op::Yank, args).await.map(|_| ExitCode::SUCCESS),
            Command::Unyank(args) => commands::manage::run(Op::Unyank, args).await.map(|_| ExitCode::SUCCESS),
            Command::Delete(args) => commands::manage::run(Op::Delete, args).await.map(|_| ExitCode::SUCCESS),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("larder: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
