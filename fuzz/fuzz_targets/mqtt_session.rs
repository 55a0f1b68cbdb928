//! What a broker (or whoever sits on the path after TLS ends at a hostile broker) sends the
//! device: the input is cut into reads at the lengths its first bytes give, and fed to a
//! session that has a few publishes in flight. Never a panic; an acknowledgement only of what
//! is in flight.
#![no_main]

use std::time::{Duration, Instant};

use bytes::Bytes;
use edgeward_mqtt::{Event, Session};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let Ok(mut session) = Session::<u32>::new("fuzz", Duration::from_secs(5), now) else {
        return;
    };
    // A CONNACK first, when the input asks for one, so that PUBACK handling is reached too.
    let (connack, rest) = match data.split_first() {
        Some((flag, rest)) if flag & 1 == 1 => (true, rest),
        Some((_, rest)) => (false, rest),
        None => return,
    };
    let mut events = Vec::new();
    if connack {
        if session.receive(&[0x20, 0x02, 0x00, 0x00], &mut events).is_err() {
            return;
        }
        for key in 0..4u32 {
            if session.publish(key, "t", Bytes::from_static(b"x"), false, now).is_err() {
                return;
            }
        }
    }
    let mut rest = rest;
    while let Some((&cut, tail)) = rest.split_first() {
        let take = usize::from(cut % 32).min(tail.len());
        let (chunk, tail) = tail.split_at(take);
        rest = tail;
        if session.receive(chunk, &mut events).is_err() {
            break;
        }
    }
    for event in events {
        if let Event::Acknowledged(key) = event {
            assert!(key < 4, "acknowledged a publish never made");
        }
    }
    let _ = session.tick(now + Duration::from_secs(6));
    let _ = session.take_outgoing();
});
