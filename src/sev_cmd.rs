//! `edgeward sev …`: AMD SEV-SNP evidence.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edgeward_attestation::snp::{appraise, read_chain, read_report, Check, MinimumTcb, SnpPolicy};

#[derive(Subcommand)]
pub enum SevCommand {
    /// Verify an attestation report offline: VCEK signature, AMD chain, guest policy and the
    /// values given. Exits non-zero with every reason when anything fails.
    Verify {
        /// The report: 1184 raw bytes or their hex text.
        #[arg(long)]
        report: PathBuf,
        /// The chip's VCEK certificate (DER).
        #[arg(long)]
        vcek: PathBuf,
        /// ASK and ARK as served by AMD's KDS (PEM, ASK first); the ARK must be AMD's.
        #[arg(long)]
        chain: Option<PathBuf>,
        /// The 64-byte REPORT_DATA the guest must have bound (hex): the verifier's nonce.
        #[arg(long = "report-data", value_name = "HEX")]
        report_data: Option<String>,
        /// The expected 48-byte launch measurement (hex).
        #[arg(long, value_name = "HEX")]
        measurement: Option<String>,
        /// The minimum TCB, BOOTLOADER:TEE:SNP:MICROCODE.
        #[arg(long = "min-tcb", value_name = "B:T:S:M")]
        minimum_tcb: Option<MinimumTcb>,
        /// Accept guests whose policy allows debugging.
        #[arg(long)]
        allow_debug: bool,
        /// The VMPL the report must be requested from (0 unless a trusted paravisor asks
        /// from another).
        #[arg(long, default_value_t = 0)]
        vmpl: u32,
    },
}

fn fixed_hex<const N: usize>(text: &str, what: &str) -> Result<[u8; N]> {
    let bytes = hex::decode(text.trim()).with_context(|| format!("{what} is not hex"))?;
    bytes
        .try_into()
        .map_err(|bytes: Vec<u8>| anyhow::anyhow!("{what} is {} bytes, expected {N}", bytes.len()))
}

pub fn run(command: SevCommand) -> Result<()> {
    match command {
        SevCommand::Verify {
            report,
            vcek,
            chain,
            report_data,
            measurement,
            minimum_tcb,
            allow_debug,
            vmpl,
        } => {
            let raw = read_report(
                &std::fs::read(&report)
                    .with_context(|| format!("cannot read {}", report.display()))?,
            )?;
            let vcek_der =
                std::fs::read(&vcek).with_context(|| format!("cannot read {}", vcek.display()))?;
            let chain = match chain {
                Some(path) => {
                    Some(read_chain(&std::fs::read(&path).with_context(|| {
                        format!("cannot read {}", path.display())
                    })?)?)
                }
                None => None,
            };
            let policy = SnpPolicy {
                report_data: report_data
                    .map(|text| fixed_hex::<64>(&text, "--report-data"))
                    .transpose()?,
                measurement: measurement
                    .map(|text| fixed_hex::<48>(&text, "--measurement"))
                    .transpose()?,
                minimum_tcb,
                allow_debug,
                vmpl,
            };
            let appraisal = appraise(
                &raw,
                &vcek_der,
                chain
                    .as_ref()
                    .map(|(ask, ark)| (ask.as_slice(), ark.as_slice())),
                &policy,
            )?;
            for (name, check) in &appraisal.checks {
                let (verdict, reason) = match check {
                    Check::Passed(reason) => ("ok", reason),
                    Check::Failed(reason) => ("FAILED", reason),
                    Check::Skipped(reason) => ("skipped", reason),
                };
                println!("{name:<20} {verdict:<8} {reason}");
            }
            if !appraisal.accepted() {
                let reasons: Vec<String> = appraisal
                    .failures()
                    .map(|(name, reason)| format!("{name}: {reason}"))
                    .collect();
                bail!("report refused: {}", reasons.join("; "));
            }
            Ok(())
        }
    }
}
