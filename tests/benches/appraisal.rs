//! Verifier appraisals per second on one core (issue 4 target: ≥ 10 000/s): per appraisal, the
//! quote's AK signature, magic, type, nonce, selection and PCR digest (a real swtpm quote), the
//! parse and replay of a real event log (../shared/testdata/eventlogs/rhel8-uefi.bin, 107
//! events, two banks), and the comparison of the replayed PCRs with a reference set. What is not
//! yet in it: the EK chain (done once at registration) and the HTTPS round trip.
//!
//! Run: `cargo bench -p edgeward-tests --bench appraisal`.

use std::time::{Duration, Instant};

use edgeward_attestation::quote::appraise_quote;
use edgeward_attestation::tpm::{open, quote, read_pcrs, Nonce, PcrSelection};
use edgeward_bootchain::eventlog::{parse, replay, HashAlgorithm, PcrIndex};
use edgeward_tests::swtpm::Swtpm;
use rsa::pkcs8::DecodePublicKey;

fn main() {
    if std::env::args().any(|arg| arg == "--list") {
        return;
    }
    let Some(dir) = edgeward_tests::testdata("eventlogs") else {
        return;
    };
    let log = std::fs::read(dir.join("rhel8-uefi.bin")).expect("event log");
    let Some(tpm) = Swtpm::start() else { return };
    let mut context = open(&tpm.tcti()).expect("swtpm");
    let selection: PcrSelection = "sha256:0,1,2,3,4,5,6,7".parse().expect("valid");
    let nonce = Nonce::new(vec![7; 32]).expect("valid");
    let made = quote(&mut context, &nonce, &selection).expect("quote");
    let ak = rsa::RsaPublicKey::from_public_key_pem(&made.ak_public_pem).expect("AK");
    let values = read_pcrs(&mut context, &selection).expect("PCRs");
    let expected: Vec<(u8, [u8; 32])> = selection
        .pcrs
        .iter()
        .zip(&values)
        .map(|(pcr, value)| (*pcr, value.as_slice().try_into().expect("32 bytes")))
        .collect();
    let reference = replay(&parse(&log).expect("log")).expect("replay");

    let appraise_once = || {
        appraise_quote(
            &made.attest,
            &made.signature,
            &ak,
            nonce.as_bytes(),
            &expected,
        )
        .expect("accepted");
        let replayed = replay(&parse(std::hint::black_box(&log)).expect("log")).expect("replay");
        for pcr in 0..8 {
            let index = PcrIndex::new(pcr).expect("valid");
            assert_eq!(
                replayed.get(HashAlgorithm::Sha256, index),
                reference.get(HashAlgorithm::Sha256, index)
            );
        }
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
    part("quote appraisal", &|| {
        appraise_quote(
            &made.attest,
            &made.signature,
            &ak,
            nonce.as_bytes(),
            &expected,
        )
        .expect("accepted");
    });
    part("log parse and replay", &|| {
        replay(&parse(std::hint::black_box(&log)).expect("log")).expect("replay");
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
