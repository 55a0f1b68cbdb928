//! A block signature (`.p7s`) from the broker or the store, paired by the recorder and checked
//! by `verify-data`.
#![no_main]

use edgeward_proof::origin::{signed_message_digest, verify_block};
use edgeward_proof::trust::TrustAnchors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = signed_message_digest(data);
    let _ = verify_block(data, &[0; 32], &TrustAnchors::default());
});
