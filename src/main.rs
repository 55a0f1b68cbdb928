//! `edgeward`: the operator and central-side command line. It parses arguments and wires the
//! library crates together; behaviour lives in the libraries.

mod c37118_cmd;
mod config_cmd;
mod eventlog_cmd;
mod image_cmd;
mod pmu_cmd;
mod proof_trust;
mod recorder;
mod sev_cmd;
mod tsa_cmd;
mod verifier;
mod verify_data;
mod workload_cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "edgeward",
    version,
    about = "Edgeward operator and central-side tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// IEEE C37.118.2 synchrophasor tools.
    #[command(name = "c37118", subcommand)]
    C37118(c37118_cmd::C37118Command),
    /// TCG event logs: replay and inspect.
    #[command(subcommand)]
    Eventlog(eventlog_cmd::EventLogCommand),
    /// Secure Boot, workload, release and configuration keys.
    #[command(subcommand)]
    Keys(image_cmd::KeysCommand),
    /// Device configurations: sign one for an appliance, check a signed one.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// The signed, measured boot image.
    #[command(subcommand)]
    Image(image_cmd::ImageCommand),
    /// PCR prediction from image artifacts.
    #[command(subcommand)]
    Bootchain(image_cmd::BootchainCommand),
    /// AMD SEV-SNP attestation evidence.
    #[command(subcommand)]
    Sev(sev_cmd::SevCommand),
    /// The appliance's own PMU: estimate synchrophasors from raw samples.
    #[command(subcommand)]
    Pmu(pmu_cmd::PmuCommand),
    /// The attestation verifier and device CA: serve, list, deny.
    #[command(subcommand)]
    Verifier(verifier::VerifierCommand),
    /// An RFC 3161 time-stamping authority for tests and demos.
    #[command(subcommand)]
    Tsa(tsa_cmd::TsaCommand),
    /// Signed workload bundles: pack a directory, sign it.
    #[command(subcommand)]
    Workload(workload_cmd::WorkloadCommand),
    /// Record samples, tokens and signatures from the broker into a platform-layout store.
    Recorder(recorder::RecorderArgs),
    /// Check every block of a store: digest, time-stamp token and device signature.
    VerifyData(verify_data::VerifyDataArgs),
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGEWARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // A reader that stops early (`| head`) is not an error worth reporting.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|error| error.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("edgeward: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::C37118(command) => c37118_cmd::run(command),
        Command::Eventlog(command) => eventlog_cmd::run(command),
        Command::Keys(command) => image_cmd::keys(command),
        Command::Config(command) => config_cmd::run(command),
        Command::Workload(command) => workload_cmd::run(command),
        Command::Pmu(command) => pmu_cmd::run(command),
        Command::Tsa(command) => tsa_cmd::run(command),
        Command::Recorder(args) => recorder::run(args),
        Command::VerifyData(args) => {
            if verify_data::run(args)? {
                Ok(())
            } else {
                anyhow::bail!("some blocks did not verify")
            }
        }
        Command::Image(command) => image_cmd::image(command),
        Command::Bootchain(command) => image_cmd::bootchain(command),
        Command::Sev(command) => sev_cmd::run(command),
        Command::Verifier(command) => verifier::run(command),
    }
}
