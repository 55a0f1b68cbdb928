//! Real TCG event logs from others (../shared/testdata/eventlogs, Apache-2.0, from
//! google/go-attestation and google/go-tpm-tools): every log parses, the three with PCR values
//! read from their TPMs replay to exactly those values, and the truncated one is refused cleanly.

use std::collections::BTreeMap;

use edgeward_bootchain::eventlog::{parse, replay, EventLogError, HashAlgorithm, PcrIndex};

/// Every complete log of the folder (the tenth, short_no_action_eventlog.bin, is truncated).
const LOGS: [&str; 9] = [
    "arch-linux-workstation.bin",
    "coreos_36_shielded_vm_no_secure_boot_eventlog.bin",
    "crypto_agile_eventlog.bin",
    "ebs_event_missing_eventlog.bin",
    "option_rom_eventlog.bin",
    "rhel8-uefi.bin",
    "sb_cert_eventlog.bin",
    "ubuntu-2404-amd-sevsnp.bin",
    "ubuntu_2104_shielded_vm_no_secure_boot_eventlog.bin",
];

#[test]
fn every_real_log_parses_and_replays() {
    let Some(dir) = edgeward_tests::testdata("eventlogs") else {
        return;
    };
    for name in LOGS {
        let bytes = std::fs::read(dir.join(name)).expect("log is readable");
        let log = parse(&bytes).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            log.events.len() > 10,
            "{name}: only {} events",
            log.events.len()
        );
        let banks = replay(&log).unwrap_or_else(|error| panic!("{name}: {error}"));
        assert!(
            banks.banks.contains_key(&HashAlgorithm::Sha256)
                || banks.banks.contains_key(&HashAlgorithm::Sha1),
            "{name}: no bank replayed"
        );
    }
}

#[test]
fn logs_replay_to_the_pcrs_their_tpms_reported() {
    let Some(dir) = edgeward_tests::testdata("eventlogs") else {
        return;
    };
    let expected: BTreeMap<String, BTreeMap<String, BTreeMap<String, String>>> =
        serde_json::from_slice(&std::fs::read(dir.join("expected_pcrs.json")).expect("readable"))
            .expect("expected_pcrs.json is JSON");
    assert_eq!(expected.len(), 3, "three logs come with TPM-reported PCRs");
    for (name, banks) in &expected {
        let bytes = std::fs::read(dir.join(format!("{name}.bin"))).expect("log is readable");
        let replayed = replay(&parse(&bytes).expect("parses")).expect("replays");
        let mut checked = 0;
        for (bank, pcrs) in banks {
            let algorithm = match bank.as_str() {
                "sha1" => HashAlgorithm::Sha1,
                "sha256" => HashAlgorithm::Sha256,
                "sha384" => HashAlgorithm::Sha384,
                other => panic!("unexpected bank {other}"),
            };
            for (pcr, value) in pcrs {
                let index = PcrIndex::new(pcr.parse().expect("a PCR number")).expect("0-23");
                let ours = replayed
                    .get(algorithm, index)
                    .map(hex::encode)
                    .unwrap_or_else(|| panic!("{name}: {bank} PCR {pcr} not replayed"));
                assert_eq!(&ours, value, "{name}: {bank} PCR {pcr}");
                checked += 1;
            }
        }
        assert!(checked >= 9, "{name}: only {checked} PCRs compared");
    }
}

#[test]
fn the_truncated_log_is_refused_with_a_reason() {
    let Some(dir) = edgeward_tests::testdata("eventlogs") else {
        return;
    };
    let bytes = std::fs::read(dir.join("short_no_action_eventlog.bin")).expect("readable");
    assert_eq!(parse(&bytes), Err(EventLogError::MissingSpecId));
    // Every prefix of a real log is either a shorter valid log or a clean error.
    let bytes = std::fs::read(dir.join("rhel8-uefi.bin")).expect("readable");
    for cut in (0..bytes.len()).step_by(7) {
        match parse(&bytes[..cut]) {
            Ok(log) => assert!(replay(&log).is_ok()),
            Err(
                EventLogError::Truncated { .. }
                | EventLogError::Empty
                | EventLogError::BadSpecId { .. },
            ) => {}
            Err(other) => panic!("cut at {cut}: unexpected {other}"),
        }
    }
}

#[test]
fn an_altered_digest_changes_the_replayed_pcr() {
    let Some(dir) = edgeward_tests::testdata("eventlogs") else {
        return;
    };
    let bytes = std::fs::read(dir.join("arch-linux-workstation.bin")).expect("readable");
    let log = parse(&bytes).expect("parses");
    let original = replay(&log).expect("replays");
    let mut tampered = log.clone();
    let event = tampered
        .events
        .iter_mut()
        .find(|event| event.pcr.get() == 4 && event.digest(HashAlgorithm::Sha256).is_some())
        .expect("a PCR 4 event");
    for digest in &mut event.digests {
        digest.bytes[0] ^= 1;
    }
    let changed = replay(&tampered).expect("replays");
    let pcr4 = PcrIndex::new(4).expect("valid");
    assert_ne!(
        original.get(HashAlgorithm::Sha256, pcr4),
        changed.get(HashAlgorithm::Sha256, pcr4)
    );
    assert_eq!(
        original.get(HashAlgorithm::Sha256, PcrIndex::new(0).expect("valid")),
        changed.get(HashAlgorithm::Sha256, PcrIndex::new(0).expect("valid"))
    );
}
