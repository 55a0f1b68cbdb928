//! A capture file from untrusted bytes: libpcap records, link, IP, TCP/UDP, reassembly and the
//! C37.118 frames inside.
#![no_main]

use edgeward_measurement::replay::replay;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = replay(data);
});
