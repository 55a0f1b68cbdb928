//! TCP segments in any order, overlap and sequence-number wrap: reassembly never delivers a byte
//! twice and never invents one.
#![no_main]

use edgeward_measurement::capture::{CaptureEvent, Flow, TcpReassembler, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let flow = Flow {
        transport: Transport::Tcp,
        source: ([10, 0, 0, 1], 4712).into(),
        destination: ([10, 0, 0, 2], 40000).into(),
    };
    let mut tcp = TcpReassembler::new();
    let mut events = Vec::new();
    let mut offered = 0usize;
    let mut rest = data;
    // Each segment: u32 sequence, u8 flags (bit 0 = SYN), u8 length, then that many bytes.
    while rest.len() >= 6 {
        let sequence = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let syn = rest[4] & 1 == 1;
        let length = usize::from(rest[5]).min(rest.len() - 6);
        let payload = &rest[6..6 + length];
        offered += length;
        tcp.segment(flow, sequence, syn, payload, &mut events);
        rest = &rest[6 + length..];
    }
    tcp.finish(&mut events);
    let delivered: usize = events
        .iter()
        .map(|event| match event {
            CaptureEvent::Payload { bytes, .. } => bytes.len(),
            _ => 0,
        })
        .sum();
    assert!(delivered <= offered, "delivered {delivered} of {offered} offered bytes");
});
