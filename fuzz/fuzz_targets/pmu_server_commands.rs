//! What a PDC sends the appliance's own PMU, from untrusted bytes: the TCP byte stream cut into
//! frames, each decoded and answered (or ignored) by the station; and the same bytes as one UDP
//! datagram.
#![no_main]

use edgeward_measurement::c37118::{Frame, FramerEvent, IdCode, NominalFrequency, StreamFramer};
use edgeward_measurement::estimator::{Class, EstimatorConfig};
use edgeward_measurement::server::Station;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(config) = EstimatorConfig::new(Class::P, NominalFrequency::Hz50, 50, 10_000) else {
        return;
    };
    let Ok(station) = Station::new(IdCode(7), "FUZZ", config, "header", 1) else {
        return;
    };
    let mut framer = StreamFramer::new();
    framer.push(data);
    while let Some(event) = framer.next_event() {
        if let FramerEvent::Frame(bytes) = event {
            if let Ok(frame) = Frame::decode(bytes, None) {
                let answer = station.answer(&frame, 1_800_000_000);
                // Every reply is a whole frame that decodes again.
                for reply in &answer.frames {
                    assert!(Frame::decode(reply, None).is_ok(), "a reply decodes");
                }
            }
        }
    }
    if let Ok(frame) = Frame::decode(data, None) {
        let _ = station.answer(&frame, 0);
    }
});
