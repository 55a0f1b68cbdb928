//! The agent's configuration file: read as TOML with unknown fields refused, then turned into
//! validated types so that the rest of the agent never sees an impossible setting.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgeward_measurement::c37118::{Frame, IdCode};
use edgeward_measurement::client::{Backoff, ClientOptions, Transport};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Seconds between statistics reports.
    #[serde(default = "default_statistics_interval")]
    statistics_interval: u64,
    #[serde(default, rename = "pmu")]
    pmus: Vec<RawPmu>,
}

fn default_statistics_interval() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
enum RawTransport {
    Tcp,
    TcpUdp,
    Udp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPmu {
    /// A short name for logs: the bay or feeder.
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
    #[serde(default = "default_backoff_max_s")]
    reconnect_max_s: u64,
}

fn default_transport() -> RawTransport {
    RawTransport::Tcp
}
fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_s() -> u64 {
    30
}

/// One PMU stream to read.
#[derive(Debug, Clone)]
pub struct PmuStream {
    pub name: String,
    pub options: ClientOptions,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub statistics_interval: Duration,
    pub pmus: Vec<PmuStream>,
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid configuration {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text)?;
        if raw.statistics_interval == 0 {
            bail!("statistics_interval must be at least 1 second");
        }
        if raw.pmus.is_empty() {
            bail!("no [[pmu]] stream is configured");
        }
        let mut names = HashSet::new();
        let mut pmus = Vec::with_capacity(raw.pmus.len());
        for pmu in raw.pmus {
            if !names.insert(pmu.name.clone()) {
                bail!("PMU name {:?} is used twice", pmu.name);
            }
            pmus.push(validate_pmu(pmu)?);
        }
        Ok(Self {
            statistics_interval: Duration::from_secs(raw.statistics_interval),
            pmus,
        })
    }
}

fn validate_pmu(pmu: RawPmu) -> Result<PmuStream> {
    let name = pmu.name;
    if pmu.idcode == 0 || pmu.idcode == u16::MAX {
        bail!(
            "PMU {name}: IDCODE {} is reserved (use 1-65534)",
            pmu.idcode
        );
    }
    if pmu.reconnect_initial_ms == 0 || pmu.reconnect_max_s * 1000 < pmu.reconnect_initial_ms {
        bail!(
            "PMU {name}: reconnect delays must satisfy 0 < reconnect_initial_ms <= reconnect_max_s"
        );
    }
    let address = |transport: &str| {
        pmu.address
            .clone()
            .with_context(|| format!("PMU {name}: transport {transport} needs `address`"))
    };
    let udp_bind = |transport: &str| {
        pmu.udp_bind
            .with_context(|| format!("PMU {name}: transport {transport} needs `udp_bind`"))
    };
    let transport = match pmu.transport {
        RawTransport::Tcp => Transport::Tcp {
            address: address("tcp")?,
        },
        RawTransport::TcpUdp => Transport::TcpUdp {
            address: address("tcp-udp")?,
            bind: udp_bind("tcp-udp")?,
        },
        RawTransport::Udp => {
            let config = match &pmu.config_cache {
                Some(path) if path.exists() => {
                    let bytes = std::fs::read(path)
                        .with_context(|| format!("PMU {name}: cannot read {}", path.display()))?;
                    match Frame::decode(&bytes, None) {
                        Ok(Frame::Config(config)) => Some(config),
                        Ok(_) => bail!(
                            "PMU {name}: {} holds no configuration frame",
                            path.display()
                        ),
                        Err(error) => bail!("PMU {name}: {}: {error}", path.display()),
                    }
                }
                _ => None,
            };
            Transport::SpontaneousUdp {
                bind: udp_bind("udp")?,
                config,
            }
        }
    };
    Ok(PmuStream {
        name,
        options: ClientOptions {
            idcode: IdCode(pmu.idcode),
            transport,
            backoff: Backoff {
                initial: Duration::from_millis(pmu.reconnect_initial_ms),
                max: Duration::from_secs(pmu.reconnect_max_s),
            },
            connect_timeout: Duration::from_secs(5),
            config_cache: pmu.config_cache,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_complete_configuration() {
        let config = AgentConfig::parse(
            r#"
            statistics_interval = 5
            [[pmu]]
            name = "bay-1"
            idcode = 7
            address = "127.0.0.1:4712"
            [[pmu]]
            name = "bay-2"
            idcode = 8
            transport = "tcp-udp"
            address = "127.0.0.1:4712"
            udp_bind = "0.0.0.0:4713"
            "#,
        )
        .expect("valid");
        assert_eq!(config.pmus.len(), 2);
        assert_eq!(config.statistics_interval, Duration::from_secs(5));
        assert!(matches!(
            config.pmus[1].options.transport,
            Transport::TcpUdp { .. }
        ));
    }

    #[test]
    fn refuses_what_cannot_work_and_says_why() {
        let cases = [
            ("[[pmu]]\nname='a'\nidcode=1\naddres='x:1'", "unknown field"),
            ("[[pmu]]\nname='a'\nidcode=0\naddress='x:1'", "reserved"),
            ("[[pmu]]\nname='a'\nidcode=1\ntransport='udp'", "needs `udp_bind`"),
            ("[[pmu]]\nname='a'\nidcode=1\ntransport='tcp'", "needs `address`"),
            (
                "[[pmu]]\nname='a'\nidcode=1\naddress='x:1'\n[[pmu]]\nname='a'\nidcode=2\naddress='x:1'",
                "used twice",
            ),
            ("statistics_interval = 5", "no [[pmu]]"),
        ];
        for (text, reason) in cases {
            let error = format!("{:#}", AgentConfig::parse(text).expect_err(text));
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
