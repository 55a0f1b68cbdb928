//! DHCP replies from anyone on the LAN: the first part of the input is taken as the answer to
//! the DISCOVER, the rest as the answer to the REQUEST it may have led to. Never a panic.
#![no_main]

use edgeward_dhcp::{DhcpClient, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.first().map_or(0, |byte| usize::from(*byte) * 2).min(data.len());
    let (first, second) = data.split_at(split);
    let mut client = DhcpClient::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], 0x0102_0304);
    let Ok(_) = client.discover() else { return };
    if let Ok(Step::Send(_)) = client.handle(first) {
        let _ = client.handle(second);
    }
});
