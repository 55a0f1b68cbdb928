//! The demos, built on the rig the tests use (one set of peers, started one way): `edgeward-demo
//! data-path`, the data path on this machine without QEMU, and `edgeward-demo appliance`, the
//! main job that `qemu/demo` runs: the released image booted in QEMU against the central side.
//!
//! The rig stops at the first thing that goes wrong with a message saying what (a panic, as in
//! a test); the `edgeward-demo` binary turns that into one line and a failing exit, after every
//! process the demo started has been stopped.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::appliance::{configured_disk_with, Central, Release};
use crate::platform::Platform;
use crate::pypmu::PyPmu;
use crate::qemu::Vm;

/// Marks a directory as a demo's output, so that a later run may clear it.
const OUT_MARKER: &str = ".edgeward-demo";

/// What a demo run leaves for the operator in its output directory.
const LEFT: &str = "store/, pki/ (ca.crt, device-ca.crt, tsa.crt, tsa-root.crt, admin.crt, \
                    admin.key), broker.txt, logs/";

fn say(text: &str) {
    eprintln!("demo: {text}");
}

/// Makes `out` ready for a run: new or empty, or an earlier run's (then cleared). Anything else
/// is refused rather than cleared.
fn fresh_out(out: &Path) -> Result<PathBuf, String> {
    let out = std::path::absolute(out).map_err(|error| format!("{}: {error}", out.display()))?;
    std::fs::create_dir_all(&out)
        .map_err(|error| format!("cannot create {}: {error}", out.display()))?;
    let marked = out.join(OUT_MARKER).exists();
    let empty = std::fs::read_dir(&out)
        .map_err(|error| format!("cannot read {}: {error}", out.display()))?
        .next()
        .is_none();
    if !marked && !empty {
        return Err(format!(
            "{} is neither empty nor an earlier demo's output: give a new or empty directory",
            out.display()
        ));
    }
    for entry in std::fs::read_dir(&out).map_err(|error| error.to_string())? {
        let path = entry.map_err(|error| error.to_string())?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|error| format!("cannot clear {}: {error}", path.display()))?;
    }
    std::fs::write(out.join(OUT_MARKER), "").map_err(|error| error.to_string())?;
    Ok(out)
}

/// The blocks `edgeward verify-data` finds in a store and how many of them verify.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    received: usize,
    verified: usize,
}

impl Tally {
    /// From verify-data's report: one `<file>: ok …` or `<file>: FAIL …` line per block.
    fn of(report: &str) -> Self {
        let mut tally = Self::default();
        for line in report.lines() {
            if line.contains(": ok ") {
                tally.received += 1;
                tally.verified += 1;
            } else if line.contains(": FAIL ") {
                tally.received += 1;
            }
        }
        tally
    }
}

/// `edgeward-demo data-path`.
pub struct DataPath {
    pub out: PathBuf,
    pub duration: u64,
    pub block_seconds: u64,
}

/// The central side (the rig's platform: OpenSSL PKI, Mosquitto 2 with mutual TLS and the
/// platform's ACL, the TSA, the recorder), a device whose key is in swtpm (certified by its AK,
/// its certificate from the device CA: the verifier is left out, since it certifies only devices
/// whose measured boot it appraised), pyPMU, and `edgeward-agent stream` for `duration`
/// seconds; then every recorded block through `edgeward verify-data`.
pub fn data_path(options: &DataPath) -> Result<(), String> {
    let out = fresh_out(&options.out)?;
    let platform = Platform::start(&out).ok_or("mosquitto is missing (run scripts/setup)")?;
    say(&format!(
        "Mosquitto on 127.0.0.1:{} (mTLS, ACL), TSA on http://127.0.0.1:{}/api/v1/timestamp",
        platform.mqtt_port, platform.tsa_port
    ));
    let device = platform
        .device("pmu-demo")
        .ok_or("swtpm is missing (run scripts/setup)")?;
    say(&format!(
        "device {}: its key in the TPM at {}, its certificate from the device CA",
        device.name,
        device.tpm.tcti()
    ));
    let pmu = PyPmu::start(7, 50, "float-polar").ok_or("pyPMU is missing (run scripts/setup)")?;
    say(&format!(
        "pyPMU (IDCODE 7, 50 frames/s) on {}",
        pmu.address()
    ));
    let store = out.join("store");
    let mut recorder = platform.recorder(&store);
    let run = out.join("run");
    std::fs::create_dir_all(&run).map_err(|error| error.to_string())?;
    let config = run.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "statistics_interval = 10\n[[pmu]]\nname = \"bay-1\"\nidcode = 7\naddress = \"{}\"\n",
            pmu.address()
        ),
    )
    .map_err(|error| error.to_string())?;
    say(&format!(
        "streaming for {} s in {} s blocks",
        options.duration, options.block_seconds
    ));
    let status = platform
        .agent_with(&device, &config, &run.join("buffer"))
        .args(["--block-seconds", &options.block_seconds.to_string()])
        .args(["--duration", &options.duration.to_string()])
        .env("EDGEWARD_LOG", "info,tss_esapi=warn")
        .stdout(platform.log("agent"))
        .stderr(platform.log("agent"))
        .status()
        .map_err(|error| format!("cannot run edgeward-agent: {error}"))?;
    if !status.success() {
        return Err(format!(
            "the agent failed ({status}); see {}",
            out.join("logs/agent.log").display()
        ));
    }
    // The recorder files a block when the next one starts; give the last messages a moment.
    std::thread::sleep(Duration::from_secs(2));
    recorder.stop();
    drop((pmu, device));
    say(&format!(
        "store {}; every block through edgeward verify-data:",
        store.display()
    ));
    let (verified, report) = platform.verify_data(&store);
    print!("{report}");
    println!("left in {}: {LEFT}", out.display());
    if !verified {
        return Err("not every block verified".into());
    }
    Ok(())
}

/// `edgeward-demo appliance`.
pub struct ApplianceDemo {
    pub image: PathBuf,
    pub keys: PathBuf,
    pub out: PathBuf,
    pub blocks: usize,
    pub hold: u64,
    /// Signed workload bundles to release, configure and run in the appliance.
    pub workloads: Vec<PathBuf>,
    /// Where bay-1's synchrophasors come from.
    pub pmu: DemoPmu,
}

/// The demo's PMU.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DemoPmu {
    /// pyPMU on this machine, read over C37.118.2.
    PyPmu,
    /// The appliance itself, estimating from simulated samples of a signal at this frequency.
    Estimated { frequency: f64 },
}

/// How long the demo waits, after the first verified block, for a workload's first alert.
const FIRST_ALERT_WITHIN: Duration = Duration::from_secs(60);

/// The `notifications` the broker carries, collected as they arrive.
struct Notifications(crate::platform::Collector);

impl Notifications {
    fn subscribe(platform: &crate::platform::Platform) -> Result<Self, String> {
        Ok(Self(crate::platform::Collector::start(
            platform,
            "notifications",
        )))
    }

    /// The workloads' own alerts so far (tag `<device>/workload/<name>/…`, not the appliance's
    /// notices about them).
    fn alerts(&self) -> Vec<serde_json::Value> {
        self.0
            .lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|message| {
                let tag = message["tag"].as_str().unwrap_or_default();
                tag.contains("/workload/")
                    && !matches!(
                        message["title"].as_str(),
                        Some("Workload refused" | "Workload ended")
                    )
            })
            .collect()
    }
}

/// How long the appliance has to deliver its first verified block.
const FIRST_BLOCK_WITHIN: Duration = Duration::from_secs(240);

/// Whether an operator watching the console wants to see `line`.
fn watched(line: &str) -> bool {
    (line.starts_with("EDGEWARD-")
        && !line.starts_with("EDGEWARD-EVENTLOG")
        && !line.starts_with("EDGEWARD-PCRS"))
        || line.contains("device certificate written")
        || line.contains("attestation failed")
        || line.contains("BdsDxe: starting")
}

/// The central side of [`Central::start_in`] in `out` (Mosquitto, the TSA, the recorder, the
/// verifier with the image's manifest released, chronyd, pyPMU), the device's signed
/// configuration on a copy of the image's disk, the appliance booted in QEMU (OVMF Secure Boot,
/// swtpm); once `blocks` blocks verified and `hold` seconds passed since the first, the power
/// button; then every recorded block through `edgeward verify-data` and a summary.
pub fn appliance(options: &ApplianceDemo) -> Result<(), String> {
    let absolute = |path: &Path| {
        std::path::absolute(path).map_err(|error| format!("{}: {error}", path.display()))
    };
    let (image, keys) = (absolute(&options.image)?, absolute(&options.keys)?);
    for (what, file) in [
        ("the image's manifest", image.join("manifest.json")),
        ("the configuration key", keys.join("config.key")),
    ] {
        if !file.is_file() {
            return Err(format!("{what} {} is missing", file.display()));
        }
    }
    let out = fresh_out(&options.out)?;
    let release = Release {
        dir: out.clone(),
        keys,
        image: image.clone(),
    };
    let released = if options.workloads.is_empty() {
        None
    } else {
        let list = out.join("released-workloads.json");
        let mut args = vec!["workload".to_owned(), "release".to_owned()];
        for bundle in &options.workloads {
            args.push(absolute(bundle)?.to_string_lossy().into_owned());
        }
        args.extend([
            "--keys".to_owned(),
            release.keys.to_string_lossy().into_owned(),
            "--out".to_owned(),
            list.to_string_lossy().into_owned(),
        ]);
        crate::run_edgeward(&args.iter().map(String::as_str).collect::<Vec<_>>());
        Some(list)
    };
    let central = Central::start_releasing(&out, &release, &[&image], released.as_deref())
        .ok_or("a part of the central side is missing (run scripts/setup)")?;
    let platform = &central.platform;
    say(&format!(
        "Mosquitto on 127.0.0.1:{} (mTLS, ACL), TSA on port {}, verifier on {} with the \
         manifest of {}, chronyd (SNTP) on port {}, pyPMU on port {}",
        platform.mqtt_port,
        platform.tsa_port,
        central.verifier.url,
        image.display(),
        central.sntp.port,
        central.pmu.port
    ));
    // pki/ as `data-path` leaves it: the device CA is the verifier's, which certifies the
    // appliance once it attested.
    std::fs::copy(&central.device_ca, platform.pki("device-ca.crt"))
        .map_err(|error| format!("cannot copy the verifier's device CA into pki/: {error}"))?;
    let store = out.join("store");
    let mut recorder = platform.recorder_trusting(&store, &central.device_ca);
    let names: Vec<String> = options
        .workloads
        .iter()
        .map(|bundle| {
            bundle
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let workload_names: Vec<&str> = names.iter().map(String::as_str).collect();
    let config = match options.pmu {
        DemoPmu::PyPmu => central.device_config_with_workloads(
            &release,
            1,
            1,
            &workload_names,
            &out.join("device.toml"),
        ),
        DemoPmu::Estimated { frequency } => {
            say(&format!(
                "bay-1 is the appliance's own PMU: P class, 50 fps, estimated from simulated \
                 10 kHz samples of a {frequency} Hz signal (pyPMU runs but is not read)"
            ));
            central.device_config_estimating(
                &release,
                1,
                &workload_names,
                frequency,
                &out.join("device.toml"),
            )
        }
    };
    let disk = out.join("disk.img");
    let bundles: Vec<&Path> = options.workloads.iter().map(PathBuf::as_path).collect();
    configured_disk_with(&image, &config, &bundles, &disk);
    let notifications = Notifications::subscribe(platform)?;
    if !names.is_empty() {
        say(&format!(
            "workloads {} released at the verifier and on the disk",
            names.join(", ")
        ));
    }
    say(&format!(
        "{} configured with {} (signed), the TPM in {}",
        disk.display(),
        config.display(),
        out.join("tpm").display()
    ));

    let console = out.join("logs/console.log");
    let mut vm = Vm::start(&image, &disk, &out.join("tpm"), &console);
    say("booting the appliance in QEMU (TCG, OVMF Secure Boot, swtpm)");
    let interrupted = interrupts()?;
    let mut echoed = 0;
    let mut first_verified = None;
    let mut tally = Tally::default();
    let mut checked = Instant::now() - Duration::from_secs(1);
    loop {
        let lines = vm.console();
        for line in lines.iter().skip(echoed).filter(|line| watched(line)) {
            eprintln!("guest: {line}");
        }
        echoed = lines.len();
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            tally = Tally::of(&platform.verify_data_trusting(&store, &central.device_ca).1);
        }
        if tally.verified > 0 && first_verified.is_none() {
            let elapsed = vm.started.elapsed();
            say(&format!(
                "the first block verified {:.1} s after QEMU started",
                elapsed.as_secs_f64()
            ));
            if options.hold > 0 {
                say(&format!(
                    "holding for {} s: broker 127.0.0.1:{} ({}/broker.txt), reader identity \
                     {}",
                    options.hold,
                    platform.mqtt_port,
                    out.display(),
                    platform.pki("admin.crt").display()
                ));
            }
            first_verified = Some(elapsed);
        }
        if let Some(first) = first_verified {
            let since_first = vm.started.elapsed().saturating_sub(first);
            let held = since_first >= Duration::from_secs(options.hold);
            // With workloads, their first alert too (or a minute, if none raises one).
            let alerted = options.workloads.is_empty()
                || !notifications.alerts().is_empty()
                || since_first >= FIRST_ALERT_WITHIN;
            if held && alerted && tally.verified >= options.blocks {
                break;
            }
        }
        if vm.exited() {
            return Err(format!(
                "QEMU ended with {} verified blocks; the verifier: {}; see {}",
                tally.verified,
                verdict(&central),
                console.display()
            ));
        }
        if first_verified.is_none() && vm.started.elapsed() > FIRST_BLOCK_WITHIN {
            return Err(format!(
                "no verified block within {} s; the verifier: {}; see {}",
                FIRST_BLOCK_WITHIN.as_secs(),
                verdict(&central),
                console.display()
            ));
        }
        if interrupted.recv_timeout(Duration::from_millis(250)).is_ok() {
            say("interrupted");
            break;
        }
    }
    say("pressing the power button");
    vm.power_button();
    if !vm.wait_exit(Duration::from_secs(60)) {
        return Err(format!(
            "the appliance did not power off within 60 s; see {}",
            console.display()
        ));
    }
    if let Some(stopped) = vm
        .console()
        .iter()
        .find(|line| line.starts_with("EDGEWARD-STOPPED"))
    {
        eprintln!("guest: {stopped}");
    }
    // The recorder files a block when the next one starts; give the last messages a moment.
    std::thread::sleep(Duration::from_secs(2));
    recorder.stop();
    let verdict = verdict(&central);
    say(&format!(
        "store {}; every block through edgeward verify-data (TSA root, the verifier's device CA):",
        store.display()
    ));
    let (all_verified, report) = platform.verify_data_trusting(&store, &central.device_ca);
    print!("{report}");
    let tally = Tally::of(&report);
    println!();
    println!("attestation:           {verdict}");
    println!(
        "blocks:                {} received, {} verified",
        tally.received, tally.verified
    );
    match first_verified {
        Some(first) => println!(
            "first verified block:  {:.1} s after QEMU started",
            first.as_secs_f64()
        ),
        None => println!("first verified block:  none"),
    }
    if !options.workloads.is_empty() {
        let alerts = notifications.alerts();
        match alerts.first() {
            Some(first) => println!(
                "workload alerts:       {} (first: {}: {})",
                alerts.len(),
                first["title"].as_str().unwrap_or_default(),
                first["body"].as_str().unwrap_or_default()
            ),
            None => println!("workload alerts:       none"),
        }
    }
    drop(notifications);
    println!("left in {}: {LEFT}console.log", out.display());
    if !all_verified {
        return Err("not every block verified".into());
    }
    Ok(())
}

/// The verifier's last verdict on the device, in one line.
fn verdict(central: &Central) -> String {
    let Some(record) = central.verifier.devices().into_iter().next() else {
        return "no device registered".to_owned();
    };
    let id = record["id"].as_str().unwrap_or("?");
    let state = record["state"].as_str().unwrap_or("?");
    let last = &record["last_verdict"];
    if last.is_null() {
        return format!("{id} {state}, no verdict yet");
    }
    if last["accepted"].as_bool() == Some(true) {
        let workloads: Vec<&str> = last["workloads"]
            .as_array()
            .map(|workloads| workloads.iter().filter_map(|name| name.as_str()).collect())
            .unwrap_or_default();
        return format!(
            "{id} accepted ({}{}), {state}",
            last["manifest"].as_str().unwrap_or(""),
            if workloads.is_empty() {
                String::new()
            } else {
                format!("; workloads {}", workloads.join(", "))
            }
        );
    }
    let reasons: Vec<&str> = last["reasons"]
        .as_array()
        .map(|reasons| {
            reasons
                .iter()
                .filter_map(|reason| reason.as_str())
                .collect()
        })
        .unwrap_or_default();
    format!("{id} refused: {}", reasons.join("; "))
}

/// SIGINT or SIGTERM, as a message: both blocked in this thread (after every child started,
/// since children inherit the mask) and waited for in another.
fn interrupts() -> Result<std::sync::mpsc::Receiver<()>, String> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals
        .thread_block()
        .map_err(|error| format!("cannot block SIGINT: {error}"))?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            let _ = sender.send(());
        }
    });
    Ok(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_what_verify_data_reports() {
        let report = "data/measurements/a/b/c/1.parquet: ok samples=50 digest=AB\n\
                      data/measurements/a/b/c/2.parquet: FAIL no time-stamp token for digest CD\n\
                      data/measurements/a/b/c/3.parquet: ok samples=50 digest=EF\n\
                      2 of 3 blocks verified\n";
        let tally = Tally::of(report);
        assert_eq!((tally.received, tally.verified), (3, 2));
        assert_eq!(Tally::of("0 of 0 blocks verified\n").received, 0);
    }

    #[test]
    fn a_directory_that_is_not_a_demos_is_not_cleared() {
        let dir = crate::scratch("demo-fresh-out");
        std::fs::write(dir.join("precious"), "keep").expect("write");
        assert!(fresh_out(&dir)
            .expect_err("an operator's directory is refused")
            .contains("neither empty"));
        assert!(dir.join("precious").is_file());
        // An earlier run's is.
        std::fs::remove_file(dir.join("precious")).expect("remove");
        fresh_out(&dir).expect("an empty or earlier demo's directory is taken");
        std::fs::write(dir.join("store"), "old").expect("write");
        fresh_out(&dir).expect("an empty or earlier demo's directory is taken");
        assert!(!dir.join("store").exists());
        assert!(dir.join(OUT_MARKER).exists());
    }
}
