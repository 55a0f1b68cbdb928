//! TCG PC Client Platform Firmware Profile event logs (the `binary_bios_measurements` format):
//! the SHA-1 first record, the crypto-agile `TCG_PCR_EVENT2` records after a Spec ID event, or a
//! legacy SHA-1-only log; and their replay into PCR values.
//!
//! Parsing checks structure only: digest sizes against the Spec ID table, lengths against the
//! bytes left. Whether a digest matches its event data is for the verifier to decide, since many
//! digests (Authenticode hashes, EV_IPL payloads) cover data that is not in the log.

mod data;
mod parse;
mod replay;

pub use data::{
    signature_lists, EventData, Guid, SignatureEntry, UefiVariable, EFI_CERT_SHA256, EFI_CERT_X509,
};
pub use parse::{
    parse, Digest, Event, EventLog, EventType, HashAlgorithm, PcrIndex, SpecId, UnmeasuredRecord,
};
pub use replay::{replay, PcrBanks, ReplayError};

use thiserror::Error;

/// Why an event log could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EventLogError {
    #[error("event log truncated in event {event} at offset {offset}: needed {needed} bytes, {available} left")]
    Truncated {
        event: usize,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("the log is empty")]
    Empty,
    #[error("the first event is EV_NO_ACTION but not a Spec ID event: the log is truncated or not a TCG PC Client log")]
    MissingSpecId,
    #[error("Spec ID event is malformed: {reason}")]
    BadSpecId { reason: &'static str },
    #[error("event {event} at offset {offset} uses hash algorithm {algorithm:#06x}, which the Spec ID event does not list")]
    UnknownAlgorithm {
        event: usize,
        offset: usize,
        algorithm: u16,
    },
    #[error("event {event} at offset {offset} carries {count} digests; the Spec ID event lists {listed} algorithms")]
    TooManyDigests {
        event: usize,
        offset: usize,
        count: u32,
        listed: usize,
    },
    #[error("event {event} at offset {offset} extends PCR {pcr}; PCRs go up to 23")]
    PcrOutOfRange {
        event: usize,
        offset: usize,
        pcr: u32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha1_record(pcr: u32, event_type: u32, digest: [u8; 20], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&pcr.to_le_bytes());
        out.extend_from_slice(&event_type.to_le_bytes());
        out.extend_from_slice(&digest);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    fn spec_id() -> Vec<u8> {
        let mut data = b"Spec ID Event03\0".to_vec();
        data.extend_from_slice(&0u32.to_le_bytes());
        data.extend_from_slice(&[0, 2, 0, 2]);
        data.extend_from_slice(&1u32.to_le_bytes());
        data.extend_from_slice(&0x000Bu16.to_le_bytes());
        data.extend_from_slice(&32u16.to_le_bytes());
        data.push(0);
        sha1_record(0, 3, [0; 20], &data)
    }

    fn agile_record(pcr: u32, event_type: u32, digest: [u8; 32], data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&pcr.to_le_bytes());
        out.extend_from_slice(&event_type.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&0x000Bu16.to_le_bytes());
        out.extend_from_slice(&digest);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn startup_locality_sets_the_initial_value_of_pcr_0() {
        let mut locality = b"StartupLocality\0".to_vec();
        locality.push(3);
        let log = [
            spec_id(),
            agile_record(0, 3, [0; 32], &locality),
            agile_record(0, 8, [0xAB; 32], b"version"),
        ]
        .concat();
        let banks = replay(&parse(&log).expect("parses")).expect("replays");
        let mut initial = [0u8; 32];
        initial[31] = 3;
        let expected = sha2::Sha256::digest([initial, [0xAB; 32]].concat());
        let pcr0 = PcrIndex::new(0).expect("valid");
        assert_eq!(
            banks.get(HashAlgorithm::Sha256, pcr0),
            Some(expected.as_slice())
        );
    }

    #[test]
    fn refuses_digests_of_banks_the_spec_id_does_not_list() {
        let mut record = agile_record(4, 5, [1; 32], b"x");
        record[12..14].copy_from_slice(&0x0004u16.to_le_bytes());
        let log = [spec_id(), record].concat();
        assert!(matches!(
            parse(&log),
            Err(EventLogError::UnknownAlgorithm {
                algorithm: 0x0004,
                ..
            })
        ));
    }

    #[test]
    fn reads_a_legacy_sha1_log_and_refuses_pcrs_above_23() {
        let log = [
            sha1_record(0, 8, [1; 20], b"bios"),
            sha1_record(4, 4, [2; 20], &[0; 4]),
        ]
        .concat();
        let parsed = parse(&log).expect("parses");
        assert!(parsed.spec_id.is_none());
        assert_eq!(parsed.events.len(), 2);
        let banks = replay(&parsed).expect("replays");
        assert_eq!(banks.banks.len(), 1);
        let bad = sha1_record(24, 4, [2; 20], &[0; 4]);
        assert!(matches!(
            parse(&bad),
            Err(EventLogError::PcrOutOfRange { pcr: 24, .. })
        ));
    }

    use sha2::Digest as _;
}
