//! A time-stamp request from the network, answered by `edgeward tsa serve`: every answer must
//! be a response our own client can read (a token or a refusal), never a panic.
#![no_main]

use std::sync::OnceLock;

use edgeward_proof::timestamp::Tsa;
use libfuzzer_sys::fuzz_target;

fn tsa() -> &'static Tsa {
    static TSA: OnceLock<Tsa> = OnceLock::new();
    TSA.get_or_init(|| {
        use edgeward_attestation::device_ca::{new_leaf, new_root_ca, LeafKind};
        let (root, root_key) = new_root_ca("fuzz TSA root", 0, 4_000_000_000).expect("root");
        let (cert, key) =
            new_leaf("fuzz TSA", LeafKind::TimeStamping, &root, &root_key, 0, 4_000_000_000)
                .expect("TSA certificate");
        let der = |text: &str| pem::parse(text).expect("PEM").into_contents();
        Tsa::new(der(&cert), vec![der(&root)], &der(&key)).expect("TSA")
    })
}

fuzz_target!(|data: &[u8]| {
    let answer = tsa().respond(data, 1, 1_700_000_000);
    assert!(!answer.is_empty(), "every request gets an answer");
});
