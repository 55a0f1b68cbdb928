//! `edgeward eventlog …`: read TCG event logs.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use edgeward_bootchain::eventlog::{parse, replay, EventData, EventLog};
use serde_json::{Map, Value};

#[derive(Subcommand)]
pub enum EventLogCommand {
    /// Replay a log into the PCR values it produces, for every bank and PCR it touches.
    Replay {
        /// A binary TCG event log (`/sys/kernel/security/tpm0/binary_bios_measurements`).
        file: PathBuf,
        /// Print `{"sha1": {"0": "hex", …}, "sha256": {…}}`.
        #[arg(long)]
        json: bool,
    },
    /// List the events readably.
    Show { file: PathBuf },
    /// Extend the log's SHA-256 digests into a TPM's PCRs, in order, to reproduce a recorded
    /// boot in a software TPM (demos and tests; a real TPM's PCRs come from its own boot).
    Extend {
        file: PathBuf,
        /// The TPM, e.g. swtpm:host=127.0.0.1,port=2321.
        #[arg(long)]
        tcti: String,
    },
}

pub fn run(command: EventLogCommand) -> Result<()> {
    match command {
        EventLogCommand::Extend { file, tcti } => {
            use edgeward_bootchain::eventlog::{EventType, HashAlgorithm};
            let log = load(&file)?;
            let extends: Vec<(u8, [u8; 32])> = log
                .events
                .iter()
                .filter(|event| event.event_type != EventType::NO_ACTION)
                .filter_map(|event| {
                    let digest = event.digest(HashAlgorithm::Sha256)?.try_into().ok()?;
                    Some((u8::try_from(event.pcr.get()).ok()?, digest))
                })
                .collect();
            let mut context = edgeward_attestation::tpm::open(&tcti)?;
            edgeward_attestation::tpm::extend_pcrs(&mut context, &extends)?;
            eprintln!("extended {} SHA-256 digests into {tcti}", extends.len());
            Ok(())
        }
        EventLogCommand::Replay { file, json } => {
            let log = load(&file)?;
            let banks =
                replay(&log).with_context(|| format!("cannot replay {}", file.display()))?;
            let mut out = std::io::stdout().lock();
            if json {
                let object: Map<String, Value> = banks
                    .banks
                    .iter()
                    .map(|(algorithm, pcrs)| {
                        let pcrs: Map<String, Value> = pcrs
                            .iter()
                            .map(|(pcr, value)| {
                                (pcr.to_string(), Value::String(hex::encode(value)))
                            })
                            .collect();
                        (algorithm.name(), Value::Object(pcrs))
                    })
                    .collect();
                writeln!(out, "{}", Value::Object(object))?;
            } else {
                for (algorithm, pcrs) in &banks.banks {
                    for (pcr, value) in pcrs {
                        writeln!(
                            out,
                            "{:<7} PCR {pcr:>2}: {}",
                            algorithm.name(),
                            hex::encode(value)
                        )?;
                    }
                }
            }
            for algorithm in &banks.unsupported {
                eprintln!(
                    "note: the {} bank is in the log but cannot be replayed here",
                    algorithm.name()
                );
            }
            Ok(())
        }
        EventLogCommand::Show { file } => {
            let log = load(&file)?;
            let mut out = std::io::stdout().lock();
            if let Some(spec) = &log.spec_id {
                let banks: Vec<String> = spec
                    .algorithms
                    .iter()
                    .map(|(algorithm, _)| algorithm.name())
                    .collect();
                writeln!(
                    out,
                    "crypto-agile log, spec {}.{} errata {}, banks {}",
                    spec.version.0,
                    spec.version.1,
                    spec.version.2,
                    banks.join(", ")
                )?;
            } else {
                writeln!(out, "legacy SHA-1 log")?;
            }
            for event in &log.events {
                writeln!(
                    out,
                    "{:>4} PCR {:>2} {:<34} {}",
                    event.index,
                    event.pcr,
                    event.event_type.name(),
                    EventData::of(event).describe()
                )?;
                for digest in &event.digests {
                    writeln!(
                        out,
                        "{:>12} {:<7} {}",
                        "",
                        digest.algorithm.name(),
                        hex::encode(&digest.bytes)
                    )?;
                }
            }
            for record in &log.unmeasured {
                writeln!(
                    out,
                    "     (not measured) {:<34} {} bytes at offset {}",
                    record.event_type.name(),
                    record.data.len(),
                    record.offset
                )?;
            }
            Ok(())
        }
    }
}

fn load(file: &Path) -> Result<EventLog> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    parse(&bytes).with_context(|| format!("{} is not a readable event log", file.display()))
}
