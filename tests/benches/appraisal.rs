//! Verifier appraisals per second on one core (issue 4 target: ≥ 10 000/s). One appraisal is
//! what the service runs per `/v1/attest` once the nonce is checked: the AK parsed from its
//! public area, the quote's signature, magic, nonce (`quote::authenticate`), then
//! `verifier::appraise_attestation`: the policy's soundness, type and PCR digest of the quote
//! (a real swtpm quote over the 12 PCRs a verifier quotes by default), the parse and replay of a
//! real event log (../shared/testdata/eventlogs/rhel8-uefi.bin, 107 events, two banks, extended
//! into the swtpm so that the quote is of its PCRs), the TPM counters, the match against two
//! released manifests, the first of which differs (a rollout: the device runs the second), the
//! skipped checks named, and the device-key policy of the boot. The nonce's own check (one
//! HMAC) is timed apart. Not in it: the HTTPS round trip and the state file write.
//!
//! Run: `cargo bench -p edgeward-tests --bench appraisal`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use edgeward_attestation::api::{AttestRequest, Hex};
use edgeward_attestation::ek_certificate::EkRoots;
use edgeward_attestation::quote::{authenticate, parse_ak_public};
use edgeward_attestation::tpm::{create_attestation_keys, open, quote_with, EkKind, Nonce};
use edgeward_attestation::verifier::{
    appraise_attestation, DeviceId, DeviceRecord, NonceBook, Policy,
};
use edgeward_bootchain::eventlog::{parse, replay, EventType, HashAlgorithm};
use edgeward_bootchain::manifest::ReferenceValues;
use edgeward_bootchain::predict::ExpectedEvent;
use edgeward_tests::swtpm::Swtpm;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let Some(dir) = edgeward_tests::testdata("eventlogs") else {
        return;
    };
    let log = std::fs::read(dir.join("rhel8-uefi.bin")).expect("event log");
    let parsed = parse(&log).expect("log");
    let replayed = replay(&parsed).expect("replay");
    let bank = &replayed.banks[&HashAlgorithm::Sha256];

    // The reference values a release of this machine's boot would carry: the PCRs and events
    // of the PCRs an Edgeward image predicts, as the log has them.
    let mut pcrs = BTreeMap::new();
    let mut events = BTreeMap::new();
    for pcr in [4u32, 7, 9, 11, 12, 13] {
        let index = edgeward_bootchain::eventlog::PcrIndex::new(pcr).expect("valid");
        let value = bank.get(&index).map_or([0; 32], |value| {
            value.as_slice().try_into().expect("32 bytes")
        });
        pcrs.insert(pcr, value);
        let expected: Vec<ExpectedEvent> = parsed
            .events
            .iter()
            .filter(|event| event.pcr == index && event.event_type != EventType::NO_ACTION)
            .map(|event| ExpectedEvent {
                event_type: event.event_type.name(),
                digest: hex::encode(event.digest(HashAlgorithm::Sha256).expect("SHA-256")),
                what: "from the log".into(),
            })
            .collect();
        events.insert(pcr, expected);
    }
    let current = ReferenceValues {
        image_version: "2".into(),
        manifest_digest: [2; 32],
        pcrs,
        events,
    };
    let mut previous = current.clone();
    previous.image_version = "1".into();
    previous.manifest_digest = [1; 32];
    previous.pcrs.insert(4, [0x44; 32]);
    if let Some(first) = previous
        .events
        .get_mut(&4)
        .and_then(|events| events.last_mut())
    {
        first.digest = "11".repeat(32);
    }
    let mut policy = Policy::new(EkKind::Rsa, EkRoots::default(), vec![previous, current]);
    policy.log_only_pcrs = [0, 1, 2, 3, 5, 6].into_iter().collect();
    policy.check().expect("a sound policy");

    let Some(tpm) = Swtpm::start() else { return };
    tpm.extend_log(&log);
    let mut context = open(&tpm.tcti()).expect("swtpm");
    let keys = create_attestation_keys(&mut context, EkKind::Rsa).expect("keys");
    let nonce = [7u8; 32];
    let selection = edgeward_attestation::tpm::PcrSelection {
        bank: tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
        pcrs: policy.pcrs.clone(),
    };
    let quote = quote_with(
        &mut context,
        &keys,
        &Nonce::new(nonce.to_vec()).expect("nonce"),
        &selection,
    )
    .expect("quote");
    let mut record = DeviceRecord::new(
        DeviceId::new("bench-1").expect("valid"),
        &keys.ek_public,
        Vec::new(),
        0,
    );
    record.ak_public = Some(Hex(keys.ak_blob.public.clone()));
    keys.flush(&mut context);
    let request = AttestRequest {
        device: "bench-1".into(),
        nonce: Hex(nonce.to_vec()),
        quote: Hex(quote.attest),
        signature: Hex(quote.signature),
        pcr_values: Default::default(),
        event_log: Hex(log.clone()),
        agent_log: Vec::new(),
    };
    let now = SystemTime::now();

    let appraise_once = || {
        let record = std::hint::black_box(record.clone());
        let ak = parse_ak_public(&record.ak_public.as_ref().expect("activated").0).expect("AK");
        let quote =
            authenticate(&request.quote.0, &request.signature.0, &ak.key, &nonce).expect("signed");
        let (_, verdict) = appraise_attestation(&policy, record, &request, &quote, now);
        assert!(verdict.accepted, "{:?}", verdict.reasons);
        assert_eq!(verdict.skipped.len(), 6, "PCRs 0-3, 5, 6 are log-only");
    };
    for _ in 0..100 {
        appraise_once();
    }
    let part = |name: &str, f: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..2000 {
            f();
        }
        println!(
            "  {name}: {:.1} µs",
            started.elapsed().as_secs_f64() * 1e6 / 2000.0
        );
    };
    part("whole appraisal", &appraise_once);
    let book = NonceBook::new(&mut rand::rngs::OsRng);
    let device = DeviceId::new("bench-1").expect("valid");
    part("nonce issued and checked (HMAC, no state)", &|| {
        let nonce = book.issue(
            &device,
            Duration::from_secs(120),
            now,
            &mut rand::rngs::OsRng,
        );
        book.check(nonce.as_bytes(), &device, now).expect("valid");
    });
    part("log parse and replay", &|| {
        replay(&parse(std::hint::black_box(&log)).expect("log")).expect("replay");
    });
    part("manifest match (two released, the second matches)", &|| {
        edgeward_bootchain::manifest::find_match(&parsed, &replayed, &policy.manifests)
            .expect("matches");
    });
    let mut rates = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let mut count = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            appraise_once();
            count += 1;
        }
        rates.push(count as f64 / started.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "appraisals per second, one core: min {:.0}, median {:.0}, max {:.0} (3 runs of 2 s)",
        rates[0], rates[1], rates[2]
    );
}
