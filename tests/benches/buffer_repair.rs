//! What a power cut costs the next start: the agent's durable buffer is filled to a size by a
//! child process that then aborts (no clean close, as a crash or power cut leaves it), and the
//! time `Buffer::open` takes to repair and reopen it is measured. The buffer commits without
//! redb's quick repair (decision 0029): every commit is one fsync cheaper, and a crash costs this
//! walk of the file instead.
//!
//! Run: `cargo bench -p edgeward-tests --bench buffer_repair`. Results go to docs/benchmarks.md.

use std::path::Path;
use std::time::Instant;

use edgeward_agent::buffer::{Buffer, Limits, Outgoing, StateChanges};

/// Buffer sizes to fill, MiB.
const SIZES_MIB: [u64; 3] = [16, 128, 512];
/// Messages of about a VILLAS sample's size, committed in groups as a backlog is accepted.
const PAYLOAD: usize = 300;
const PER_COMMIT: usize = 2000;

fn fill(dir: &Path, mib: u64) -> ! {
    let buffer = Buffer::open(dir, Limits { max_bytes: 4 << 30 }).expect("the buffer opens");
    let message = Outgoing {
        topic: "data/measurements/bench/device/bay-1".into(),
        payload: vec![0x5a; PAYLOAD],
        retain: false,
    };
    let batch = vec![message; PER_COMMIT];
    let goal = mib << 20;
    while buffer.fill().expect("fill").bytes < goal {
        buffer
            .accept(&batch, &StateChanges::default())
            .expect("accepted");
    }
    // As a power cut leaves it: nothing closed, nothing flushed beyond the last commit.
    std::process::abort();
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let [_, command, dir, mib] = args.as_slice() {
        if command == "fill" {
            fill(Path::new(dir), mib.parse().expect("MiB"));
        }
    }
    let scratch = edgeward_tests::scratch("bench-buffer-repair");
    let exe = std::env::current_exe().expect("the bench's own path");
    for mib in SIZES_MIB {
        let dir = scratch.join(format!("buffer-{mib}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("buffer directory");
        let status = std::process::Command::new(&exe)
            .args(["fill", &dir.display().to_string(), &mib.to_string()])
            .status()
            .expect("the filling process runs");
        assert!(!status.success(), "the filling process was meant to abort");
        let file_bytes: u64 = std::fs::read_dir(&dir)
            .expect("buffer directory")
            .filter_map(Result::ok)
            .filter_map(|entry| entry.metadata().ok())
            .map(|metadata| metadata.len())
            .sum();
        // The page cache would hide the reads a cold start after a power cut makes.
        let cold = std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok();
        let started = Instant::now();
        let buffer = Buffer::open(&dir, Limits { max_bytes: 4 << 30 })
            .expect("the buffer reopens after the crash");
        let opened = started.elapsed();
        let fill = buffer.fill().expect("fill");
        assert!(
            fill.bytes >= mib << 20,
            "the buffer kept {} bytes of at least {}",
            fill.bytes,
            mib << 20
        );
        println!(
            "{mib} MiB of messages ({} messages, file {:.0} MiB): reopened after the crash in {:.3} s{}",
            fill.messages,
            file_bytes as f64 / f64::from(1 << 20),
            opened.as_secs_f64(),
            if cold { "" } else { " (page cache not dropped: run as root for a cold reopen)" }
        );
        drop(buffer);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
