//! An MQTT payload from `data/measurements/#`, decoded as the recorder does; what decodes must
//! encode back to a payload that decodes to the same samples.
#![no_main]

use edgeward_platform::villas::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(samples) = decode(data) {
        if let Ok(again) = encode(&samples) {
            let round = decode(&again).expect("our own encoding decodes");
            assert_eq!(round.len(), samples.len());
        }
    }
});
