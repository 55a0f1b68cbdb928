//! TPMS_ATTEST and TPMT_SIGNATURE from untrusted bytes, as a device sends its quote.
#![no_main]

use edgeward_attestation::quote::{parse_attest, verify_signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_attest(data);
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from(3233u32), rsa::BigUint::from(17u32));
    if let Ok(key) = key {
        let split = data.len() / 2;
        let _ = verify_signature(&data[..split], &data[split..], &key);
    }
});
