//! The kernel's IMA measurement list from untrusted bytes: parse, replay, name every entry.
#![no_main]

use edgeward_bootchain::ima::{parse, replay_sha256};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(entries) = parse(data) {
        let _ = replay_sha256(&entries);
        for entry in &entries {
            let _ = entry.name();
        }
    }
});
