//! A block signature (`.p7s`) from the broker or the store, checked as `verify-data` does.
#![no_main]

use edgeward_proof::origin::verify_block;
use edgeward_proof::trust::TrustAnchors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = verify_block(data, &[0; 32], &TrustAnchors::default());
});
