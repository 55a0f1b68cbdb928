//! The booted appliance's targets (issue 11, item 7), measured, not asserted: the released image
//! with the agent as it ships (`image` profile) boots in QEMU (TCG, OVMF Secure Boot, swtpm)
//! against the central side of the tests (verifier, Mosquitto, TSA, recorder, chronyd, pyPMU),
//! three boots with one PMU stream (`EDGEWARD_BENCH_STREAMS=N` for N). Per boot: QEMU start to `EDGEWARD-READY`, to the
//! clock, to the device certificate, to the first block on the platform and to the first block
//! that `verify-data` accepts; then the agent's CPU time per stream between two
//! `EDGEWARD-RESOURCES` lines 30 s apart while streaming, and its peak RSS at the stop. The size
//! of the signed UKI.
//!
//! Run: `cargo build --release --workspace --bins && cargo build --profile image -p
//! edgeward-agent && cargo bench -p edgeward-tests --bench appliance`. Figures go to docs/benchmarks.md.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgeward_tests::appliance::{configured_disk, Central, Release};
use edgeward_tests::platform::block_files_of;
use edgeward_tests::qemu::{self, Vm};
use edgeward_tests::{build_image, edgeward_binary, run_edgeward};

const POINT: &str = "sub1/bay-50/bay-1";

/// A `key=value` field of a console line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
}

/// Seconds since QEMU started until the console shows `text`.
fn seconds_to(vm: &Vm, text: &str, timeout: Duration) -> Option<f64> {
    vm.wait_for(text, timeout)?;
    Some(vm.started.elapsed().as_secs_f64())
}

/// Whether `verify-data` accepts at least one block of the store (the others may still wait
/// for their proofs).
fn verifies(store: &Path, central: &Central) -> bool {
    Command::new(edgeward_binary())
        .arg("verify-data")
        .arg(store)
        .arg("--tsa-root")
        .arg(central.platform.pki("tsa-root.crt"))
        .arg("--device-ca")
        .arg(&central.device_ca)
        .output()
        .is_ok_and(|output| {
            String::from_utf8_lossy(&output.stdout)
                .lines()
                .any(|line| line.contains(": ok "))
        })
}

struct Boot {
    ready: f64,
    clock: f64,
    certificate: f64,
    first_block: f64,
    first_verified: f64,
    /// Per cent of one core per stream while streaming: (user, system).
    cpu_per_stream: (f64, f64),
    peak_rss_kib: f64,
}

fn boot(release: &Release, name: &str, streams: usize) -> Boot {
    let central =
        Central::start(release, name, &[&release.image]).expect("the central side starts");
    let config = central.device_config_with(release, streams);
    let disk = central.dir.join("disk.img");
    configured_disk(&release.image, &config, &disk);
    let store = central.dir.join("store");
    let _recorder = central
        .platform
        .recorder_trusting(&store, &central.device_ca);
    let mut vm = Vm::start(
        &release.image,
        &disk,
        &central.dir.join("tpm"),
        &central.dir.join("console.log"),
    );
    let minutes = Duration::from_secs(180);
    let ready = seconds_to(&vm, "EDGEWARD-READY", minutes).expect("READY");
    let clock = seconds_to(&vm, "EDGEWARD-CLOCK", minutes).expect("clock");
    // The attestation role's line, not the forwarder's "no device certificate yet".
    let certificate = seconds_to(&vm, "device certificate written", minutes).expect("certificate");
    let started = vm.started;
    let wait = |done: &dyn Fn() -> bool| {
        while !done() {
            assert!(started.elapsed() < minutes, "within {minutes:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
        started.elapsed().as_secs_f64()
    };
    let first_block = wait(&|| !block_files_of(&store, POINT).is_empty());
    let first_verified = wait(&|| verifies(&store, &central));
    // Two resource lines while streaming, the first after the first verified block.
    let seen = vm
        .console()
        .iter()
        .filter(|line| line.starts_with("EDGEWARD-RESOURCES"))
        .count();
    let resources = |vm: &Vm| -> Vec<String> {
        vm.console()
            .into_iter()
            .filter(|line| line.starts_with("EDGEWARD-RESOURCES"))
            .collect()
    };
    while resources(&vm).len() < seen + 2 {
        assert!(started.elapsed() < minutes * 2, "resource lines");
        std::thread::sleep(Duration::from_millis(500));
    }
    let lines = resources(&vm);
    let (a, b) = (&lines[seen], &lines[seen + 1]);
    let span = field(b, "uptime_s").expect("uptime") - field(a, "uptime_s").expect("uptime");
    let share = |key: &str| {
        (field(b, key).expect(key) - field(a, key).expect(key)) / 1000.0 / span * 100.0
            / streams as f64
    };
    let cpu_per_stream = (share("user_ms"), share("system_ms"));
    vm.power_button();
    let stopped = vm
        .wait_for("EDGEWARD-STOPPED", Duration::from_secs(90))
        .expect("the appliance stops");
    assert!(vm.wait_exit(Duration::from_secs(30)), "QEMU ends");
    Boot {
        ready,
        clock,
        certificate,
        first_block,
        first_verified,
        cpu_per_stream,
        peak_rss_kib: field(&stopped, "peak_rss_kib").expect("peak RSS"),
    }
}

fn spread(values: impl Iterator<Item = f64>) -> String {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    format!(
        "min {:.2}, median {:.2}, max {:.2}",
        values[0],
        values[values.len() / 2],
        values[values.len() - 1]
    )
}

fn main() {
    if std::env::args().any(|arg| arg == "--list") || !qemu::available() {
        return;
    }
    let agent = edgeward_tests::shipped_agent_binary();
    let dir = edgeward_tests::scratch_shared("appliance-bench");
    let keys = dir.join("keys");
    let image = dir.join("image");
    run_edgeward(&["keys", "init", &keys.to_string_lossy()]);
    build_image(&keys, &image, &agent);
    let uki = std::fs::metadata(image.join("uki.efi")).expect("UKI").len();
    let release = Release { dir, keys, image };
    println!("agent: {}", agent.display());
    println!(
        "signed UKI: {uki} bytes ({:.2} MB, {:.2} MiB)",
        uki as f64 / 1e6,
        uki as f64 / 1_048_576.0
    );
    // Ten streams saturate the guest's one emulated vCPU (docs/benchmarks.md), so the default
    // run is one stream; EDGEWARD_BENCH_STREAMS=10 runs the other.
    let streams: usize = std::env::var("EDGEWARD_BENCH_STREAMS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1);
    // Three boots by default; EDGEWARD_BENCH_BOOTS=N for a steadier median on a noisy host.
    let runs: usize = std::env::var("EDGEWARD_BENCH_BOOTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|runs| *runs > 0)
        .unwrap_or(3);
    let boots: Vec<Boot> = (0..runs)
        .map(|run| {
            let boot = boot(&release, &format!("streams-{streams}-{run}"), streams);
            println!(
                "{streams} stream(s), run {run}: READY {:.2} s, clock {:.2} s, certificate {:.2} s, first block {:.2} s, first verified {:.2} s, CPU per stream {:.3} % user + {:.3} % system of one core, peak RSS {} KiB",
                boot.ready,
                boot.clock,
                boot.certificate,
                boot.first_block,
                boot.first_verified,
                boot.cpu_per_stream.0,
                boot.cpu_per_stream.1,
                boot.peak_rss_kib
            );
            boot
        })
        .collect();
    println!(
        "{streams} stream(s), {runs} boots: READY {} s; first verified block {} s; CPU per stream {} % of one core; peak RSS {} KiB",
        spread(boots.iter().map(|boot| boot.ready)),
        spread(boots.iter().map(|boot| boot.first_verified)),
        spread(boots.iter().map(|boot| boot.cpu_per_stream.0 + boot.cpu_per_stream.1)),
        spread(boots.iter().map(|boot| boot.peak_rss_kib)),
    );
}
