//! `edgeward c37118 …`: decode captures and read live PMU streams.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;
use edgeward_measurement::c37118::Frame;
use edgeward_measurement::replay::{replay, ReplayItem};
use edgeward_measurement::report::frame_report;

#[derive(Subcommand)]
pub enum C37118Command {
    /// Decode every C37.118 frame in a libpcap capture or a raw file of frames.
    Decode {
        /// A classic libpcap capture (Ethernet/IPv4/IPv6, TCP or UDP) or a raw byte stream.
        file: PathBuf,
        /// One JSON object per frame per line.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(command: C37118Command) -> Result<()> {
    match command {
        C37118Command::Decode { file, json } => decode(&file, json),
    }
}

fn decode(file: &PathBuf, json: bool) -> Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let items = replay(&bytes).with_context(|| format!("cannot decode {}", file.display()))?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for item in items {
        match item {
            ReplayItem::Frame {
                flow,
                frame,
                config,
            } => {
                let Some(report) = frame_report(&frame, config.as_deref()) else {
                    eprintln!(
                        "{}: data frame of stream {} before any configuration of that stream: undecodable, skipped",
                        where_(flow.as_ref()),
                        frame.header().idcode
                    );
                    continue;
                };
                if json {
                    writeln!(out, "{report}")?;
                } else {
                    writeln!(out, "{}", summary(&frame, &report))?;
                }
            }
            ReplayItem::Problem { flow, problem } => {
                eprintln!("{}: {problem}", where_(flow.as_ref()));
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn where_(flow: Option<&edgeward_measurement::capture::Flow>) -> String {
    flow.map_or_else(|| "stream".to_owned(), ToString::to_string)
}

/// One readable line per frame.
fn summary(frame: &Frame, report: &serde_json::Value) -> String {
    let header = frame.header();
    let head = format!(
        "{:<7} id={:<5} soc={} fracsec={}",
        header.frame_type.name(),
        header.idcode,
        header.soc,
        header.fracsec.count()
    );
    match frame {
        Frame::Data(_) => format!("{head} pmus={}", report["pmus"]),
        Frame::Config(config) => format!(
            "{head} stations={} rate={}",
            config
                .pmus
                .iter()
                .map(|pmu| pmu.station.as_str())
                .collect::<Vec<_>>()
                .join(","),
            config.data_rate.0
        ),
        Frame::Header(header) => format!("{head} text={:?}", header.text_lossy()),
        Frame::Command(command) => format!("{head} command={}", command.command.name()),
        Frame::Cfg3Fragment(fragment) => format!("{head} cont_idx={}", fragment.cont_idx),
    }
}
