//! The appliance's own PMU: raw samples → estimator → reports, served as C37.118.2 when the
//! configuration says so, and handed on as data frames with the stream's CFG-2, exactly what a
//! PMU read over the network gives, so the data path treats both alike.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use edgeward_measurement::c37118::{ConfigFrame, ConfigKind, DataFrame, IdCode};
use edgeward_measurement::estimator::signal::{Nameplate, TestSignal, Waveform};
use edgeward_measurement::sample::Timestamp;
use edgeward_measurement::server::{FrequencyFormat, PmuServer, ServerOptions, Station};
use edgeward_measurement::source::{run_simulated, SimulatedSource};
use tokio::sync::mpsc;
use tracing::{info, warn, Instrument};

use crate::config::{EstimatedPmu, Sampling};

/// A running estimated stream: its configuration and its data frames as they are reported.
pub struct EstimatedStream {
    pub config: Arc<ConfigFrame>,
    pub frames: mpsc::Receiver<DataFrame>,
    /// The sample source; it ends with its reason when it fails.
    sampling: tokio::task::JoinHandle<Option<String>>,
    forwarding: tokio::task::JoinHandle<()>,
}

impl EstimatedStream {
    /// Why the sample source stopped, once `frames` has ended.
    pub async fn failure(&mut self) -> String {
        match (&mut self.sampling).await {
            Ok(Some(reason)) => reason,
            Ok(None) => "the sample source stopped".into(),
            Err(error) => format!("the sample source's task failed: {error}"),
        }
    }
}

impl Drop for EstimatedStream {
    fn drop(&mut self) {
        // A blocking ADC thread cannot be aborted: it ends at its next sample, when it finds
        // the reports' receiver gone, or within a second when data-ready falls silent.
        self.sampling.abort();
        self.forwarding.abort();
    }
}

/// STN holds 16 ASCII characters.
fn station_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii)
        .take(16)
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Starts sampling at the next whole UTC second (the time base is the appliance's clock), the
/// estimator and, when configured, the C37.118.2 server.
pub async fn start(name: &str, idcode: IdCode, pmu: &EstimatedPmu) -> Result<EstimatedStream> {
    let estimator = pmu.estimator;
    let described = match &pmu.sampling {
        Sampling::Simulated { frequency, .. } => {
            format!(
                "simulated samples at {} Hz ({frequency} Hz signal)",
                estimator.fs()
            )
        }
        Sampling::Ads131m { spi, .. } => {
            format!("an ADS131M08 on {} at {} Hz", spi.display(), estimator.fs())
        }
    };
    let header = format!(
        "Edgeward appliance PMU {name}: C37.118.1 {} class, {} fps, estimated from {described}",
        estimator.class(),
        estimator.rate(),
    );
    let station = Station::new(idcode, &station_name(name), estimator, &header, 1)
        .with_context(|| format!("PMU {name}"))?
        .with_frequency_format(if pmu.serve_integer_frequency {
            FrequencyFormat::Integer
        } else {
            FrequencyFormat::Float
        });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let config = Arc::new(station.config_frame(ConfigKind::Cfg2, now.as_secs() as u32));
    let server = if pmu.serve_tcp.is_some() || pmu.serve_udp.is_some() {
        let options = ServerOptions {
            tcp: pmu.serve_tcp,
            udp: pmu.serve_udp,
            ..ServerOptions::default()
        };
        let server = PmuServer::bind(station.clone(), options)
            .await
            .with_context(|| format!("PMU {name}: serving C37.118.2"))?;
        info!(tcp = ?server.tcp_address(), udp = ?server.udp_address(), "serving C37.118.2");
        Some(server)
    } else {
        None
    };
    let (report_tx, mut reports) = mpsc::channel(1024);
    let sampling = match pmu.sampling.clone() {
        Sampling::Simulated {
            frequency,
            noise,
            voltage,
            current,
        } => {
            let waveform = Waveform::new(
                TestSignal::Steady {
                    frequency,
                    magnitude: 1.0,
                },
                Nameplate {
                    voltage,
                    current,
                    ..Nameplate::default()
                },
                estimator.nominal().hertz(),
            );
            let start = Timestamp {
                sec: now.as_secs() + 1,
                nsec: 0,
            };
            let source =
                SimulatedSource::new(waveform, estimator.fs(), start, noise, rand::random())
                    .with_context(|| format!("PMU {name}"))?;
            info!(
                class = %estimator.class(),
                rate = estimator.rate(),
                fs = estimator.fs(),
                frequency,
                noise,
                "estimating from simulated samples"
            );
            tokio::spawn(
                async move {
                    run_simulated(source, estimator, report_tx).await;
                    None
                }
                .in_current_span(),
            )
        }
        Sampling::Ads131m {
            spi,
            spi_hz,
            drdy_chip,
            drdy_line,
            adc,
        } => {
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                let _entered = span.enter();
                read_adc(
                    &spi, spi_hz, &drdy_chip, drdy_line, adc, estimator, report_tx,
                )
            })
        }
    };
    let (frame_tx, frames) = mpsc::channel(1024);
    let forwarding = tokio::spawn(
        async move {
            while let Some(report) = reports.recv().await {
                if let Some(server) = &server {
                    if let Err(error) = server.publish(&report) {
                        warn!(%error, "a report was not served");
                    }
                }
                match station.data_frame(&report) {
                    Ok(frame) => {
                        if frame_tx.send(frame).await.is_err() {
                            return;
                        }
                    }
                    Err(error) => warn!(%error, "a report did not become a data frame"),
                }
            }
        }
        .in_current_span(),
    );
    Ok(EstimatedStream {
        config,
        frames,
        sampling,
        forwarding,
    })
}

/// Reads the ADC on this blocking thread until the stream's receiver goes (`None`) or the ADC
/// fails (its reason).
///
/// Without a PPS to start conversions on a UTC second, the first sample's time is the system
/// clock's when the ADC was configured: NTP-good to some milliseconds, so every report says
/// its clock is unlocked with a 10 ms bound (STAT bit 13), and the platform is told so.
#[allow(clippy::too_many_arguments)]
fn read_adc(
    spi: &std::path::Path,
    spi_hz: u32,
    chip: &std::path::Path,
    line: u32,
    adc: edgeward_measurement::source::ads131m::AdcConfig,
    estimator: edgeward_measurement::estimator::EstimatorConfig,
    reports: mpsc::Sender<edgeward_measurement::estimator::Report>,
) -> Option<String> {
    use edgeward_measurement::c37118::ClockState;
    use edgeward_measurement::estimator::Estimator;
    use edgeward_measurement::source::ads131m::{linux, AdcError};
    use edgeward_measurement::source::SampleSource;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let start = Timestamp {
        sec: now.as_secs(),
        nsec: now.subsec_nanos(),
    };
    let mut adc = match linux::open(
        &spi.to_string_lossy(),
        spi_hz,
        &chip.to_string_lossy(),
        line,
        adc,
        start,
    ) {
        Ok(adc) => adc,
        Err(error) => return Some(format!("the ADC did not open: {error}")),
    };
    adc.set_clock(ClockState::Unlocked { code: 8 });
    info!(fs = adc.rate(), "reading the ADS131M08");
    let mut estimator = Estimator::new(estimator, adc.start());
    loop {
        match adc.next_set() {
            Ok((set, clock)) => {
                if let Some(report) = estimator.push(&set, clock) {
                    if reports.blocking_send(report).is_err() {
                        return None;
                    }
                }
            }
            Err(AdcError::Crc { found, computed }) => {
                // The dropped sample leaves a gap: the window restarts after it.
                warn!(
                    found,
                    computed,
                    crc_errors = adc.crc_errors(),
                    "an ADC frame failed its CRC"
                );
                estimator = Estimator::new(*estimator.config(), adc.next_time());
            }
            Err(error) => return Some(format!("the ADC failed: {error}")),
        }
    }
}
