//! A device configuration and its signature from untrusted bytes, as the appliance reads them
//! from its data partition: the signature check, and the parser behind it.
#![no_main]

use edgeward_config::{verify, ConfigKey, DeviceConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = DeviceConfig::parse(text);
    }
    let split = data.len().min(128);
    let (signature, text) = data.split_at(split);
    if let Ok(key) = ConfigKey::from_hex(&"ab".repeat(32)) {
        assert!(
            verify(text, signature, &key).is_err(),
            "nothing random is signed by this key"
        );
    }
});
