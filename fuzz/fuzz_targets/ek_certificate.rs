//! An EK and its certificate chain from untrusted bytes, as a device sends them at registration:
//! the EK's encoding (only the canonical one is taken) and the chain with the TCG profile checks.
#![no_main]

use edgeward_attestation::api::{EkKey, Hex};
use edgeward_attestation::credential::EkPublic;
use edgeward_attestation::ek_certificate::{verify_ek_certificate, EkRoots};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |byte| usize::from(*byte) * 8).min(data.len());
    let (leaf, rest) = data.split_at(split);
    // The EK as a device would send it: any lengths, any bytes.
    let half = rest.len() / 2;
    let sent = if data.len() % 2 == 0 {
        EkKey::Rsa {
            modulus: Hex(rest.to_vec()),
        }
    } else {
        EkKey::Ecc {
            x: Hex(rest[..half].to_vec()),
            y: Hex(rest[half..].to_vec()),
        }
    };
    let ek = EkPublic::try_from(&sent).unwrap_or_else(|_| {
        EkPublic::rsa(&[0xC5; 256]).expect("a 2048-bit modulus")
    });
    let roots = EkRoots {
        roots: vec![rest.to_vec()],
        without_eku: vec![rest.to_vec()],
    };
    let _ = verify_ek_certificate(
        leaf,
        &[rest.to_vec()],
        &roots,
        &ek,
        std::time::SystemTime::UNIX_EPOCH,
    );
});
