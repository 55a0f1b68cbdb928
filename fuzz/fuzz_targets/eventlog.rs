//! A TCG event log from untrusted bytes (a device sends its log to the verifier): parse, replay
//! and describe every event.
#![no_main]

use edgeward_bootchain::eventlog::{parse, replay, EventData};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = parse(data) {
        let _ = replay(&log);
        for event in &log.events {
            let _ = EventData::of(event).describe();
        }
    }
});
