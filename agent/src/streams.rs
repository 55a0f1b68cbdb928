//! Runs one PMU client per configured stream and reports what arrives: every data frame when
//! asked to, and each stream's statistics at the configured interval.

use std::io::Write;
use std::time::Duration;

use anyhow::Result;
use edgeward_measurement::client::{ClientEvent, PmuClient, SessionEvent};
use edgeward_measurement::stats::StreamStatistics;
use tokio::sync::mpsc;
use tracing::{info, info_span, warn, Instrument};

use edgeward_agent::config::{AgentConfig, EstimatedPmu, PmuStream, StreamSource};

/// What a stream task reports to the agent.
enum Report {
    Frame {
        stream: String,
        line: String,
    },
    Statistics {
        stream: String,
        statistics: StreamStatistics,
    },
    /// The stream's figures when it was told to stop, or when it ended on its own.
    Final {
        stream: String,
        statistics: StreamStatistics,
    },
}

pub async fn run(
    config: AgentConfig,
    print_frames: bool,
    duration: Option<Duration>,
) -> Result<()> {
    let (tx, mut rx) = mpsc::channel(4096);
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for stream in config.pmus.clone() {
        let span = info_span!("pmu", name = %stream.name, idcode = %stream.idcode);
        tasks.push(tokio::spawn(
            read_stream(
                stream,
                print_frames,
                config.statistics_interval,
                tx.clone(),
                stopping.clone(),
            )
            .instrument(span),
        ));
    }
    drop(tx);
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let stdout = std::io::stdout();
    let mut last: std::collections::BTreeMap<String, StreamStatistics> = Default::default();
    let mut finals: std::collections::BTreeMap<String, StreamStatistics> = Default::default();
    loop {
        tokio::select! {
            report = rx.recv() => match report {
                Some(Report::Frame { stream, line }) => {
                    let mut out = stdout.lock();
                    writeln!(out, "{stream}: {line}")?;
                }
                Some(Report::Statistics { stream, statistics }) => {
                    print_statistics(&stream, &statistics);
                    last.insert(stream, statistics);
                }
                // A stream that ended on its own (its source failed): its figures are kept
                // for the end, where every stream's are printed.
                Some(Report::Final { stream, statistics }) => {
                    warn!(%stream, "the stream ended");
                    finals.insert(stream, statistics);
                }
                None => break,
            },
            _ = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }
    // Each stream reports its figures as of now, not its last periodic snapshot; frames still
    // queued for printing are printed first.
    let _ = stop.send(true);
    let collected = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(report) = rx.recv().await {
            match report {
                Report::Frame { stream, line } => writeln!(stdout.lock(), "{stream}: {line}")?,
                Report::Statistics { stream, statistics } => {
                    last.insert(stream, statistics);
                }
                Report::Final { stream, statistics } => {
                    finals.insert(stream, statistics);
                }
            }
        }
        anyhow::Ok(())
    })
    .await;
    for task in &tasks {
        task.abort();
    }
    if let Ok(result) = collected {
        result?;
    }
    info!("stopping; final statistics follow");
    for (stream, statistics) in &last {
        match finals.get(stream) {
            Some(statistics) => print_statistics(stream, statistics),
            None => {
                warn!(%stream, "no final figures from the stream; its last snapshot follows");
                print_statistics(stream, statistics);
            }
        }
    }
    for (stream, statistics) in finals
        .iter()
        .filter(|(stream, _)| !last.contains_key(*stream))
    {
        print_statistics(stream, statistics);
    }
    Ok(())
}

fn print_statistics(stream: &str, statistics: &StreamStatistics) {
    let latency = &statistics.latency;
    println!(
        "{stream}: STATS frames={} data={} cfg={} missing={} out_of_order={} crc_errors={} undecodable={} \
         config_changes={} time={:?} latency_ms(min/mean/max)={:.1}/{:.1}/{:.1}",
        statistics.frames,
        statistics.data_frames,
        statistics.config_frames,
        statistics.missing,
        statistics.out_of_order,
        statistics.crc_errors,
        statistics.undecodable,
        statistics.config_changes,
        statistics.time_state,
        latency.min * 1e3,
        latency.mean * 1e3,
        latency.max * 1e3,
    );
}

async fn read_stream(
    stream: PmuStream,
    print_frames: bool,
    interval: Duration,
    reports: mpsc::Sender<Report>,
    stopping: tokio::sync::watch::Receiver<bool>,
) {
    match &stream.source {
        StreamSource::Remote(options) => {
            read_remote(&stream, options, print_frames, interval, reports, stopping).await
        }
        StreamSource::Estimated(pmu) => {
            read_estimated(&stream, pmu, print_frames, interval, reports, stopping).await
        }
    }
}

/// The appliance's own PMU: its frames printed and counted as a remote stream's are.
async fn read_estimated(
    stream: &PmuStream,
    pmu: &EstimatedPmu,
    print_frames: bool,
    interval: Duration,
    reports: mpsc::Sender<Report>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut estimated =
        match edgeward_agent::estimated::start(&stream.name, stream.idcode, pmu).await {
            Ok(estimated) => estimated,
            Err(error) => {
                warn!(error = %format!("{error:#}"), "the estimated PMU did not start");
                return;
            }
        };
    let config = estimated.config.clone();
    let mut statistics = StreamStatistics::new();
    statistics.record_config(false);
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stopping.changed() => break,
            frame = estimated.frames.recv() => {
                let Some(frame) = frame else {
                    let reason = estimated.failure().await;
                    warn!(%reason, "the sample source failed; the stream ends");
                    break;
                };
                let arrival = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs_f64())
                    .unwrap_or(0.0);
                statistics.record_data(&frame, &config, arrival);
                if print_frames {
                    let line = describe(&frame, &config);
                    if reports.send(Report::Frame { stream: stream.name.clone(), line }).await.is_err() {
                        return;
                    }
                }
            }
            _ = ticker.tick() => {
                let snapshot = statistics.clone();
                if reports.send(Report::Statistics { stream: stream.name.clone(), statistics: snapshot }).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = reports
        .send(Report::Final {
            stream: stream.name.clone(),
            statistics,
        })
        .await;
}

async fn read_remote(
    stream: &PmuStream,
    options: &edgeward_measurement::client::ClientOptions,
    print_frames: bool,
    interval: Duration,
    reports: mpsc::Sender<Report>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let mut client = PmuClient::spawn(options.clone());
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stopping.changed() => break,
            event = client.next_event() => {
                let Some(event) = event else { return };
                match event {
                    ClientEvent::Connected { peer } => info!(%peer, "connected"),
                    ClientEvent::Disconnected { reason } => warn!(%reason, "stream lost; reconnecting"),
                    ClientEvent::Session(SessionEvent::Config { config, changed }) => info!(
                        stations = config.pmus.len(),
                        rate = config.data_rate.0,
                        changed,
                        "configuration received"
                    ),
                    ClientEvent::Session(SessionEvent::Header(text)) => info!(%text, "header"),
                    ClientEvent::Session(SessionEvent::Dropped(reason)) => warn!(%reason, "frame dropped"),
                    ClientEvent::Session(SessionEvent::Data { frame, config }) => {
                        if print_frames {
                            let line = describe(&frame, &config);
                            if reports.send(Report::Frame { stream: stream.name.clone(), line }).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
            _ = ticker.tick() => {
                let statistics = client.statistics();
                if reports.send(Report::Statistics { stream: stream.name.clone(), statistics }).await.is_err() {
                    return;
                }
            }
        }
    }
    // Frames the client decoded but this loop had not read yet are counted in its final figures:
    // they are printed before those figures.
    let (queued, statistics) = client.stop().await;
    for event in queued {
        if let ClientEvent::Session(SessionEvent::Data { frame, config }) = event {
            if print_frames {
                let line = describe(&frame, &config);
                if reports
                    .send(Report::Frame {
                        stream: stream.name.clone(),
                        line,
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = reports
        .send(Report::Final {
            stream: stream.name.clone(),
            statistics,
        })
        .await;
}

/// One readable line per data frame: time, then per PMU the phasors as magnitude∠angle.
fn describe(
    frame: &edgeward_measurement::c37118::DataFrame,
    config: &edgeward_measurement::c37118::ConfigFrame,
) -> String {
    let mut line = format!("t={:.3}", frame.timestamp(config));
    for (block, pmu) in frame.pmus.iter().zip(&config.pmus) {
        line.push_str(&format!(" [{}", pmu.station));
        for (phasor, channel) in block.phasors.iter().zip(&pmu.phasors) {
            match phasor.to_engineering(&channel.scale) {
                Some((re, im)) => line.push_str(&format!(
                    " {}={:.2}∠{:.2}°",
                    channel.name,
                    re.hypot(im),
                    im.atan2(re).to_degrees()
                )),
                None => line.push_str(&format!(" {}=absent", channel.name)),
            }
        }
        if let Some(hz) = block.frequency.hertz(pmu.nominal_frequency) {
            line.push_str(&format!(" f={hz:.3}Hz"));
        }
        if let Some(rocof) = block.rocof.hertz_per_second() {
            line.push_str(&format!(" rocof={rocof:.2}Hz/s"));
        }
        line.push(']');
    }
    line
}
