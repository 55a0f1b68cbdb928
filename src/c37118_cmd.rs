//! `edgeward c37118 …`: decode captures and read live PMU streams.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use std::time::Duration;

use edgeward_measurement::c37118::{Command, Frame, IdCode};
use edgeward_measurement::client::{ClientEvent, ClientOptions, PmuClient, SessionEvent};
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
    /// Connect to a PMU as a client, fetch its CFG-2, turn data on and print data frames.
    Read {
        /// The PMU's TCP address.
        #[arg(long, value_name = "HOST:PORT")]
        tcp: String,
        /// The stream's IDCODE.
        #[arg(long = "id", value_name = "IDCODE")]
        idcode: u16,
        /// Stop after this many data frames (default: run until interrupted).
        #[arg(long)]
        frames: Option<u64>,
        /// One JSON object per data frame per line.
        #[arg(long)]
        json: bool,
        /// Give up when no data frame arrived for this many seconds.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
}

pub fn run(command: C37118Command) -> Result<()> {
    match command {
        C37118Command::Decode { file, json } => decode(&file, json),
        C37118Command::Read {
            tcp,
            idcode,
            frames,
            json,
            timeout,
        } => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?
            .block_on(read(tcp, IdCode(idcode), frames, json, timeout)),
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

async fn read(
    address: String,
    idcode: IdCode,
    frames: Option<u64>,
    json: bool,
    timeout: u64,
) -> Result<()> {
    let mut client = PmuClient::spawn(ClientOptions::tcp(address.clone(), idcode));
    let mut printed = 0u64;
    let mut last_error = None;
    let stdout = std::io::stdout();
    loop {
        if frames.is_some_and(|wanted| printed >= wanted) {
            break;
        }
        let event = tokio::select! {
            event = tokio::time::timeout(Duration::from_secs(timeout), client.next_event()) => event,
            _ = tokio::signal::ctrl_c() => break,
        };
        let event = match event {
            Ok(Some(event)) => event,
            Ok(None) => bail!("the client stopped"),
            Err(_) => bail!(
                "no data frame from {address} (IDCODE {idcode}) within {timeout} s{}",
                last_error
                    .map(|error| format!("; last problem: {error}"))
                    .unwrap_or_default()
            ),
        };
        match event {
            ClientEvent::Session(SessionEvent::Data { frame, config }) => {
                let frame = Frame::Data(frame);
                let Some(report) = frame_report(&frame, Some(&config)) else {
                    continue;
                };
                let mut out = stdout.lock();
                if json {
                    writeln!(out, "{report}")?;
                } else {
                    writeln!(out, "{}", summary(&frame, &report))?;
                }
                out.flush()?;
                printed += 1;
            }
            ClientEvent::Session(SessionEvent::Config { config, .. }) => {
                tracing::info!(
                    stations = config.pmus.len(),
                    rate = config.data_rate.0,
                    "configuration received"
                );
            }
            ClientEvent::Session(SessionEvent::Dropped(reason)) => eprintln!("{address}: {reason}"),
            ClientEvent::Session(SessionEvent::Header(_)) | ClientEvent::Connected { .. } => {}
            ClientEvent::Disconnected { reason } => {
                eprintln!("{address}: {reason}; retrying");
                last_error = Some(reason);
            }
        }
    }
    client.send(Command::DataOff).await;
    // Give the command a moment to leave before the connection is dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let statistics = client.statistics();
    tracing::info!(?statistics, "stream statistics");
    Ok(())
}
