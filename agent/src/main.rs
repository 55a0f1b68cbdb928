//! `edgeward-agent`: the device daemon. It parses arguments, loads its configuration and wires
//! the library crates together; the protocols live in the libraries.
//!
//! Today it reads the substation's PMU streams and reports what it receives; later issues give
//! it attestation, signing and forwarding.

mod config;
mod init;
mod streams;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "edgeward-agent", version, about = "Edgeward device daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read every PMU stream of the configuration and report frames and statistics.
    Run {
        /// The agent configuration (TOML).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print every decoded data frame on stdout, one line each.
        #[arg(long)]
        print_frames: bool,
        /// Stop after this many seconds (default: run until SIGINT or SIGTERM).
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
    },
}

fn main() -> std::process::ExitCode {
    // As the initramfs's /init the agent brings the system up and reports what was measured.
    if std::process::id() == 1 {
        if let Err(error) = init::run() {
            println!("EDGEWARD-FAILED {error:#}");
        }
        init::power_off();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("edgeward-agent: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run {
            config,
            print_frames,
            duration,
        } => {
            let config = config::AgentConfig::load(&config)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(streams::run(
                    config,
                    print_frames,
                    duration.map(Duration::from_secs),
                ))
        }
    }
}
