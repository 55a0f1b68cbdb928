//! The `[[pmu]]` streams of a configuration: TOML with unknown fields refused, turned into
//! validated client options so that the agent never sees an impossible setting. The CFG-2
//! cache a spontaneous-UDP stream starts from is a file, read by the agent, not here.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use edgeward_measurement::c37118::IdCode;
use edgeward_measurement::client::{Backoff, ClientOptions, Transport};
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
    pub options: ClientOptions,
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
    let mut streams = Vec::with_capacity(raw.len());
    for pmu in raw {
        if !names.insert(pmu.name.clone()) {
            return Err(invalid(format!("PMU name {:?} is used twice", pmu.name)));
        }
        streams.push(validate(pmu)?);
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
        options: ClientOptions {
            idcode: IdCode(pmu.idcode),
            transport,
            backoff: Backoff {
                initial: Duration::from_millis(pmu.reconnect_initial_ms),
                max: Duration::from_secs(pmu.reconnect_max_seconds),
            },
            connect_timeout: Duration::from_secs(5),
            config_cache: pmu.config_cache,
        },
    })
}
