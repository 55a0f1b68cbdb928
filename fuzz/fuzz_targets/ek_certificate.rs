//! An EK certificate chain from untrusted bytes, as a device sends it at registration.
#![no_main]

use edgeward_attestation::credential::EkPublic;
use edgeward_attestation::ek_certificate::verify_ek_certificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |byte| usize::from(*byte) * 8).min(data.len());
    let (leaf, rest) = data.split_at(split);
    let ek = if data.len() % 2 == 0 {
        EkPublic::Rsa {
            modulus: vec![0xC5; 256],
        }
    } else {
        EkPublic::Ecc {
            x: vec![0x11; 32],
            y: vec![0x22; 32],
        }
    };
    let _ = verify_ek_certificate(
        leaf,
        &[rest.to_vec()],
        &[rest.to_vec()],
        &ek,
        std::time::SystemTime::UNIX_EPOCH,
    );
});
