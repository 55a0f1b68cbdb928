//! Image targets (issue 3), measured, not asserted: `image build` from cached inputs, the size of
//! the signed UKI, and power-on to `EDGEWARD-READY` under QEMU TCG with OVMF Secure Boot and
//! swtpm.
//!
//! Run: `cargo build --release --workspace --bins && cargo build --profile image -p
//! edgeward-agent && cargo bench -p edgeward-tests --bench image`. Figures go to
//! docs/benchmarks.md.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use edgeward_tests::{build_image, edgeward_binary, qemu, run_edgeward, workspace_root};

const RUNS: usize = 3;

fn summary(mut samples: Vec<Duration>) -> String {
    samples.sort();
    format!(
        "min {:.2} s, median {:.2} s, max {:.2} s ({} runs)",
        samples[0].as_secs_f64(),
        samples[samples.len() / 2].as_secs_f64(),
        samples[samples.len() - 1].as_secs_f64(),
        samples.len()
    )
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") || !qemu::available() {
        return;
    }
    let dir = workspace_root().join("target/image-bench");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench directory");
    let keys = dir.join("keys");
    run_edgeward(&["keys", "init", &keys.to_string_lossy()]);
    let image_profile = workspace_root().join("target/image/edgeward-agent");
    let agent: PathBuf = if image_profile.is_file() {
        image_profile
    } else {
        edgeward_binary().with_file_name("edgeward-agent")
    };
    println!("agent: {}", agent.display());
    let out = dir.join("image");
    let build = |out: &PathBuf| build_image(&keys, out, &agent);
    // The first build fills the kernel cache; the timed ones start from it.
    build(&out);
    let builds: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let started = Instant::now();
            build(&out);
            started.elapsed()
        })
        .collect();
    let uki = std::fs::metadata(out.join("uki.efi")).expect("UKI").len();
    let tpm = dir.join("tpm");
    // The first boot also creates the TPM's EK certificates: not timed.
    let _ = qemu::boot(&out, &tpm, Duration::from_secs(90));
    let boots: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let outcome = qemu::boot(&out, &tpm, Duration::from_secs(90));
            outcome.ready_after.expect("the image reaches READY")
        })
        .collect();
    println!("image build from cached inputs: {}", summary(builds));
    println!(
        "signed UKI: {uki} bytes ({:.2} MB)",
        uki as f64 / 1_000_000.0
    );
    println!("power-on to EDGEWARD-READY: {}", summary(boots));
    let _ = std::fs::remove_dir_all(&dir);
}
