//! Issue 12's benchmark, measured, not asserted: a 50 MB workload bundle (the probe and a 48 MB
//! file of random bytes) launched in the booted appliance (TCG, OVMF Secure Boot, swtpm), three
//! boots. Per launch: verifying and measuring it (open, signature, superblock, the PCR 15
//! extend: `admit_ms`), mapping it (loop device, dm-verity table, erofs mount: `map_ms`), and
//! from starting its sandbox to its first output line (`after_start_ms`). And the read rate of
//! its files with the page cache dropped, through dm-verity and through a plain loop device
//! (the raw erofs), which the agent measures itself in an image built with
//! `edgeward.bench=workloads` on its command line (this benchmark's image, never a release).
//!
//! Run: `cargo build --release --workspace --bins && cargo build --profile image -p
//! edgeward-agent && scripts/build-workloads && cargo bench -p edgeward-tests --bench
//! workload_launch`. Figures go to docs/benchmarks.md.

use std::path::Path;
use std::time::Duration;

use edgeward_tests::appliance::{configured_disk_with, Central, Release};
use edgeward_tests::qemu::{self, Vm};
use edgeward_tests::workloads::example_workload;
use edgeward_tests::{build_image_with, run_edgeward, shipped_agent_binary};

/// A `key=value` field of a console line.
fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.trim_matches('"').parse().ok())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The probe and 48 MB of random bytes, packed and signed.
fn big_bundle(keys: &Path, dir: &Path) -> std::path::PathBuf {
    let content = dir.join("big-content");
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(content.join("bin")).expect("dir");
    std::fs::create_dir_all(content.join("data")).expect("dir");
    std::fs::copy(
        example_workload("workload-probe"),
        content.join("bin/workload-probe"),
    )
    .expect("copy");
    let mut blob = vec![0u8; 48 << 20];
    // xorshift: incompressible, reproducible.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in blob.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(content.join("data/blob"), blob).expect("blob");
    let out = dir.join("big.ewb");
    run_edgeward(&[
        "workload",
        "pack",
        &content.to_string_lossy(),
        "--name",
        "big",
        "--version",
        "1.0.0",
        "--command",
        "/bin/workload-probe",
        "--restart",
        "never",
        "--out",
        &out.to_string_lossy(),
    ]);
    run_edgeward(&[
        "workload",
        "sign",
        &out.to_string_lossy(),
        "--key",
        &keys.join("workload.key").to_string_lossy(),
    ]);
    out
}

struct Launch {
    admit_ms: f64,
    map_ms: f64,
    first_output_ms: f64,
    verity_mb_s: f64,
    raw_mb_s: f64,
}

fn launch(release: &Release, bundle: &Path, released: &Path, run: usize) -> Launch {
    let central = Central::start_releasing(
        &release.dir.join(format!("launch-{run}")),
        release,
        &[&release.image],
        Some(released),
    )
    .expect("the central side starts");
    let config = central.device_config_with_workloads(
        release,
        1,
        1,
        &["big.ewb"],
        &central.dir.join("device.toml"),
    );
    let disk = central.dir.join("disk.img");
    configured_disk_with(&release.image, &config, &[bundle], &disk);
    let mut vm = Vm::start(
        &release.image,
        &disk,
        &central.dir.join("tpm"),
        &central.dir.join("console.log"),
    );
    let wait = |text: &str| {
        vm.wait_for(text, Duration::from_secs(180))
            .unwrap_or_else(|| panic!("no {text:?}: {}", vm.console().join("\n")))
    };
    let admitted = wait("workload measured");
    let mapped = wait("image mapped through dm-verity");
    let rates = wait("EDGEWARD-BENCH");
    let first = wait("first output");
    vm.power_button();
    vm.wait_for("EDGEWARD-STOPPED", Duration::from_secs(60));
    vm.wait_exit(Duration::from_secs(30));
    let get =
        |line: &str, key: &str| field(line, key).unwrap_or_else(|| panic!("no {key} in {line}"));
    eprintln!("run {run}: {rates}");
    Launch {
        admit_ms: get(&admitted, "admit_ms"),
        map_ms: get(&mapped, "map_ms"),
        first_output_ms: get(&first, "after_start_ms"),
        verity_mb_s: get(&rates, "verity_mb_s"),
        raw_mb_s: get(&rates, "raw_mb_s"),
    }
}

fn main() {
    if !qemu::available() {
        eprintln!("QEMU, OVMF or swtpm is missing (scripts/setup)");
        std::process::exit(1);
    }
    let dir = edgeward_tests::scratch_shared("workload-launch-bench");
    let keys = dir.join("keys");
    let image = dir.join("image");
    run_edgeward(&["keys", "init", &keys.to_string_lossy()]);
    build_image_with(
        &keys,
        &image,
        &shipped_agent_binary(),
        &[
            "--cmdline",
            "console=ttyS0 quiet loglevel=4 panic=-1 edgeward.bench=workloads",
            "--esp-mib",
            "128",
        ],
    );
    let release = Release {
        dir: dir.clone(),
        keys: keys.clone(),
        image,
    };
    let bundle = big_bundle(&keys, &dir);
    let size = std::fs::metadata(&bundle).expect("bundle").len();
    let released = dir.join("released-workloads.json");
    run_edgeward(&[
        "workload",
        "release",
        &bundle.to_string_lossy(),
        "--keys",
        &keys.to_string_lossy(),
        "--out",
        &released.to_string_lossy(),
    ]);
    let launches: Vec<Launch> = (1..=3)
        .map(|run| launch(&release, &bundle, &released, run))
        .collect();
    let column = |pick: fn(&Launch) -> f64| {
        let mut values: Vec<f64> = launches.iter().map(pick).collect();
        let all = values
            .iter()
            .map(|value| format!("{value:.1}"))
            .collect::<Vec<_>>()
            .join(" / ");
        (median(&mut values), all)
    };
    println!("bundle: {size} bytes");
    for (what, pick) in [
        (
            "verify + measure (ms)",
            (|l: &Launch| l.admit_ms) as fn(&Launch) -> f64,
        ),
        ("map: loop + dm-verity + mount (ms)", |l| l.map_ms),
        ("sandbox start to first output (ms)", |l| l.first_output_ms),
        ("launch total (ms)", |l| {
            l.admit_ms + l.map_ms + l.first_output_ms
        }),
        ("read through dm-verity (MB/s)", |l| l.verity_mb_s),
        ("read raw erofs (MB/s)", |l| l.raw_mb_s),
    ] {
        let (median, all) = column(pick);
        println!("{what:40} median {median:8.1}   runs {all}");
    }
}
