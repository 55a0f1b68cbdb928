//! The booted appliance as the product: the released image, configured for one device with
//! `edgeward image configure`, boots under OVMF Secure Boot in QEMU with swtpm, and PID 1
//! brings the appliance up against a central side on the host (the verifier, Mosquitto, the
//! TSA, the recorder, chronyd for SNTP, pyPMU as the substation's PMU), which the guest
//! reaches as 10.0.2.2 on QEMU's user network.
//!
//! Checked, with the real components: a configuration altered after signing, or an older
//! issue of it put back, is refused at boot in one console line and nothing starts; a configured appliance attests, gets its
//! certificate and streams blocks the platform verifies; through a broker outage of a minute
//! with a power cut inside it, nothing the appliance accepted is lost (every sample from the
//! first to the last, except while it was off, arrives once, signed and time-stamped); the
//! power button stops it cleanly. An image the owner signed but never released boots, gets no
//! certificate, and publishes nothing. Signed workloads run in it measured, confined and
//! limited; a foreign-signed one is refused, an altered one dies when dm-verity refuses its
//! block. In that boot the appliance is its own PMU (a simulated source, estimated in the guest):
//! its estimate is what the platform files and what raises the workload's frequency alarm.

use std::path::Path;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgeward_measurement::sample::Value;
use edgeward_tests::appliance::{configured_disk, configured_disk_with, Central, Release, RATE};
use edgeward_tests::platform::{
    block_files_of, recorded_samples_of, recorded_sequences_of, subscribe, Collector,
};
use edgeward_tests::qemu::{self, Vm};
use edgeward_tests::workloads::{assert_probe_passed, bundle, example_workload};
use edgeward_tests::{build_image, build_image_with, run_edgeward, shipped_agent_binary};

const POINT: &str = "sub1/bay-50/bay-1";
/// The simulated signal's frequency where the appliance is the PMU: 80 mHz above 50 Hz, outside
/// the frequency alarm's ±50 mHz band.
const ESTIMATED_FREQUENCY: f64 = 50.08;

/// The released image and its keys, built once for the file.
static RELEASE: OnceLock<Option<Release>> = OnceLock::new();
/// One QEMU at a time: two TCG guests on two cores would each take twice as long.
static ONE_VM: Mutex<()> = Mutex::new(());

fn release() -> Option<&'static Release> {
    RELEASE
        .get_or_init(|| {
            if !qemu::available() {
                return None;
            }
            let dir = edgeward_tests::scratch_shared("appliance-test");
            let keys = dir.join("keys");
            let image = dir.join("image");
            run_edgeward(&["keys", "init", &keys.to_string_lossy()]);
            build_image(&keys, &image, &shipped_agent_binary());
            Some(Release { dir, keys, image })
        })
        .as_ref()
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// Overwrites the configuration on `disk`'s ESP with `text`, keeping the signature there: what
/// someone with the disk in hand can do.
fn replace_config_on_disk(disk: &Path, text: &str, scratch: &Path) {
    let file = scratch.join("device.toml");
    std::fs::write(&file, text).expect("write");
    replace_on_esp(disk, &file, "EFI/edgeward/device.toml");
}

/// Overwrites `target` on `disk`'s ESP with `file`.
fn replace_on_esp(disk: &Path, file: &Path, target: &str) {
    let status = Command::new("mcopy")
        .arg("-o")
        .arg("-i")
        .arg(format!("{}@@1048576", disk.display()))
        .arg(file)
        .arg(format!("::{target}"))
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .expect("mcopy");
    assert!(status.success());
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "{what} within {} s",
            timeout.as_secs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    started.elapsed()
}

/// The last `lines` lines of the guest's console, for a failure's message.
fn console_tail(vm: &Vm, lines: usize) -> String {
    let text = console_text(vm);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Boots `disk` and expects the appliance to refuse its configuration in one console line
/// naming `reason`, bring no network up, and power off; returns the line.
fn refused_at_boot(
    release: &Release,
    disk: &Path,
    tpm_state: &Path,
    console: &Path,
    reason: &str,
) -> String {
    let mut vm = Vm::start(&release.image, disk, tpm_state, console);
    let line = vm
        .wait_for("EDGEWARD-REFUSED", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("not refused ({reason}): {}", console_text(&vm)));
    assert!(line.contains(reason), "{line}");
    assert!(
        vm.wait_exit(Duration::from_secs(30)),
        "powers off after refusing"
    );
    let text = console_text(&vm);
    assert!(!text.contains("EDGEWARD-NETWORK"), "{text}");
    line
}

fn console_text(vm: &Vm) -> String {
    vm.console()
        .into_iter()
        .filter(|line| !line.starts_with("EDGEWARD-EVENTLOG"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_booted_appliance_streams_verified_data_and_loses_nothing_through_outage_and_power_cut() {
    let Some(release) = release() else { return };
    let _one = ONE_VM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(mut central) = Central::start(release, "streaming", &[&release.image]) else {
        return;
    };
    let dir = central.dir.clone();
    // Issue 2 of the device's configuration; issue 1 is put back at the end.
    let config = central.device_config_issue(release, 1, 2, &dir.join("device.toml"));
    let tpm_state = dir.join("tpm");

    // The tool refuses to put an altered configuration on a disk.
    let text = std::fs::read_to_string(&config).expect("read");
    let altered_text = text.replace("block_seconds = 1", "block_seconds = 9");
    let altered = dir.join("altered");
    std::fs::create_dir_all(&altered).expect("dir");
    std::fs::write(altered.join("device.toml"), &altered_text).expect("write");
    std::fs::copy(dir.join("device.toml.sig"), altered.join("device.toml.sig")).expect("copy");
    let refused = Command::new(edgeward_tests::edgeward_binary())
        .args(["image", "configure", "--image"])
        .arg(&release.image)
        .arg("--disk")
        .arg(dir.join("unused.img"))
        .arg("--config")
        .arg(altered.join("device.toml"))
        .output()
        .expect("runs");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("not one this image obeys"),
        "{said}"
    );

    // Someone with the disk in hand alters the configuration on it: the appliance says so in
    // one line and powers off; the network never comes up.
    let disk = dir.join("disk.img");
    configured_disk(&release.image, &config, &disk);
    replace_config_on_disk(&disk, &altered_text, &altered);
    let line = refused_at_boot(
        release,
        &disk,
        &tpm_state,
        &dir.join("console-refused.log"),
        "altered after signing",
    );
    eprintln!("refused as expected (altered on the disk): {line}");

    // The configured appliance: attests, streams, the platform verifies.
    configured_disk(&release.image, &config, &disk);
    let store = dir.join("store");
    let recorder = central
        .platform
        .recorder_trusting(&store, &central.device_ca);
    let mut vm = Vm::start(&release.image, &disk, &tpm_state, &dir.join("console.log"));
    let booted = vm.started;
    vm.wait_for("EDGEWARD-READY", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no boot: {}", console_text(&vm)));
    let ready_after = booted.elapsed();
    let clock = vm
        .wait_for("EDGEWARD-CLOCK", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no clock: {}", console_text(&vm)));
    vm.wait_for("device certificate written", Duration::from_secs(90))
        .unwrap_or_else(|| panic!("no certificate: {}", console_text(&vm)));
    wait_until(
        "the first block at the recorder",
        Duration::from_secs(60),
        || !block_files_of(&store, POINT).is_empty(),
    );
    let first_block_after = booted.elapsed();
    wait_until(
        "three blocks at the recorder",
        Duration::from_secs(60),
        || block_files_of(&store, POINT).len() >= 3,
    );
    eprintln!(
        "booted appliance: READY {:.1} s, {clock}, first block recorded {:.1} s after QEMU started",
        ready_after.as_secs_f64(),
        first_block_after.as_secs_f64()
    );
    // Heartbeats every 2 s: five of them, once the roles are streaming (however long the boot).
    let heartbeats = subscribe(&central.platform, "heartbeats", 10);
    let beats = heartbeats.wait_with_output().expect("heartbeats");
    let beats = String::from_utf8_lossy(&beats.stdout);
    assert!(
        beats.contains("\"attestation\":\"running\"") && beats.contains("\"stream\":\"running\""),
        "roles in the heartbeats: {beats}"
    );

    // A minute without the broker, with the power cut in the middle of it.
    central.platform.stop_broker();
    let outage = Instant::now();
    std::thread::sleep(Duration::from_secs(25));
    let cut_at = now();
    vm.power_cut();
    // QEMU dies a few milliseconds after `cut_at` (pkill is a process of its own): a frame
    // stamped in between may be the last one accepted.
    let cut_done = now();
    let mut consoles = vm.console();
    let mut vm = Vm::start(&release.image, &disk, &tpm_state, &dir.join("console.log"));
    vm.wait_for("device certificate written", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no certificate after the power cut: {}", console_text(&vm)));
    std::thread::sleep(Duration::from_secs(60).saturating_sub(outage.elapsed()));
    central.platform.start_broker();
    let back_at = now();
    // Everything buffered before the cut and since the reboot arrives, with its proofs.
    // The backlog's proofs wait for the certificate of the new boot; then the shipped agent
    // proves a block in about 0.3 s under TCG (a TPM signature and a TSA token at once).
    let caught_up = Instant::now();
    loop {
        let last = recorded_sequences_of(&store, POINT).last().copied();
        let recent = last.is_some_and(|last| last as f64 / RATE as f64 > back_at + 2.0);
        let report = if recent {
            std::thread::sleep(Duration::from_secs(2));
            let (ok, report) = central
                .platform
                .verify_data_trusting(&store, &central.device_ca);
            if ok {
                break;
            }
            report
        } else {
            String::new()
        };
        if caught_up.elapsed() > Duration::from_secs(180) {
            panic!(
                "within 180 s of the broker's return, blocks cut after it and every recorded \
                 block proven: the last recorded sample is {:.1} s after the return; \
                 verify-data:\n{report}\nthe guest's console:\n{}",
                last.map_or(f64::NAN, |last| last as f64 / RATE as f64 - back_at),
                console_tail(&vm, 60)
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }

    // The power button: every role stops, the buffer is flushed, the guest powers off.
    vm.power_button();
    let stopped = vm
        .wait_for("EDGEWARD-STOPPED", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no clean stop: {}", console_text(&vm)));
    assert!(vm.wait_exit(Duration::from_secs(30)), "powers off");
    eprintln!("power button: {stopped}");
    consoles.extend(vm.console());
    std::thread::sleep(Duration::from_secs(2));
    drop(recorder);

    let (ok, report) = central
        .platform
        .verify_data_trusting(&store, &central.device_ca);
    assert!(ok, "verify-data:\n{report}");
    assert!(report.contains("device=bay-50"), "{report}");
    assert!(!store.join("aside").exists(), "nothing set aside: {report}");

    // Nothing accepted is lost, nothing arrives twice. Every frame pyPMU sent (its own record
    // of the stamps it encoded) from the first recorded sample to the last is recorded, but
    // for two kinds: those sent while the appliance was off (one gap, starting when the power
    // was cut), and those the appliance refused, and logged, as not after the previous one
    // (pyPMU stamps a frame when it sends it, so a late send can land on its predecessor's
    // grid point; a point no frame landed on was never sent and is not missing).
    let sequences = recorded_sequences_of(&store, POINT);
    let mut sorted = sequences.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), sequences.len(), "a sample recorded twice");
    let refused: std::collections::BTreeSet<u64> = consoles
        .iter()
        .filter(|line| line.contains("not after the previous one"))
        .filter_map(|line| line.rsplit("sequence=").next()?.trim().parse().ok())
        .collect();
    let seconds = |sequence: u64| sequence as f64 / RATE as f64;
    let off: Vec<(u64, u64)> = sorted
        .windows(2)
        .filter(|pair| pair[1] - pair[0] > 2 * RATE)
        .map(|pair| (pair[0], pair[1]))
        .collect();
    let recorded: std::collections::BTreeSet<u64> = sorted.iter().copied().collect();
    let sent = central.pmu_sent_sequences();
    let (first, last) = (sorted[0], sorted[sorted.len() - 1]);
    let missing: Vec<u64> = sent
        .range(first..=last)
        .copied()
        .filter(|sequence| !recorded.contains(sequence) && !refused.contains(sequence))
        .filter(|sequence| {
            !off.iter()
                .any(|(from, to)| from < sequence && sequence < to)
        })
        .collect();
    // In runs of consecutive sequences, for the message.
    let mut unexplained: Vec<(f64, usize)> = Vec::new();
    let mut previous = None;
    for sequence in &missing {
        match unexplained.last_mut() {
            Some(run) if previous == Some(sequence - 1) => run.1 += 1,
            _ => unexplained.push((seconds(*sequence), 1)),
        }
        previous = Some(*sequence);
    }
    eprintln!(
        "{} samples in {} blocks, {} frames sent by pyPMU in that span, {} refused as not after \
         the previous one; off {:?}; power cut at {cut_at:.2}",
        sorted.len(),
        block_files_of(&store, POINT).len(),
        sent.range(first..=last).count(),
        refused.len(),
        off.iter()
            .map(|(from, to)| format!("{:.2}..{:.2}", seconds(*from), seconds(*to)))
            .collect::<Vec<_>>()
    );
    assert!(
        unexplained.is_empty(),
        "frames pyPMU sent, not refused, not recorded (start, count): {unexplained:?}; the \
         guest's warnings:\n{}",
        consoles
            .iter()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(off.len(), 1, "one gap, while the power was off: {off:?}");
    let (last_before, first_after) = off[0];
    assert!(
        seconds(last_before) > cut_at - 3.0 && seconds(last_before) <= cut_done,
        "the samples before the cut all arrived: the last is {:.3}, the cut {cut_at:.3} to \
         {cut_done:.3}",
        seconds(last_before)
    );
    assert!(seconds(first_after) > cut_at, "after the reboot");

    // Someone puts back issue 1, validly signed, on a disk wiped to the image's: the TPM's
    // configuration counter says issue 2 has run, so it is refused and nothing starts.
    let old = central.device_config_issue(release, 1, 1, &dir.join("issue-1/device.toml"));
    configured_disk(&release.image, &old, &disk);
    let line = refused_at_boot(
        release,
        &disk,
        &tpm_state,
        &dir.join("console-rollback.log"),
        "serial 1 is older than serial 2",
    );
    eprintln!("refused as expected (an older issue put back): {line}");
}

#[test]
fn an_unreleased_image_gets_no_certificate_and_publishes_nothing() {
    let Some(release) = release() else { return };
    // Signed with the owner's keys, so it boots, but with another command line: a build the
    // owner never released, so its PCR 11 matches no manifest the verifier holds.
    let unreleased = release.dir.join("unreleased-image");
    if !unreleased.join("disk.img").is_file() {
        build_image_with(
            &release.keys,
            &unreleased,
            &shipped_agent_binary(),
            &[
                "--cmdline",
                "console=ttyS0 quiet loglevel=4 panic=-1 edgeward.debug",
            ],
        );
    }
    let _one = ONE_VM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(central) = Central::start(release, "unreleased", &[&release.image]) else {
        return;
    };
    let dir = central.dir.clone();
    let config = central.device_config(release);
    let disk = dir.join("disk.img");
    configured_disk(&unreleased, &config, &disk);
    let store = dir.join("store");
    let recorder = central
        .platform
        .recorder_trusting(&store, &central.device_ca);
    let everything = subscribe(&central.platform, "#", 45);
    let mut vm = Vm::start(
        &unreleased,
        &disk,
        &dir.join("tpm"),
        &dir.join("console.log"),
    );
    let refusal = vm
        .wait_for("attestation failed", Duration::from_secs(150))
        .unwrap_or_else(|| panic!("no attestation outcome: {}", console_text(&vm)));
    // Let it retry once more, and stream from the PMU meanwhile, before looking.
    std::thread::sleep(Duration::from_secs(15));
    vm.power_button();
    vm.wait_for("EDGEWARD-STOPPED", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no clean stop: {}", console_text(&vm)));
    vm.wait_exit(Duration::from_secs(30));
    drop(recorder);
    let console = console_text(&vm);
    eprintln!("refused as expected (unreleased image): {refusal}");
    assert!(refusal.contains("refused"), "{refusal}");
    assert!(!console.contains("device certificate written"), "{console}");
    let heard = everything.wait_with_output().expect("subscriber");
    let heard = String::from_utf8_lossy(&heard.stdout);
    assert!(
        !heard.contains("bay-50"),
        "the broker carried something of the unreleased device: {heard}"
    );
    assert!(block_files_of(&store, POINT).is_empty());
    let devices = central.verifier.devices();
    let device = devices
        .iter()
        .find(|device| device["id"] == "bay-50")
        .unwrap_or_else(|| panic!("bay-50 registered: {devices:?}"));
    assert_eq!(device["certificates"], serde_json::json!([]), "{device}");
    assert!(device["attested_until"].is_null(), "{device}");
    assert_eq!(device["last_verdict"]["accepted"], false, "{device}");
}

/// The digest `edgeward-agent workload verify` gives a bundle's manifest.
fn manifest_digest(bundle: &Path, trust: &Path) -> String {
    let output = Command::new(edgeward_tests::agent_binary())
        .args(["workload", "verify"])
        .arg(bundle)
        .arg("--trust")
        .arg(trust)
        .output()
        .expect("the agent runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    said["manifest_sha256"]
        .as_str()
        .expect("a digest")
        .to_owned()
}

/// Signed workloads in the booted appliance: bundles on the ESP that the signed configuration
/// lists. One signed with another key is refused at boot in one line and never measured; the
/// others are measured into PCR 15 before the first attestation, which the verifier (with them
/// released) accepts naming them; the frequency alarm reads bay-1's samples and its alerts
/// reach `notifications` under its name; the probe finds itself alone, unprivileged and
/// confined, reads samples, and is killed at its size's memory limit; a bundle whose image was
/// altered after signing launches (its signature is sound) and fails when the altered block
/// is read, which dm-verity refuses. Streaming goes on: three blocks verify.
#[test]
fn signed_workloads_run_measured_confined_and_limited_in_the_appliance() {
    let Some(release) = release() else { return };
    let dir = release.dir.join("workloads");
    std::fs::create_dir_all(&dir).expect("dir");
    let key = release.keys.join("workload.key");
    let trust = release.keys.join("workload.pub");
    let bundles = dir.join("bundles");
    std::fs::create_dir_all(&bundles).expect("dir");
    let alarm = bundle(
        &example_workload("freq-alarm"),
        "freq-alarm",
        "/bin/freq-alarm --band-mhz 50 --hold-off-s 5",
        &["--stream", "bay-1", "--size", "s"],
        Some(&key),
        &bundles.join("freq-alarm.ewb"),
    );
    let probe_binary = example_workload("workload-probe");
    let probe = bundle(
        &probe_binary,
        "probe",
        "/bin/workload-probe --read-samples 5 --allocate-mib 200",
        &["--stream", "bay-1", "--size", "s", "--restart", "never"],
        Some(&key),
        &bundles.join("probe.ewb"),
    );
    let tampered = bundle(
        &probe_binary,
        "tampered",
        "/bin/workload-probe",
        &["--size", "s", "--restart", "on-failure"],
        Some(&key),
        &bundles.join("tampered.ewb"),
    );
    let foreign_keys = dir.join("foreign-keys");
    if !foreign_keys.join("workload.key").is_file() {
        run_edgeward(&["keys", "init", &foreign_keys.to_string_lossy()]);
    }
    let foreign_valid = bundle(
        &probe_binary,
        "foreign",
        "/bin/workload-probe",
        &[],
        Some(&key),
        &bundles.join("foreign.ewb"),
    );
    let foreign = bundle(
        &probe_binary,
        "foreign",
        "/bin/workload-probe",
        &[],
        Some(&foreign_keys.join("workload.key")),
        &dir.join("foreign.ewb"),
    );
    // The tampered bundle's image altered past its signing: a byte of the probe's code.
    let altered = dir.join("tampered.ewb");
    {
        let mut bytes = std::fs::read(&tampered).expect("bundle");
        let header = edgeward_bundle::Header::parse(&bytes, bytes.len() as u64).expect("a header");
        let at = header.layout().image.start as usize + 3 * 4096 + 100;
        bytes[at] ^= 0x01;
        std::fs::write(&altered, bytes).expect("altered copy");
    }
    let digests: Vec<(String, String)> = [("freq-alarm", &alarm), ("probe", &probe)]
        .iter()
        .map(|(name, path)| (name.to_string(), manifest_digest(path, &trust)))
        .collect();

    let released = dir.join("released-workloads.json");
    run_edgeward(&[
        "workload",
        "release",
        &alarm.to_string_lossy(),
        &probe.to_string_lossy(),
        &tampered.to_string_lossy(),
        "--keys",
        &release.keys.to_string_lossy(),
        "--out",
        &released.to_string_lossy(),
    ]);
    let _one = ONE_VM
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Some(central) = Central::start_releasing(
        &dir.join("central"),
        release,
        &[&release.image],
        Some(&released),
    ) else {
        return;
    };
    // The appliance is bay-1's PMU here (P class, 50 fps, from simulated 10 kHz samples), so
    // the alarm's input is the guest's own estimate, outside the alarm's band.
    let config = central.device_config_estimating(
        release,
        1,
        &["freq-alarm.ewb", "probe.ewb", "tampered.ewb", "foreign.ewb"],
        ESTIMATED_FREQUENCY,
        &dir.join("device.toml"),
    );
    let disk = dir.join("disk.img");
    configured_disk_with(
        &release.image,
        &config,
        &[&alarm, &probe, &tampered, &foreign_valid],
        &disk,
    );
    // Someone with the disk in hand swaps two bundles: one signed by another key, one whose
    // image was altered.
    replace_on_esp(&disk, &foreign, "EFI/edgeward/workloads/foreign.ewb");
    replace_on_esp(&disk, &altered, "EFI/edgeward/workloads/tampered.ewb");
    // `image configure` itself refuses both.
    for (given, reason) in [
        (
            [&alarm, &probe, &tampered, &foreign],
            "does not verify with the trusted key",
        ),
        (
            [&alarm, &probe, &altered, &foreign_valid],
            "does not match its hash",
        ),
    ] {
        let mut command = Command::new(edgeward_tests::edgeward_binary());
        command
            .args(["image", "configure", "--image"])
            .arg(&release.image)
            .arg("--disk")
            .arg(dir.join("unused.img"))
            .arg("--config")
            .arg(&config);
        for file in given {
            command.arg("--workload").arg(file);
        }
        let refused = command.output().expect("runs");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(!refused.status.success() && said.contains(reason), "{said}");
    }

    let store = dir.join("store");
    let recorder = central
        .platform
        .recorder_trusting(&store, &central.device_ca);
    let notifications = Collector::start(&central.platform, "notifications");
    let mut vm = Vm::start(
        &release.image,
        &disk,
        &dir.join("tpm"),
        &dir.join("console.log"),
    );
    let refusal = vm
        .wait_for("EDGEWARD-WORKLOAD-REFUSED", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the foreign bundle not refused: {}", console_text(&vm)));
    assert!(
        refusal.contains("foreign.ewb") && refusal.contains("does not verify with the trusted key"),
        "{refusal}"
    );
    eprintln!("refused as expected (another key): {refusal}");
    let accepted = vm
        .wait_for("attestation accepted", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("no attestation: {}", console_text(&vm)));
    for name in ["freq-alarm 1.0.0", "probe 1.0.0", "tampered 1.0.0"] {
        assert!(
            accepted.contains(name),
            "{name} not in the verdict: {accepted}"
        );
    }
    assert!(!accepted.contains("foreign"), "{accepted}");
    eprintln!("attested with its workloads: {accepted}");
    vm.wait_for("killed at its memory limit", Duration::from_secs(120))
        .unwrap_or_else(|| panic!("the probe not stopped at its limit: {}", console_text(&vm)));
    vm.wait_for("is corrupted", Duration::from_secs(60))
        .unwrap_or_else(|| {
            panic!(
                "dm-verity did not refuse the altered block: {}",
                console_text(&vm)
            )
        });
    wait_until(
        "three blocks at the recorder",
        Duration::from_secs(90),
        || block_files_of(&store, POINT).len() >= 3,
    );
    notifications.wait_for_all(
        &[
            "Frequency out of band",
            "Workload refused",
            "killed at its memory limit",
            "tampered: killed by signal 7",
        ],
        Duration::from_secs(120),
    );
    let heard = notifications.lines().join("\n");
    vm.power_button();
    vm.wait_for("EDGEWARD-STOPPED", Duration::from_secs(60))
        .unwrap_or_else(|| panic!("no clean stop: {}", console_text(&vm)));
    assert!(vm.wait_exit(Duration::from_secs(30)), "powers off");
    drop(recorder);
    let console = console_text(&vm);

    // Measured: each admitted manifest's digest, as the host computes it, went into PCR 15 and
    // the agent's log; the verifier accepted the quote's PCR 15 as that log's replay and found
    // each digest among the released ones.
    for (name, digest) in &digests {
        assert!(
            accepted.contains(&format!("{name} 1.0.0 (manifest {})", &digest[..12])),
            "{name} with {digest} in the verdict: {accepted}"
        );
        assert!(
            console
                .lines()
                .any(|line| line.contains("workload measured")
                    && line.contains(name.as_str())
                    && line.contains(digest.as_str())),
            "{name} measured with {digest}: {console}"
        );
    }
    assert!(
        !console
            .lines()
            .any(|line| line.contains("workload measured") && line.contains("foreign")),
        "the refused bundle was not measured"
    );
    // The probe, from inside its sandbox.
    assert_probe_passed(&console, &["no-ip-sockets", "reads-samples"]);
    assert!(
        !console.contains("allocated 200 MiB and was not stopped"),
        "the memory limit held"
    );
    // Restarted by its policy (on failure), and failing again at the same block.
    assert!(
        console.contains("tampered: killed by signal 7; restarting"),
        "{console}"
    );
    // The power button stopped the alarm cleanly (SIGTERM, which it does not handle, ends it).
    assert!(
        console
            .lines()
            .any(|line| line.contains("workload stopped") && line.contains("freq-alarm")),
        "{console}"
    );
    // The tampered probe never got to say anything.
    assert!(
        !console
            .lines()
            .any(|line| line.contains("tampered") && line.contains("probe: done")),
        "{console}"
    );
    // On the platform, under the workloads' names.
    eprintln!("notifications:\n{heard}");
    assert!(heard.contains("Frequency out of band"), "{heard}");
    assert!(heard.contains("workload/freq-alarm"), "{heard}");
    assert!(
        heard.contains("Workload refused") && heard.contains("workload/foreign"),
        "{heard}"
    );
    assert!(
        heard.contains("killed at its memory limit") && heard.contains("workload/probe"),
        "{heard}"
    );
    let (ok, report) = central
        .platform
        .verify_data_trusting(&store, &central.device_ca);
    assert!(ok, "verify-data:\n{report}");
    // What the platform filed is the guest's estimate: six phasors, then a frequency that
    // stays at the simulated signal's (pyPMU's sweeps 49.9 to 50.1 Hz), on the 50/s grid.
    assert!(
        console.contains("estimating from simulated samples"),
        "bay-1 estimated in the guest: {console}"
    );
    let samples = recorded_samples_of(&store, POINT);
    assert!(samples.len() >= 150, "{} samples", samples.len());
    for pair in samples.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence + 1, "a report missing");
    }
    for sample in &samples {
        let Value::Float(frequency) = sample.values[6] else {
            panic!("the frequency after six phasors: {:?}", sample.values);
        };
        assert!(
            (frequency - ESTIMATED_FREQUENCY).abs() <= 0.002,
            "recorded {frequency} Hz"
        );
    }
}
