//! A workload bundle from the ESP, as the appliance opens it: the header, the signature over
//! the manifest with a fixed trusted key, the manifest, the superblock of its hash device; then,
//! as `edgeward-agent workload verify` does, every image block against the sealed root. Never a
//! panic, whatever the file holds; a signature cannot verify for fuzzed bytes, so the header and
//! the refusals are what this reaches (the manifest reader has its own target).
#![no_main]

use edgeward_bundle::signature::TrustedKey;
use edgeward_bundle::{workload, Header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = TrustedKey::from_bytes([0x3b; 32]);
    let len = data.len() as u64;
    let Ok(header) = Header::parse(data, len) else {
        return;
    };
    let superblock = data
        .get(header.layout().hash.start as usize..)
        .unwrap_or_default();
    if let Ok(verified) = workload::open(data, superblock, len, &key) {
        let _ = workload::verify_image(data, &verified);
    }
});
