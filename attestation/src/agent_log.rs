//! The agent's own event log: what the agent measured into the TPM after boot, one entry per
//! extend, kept in memory beside the TPM for the boot (PCRs reset with it). Today that is each
//! workload it launched: its manifest's SHA-256 extended into [`WORKLOAD_PCR`] before the
//! workload runs. The verifier replays the log to the quoted PCR and accepts only workloads an
//! operator released ([`ReleasedWorkloads`], signed with the release key like image manifests).
//!
//! The log is the device's word, not trusted: its digests are what the quote proves (the
//! replay must give the quoted PCR), its names and versions only what the refusal says.

use std::collections::BTreeMap;

use ring::signature::{UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::api::Hex;

/// The PCR workload launches are measured into: one that neither the firmware, the stub, the
/// kernel nor IMA touches, outside the device key's PCRs (so that launching a workload does not
/// stop block signing) and not PCR 14 (shim's MOK measurements, were the appliance ever booted
/// through shim). docs/boot-chain.md, "PCR 15".
pub const WORKLOAD_PCR: u8 = 15;

/// The event type of a workload launch.
pub const WORKLOAD_EVENT: &str = "workload-manifest";

/// One extend the agent made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentEvent {
    pub pcr: u8,
    /// What was extended: SHA-256 of the workload's manifest bytes.
    pub digest: Hex,
    #[serde(rename = "type")]
    pub kind: String,
    /// The workload's name and version as its manifest gives them (for the verdict's words).
    pub name: String,
    pub version: String,
}

impl AgentEvent {
    pub fn workload(manifest_digest: [u8; 32], name: &str, version: &str) -> Self {
        Self {
            pcr: WORKLOAD_PCR,
            digest: Hex(manifest_digest.to_vec()),
            kind: WORKLOAD_EVENT.to_owned(),
            name: name.to_owned(),
            version: version.to_owned(),
        }
    }

    /// `name version (manifest 0123456789ab)`.
    pub fn label(&self) -> String {
        let digest = hex::encode(&self.digest.0);
        format!(
            "{} {} (manifest {})",
            self.name,
            self.version,
            digest.get(..12).unwrap_or(&digest)
        )
    }
}

/// Why a log cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AgentLogError {
    #[error("agent log entry {index} extends PCR {pcr}; the agent measures only into PCR {WORKLOAD_PCR}")]
    WrongPcr { index: usize, pcr: u8 },
    #[error("agent log entry {index} is of type {kind:?}, not {WORKLOAD_EVENT:?}")]
    UnknownType { index: usize, kind: String },
    #[error("agent log entry {index}'s digest is {len} bytes, not 32")]
    DigestLength { index: usize, len: usize },
    #[error("the released workloads' signature is not 64 bytes of hex")]
    MalformedSignature,
    #[error("the released workloads' signature does not verify with the release key")]
    BadSignature,
    #[error("the released workloads are unreadable: {0}")]
    Unreadable(String),
}

/// The PCRs the log extends, as the TPM computes them (SHA-256 bank, from zero).
pub fn replay(events: &[AgentEvent]) -> Result<BTreeMap<u8, [u8; 32]>, AgentLogError> {
    let mut pcrs = BTreeMap::new();
    for (index, event) in events.iter().enumerate() {
        if event.pcr != WORKLOAD_PCR {
            return Err(AgentLogError::WrongPcr {
                index,
                pcr: event.pcr,
            });
        }
        if event.kind != WORKLOAD_EVENT {
            return Err(AgentLogError::UnknownType {
                index,
                kind: event.kind.clone(),
            });
        }
        if event.digest.0.len() != 32 {
            return Err(AgentLogError::DigestLength {
                index,
                len: event.digest.0.len(),
            });
        }
        let value: &mut [u8; 32] = pcrs.entry(event.pcr).or_insert([0; 32]);
        let mut hasher = Sha256::new();
        hasher.update(*value);
        hasher.update(&event.digest.0);
        *value = hasher.finalize().into();
    }
    Ok(pcrs)
}

/// Prepended to the released list's bytes when it is signed: the release key also signs image
/// manifests, and neither signature may pass for the other.
pub const RELEASE_DOMAIN: &[u8] = b"edgeward-released-workloads-v1\0";

/// One released workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleasedWorkload {
    pub name: String,
    pub version: String,
    pub manifest_sha256: Hex,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseFile {
    format: String,
    workloads: Vec<ReleasedWorkload>,
}

const RELEASE_FORMAT: &str = "edgeward-released-workloads/1";

/// The workloads an operator released: only their manifests may appear in an agent log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReleasedWorkloads {
    by_digest: BTreeMap<Vec<u8>, ReleasedWorkload>,
}

impl ReleasedWorkloads {
    /// None released: a device that launched any workload is refused.
    pub fn none() -> Self {
        Self::default()
    }

    /// The list's text, as `edgeward workload release` writes it.
    pub fn to_text(workloads: &[ReleasedWorkload]) -> String {
        serde_json::to_string_pretty(&ReleaseFile {
            format: RELEASE_FORMAT.to_owned(),
            workloads: workloads.to_vec(),
        })
        .unwrap_or_default()
            + "\n"
    }

    /// The signature (hex) of `text` by the release key.
    pub fn sign(text: &[u8], key: &ring::signature::Ed25519KeyPair) -> String {
        let mut message = RELEASE_DOMAIN.to_vec();
        message.extend_from_slice(text);
        format!("{}\n", hex::encode(key.sign(&message).as_ref()))
    }

    /// Checks the signature (hex) over `text` with the release key's 32 bytes, then reads it.
    pub fn verify(
        text: &[u8],
        signature_hex: &[u8],
        key: &[u8; 32],
    ) -> Result<Self, AgentLogError> {
        let signature = hex::decode(String::from_utf8_lossy(signature_hex).trim())
            .ok()
            .filter(|signature| signature.len() == 64)
            .ok_or(AgentLogError::MalformedSignature)?;
        let mut message = RELEASE_DOMAIN.to_vec();
        message.extend_from_slice(text);
        UnparsedPublicKey::new(&ED25519, key)
            .verify(&message, &signature)
            .map_err(|_| AgentLogError::BadSignature)?;
        let file: ReleaseFile = serde_json::from_slice(text)
            .map_err(|error| AgentLogError::Unreadable(error.to_string()))?;
        if file.format != RELEASE_FORMAT {
            return Err(AgentLogError::Unreadable(format!(
                "format {:?}, not {RELEASE_FORMAT:?}",
                file.format
            )));
        }
        let mut by_digest = BTreeMap::new();
        for workload in file.workloads {
            if workload.manifest_sha256.0.len() != 32 {
                return Err(AgentLogError::Unreadable(format!(
                    "{} {}: the manifest digest is not 32 bytes",
                    workload.name, workload.version
                )));
            }
            by_digest.insert(workload.manifest_sha256.0.clone(), workload);
        }
        Ok(Self { by_digest })
    }

    /// The released workload with this manifest digest.
    pub fn find(&self, digest: &[u8]) -> Option<&ReleasedWorkload> {
        self.by_digest.get(digest)
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    use super::*;

    fn released(digest: [u8; 32]) -> ReleasedWorkload {
        ReleasedWorkload {
            name: "freq-alarm".into(),
            version: "1.0.0".into(),
            manifest_sha256: Hex(digest.to_vec()),
        }
    }

    #[test]
    fn the_replay_extends_from_zero_in_order() {
        let first = AgentEvent::workload([1; 32], "a", "1");
        let second = AgentEvent::workload([2; 32], "b", "1");
        let once: [u8; 32] = Sha256::new()
            .chain_update([0u8; 32])
            .chain_update([1u8; 32])
            .finalize()
            .into();
        let twice: [u8; 32] = Sha256::new()
            .chain_update(once)
            .chain_update([2u8; 32])
            .finalize()
            .into();
        assert_eq!(
            replay(std::slice::from_ref(&first)).expect("replays")[&15],
            once
        );
        assert_eq!(replay(&[first, second]).expect("replays")[&15], twice);
        assert!(replay(&[]).expect("replays").is_empty());
    }

    #[test]
    fn entries_outside_the_workload_pcr_or_type_are_refused() {
        let mut wrong_pcr = AgentEvent::workload([1; 32], "a", "1");
        wrong_pcr.pcr = 11;
        assert_eq!(
            replay(&[wrong_pcr]),
            Err(AgentLogError::WrongPcr { index: 0, pcr: 11 })
        );
        let mut other = AgentEvent::workload([1; 32], "a", "1");
        other.kind = "module".into();
        assert!(matches!(
            replay(&[other]),
            Err(AgentLogError::UnknownType { .. })
        ));
        let mut short = AgentEvent::workload([1; 32], "a", "1");
        short.digest = Hex(vec![1; 20]);
        assert!(matches!(
            replay(&[short]),
            Err(AgentLogError::DigestLength { .. })
        ));
    }

    #[test]
    fn the_released_list_verifies_only_with_the_release_key_and_its_domain() {
        let key = Ed25519KeyPair::from_seed_unchecked(&[7; 32]).expect("key");
        let public: [u8; 32] = key.public_key().as_ref().try_into().expect("32 bytes");
        let text = ReleasedWorkloads::to_text(&[released([9; 32])]);
        let signature = ReleasedWorkloads::sign(text.as_bytes(), &key);
        let list = ReleasedWorkloads::verify(text.as_bytes(), signature.as_bytes(), &public)
            .expect("verifies");
        assert_eq!(
            list.find(&[9; 32]).map(|found| found.name.as_str()),
            Some("freq-alarm")
        );
        assert!(list.find(&[8; 32]).is_none());
        let altered = text.replace("1.0.0", "1.0.1");
        assert_eq!(
            ReleasedWorkloads::verify(altered.as_bytes(), signature.as_bytes(), &public),
            Err(AgentLogError::BadSignature)
        );
        // A plain signature over the same bytes (as image manifests are signed) does not pass.
        let plain = format!("{}\n", hex::encode(key.sign(text.as_bytes()).as_ref()));
        assert_eq!(
            ReleasedWorkloads::verify(text.as_bytes(), plain.as_bytes(), &public),
            Err(AgentLogError::BadSignature)
        );
    }
}
