//! A device configuration built in code and written as the TOML that [`DeviceConfig::parse`]
//! reads: what `edgeward demo appliance` and the tests write for a device, so that the keys are
//! spelt where they are parsed and nowhere else. The text is what gets signed; a draft is not
//! validated until it is parsed, as any operator's file is.
//!
//! [`DeviceConfig::parse`]: crate::DeviceConfig::parse

use serde::Serialize;

use crate::ConfigError;

/// A configuration for a device on DHCP, with the central side's endpoints and roots.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Which issue of the device's configuration (one more each time).
    pub serial: u64,
    pub identity: String,
    pub location: String,
    /// `host:port` of each SNTP server.
    pub sntp: Vec<String>,
    /// `https://host:port` of the verifier.
    pub verifier_url: String,
    /// The verifier's TLS CA (PEM).
    pub verifier_ca: String,
    /// `rsa` or `ecc`, as the verifier's `ek_kind`.
    pub ek: String,
    /// `host:port` of each broker.
    pub brokers: Vec<String>,
    /// The platform CA (PEM).
    pub broker_ca: String,
    /// `http://host:port/path` of the TSA.
    pub tsa_url: String,
    /// The TSA's root (PEM).
    pub tsa_root: String,
    /// `None` leaves the default.
    pub block_seconds: Option<u64>,
    pub heartbeat_seconds: Option<u64>,
    pub buffer_bytes: Option<u64>,
    /// TCP PMU streams: name, IDCODE, `host:port`.
    pub pmus: Vec<(String, u16, String)>,
    /// Streams the appliance estimates itself, from simulated samples.
    pub estimated: Vec<EstimatedDraft>,
    /// Workload bundles (file names in the ESP's `EFI/edgeward/workloads/`).
    pub workloads: Vec<String>,
}

#[derive(Serialize)]
struct Document<'a> {
    serial: u64,
    identity: &'a str,
    location: &'a str,
    network: Network,
    time: Time<'a>,
    verifier: Verifier<'a>,
    broker: Broker<'a>,
    tsa: Tsa<'a>,
    data: Data,
    pmu: Vec<Pmu<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    workload: Vec<Workload<'a>>,
}

#[derive(Serialize)]
struct Workload<'a> {
    bundle: &'a str,
}

#[derive(Serialize)]
struct Network {
    mode: &'static str,
}

#[derive(Serialize)]
struct Time<'a> {
    sntp: &'a [String],
}

#[derive(Serialize)]
struct Verifier<'a> {
    url: &'a str,
    ca: &'a str,
    ek: &'a str,
}

#[derive(Serialize)]
struct Broker<'a> {
    addresses: &'a [String],
    ca: &'a str,
}

#[derive(Serialize)]
struct Tsa<'a> {
    url: &'a str,
    root: &'a str,
}

#[derive(Serialize)]
struct Data {
    #[serde(skip_serializing_if = "Option::is_none")]
    block_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    buffer_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    heartbeat_seconds: Option<u64>,
}

/// An estimated stream of a [`Draft`]: `[pmu.estimate]` with simulated samples.
#[derive(Debug, Clone, Serialize)]
pub struct EstimatedDraft {
    #[serde(skip)]
    pub name: String,
    #[serde(skip)]
    pub idcode: u16,
    /// `P` or `M`.
    pub class: String,
    pub nominal: u32,
    pub rate: u32,
    #[serde(serialize_with = "simulated")]
    pub sampling: (),
    pub fs: u32,
    pub frequency: f64,
    pub noise: f64,
}

fn simulated<S: serde::Serializer>(_: &(), serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str("simulated")
}

#[derive(Serialize)]
struct Pmu<'a> {
    name: &'a str,
    idcode: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate: Option<&'a EstimatedDraft>,
}

impl Draft {
    /// The configuration's text.
    pub fn to_toml(&self) -> Result<String, ConfigError> {
        let document = Document {
            serial: self.serial,
            identity: &self.identity,
            location: &self.location,
            network: Network { mode: "dhcp" },
            time: Time { sntp: &self.sntp },
            verifier: Verifier {
                url: &self.verifier_url,
                ca: &self.verifier_ca,
                ek: &self.ek,
            },
            broker: Broker {
                addresses: &self.brokers,
                ca: &self.broker_ca,
            },
            tsa: Tsa {
                url: &self.tsa_url,
                root: &self.tsa_root,
            },
            data: Data {
                block_seconds: self.block_seconds,
                buffer_bytes: self.buffer_bytes,
                heartbeat_seconds: self.heartbeat_seconds,
            },
            pmu: self
                .pmus
                .iter()
                .map(|(name, idcode, address)| Pmu {
                    name,
                    idcode: *idcode,
                    address: Some(address),
                    estimate: None,
                })
                .chain(self.estimated.iter().map(|estimated| Pmu {
                    name: &estimated.name,
                    idcode: estimated.idcode,
                    address: None,
                    estimate: Some(estimated),
                }))
                .collect(),
            workload: self
                .workloads
                .iter()
                .map(|bundle| Workload { bundle })
                .collect(),
        };
        toml::to_string(&document).map_err(|error| ConfigError::Toml(error.to_string()))
    }
}

/// A draft of the crate's tests: one broker, one PMU, 2 s blocks, every certificate `ca`.
#[cfg(test)]
pub(crate) fn example(ca: &str) -> Draft {
    Draft {
        serial: 1,
        identity: "bay-1".into(),
        location: "substation-1".into(),
        sntp: vec!["10.0.2.2:123".into()],
        verifier_url: "https://10.0.2.2:8443".into(),
        verifier_ca: ca.into(),
        ek: "rsa".into(),
        brokers: vec!["10.0.2.2:8883".into()],
        broker_ca: ca.into(),
        tsa_url: "http://10.0.2.2:3000/api/v1/timestamp".into(),
        tsa_root: ca.into(),
        block_seconds: Some(2),
        heartbeat_seconds: None,
        workloads: Vec::new(),
        buffer_bytes: None,
        pmus: vec![("bay-1".into(), 7, "10.0.2.2:4712".into())],
        estimated: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DeviceConfig;

    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIUAQ==\n-----END CERTIFICATE-----\n";

    fn draft() -> Draft {
        let mut draft = example(CA);
        draft.brokers.push("192.0.2.9:8883".into());
        draft.pmus.push(("bay-2".into(), 8, "10.0.2.2:4713".into()));
        draft.estimated.push(EstimatedDraft {
            name: "feeder-3".into(),
            idcode: 9,
            class: "M".into(),
            nominal: 50,
            rate: 10,
            sampling: (),
            fs: 10_000,
            frequency: 50.08,
            noise: 0.0,
        });
        draft
    }

    #[test]
    fn a_draft_parses_back_as_written() {
        let text = draft().to_toml().expect("TOML");
        let config = DeviceConfig::parse(&text).expect("parses");
        assert_eq!(config.identity.as_str(), "bay-1");
        assert_eq!(config.location.as_str(), "substation-1");
        assert_eq!(config.verifier_ca, CA, "the PEM keeps its line breaks");
        assert_eq!(config.brokers.len(), 2);
        assert_eq!(config.block_seconds, 2);
        assert_eq!(config.heartbeat_seconds, 10, "left out: the default");
        let names: Vec<&str> = config.pmus.iter().map(|pmu| pmu.name.as_str()).collect();
        assert_eq!(names, ["bay-1", "bay-2", "feeder-3"]);
        let crate::pmu::StreamSource::Estimated(estimated) = &config.pmus[2].source else {
            panic!("feeder-3 is estimated");
        };
        assert_eq!(estimated.estimator.rate(), 10);
        assert!(matches!(
            estimated.sampling,
            crate::pmu::Sampling::Simulated { frequency, .. } if frequency == 50.08
        ));
    }

    #[test]
    fn a_draft_is_judged_as_any_file_is() {
        let mut draft = draft();
        draft.pmus.clear();
        draft.estimated.clear();
        let text = draft.to_toml().expect("TOML");
        assert!(
            DeviceConfig::parse(&text).is_err(),
            "no PMU: refused at parsing"
        );
    }
}
