//! `edgeward-demo`: the demos on the test rig (`edgeward_tests::demo`). `qemu/demo` runs
//! `edgeward-demo appliance`; `edgeward-demo data-path` is the data path without QEMU.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use edgeward_tests::demo;

#[derive(Parser)]
#[command(
    name = "edgeward-demo",
    about = "Edgeward end to end on this machine, on the test rig"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PmuArg {
    Pypmu,
    Simulated,
}

#[derive(Subcommand)]
enum Command {
    /// The released image, configured for one device, booted in QEMU against a central side on
    /// this machine; then every recorded block verified.
    Appliance {
        /// The released image (`edgeward image build --out`).
        #[arg(long, value_name = "DIR")]
        image: PathBuf,
        /// The keys it was built with (its config key signs the device configuration).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        /// Where the central side, the device's disk and TPM, the store and the logs go (a new
        /// or empty directory, or an earlier run's).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Verified blocks to wait for before stopping.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
        blocks: u64,
        /// Seconds to keep everything running after the first verified block, for outside tools
        /// to attach (`DIR/broker.txt`, `DIR/pki/admin.crt`). Ctrl-C ends the hold early.
        #[arg(long, value_name = "SECONDS", default_value_t = 0)]
        hold: u64,
        /// A signed workload bundle (`edgeward workload pack`, `sign`) to release at the
        /// verifier and run in the appliance; its alerts are counted in the summary. Once per
        /// bundle.
        #[arg(long = "workload", value_name = "FILE")]
        workloads: Vec<PathBuf>,
        /// Where bay-1's synchrophasors come from: pyPMU on this machine, or the appliance's
        /// own estimator on simulated samples (`[pmu.estimate]`).
        #[arg(long, value_enum, default_value = "pypmu")]
        pmu: PmuArg,
        /// The simulated signal's frequency with `--pmu simulated`.
        #[arg(long, value_name = "HZ", default_value_t = 50.08)]
        frequency: f64,
    },
    /// PMU samples to a platform-layout store, signed in the TPM and time-stamped, without QEMU.
    DataPath {
        /// Where the store, the PKI and the logs go (a new or empty directory, or an earlier
        /// run's).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Seconds of streaming.
        #[arg(long, default_value_t = 15)]
        duration: u64,
        /// Block length in seconds.
        #[arg(long, default_value_t = 2)]
        block_seconds: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The rig stops at the first failure with a panic that says what failed; unwinding stops
    // every process it started. Say it in one line, without a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("a part of the rig failed");
        eprintln!("edgeward-demo: {message}");
    }));
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Appliance {
            image,
            keys,
            out,
            blocks,
            hold,
            workloads,
            pmu,
            frequency,
        } => demo::appliance(&demo::ApplianceDemo {
            image,
            keys,
            out,
            blocks: blocks as usize,
            hold,
            workloads,
            pmu: match pmu {
                PmuArg::Pypmu => demo::DemoPmu::PyPmu,
                PmuArg::Simulated => demo::DemoPmu::Estimated { frequency },
            },
        }),
        Command::DataPath {
            out,
            duration,
            block_seconds,
        } => demo::data_path(&demo::DataPath {
            out,
            duration,
            block_seconds,
        }),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("edgeward-demo: {message}");
            ExitCode::FAILURE
        }
        // Already said by the hook.
        Err(_) => ExitCode::FAILURE,
    }
}
