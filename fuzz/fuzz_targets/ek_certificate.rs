//! An EK certificate chain from untrusted bytes, as a device sends it at registration.
#![no_main]

use edgeward_attestation::ek_certificate::verify_ek_certificate;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |byte| usize::from(*byte) * 8).min(data.len());
    let (leaf, rest) = data.split_at(split);
    let _ = verify_ek_certificate(
        leaf,
        &[rest.to_vec()],
        &[rest.to_vec()],
        &[0xC5; 256],
        std::time::SystemTime::UNIX_EPOCH,
    );
});
