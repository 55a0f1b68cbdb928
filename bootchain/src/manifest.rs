//! Reference-value manifests: what the devices booting a released image measure, as the image
//! build predicted it and the release key signed it. The verifier accepts a device only when its
//! replayed event log matches a manifest it could verify; when none matches, the mismatch names
//! each PCR that differs and the first event of the log that made it differ.
//!
//! Everything works on bytes handed in: the manifest text, its detached signature, the parsed
//! event log.

use std::collections::BTreeMap;
use std::fmt;

use ring::signature::{UnparsedPublicKey, ED25519};
use serde::Deserialize;
use thiserror::Error;

use crate::eventlog::{EventData, EventLog, EventType, HashAlgorithm, PcrBanks, PcrIndex};
use crate::predict::ExpectedEvent;

/// The manifest format this code reads: 2 added the expected events per PCR.
pub const FORMAT: u32 = 2;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("the manifest signature is not 64 bytes of hex")]
    MalformedSignature,
    #[error("the release key is not 32 bytes of hex (release.pub.raw)")]
    MalformedReleaseKey,
    #[error("the manifest signature does not verify with the release key")]
    BadSignature,
    #[error("the manifest is not a format-{FORMAT} reference manifest: {0}")]
    Unreadable(String),
    #[error("the manifest's PCR {pcr} value is not 32 bytes of hex")]
    BadValue { pcr: u32 },
    #[error("the manifest's events for PCR {pcr} do not produce its value")]
    Inconsistent { pcr: u32 },
    #[error("the manifest predicts no PCR: it would match any boot")]
    NoPcrs,
}

/// An Ed25519 release public key (`release.pub.raw`, hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseKey([u8; 32]);

impl ReleaseKey {
    pub fn from_hex(text: &str) -> Result<Self, ManifestError> {
        hex::decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .map(Self)
            .ok_or(ManifestError::MalformedReleaseKey)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[derive(Deserialize)]
struct Wire {
    format: u32,
    image_version: String,
    pcrs: BTreeMap<String, BTreeMap<u32, String>>,
    #[serde(default)]
    events: BTreeMap<u32, Vec<ExpectedEvent>>,
}

/// The verified reference values of one released image (SHA-256 bank).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceValues {
    pub image_version: String,
    /// The SHA-256 digest of the manifest text, naming this release unambiguously.
    pub manifest_digest: [u8; 32],
    pub pcrs: BTreeMap<u32, [u8; 32]>,
    pub events: BTreeMap<u32, Vec<ExpectedEvent>>,
}

impl ReferenceValues {
    /// A short name for operators: the image version and the start of the manifest digest.
    pub fn label(&self) -> String {
        format!(
            "image {} (manifest {})",
            self.image_version,
            &hex::encode(self.manifest_digest)[..12]
        )
    }
}

/// Checks the detached signature (hex Ed25519 over the exact text) and reads the reference values.
pub fn verify(
    text: &[u8],
    signature_hex: &[u8],
    key: &ReleaseKey,
) -> Result<ReferenceValues, ManifestError> {
    let signature = hex::decode(String::from_utf8_lossy(signature_hex).trim())
        .map_err(|_| ManifestError::MalformedSignature)?;
    if signature.len() != 64 {
        return Err(ManifestError::MalformedSignature);
    }
    UnparsedPublicKey::new(&ED25519, key.as_bytes())
        .verify(text, &signature)
        .map_err(|_| ManifestError::BadSignature)?;
    let wire: Wire = serde_json::from_slice(text)
        .map_err(|error| ManifestError::Unreadable(error.to_string()))?;
    if wire.format != FORMAT {
        return Err(ManifestError::Unreadable(format!(
            "format {} (this verifier reads {FORMAT}; rebuild the image)",
            wire.format
        )));
    }
    let sha256 = wire
        .pcrs
        .get("sha256")
        .ok_or_else(|| ManifestError::Unreadable("no sha256 PCRs".into()))?;
    let mut pcrs = BTreeMap::new();
    for (pcr, value) in sha256 {
        let value: [u8; 32] = hex::decode(value)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(ManifestError::BadValue { pcr: *pcr })?;
        if let Some(events) = wire.events.get(pcr) {
            if crate::predict::fold(events) != Some(value) {
                return Err(ManifestError::Inconsistent { pcr: *pcr });
            }
        }
        pcrs.insert(*pcr, value);
    }
    if pcrs.is_empty() {
        return Err(ManifestError::NoPcrs);
    }
    use sha2::Digest as _;
    Ok(ReferenceValues {
        image_version: wire.image_version,
        manifest_digest: sha2::Sha256::digest(text).into(),
        pcrs,
        events: wire.events,
    })
}

/// The first place where a device's events for one PCR leave the manifest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventDifference {
    /// The log's event differs from the expected one at the same position.
    Differs {
        log_index: usize,
        found_type: String,
        found_digest: String,
        found_what: String,
        expected: ExpectedEvent,
    },
    /// The log has an event the manifest does not expect (after all expected ones matched).
    Unexpected {
        log_index: usize,
        found_type: String,
        found_digest: String,
        found_what: String,
    },
    /// The log ends before an expected event.
    Missing { expected: ExpectedEvent },
    /// The manifest carries no events for this PCR, so only the values can be compared.
    NoExpectedEvents,
}

impl fmt::Display for EventDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Differs {
                log_index,
                found_type,
                found_digest,
                found_what,
                expected,
            } => write!(
                f,
                "log event {log_index} ({found_type} {found_what}, digest {found_digest}) where \
                 the manifest expects {} {} (digest {})",
                expected.event_type, expected.what, expected.digest
            ),
            Self::Unexpected {
                log_index,
                found_type,
                found_digest,
                found_what,
            } => write!(
                f,
                "log event {log_index} ({found_type} {found_what}, digest {found_digest}) is not \
                 in the manifest"
            ),
            Self::Missing { expected } => write!(
                f,
                "the log lacks {} {} (digest {})",
                expected.event_type, expected.what, expected.digest
            ),
            Self::NoExpectedEvents => write!(f, "the manifest lists no events for it"),
        }
    }
}

/// One PCR whose replayed value differs from a manifest's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrDifference {
    pub pcr: u32,
    pub replayed: String,
    pub expected: String,
    pub event: EventDifference,
}

impl fmt::Display for PcrDifference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PCR {} is {}, expected {}: {}",
            self.pcr, self.replayed, self.expected, self.event
        )
    }
}

/// How a log compares with one manifest: empty when it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    pub manifest: String,
    pub differences: Vec<PcrDifference>,
}

fn describe(event: &crate::eventlog::Event) -> String {
    let text = EventData::of(event).describe();
    // Event data comes from the device: keep reasons one line and bounded.
    let mut text: String = text.chars().filter(|c| !c.is_control()).take(120).collect();
    if text.is_empty() {
        text = "(no description)".into();
    }
    text
}

fn first_difference(log: &EventLog, pcr: u32, expected: &[ExpectedEvent]) -> EventDifference {
    let measured: Vec<_> = log
        .events
        .iter()
        .filter(|event| event.pcr.get() == pcr && event.event_type != EventType::NO_ACTION)
        .collect();
    for (position, event) in measured.iter().enumerate() {
        let digest = event
            .digest(HashAlgorithm::Sha256)
            .map(hex::encode)
            .unwrap_or_else(|| "(none)".into());
        match expected.get(position) {
            Some(wanted)
                if wanted.digest == digest && wanted.event_type == event.event_type.name() => {}
            Some(wanted) => {
                return EventDifference::Differs {
                    log_index: event.index,
                    found_type: event.event_type.name(),
                    found_digest: digest,
                    found_what: describe(event),
                    expected: wanted.clone(),
                }
            }
            None => {
                return EventDifference::Unexpected {
                    log_index: event.index,
                    found_type: event.event_type.name(),
                    found_digest: digest,
                    found_what: describe(event),
                }
            }
        }
    }
    match expected.get(measured.len()) {
        Some(wanted) => EventDifference::Missing {
            expected: wanted.clone(),
        },
        // Every event matches, yet the value differs: the manifest has no events to compare.
        None => EventDifference::NoExpectedEvents,
    }
}

/// Compares a replayed log with one manifest: every PCR the manifest lists must have its value
/// (a PCR the log never touches is zero).
pub fn compare(log: &EventLog, replayed: &PcrBanks, manifest: &ReferenceValues) -> Comparison {
    let mut differences = Vec::new();
    for (pcr, expected) in &manifest.pcrs {
        let index = PcrIndex::new(*pcr);
        let value = index
            .and_then(|index| replayed.get(HashAlgorithm::Sha256, index))
            .map(<[u8]>::to_vec)
            .unwrap_or_else(|| vec![0; 32]);
        if value.as_slice() == expected.as_slice() {
            continue;
        }
        let event = match manifest.events.get(pcr) {
            Some(events) => first_difference(log, *pcr, events),
            None => EventDifference::NoExpectedEvents,
        };
        differences.push(PcrDifference {
            pcr: *pcr,
            replayed: hex::encode(&value),
            expected: hex::encode(expected),
            event,
        });
    }
    Comparison {
        manifest: manifest.label(),
        differences,
    }
}

/// The log matched none of the released manifests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoMatch {
    pub comparisons: Vec<Comparison>,
}

impl fmt::Display for NoMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.comparisons.is_empty() {
            return write!(f, "no manifest is released");
        }
        write!(f, "the boot matches no released manifest")?;
        for comparison in &self.comparisons {
            write!(f, "; against {}:", comparison.manifest)?;
            for (position, difference) in comparison.differences.iter().enumerate() {
                let separator = if position == 0 { " " } else { "; " };
                write!(f, "{separator}{difference}")?;
            }
        }
        Ok(())
    }
}

/// Finds the released manifest the log matches, or says for each how it differs.
pub fn find_match<'a>(
    log: &EventLog,
    replayed: &PcrBanks,
    manifests: &'a [ReferenceValues],
) -> Result<&'a ReferenceValues, NoMatch> {
    let mut comparisons = Vec::with_capacity(manifests.len());
    for manifest in manifests {
        let comparison = compare(log, replayed, manifest);
        if comparison.differences.is_empty() {
            return Ok(manifest);
        }
        comparisons.push(comparison);
    }
    Err(NoMatch { comparisons })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    fn signed(text: &str) -> (Vec<u8>, Vec<u8>, ReleaseKey) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let key = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let public = ReleaseKey::from_hex(&hex::encode(key.public_key().as_ref())).expect("hex");
        let signature = hex::encode(key.sign(text.as_bytes()).as_ref());
        (text.as_bytes().to_vec(), signature.into_bytes(), public)
    }

    #[test]
    fn only_the_release_keys_signature_over_the_exact_text_verifies() {
        let zero = "0".repeat(64);
        let text = format!(
            r#"{{"format": 2, "image_version": "1", "pcrs": {{"sha256": {{"12": "{zero}"}}}}, "events": {{"12": []}}}}"#
        );
        let (bytes, signature, key) = signed(&text);
        let values = verify(&bytes, &signature, &key).expect("verifies");
        assert_eq!(values.pcrs[&12], [0; 32]);
        let mut altered = bytes.clone();
        altered[2] ^= 1;
        assert_eq!(
            verify(&altered, &signature, &key),
            Err(ManifestError::BadSignature)
        );
        let (_, _, other) = signed(&text);
        assert_eq!(
            verify(&bytes, &signature, &other),
            Err(ManifestError::BadSignature)
        );
        assert_eq!(
            verify(&bytes, b"abcd", &key),
            Err(ManifestError::MalformedSignature)
        );
        // A signed manifest that predicts nothing is refused: it would match any boot.
        let empty = r#"{"format": 2, "image_version": "1", "pcrs": {"sha256": {}}, "events": {}}"#;
        let (bytes, signature, key) = signed(empty);
        assert_eq!(verify(&bytes, &signature, &key), Err(ManifestError::NoPcrs));
        // A manifest whose events do not produce its value is refused even when signed.
        let inconsistent = text.replace(&zero, &"1".repeat(64));
        let (bytes, signature, key) = signed(&inconsistent);
        assert_eq!(
            verify(&bytes, &signature, &key),
            Err(ManifestError::Inconsistent { pcr: 12 })
        );
    }
}
