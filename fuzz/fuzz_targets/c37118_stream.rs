//! A TCP byte stream cut into frames by FRAMESIZE, arriving in reads of fuzzed sizes, with every
//! frame decoded by a stateful decoder (configurations, CFG-3 fragments, data).
#![no_main]

use edgeward_measurement::c37118::{Decoder, FramerEvent, StreamFramer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut framer = StreamFramer::new();
    let mut decoder = Decoder::new();
    let mut seen = 0usize;
    for read in stream.chunks(chunk) {
        framer.push(read);
        while let Some(event) = framer.next_event() {
            seen += match event {
                FramerEvent::Frame(bytes) => {
                    let _ = decoder.decode(bytes);
                    bytes.len()
                }
                FramerEvent::Discarded { bytes, .. } => bytes,
            };
        }
    }
    assert_eq!(seen + framer.pending(), stream.len(), "no byte is lost or invented");
});
