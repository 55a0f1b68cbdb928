//! Replays an event log into the PCR values a TPM that recorded it would hold:
//! PCR = H(PCR ‖ digest), from zeros, in log order.

use std::collections::BTreeMap;

use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use thiserror::Error;

use super::parse::{EventLog, EventType, HashAlgorithm, PcrIndex};

/// Why a log cannot be replayed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReplayError {
    #[error("event {event} ({event_type}) extends PCR {pcr} without a {algorithm} digest, so the {algorithm} bank cannot be replayed")]
    MissingDigest {
        event: usize,
        event_type: String,
        pcr: u32,
        algorithm: String,
    },
}

/// Replayed PCR values per bank: only the PCRs the log touches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrBanks {
    pub banks: BTreeMap<HashAlgorithm, BTreeMap<PcrIndex, Vec<u8>>>,
    /// Banks the log carries that this replay cannot compute (SM3 and unknown algorithms).
    pub unsupported: Vec<HashAlgorithm>,
}

impl PcrBanks {
    pub fn get(&self, algorithm: HashAlgorithm, pcr: PcrIndex) -> Option<&[u8]> {
        self.banks.get(&algorithm)?.get(&pcr).map(Vec::as_slice)
    }
}

fn extend(algorithm: HashAlgorithm, pcr: &[u8], digest: &[u8]) -> Option<Vec<u8>> {
    fn hash<H: sha2::Digest>(pcr: &[u8], digest: &[u8]) -> Vec<u8> {
        let mut hasher = H::new();
        hasher.update(pcr);
        hasher.update(digest);
        hasher.finalize().to_vec()
    }
    Some(match algorithm {
        HashAlgorithm::Sha1 => hash::<Sha1>(pcr, digest),
        HashAlgorithm::Sha256 => hash::<Sha256>(pcr, digest),
        HashAlgorithm::Sha384 => hash::<Sha384>(pcr, digest),
        HashAlgorithm::Sha512 => hash::<Sha512>(pcr, digest),
        HashAlgorithm::Sm3_256 | HashAlgorithm::Other(_) => return None,
    })
}

fn digest_size(algorithm: HashAlgorithm) -> Option<usize> {
    match algorithm {
        HashAlgorithm::Sha1 => Some(20),
        HashAlgorithm::Sha256 => Some(32),
        HashAlgorithm::Sha384 => Some(48),
        HashAlgorithm::Sha512 => Some(64),
        HashAlgorithm::Sm3_256 | HashAlgorithm::Other(_) => None,
    }
}

const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// Replays every bank of the log that can be computed.
pub fn replay(log: &EventLog) -> Result<PcrBanks, ReplayError> {
    let mut result = PcrBanks::default();
    // An H-CRTM or TXT platform starts PCR 0 at locality L rather than zero.
    let locality = log.events.iter().find_map(|event| {
        (event.event_type == EventType::NO_ACTION
            && event.pcr.get() == 0
            && event.data.len() == 17
            && event.data.starts_with(STARTUP_LOCALITY))
        .then(|| event.data[16])
    });
    for algorithm in log.algorithms() {
        let Some(size) = digest_size(algorithm) else {
            result.unsupported.push(algorithm);
            continue;
        };
        let mut bank: BTreeMap<PcrIndex, Vec<u8>> = BTreeMap::new();
        for event in &log.events {
            if event.event_type == EventType::NO_ACTION {
                continue;
            }
            let digest = event
                .digest(algorithm)
                .ok_or_else(|| ReplayError::MissingDigest {
                    event: event.index,
                    event_type: event.event_type.name(),
                    pcr: event.pcr.get(),
                    algorithm: algorithm.name(),
                })?;
            let pcr = bank.entry(event.pcr).or_insert_with(|| {
                let mut initial = vec![0u8; size];
                if let (0, Some(locality)) = (event.pcr.get(), locality) {
                    initial[size - 1] = locality;
                }
                initial
            });
            if let Some(extended) = extend(algorithm, pcr, digest) {
                *pcr = extended;
            }
        }
        result.banks.insert(algorithm, bank);
    }
    Ok(result)
}
