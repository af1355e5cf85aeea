//! The `larder` binary: parse the command line, set up logging, run the subcommand.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use larder::cli::{AdvisoriesCommand, Cli, Command};
use larder::commands::{self, manage::Op};
use larder::config::Config;

// jemalloc, not glibc's malloc: under the 1,000-client load (benches/thousand.rs) glibc's
// per-thread arenas held 20–25% more memory than was in use (peak RSS 222 vs 175 MiB).
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Freed memory goes back to the system within a second (a background thread purges it, and
// MADV_DONTNEED, not MADV_FREE, so RSS shows it): a cold resolve's transient page buffers must
// not stay in RSS (issue 21's memory target).
#[cfg(unix)]
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// glibc's malloc still serves the C libraries (zstd's contexts, some MB each, made on the
/// blocking pool's threads). Left to its defaults it gives each thread an arena and raises its
/// mmap threshold after each big free, so those buffers stayed in RSS after a cold resolve
/// (16–28 MB beyond jemalloc's, issue 21). One arena and a fixed threshold: big buffers are
/// mapped and unmapped, and the upkeep loop trims the rest (`telemetry`).
fn c_allocator_returns_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

fn main() -> ExitCode {
    c_allocator_returns_memory();
    let cli = Cli::parse();
    larder::telemetry::init_logging(cli.log_format);
    // reqwest is built without a default TLS provider (ring instead of aws-lc-rs).
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Store I/O runs on the blocking pool: a cold resolve briefly needs dozens of its threads,
    // whose stacks and allocator caches stay in RSS for as long as they idle (tokio's default
    // is 10 s); two seconds keeps them for bursts without holding them after one.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(2))
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => {
                commands::serve::run(Config::load(&args.settings)?).await.map(|_| ExitCode::SUCCESS)
            }
            Command::Warm(args) => commands::warm::run(Config::load(&args.settings)?, args).await,
            Command::Export(args) => commands::bundle::export(Config::load(&args.settings)?, args).await,
            Command::Import(args) => commands::bundle::import(Config::load(&args.settings)?, args).await,
            Command::Verify(args) => commands::verify::run(Config::load(&args.settings)?, args).await,
            Command::Advisories(AdvisoriesCommand::Import(args)) => {
                commands::advisories::import(Config::load(&args.settings)?, args).await
            }
            Command::Yank(args) => commands::manage::run(Op::Yank, args).await.map(|_| ExitCode::SUCCESS),
            Command::Unyank(args) => commands::manage::run(Op::Unyank, args).await.map(|_| ExitCode::SUCCESS),
            Command::Delete(args) => commands::manage::run(Op::Delete, args).await.map(|_| ExitCode::SUCCESS),
            Command::Retention(args) => commands::manage::retention(args).await,
            // Rendered in memory first: clap_complete panics when stdout goes away mid-write.
            Command::Completions { shell } => {
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "larder", &mut script);
                std::io::Write::write_all(&mut std::io::stdout(), &script)?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Man => {
                let mut page = Vec::new();
                clap_mangen::Man::new(Cli::command()).render(&mut page)?;
                std::io::Write::write_all(&mut std::io::stdout(), &page)?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match result {
        Ok(code) => code,
        // `larder man | head`: the reader went away; not an error worth a message.
        Err(e) if e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("larder: error: {e:#}");
            ExitCode::from(2)
        }
    }
}
