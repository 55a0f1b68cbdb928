//! DHCP replies from anyone on the LAN, through a lease's whole life: the input is cut in
//! three, taken as the answers to the DISCOVER, to the REQUEST it may have led to, and to the
//! renewal at T1 (or the rebinding at T2) if a lease came of it. Never a panic.
#![no_main]

use std::time::{Duration, Instant};

use edgeward_dhcp::{DhcpClient, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cut, data) = data
        .split_first()
        .map_or((0, data), |(cut, rest)| (*cut, rest));
    let first_end = (usize::from(cut & 0x0f) * 40).min(data.len());
    let second_end = (first_end + usize::from(cut >> 4) * 40).min(data.len());
    let (first, rest) = data.split_at(first_end);
    let (second, third) = rest.split_at(second_end - first_end);
    let now = Instant::now();
    let mut client = DhcpClient::new([0x52, 0x54, 0, 0x12, 0x34, 0x56], 0x0102_0304);
    let Ok(_) = client.discover() else { return };
    let Ok(Step::Send(_)) = client.handle(first, now) else {
        return;
    };
    let Ok(Step::Bound(lease)) = client.handle(second, now) else {
        return;
    };
    // Renewing when `cut` is even, rebinding when it is odd.
    let mut at = now + lease.renew;
    if cut & 1 == 1 {
        at = now + lease.rebind;
        let _ = client.timeout(now + lease.renew);
    }
    let _ = client.timeout(at);
    let _ = client.handle(third, at);
    let _ = client.timeout(at + Duration::from_secs(1));
    let _ = client.deadline();
});
