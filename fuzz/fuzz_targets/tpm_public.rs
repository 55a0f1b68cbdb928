//! TPMT_PUBLIC areas and TPMS_ATTEST from untrusted bytes: the AK a device registers, and the
//! device key it has certified (attributes, policy digest, the certified name).
#![no_main]

use edgeward_attestation::quote::{appraise_certify, check_certify, parse_ak_public, parse_attest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_ak_public(data);
    let third = data.len() / 3;
    // The certification checks on whatever structure parses, with the signature left out.
    if let Ok(attest) = parse_attest(&data[third..2 * third]) {
        let _ = check_certify(&data[..third], &attest);
    }
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from(3233u32), rsa::BigUint::from(17u32));
    if let Ok(key) = key {
        let _ = appraise_certify(
            &data[..third],
            &data[third..2 * third],
            &data[2 * third..],
            &key,
            b"nonce",
        );
    }
});
