//! A workload manifest's bytes: the appliance parses only what a trusted key signed, but the
//! signing side (an operator's build, another team's CI) is outside us. Never a panic, and a
//! manifest that parses writes out as text that parses to the same manifest.
#![no_main]

use edgeward_bundle::workload::WorkloadManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = WorkloadManifest::parse(data) {
        let text = manifest.to_toml();
        let again = WorkloadManifest::parse(text.as_bytes()).expect("what we write, we read");
        assert_eq!(again, manifest);
    }
});
