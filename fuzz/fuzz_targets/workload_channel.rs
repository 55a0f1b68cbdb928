//! A line a workload writes on its samples channel: code someone else wrote, running on the
//! appliance, talking to the agent. Never a panic; an accepted alert keeps to the limits.
#![no_main]

use edgeward_workload::channel::{read_line, FromWorkload, MAX_BODY, MAX_TITLE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(FromWorkload::Alert { title, body, tag, .. }) = read_line(data) {
        assert!(title.chars().count() <= MAX_TITLE);
        assert!(body.chars().count() <= MAX_BODY);
        assert!(tag.len() <= 64);
    }
});
