//! TPMT_PUBLIC areas from untrusted bytes: the AK a device registers and the device key it has
//! certified.
#![no_main]

use edgeward_attestation::quote::{appraise_certify, parse_ak_public};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_ak_public(data);
    let key = rsa::RsaPublicKey::new(rsa::BigUint::from(3233u32), rsa::BigUint::from(17u32));
    if let Ok(key) = key {
        let third = data.len() / 3;
        let _ = appraise_certify(
            &data[..third],
            &data[third..2 * third],
            &data[2 * third..],
            &key,
            b"nonce",
        );
    }
});
