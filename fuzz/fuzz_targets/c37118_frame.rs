//! One C37.118 frame from untrusted bytes, decoded with and without a configuration.
#![no_main]

use edgeward_measurement::c37118::{Decoder, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Frame::decode(data, None);
    // Bytes past the first frame-sized run are decoded as data with whatever configuration the
    // first run gave, so the data-frame path sees fuzzed configurations too.
    let mut decoder = Decoder::new();
    let split = data
        .get(2..4)
        .map_or(data.len(), |size| usize::from(u16::from_be_bytes([size[0], size[1]])))
        .min(data.len());
    let _ = decoder.decode(&data[..split]);
    let _ = decoder.decode(&data[split..]);
});
