//! Reference manifests from untrusted bytes. The signature is checked before anything is parsed,
//! so the input is signed here with a key the target trusts, to reach the parser behind it.
#![no_main]

use edgeward_bootchain::manifest::{verify, ReleaseKey};
use libfuzzer_sys::fuzz_target;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

fuzz_target!(|data: &[u8]| {
    let key = Ed25519KeyPair::from_seed_unchecked(&[9; 32]).expect("a fixed seed");
    let public = ReleaseKey::from_hex(&hex_encode(key.public_key().as_ref())).expect("32 bytes");
    let signature = hex_encode(key.sign(data).as_ref());
    let _ = verify(data, signature.as_bytes(), &public);
    let _ = verify(data, data, &public);
});

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
