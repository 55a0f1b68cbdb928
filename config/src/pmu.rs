//! The `[[pmu]]` streams of a configuration: TOML with unknown fields refused, turned into
//! validated client options so that the agent never sees an impossible setting. The CFG-2
//! cache a spontaneous-UDP stream starts from is a file, read by the agent, not here.
//!
//! A stream is either a PMU the appliance reads over C37.118.2 (`address`, `transport`, …) or
//! the appliance's own PMU (`[pmu.estimate]`): phasors estimated from raw samples, optionally
//! served as C37.118.2 to local PDCs:
//!
//! ```toml
//! [[pmu]]
//! name = "feeder-3"
//! idcode = 9
//! [pmu.estimate]
//! class = "P"                  # P or M (C37.118.1)
//! nominal = 50                 # 50 or 60 Hz
//! rate = 50                    # reports per second
//! sampling = "simulated"       # the C37.118.1 steady-state signal, at `frequency`, with `noise`
//! fs = 10000                   # samples per second
//! frequency = 50.02            # Hz (default: nominal)
//! noise = 0.0005               # per unit of the rated values (default 0)
//! voltage = 230.0              # rated RMS values (defaults 230 V, 5 A)
//! current = 5.0
//! serve_tcp = "0.0.0.0:4712"   # optional: C37.118.2 to local PDCs
//! serve_udp = "0.0.0.0:4713"   # optional
//! serve_integer_frequency = false   # FREQ as integer mHz, for PDCs that misread float
//! ```
//!
//! With `sampling = "ads131m"` the samples come from an ADS131M08 (`fs` = clock_hz / 2 / osr):
//!
//! ```toml
//! [pmu.estimate.adc]
//! spi = "/dev/spidev0.0"
//! drdy_chip = "/dev/gpiochip0"
//! drdy_line = 25
//! clock_hz = 10240000
//! osr = 512
//! gains = [1, 1, 1, 4, 4, 4, 1, 1]
//! channels = [0, 1, 2, 3, 4, 5]        # ADC channels of Va, Vb, Vc, Ia, Ib, Ic
//! scale = [400.0, 400.0, 400.0, 40.0, 40.0, 40.0]   # primary V or A per volt at the pin
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgeward_measurement::c37118::{IdCode, NominalFrequency};
use edgeward_measurement::client::{Backoff, ClientOptions, Transport};
use edgeward_measurement::estimator::{Class, EstimatorConfig};
use serde::Deserialize;

use crate::ConfigError;

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum RawTransport {
    Tcp,
    TcpUdp,
    Udp,
}

/// One `[[pmu]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPmu {
    /// A short name for logs and the topic's point level: the bay or feeder.
    name: String,
    idcode: u16,
    #[serde(default = "default_transport")]
    transport: RawTransport,
    /// `host:port` of the PMU's command port (tcp, tcp-udp).
    address: Option<String>,
    /// Local `ip:port` that data datagrams arrive on (tcp-udp, udp).
    udp_bind: Option<SocketAddr>,
    /// A CFG-2 frame file: where the latest configuration is kept, and, for spontaneous UDP,
    /// read at start so data decodes before the stream sends its own.
    config_cache: Option<PathBuf>,
    #[serde(default = "default_backoff_initial_ms")]
    reconnect_initial_ms: u64,
    #[serde(default = "default_backoff_max_seconds")]
    reconnect_max_seconds: u64,
    /// The appliance is this PMU.
    estimate: Option<RawEstimate>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
enum RawClass {
    P,
    M,
}

/// Where an estimated stream's raw samples come from.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RawSampling {
    Simulated,
    Ads131m,
}

/// `[pmu.estimate.adc]`: an ADS131M08 on SPI with a data-ready GPIO line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdc {
    spi: PathBuf,
    #[serde(default = "default_spi_hz")]
    spi_hz: u32,
    drdy_chip: PathBuf,
    drdy_line: u32,
    clock_hz: u32,
    osr: u32,
    gains: [u8; 8],
    channels: [u8; 6],
    scale: [f64; 6],
}

fn default_spi_hz() -> u32 {
    8_000_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEstimate {
    class: RawClass,
    nominal: u32,
    rate: u32,
    sampling: RawSampling,
    fs: u32,
    frequency: Option<f64>,
    #[serde(default)]
    noise: f64,
    #[serde(default = "default_voltage")]
    voltage: f64,
    #[serde(default = "default_current")]
    current: f64,
    serve_tcp: Option<SocketAddr>,
    serve_udp: Option<SocketAddr>,
    #[serde(default)]
    serve_integer_frequency: bool,
    adc: Option<RawAdc>,
}

fn default_voltage() -> f64 {
    230.0
}
fn default_current() -> f64 {
    5.0
}

fn default_transport() -> RawTransport {
    RawTransport::Tcp
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_seconds() -> u64 {
    30
}

/// One PMU stream to read.
#[derive(Debug, Clone)]
pub struct PmuStream {
    pub name: String,
    pub idcode: IdCode,
    pub source: StreamSource,
}

/// Where a stream's reports come from.
#[derive(Debug, Clone)]
pub enum StreamSource {
    /// A PMU or PDC read over C37.118.2.
    Remote(ClientOptions),
    /// The appliance's own estimator.
    Estimated(EstimatedPmu),
}

/// The appliance's own PMU: what it estimates, from what, and where it serves the result.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimatedPmu {
    pub estimator: EstimatorConfig,
    pub sampling: Sampling,
    pub serve_tcp: Option<SocketAddr>,
    pub serve_udp: Option<SocketAddr>,
    pub serve_integer_frequency: bool,
}

/// The raw samples of an estimated stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Sampling {
    /// An ADS131M08 on `spi` (SPI mode 1 at `spi_hz`) with data-ready on `drdy_line` of
    /// `drdy_chip`.
    Ads131m {
        spi: PathBuf,
        spi_hz: u32,
        drdy_chip: PathBuf,
        drdy_line: u32,
        adc: edgeward_measurement::source::ads131m::AdcConfig,
    },
    /// The C37.118.1 steady-state signal at `frequency` Hz, with white noise of `noise` per unit,
    /// on the rated `voltage` and `current` (RMS), taken on the appliance's UTC clock.
    Simulated {
        frequency: f64,
        noise: f64,
        voltage: f64,
        current: f64,
    },
}

impl PmuStream {
    /// The client options of a stream read over C37.118.2.
    pub fn remote(&self) -> Option<&ClientOptions> {
        match &self.source {
            StreamSource::Remote(options) => Some(options),
            StreamSource::Estimated(_) => None,
        }
    }
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid(reason)
}

/// Validates the streams: at least one, names unique, each one complete for its transport.
pub fn validate_streams(raw: Vec<RawPmu>) -> Result<Vec<PmuStream>, ConfigError> {
    if raw.is_empty() {
        return Err(invalid("no [[pmu]] stream is configured".into()));
    }
    let mut names = HashSet::new();
    let mut served = HashSet::new();
    let mut streams = Vec::with_capacity(raw.len());
    for pmu in raw {
        if !names.insert(pmu.name.clone()) {
            return Err(invalid(format!("PMU name {:?} is used twice", pmu.name)));
        }
        let stream = validate(pmu)?;
        if let StreamSource::Estimated(estimated) = &stream.source {
            let addresses = [("tcp", estimated.serve_tcp), ("udp", estimated.serve_udp)];
            for (protocol, address) in addresses {
                if let Some(address) = address {
                    if !served.insert((protocol, address)) {
                        return Err(invalid(format!(
                            "PMU {}: {protocol} {address} is served by another stream too",
                            stream.name
                        )));
                    }
                }
            }
        }
        streams.push(stream);
    }
    Ok(streams)
}

fn validate(pmu: RawPmu) -> Result<PmuStream, ConfigError> {
    let name = pmu.name;
    if pmu.idcode == 0 || pmu.idcode == u16::MAX {
        return Err(invalid(format!(
            "PMU {name}: IDCODE {} is reserved (use 1-65534)",
            pmu.idcode
        )));
    }
    if pmu.reconnect_initial_ms == 0 || pmu.reconnect_max_seconds * 1000 < pmu.reconnect_initial_ms
    {
        return Err(invalid(format!(
            "PMU {name}: reconnect delays must satisfy 0 < reconnect_initial_ms <= reconnect_max_seconds"
        )));
    }
    if let Some(estimate) = pmu.estimate {
        let remote_fields = pmu.address.is_some()
            || pmu.udp_bind.is_some()
            || pmu.config_cache.is_some()
            || !matches!(pmu.transport, RawTransport::Tcp);
        if remote_fields {
            return Err(invalid(format!(
                "PMU {name}: [pmu.estimate] makes the appliance the PMU; `address`, `transport`, \
                 `udp_bind` and `config_cache` are for a PMU read over the network"
            )));
        }
        let estimated = validate_estimate(&name, estimate)?;
        return Ok(PmuStream {
            name,
            idcode: IdCode(pmu.idcode),
            source: StreamSource::Estimated(estimated),
        });
    }
    let address = |transport: &str| {
        pmu.address
            .clone()
            .ok_or_else(|| invalid(format!("PMU {name}: transport {transport} needs `address`")))
    };
    let udp_bind = |transport: &str| {
        pmu.udp_bind.ok_or_else(|| {
            invalid(format!(
                "PMU {name}: transport {transport} needs `udp_bind`"
            ))
        })
    };
    let transport = match pmu.transport {
        RawTransport::Tcp => Transport::Tcp {
            address: address("tcp")?,
        },
        RawTransport::TcpUdp => Transport::TcpUdp {
            address: address("tcp-udp")?,
            bind: udp_bind("tcp-udp")?,
        },
        RawTransport::Udp => Transport::SpontaneousUdp {
            bind: udp_bind("udp")?,
            config: None,
        },
    };
    Ok(PmuStream {
        name,
        idcode: IdCode(pmu.idcode),
        source: StreamSource::Remote(ClientOptions {
            idcode: IdCode(pmu.idcode),
            transport,
            backoff: Backoff {
                initial: Duration::from_millis(pmu.reconnect_initial_ms),
                max: Duration::from_secs(pmu.reconnect_max_seconds),
            },
            connect_timeout: Duration::from_secs(5),
            config_cache: pmu.config_cache,
        }),
    })
}

fn validate_adc(name: &str, raw: RawAdc, fs: u32) -> Result<Sampling, ConfigError> {
    use edgeward_measurement::source::ads131m::{AdcConfig, Gain, Osr};
    let osr = match raw.osr {
        128 => Osr::X128,
        256 => Osr::X256,
        512 => Osr::X512,
        1024 => Osr::X1024,
        2048 => Osr::X2048,
        4096 => Osr::X4096,
        8192 => Osr::X8192,
        16256 => Osr::X16256,
        other => {
            return Err(invalid(format!(
                "PMU {name}: osr = {other}; the ADS131M08 has 128, 256, …, 8192 and 16256"
            )))
        }
    };
    if raw.clock_hz == 0
        || !raw.clock_hz.is_multiple_of(2 * raw.osr)
        || raw.clock_hz / 2 / raw.osr != fs
    {
        return Err(invalid(format!(
            "PMU {name}: clock_hz / 2 / osr = {} / 2 / {} must be fs = {fs} exactly",
            raw.clock_hz, raw.osr
        )));
    }
    let mut gains = Vec::with_capacity(8);
    for gain in raw.gains {
        gains.push(
            Gain::new(gain).ok_or_else(|| {
                invalid(format!("PMU {name}: gain {gain} is not 1, 2, 4, …, 128"))
            })?,
        );
    }
    let mut seen = HashSet::new();
    for channel in raw.channels {
        if channel > 7 || !seen.insert(channel) {
            return Err(invalid(format!(
                "PMU {name}: channels must be six different ADC channels 0–7, not {:?}",
                raw.channels
            )));
        }
    }
    if raw
        .scale
        .iter()
        .any(|scale| !scale.is_finite() || *scale <= 0.0)
    {
        return Err(invalid(format!(
            "PMU {name}: every scale is a positive number (primary units per volt at the pin)"
        )));
    }
    let gains: [Gain; 8] = gains
        .try_into()
        .map_err(|_| invalid(format!("PMU {name}: eight gains")))?;
    Ok(Sampling::Ads131m {
        spi: raw.spi,
        spi_hz: raw.spi_hz,
        drdy_chip: raw.drdy_chip,
        drdy_line: raw.drdy_line,
        adc: AdcConfig {
            clock_hz: raw.clock_hz,
            osr,
            gains,
            channels: raw.channels,
            scale: raw.scale,
        },
    })
}

fn validate_estimate(name: &str, raw: RawEstimate) -> Result<EstimatedPmu, ConfigError> {
    let nominal = match raw.nominal {
        50 => NominalFrequency::Hz50,
        60 => NominalFrequency::Hz60,
        other => {
            return Err(invalid(format!(
                "PMU {name}: nominal = {other}; it is 50 or 60 (Hz)"
            )))
        }
    };
    let class = match raw.class {
        RawClass::P => Class::P,
        RawClass::M => Class::M,
    };
    let estimator = EstimatorConfig::new(class, nominal, raw.rate, raw.fs)
        .map_err(|error| invalid(format!("PMU {name}: {error}")))?;
    let f0 = nominal.hertz();
    let frequency = raw.frequency.unwrap_or(f0);
    // Within the widest C37.118.1 range (M class, ±5 Hz) the estimate is held to its limits.
    if !frequency.is_finite() || (frequency - f0).abs() > 5.0 {
        return Err(invalid(format!(
            "PMU {name}: a simulated frequency of {frequency} Hz is outside {f0} ± 5 Hz"
        )));
    }
    if !(0.0..=0.1).contains(&raw.noise) {
        return Err(invalid(format!(
            "PMU {name}: noise = {} per unit; it is between 0 and 0.1",
            raw.noise
        )));
    }
    for (what, value) in [("voltage", raw.voltage), ("current", raw.current)] {
        if !value.is_finite() || value <= 0.0 {
            return Err(invalid(format!(
                "PMU {name}: the rated {what} must be a positive number, not {value}"
            )));
        }
    }
    let sampling = match (raw.sampling, raw.adc) {
        (RawSampling::Simulated, None) => Sampling::Simulated {
            frequency,
            noise: raw.noise,
            voltage: raw.voltage,
            current: raw.current,
        },
        (RawSampling::Simulated, Some(_)) => {
            return Err(invalid(format!(
                "PMU {name}: [pmu.estimate.adc] is for sampling = \"ads131m\", not simulated"
            )))
        }
        (RawSampling::Ads131m, None) => {
            return Err(invalid(format!(
                "PMU {name}: sampling = \"ads131m\" needs [pmu.estimate.adc]"
            )))
        }
        (RawSampling::Ads131m, Some(adc)) => validate_adc(name, adc, raw.fs)?,
    };
    Ok(EstimatedPmu {
        estimator,
        sampling,
        serve_tcp: raw.serve_tcp,
        serve_udp: raw.serve_udp,
        serve_integer_frequency: raw.serve_integer_frequency,
    })
}
