//! The device configuration: everything an appliance needs to prove itself and deliver data,
//! and nothing secret (its keys are in its TPM). TOML, unknown fields refused, turned into
//! validated types.
//!
//! ```toml
//! serial = 1                         # one more with each configuration issued (rollback.rs)
//! identity = "bay-1"                 # the identity asked of the verifier: CN, MQTT user
//! location = "substation-1"          # the location level of the topics
//!
//! [network]
//! mode = "dhcp"                      # or "static", with address = "192.0.2.20/24", gateway
//!
//! [time]
//! sntp = ["10.0.2.2:123"]            # nothing is signed before one of them answered
//!
//! [verifier]
//! url = "https://10.0.2.2:8443"
//! ca = """-----BEGIN CERTIFICATE----- …"""   # the verifier's tls-ca.crt
//! ek = "rsa"                         # as the verifier's ek_kind
//!
//! [broker]
//! addresses = ["10.0.2.2:8883"]
//! ca = """…"""                       # the platform CA
//!
//! [tsa]
//! url = "http://10.0.2.2:3000/api/v1/timestamp"
//! root = """…"""                     # the TSA's root
//!
//! [data]
//! block_seconds = 10
//! buffer_bytes = 1073741824
//! heartbeat_seconds = 10
//!
//! [[pmu]]
//! name = "bay-1"
//! idcode = 7
//! address = "10.0.2.2:4712"
//!
//! [[workload]]                       # none, one or more
//! bundle = "freq-alarm.ewb"          # in the ESP's EFI/edgeward/workloads/, signed
//! ```

use std::net::Ipv4Addr;

use edgeward_platform::identity::DeviceId;
use edgeward_platform::topics::TopicSegment;
use serde::Deserialize;

use crate::pmu::{validate_streams, PmuStream, RawPmu};
use crate::ConfigError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    serial: u64,
    identity: String,
    location: String,
    network: RawNetwork,
    time: RawTime,
    verifier: RawVerifier,
    broker: RawBroker,
    tsa: RawTsa,
    #[serde(default)]
    data: RawData,
    #[serde(rename = "pmu")]
    pmus: Vec<RawPmu>,
    #[serde(default, rename = "workload")]
    workloads: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    bundle: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    mode: String,
    interface: Option<String>,
    address: Option<String>,
    gateway: Option<Ipv4Addr>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTime {
    sntp: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVerifier {
    url: String,
    ca: String,
    ek: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBroker {
    addresses: Vec<String>,
    ca: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTsa {
    url: String,
    root: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    #[serde(default = "default_block_seconds")]
    block_seconds: u64,
    #[serde(default = "default_buffer_bytes")]
    buffer_bytes: u64,
    #[serde(default = "default_heartbeat_seconds")]
    heartbeat_seconds: u64,
}

impl Default for RawData {
    fn default() -> Self {
        Self {
            block_seconds: default_block_seconds(),
            buffer_bytes: default_buffer_bytes(),
            heartbeat_seconds: default_heartbeat_seconds(),
        }
    }
}

fn default_block_seconds() -> u64 {
    10
}
fn default_buffer_bytes() -> u64 {
    1 << 30
}
fn default_heartbeat_seconds() -> u64 {
    10
}

/// `host:port`, checked to have both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    fn parse(text: &str, what: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::Invalid(format!("{what}: {text:?} is not HOST:PORT"));
        let (host, port) = text.rsplit_once(':').ok_or_else(invalid)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| invalid())?;
        let plain = |byte: u8| byte.is_ascii_alphanumeric() || b"-.:".contains(&byte);
        if host.is_empty() || port == 0 || !host.bytes().all(plain) {
            return Err(invalid());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for HostPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A URL of `scheme://host:port/path`, without user, query or fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub address: HostPort,
    pub path: String,
}

impl Endpoint {
    fn parse(text: &str, scheme: &str, default_port: u16, what: &str) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::Invalid(format!("{what}: {text:?} {why}"));
        let rest = text
            .strip_prefix(scheme)
            .and_then(|rest| rest.strip_prefix("://"))
            .ok_or_else(|| invalid(&format!("is not a {scheme}:// URL")))?;
        if rest.contains(['@', '?', '#']) {
            return Err(invalid("carries a user, query or fragment"));
        }
        let (authority, path) = match rest.find('/') {
            Some(slash) => (&rest[..slash], &rest[slash..]),
            None => (rest, "/"),
        };
        let authority = if authority.rsplit_once(':').is_some_and(|(_, port)| {
            !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit())
        }) {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        Ok(Self {
            address: HostPort::parse(&authority, what)?,
            path: path.to_owned(),
        })
    }
}

/// How the appliance gets its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// DHCP on `interface` (default: the first Ethernet interface the kernel names).
    Dhcp { interface: Option<String> },
    Static {
        interface: Option<String>,
        address: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
    },
}

/// Which of the TPM's endorsement keys the appliance registers with (the verifier's
/// `ek_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkChoice {
    Rsa,
    Ecc,
}

impl EkChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rsa => "rsa",
            Self::Ecc => "ecc",
        }
    }
}

/// The validated device configuration.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Which issue of this device's configuration this is: an appliance refuses one older than
    /// it has run ([`crate::rollback`]).
    pub serial: u64,
    pub identity: DeviceId,
    pub location: TopicSegment,
    pub network: Network,
    /// SNTP servers, tried in order.
    pub sntp: Vec<HostPort>,
    pub verifier: Endpoint,
    /// The verifier's TLS CA (PEM).
    pub verifier_ca: String,
    /// The EK kind the verifier registers.
    pub ek: EkChoice,
    pub brokers: Vec<HostPort>,
    /// The platform CA that issued the broker's certificate (PEM).
    pub broker_ca: String,
    pub tsa: Endpoint,
    /// The root the TSA's certificate chains to (PEM).
    pub tsa_root: String,
    pub block_seconds: u64,
    pub buffer_bytes: u64,
    pub heartbeat_seconds: u64,
    pub pmus: Vec<PmuStream>,
    /// The workload bundles to run, by file name (in the ESP's `EFI/edgeward/workloads/`);
    /// each is checked against the image's workload key before it is measured and run.
    pub workloads: Vec<String>,
}

/// Bundle file names: plain names (no path), each once.
fn workload_bundles(raw: Vec<RawWorkload>) -> Result<Vec<String>, ConfigError> {
    let mut bundles: Vec<String> = Vec::new();
    for RawWorkload { bundle } in raw {
        let plain = !bundle.is_empty()
            && bundle.len() <= 64
            && !bundle.starts_with('.')
            && bundle
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b'_'));
        if !plain {
            return Err(ConfigError::Invalid(format!(
                "workload.bundle {bundle:?} is not a file name (letters, digits, '.', '-', '_'; \
                 at most 64; not starting with '.')"
            )));
        }
        if bundles.contains(&bundle) {
            return Err(ConfigError::Invalid(format!(
                "workload.bundle {bundle:?} is listed twice"
            )));
        }
        bundles.push(bundle);
    }
    Ok(bundles)
}

fn certificates(text: &str, what: &str) -> Result<String, ConfigError> {
    let blocks = pem::parse_many(text)
        .map_err(|error| ConfigError::Invalid(format!("{what} is not PEM: {error}")))?;
    let certificates = blocks
        .iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .count();
    if certificates == 0 || certificates != blocks.len() {
        return Err(ConfigError::Invalid(format!(
            "{what} must hold certificates only, at least one (a configuration holds no key)"
        )));
    }
    Ok(text.to_owned())
}

fn in_range(value: u64, low: u64, high: u64, what: &str) -> Result<u64, ConfigError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(ConfigError::Invalid(format!(
            "{what} is {value}; it must be {low} to {high}"
        )))
    }
}

impl DeviceConfig {
    /// Parses and validates a configuration's text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|error| ConfigError::Toml(error.to_string()))?;
        let identity = DeviceId::new(&raw.identity)
            .map_err(|error| ConfigError::Invalid(format!("identity: {error}")))?;
        let location = TopicSegment::new(&raw.location)
            .map_err(|error| ConfigError::Invalid(format!("location: {error}")))?;
        let network = match raw.network.mode.as_str() {
            "dhcp" => {
                if raw.network.address.is_some() || raw.network.gateway.is_some() {
                    return Err(ConfigError::Invalid(
                        "network: address and gateway are for mode = \"static\"".into(),
                    ));
                }
                Network::Dhcp {
                    interface: raw.network.interface,
                }
            }
            "static" => {
                let text = raw.network.address.ok_or_else(|| {
                    ConfigError::Invalid("network: mode = \"static\" needs address".into())
                })?;
                let invalid =
                    || ConfigError::Invalid(format!("network: address {text:?} is not A.B.C.D/N"));
                let (address, prefix) = text.split_once('/').ok_or_else(invalid)?;
                let address: Ipv4Addr = address.parse().map_err(|_| invalid())?;
                let prefix: u8 = prefix
                    .parse()
                    .ok()
                    .filter(|prefix| (1..=32).contains(prefix))
                    .ok_or_else(invalid)?;
                Network::Static {
                    interface: raw.network.interface,
                    address,
                    prefix,
                    gateway: raw.network.gateway,
                }
            }
            other => {
                return Err(ConfigError::Invalid(format!(
                    "network: mode {other:?} is not \"dhcp\" or \"static\""
                )))
            }
        };
        if raw.time.sntp.is_empty() {
            return Err(ConfigError::Invalid(
                "time: sntp lists no server; the appliance signs nothing before it knows the time"
                    .into(),
            ));
        }
        let sntp = raw
            .time
            .sntp
            .iter()
            .map(|server| HostPort::parse(server, "time.sntp"))
            .collect::<Result<_, _>>()?;
        let ek = match raw.verifier.ek.as_str() {
            "rsa" => EkChoice::Rsa,
            "ecc" => EkChoice::Ecc,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "verifier.ek {other:?} is not \"rsa\" or \"ecc\""
                )))
            }
        };
        if raw.broker.addresses.is_empty() {
            return Err(ConfigError::Invalid("broker: addresses lists none".into()));
        }
        let brokers = raw
            .broker
            .addresses
            .iter()
            .map(|address| HostPort::parse(address, "broker.addresses"))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            serial: in_range(raw.serial, 1, crate::rollback::MAX_SERIAL, "serial")?,
            identity,
            location,
            network,
            sntp,
            verifier: Endpoint::parse(&raw.verifier.url, "https", 443, "verifier.url")?,
            verifier_ca: certificates(&raw.verifier.ca, "verifier.ca")?,
            ek,
            brokers,
            broker_ca: certificates(&raw.broker.ca, "broker.ca")?,
            tsa: Endpoint::parse(&raw.tsa.url, "http", 80, "tsa.url")?,
            tsa_root: certificates(&raw.tsa.root, "tsa.root")?,
            block_seconds: in_range(raw.data.block_seconds, 1, 3600, "data.block_seconds")?,
            buffer_bytes: in_range(raw.data.buffer_bytes, 1 << 20, 1 << 40, "data.buffer_bytes")?,
            heartbeat_seconds: in_range(
                raw.data.heartbeat_seconds,
                1,
                3600,
                "data.heartbeat_seconds",
            )?,
            pmus: validate_streams(raw.pmus)?,
            workloads: workload_bundles(raw.workloads)?,
        })
    }
}
