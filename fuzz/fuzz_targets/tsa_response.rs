//! A TSA's answer from the network (or a stored `.tsr`), checked as the agent and
//! `verify-data` check it.
#![no_main]

use edgeward_proof::timestamp::{response_imprint, verify_response, TsaNonce};
use edgeward_proof::trust::TrustAnchors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let anchors = TrustAnchors::default();
    let _ = verify_response(data, &[0; 32], Some(TsaNonce::from_random([1; 8])), &anchors, &[]);
    let _ = response_imprint(data);
});
