//! `edgeward demo appliance`: the main job. The released image, configured for one device,
//! boots in QEMU (OVMF Secure Boot, swtpm) against a central side on this machine: Mosquitto
//! with mutual TLS and the platform's ACL, the TSA, the recorder, the verifier with the image's
//! signed manifest, chronyd for the appliance's clock and pyPMU as the substation's PMU. The
//! guest reaches them as 10.0.2.2 on QEMU's user network. Once enough blocks verified (and the
//! hold time passed), the power button stops it, every recorded block is verified again, and a
//! summary says what the verifier decided, how many blocks came and verified, and how long after
//! QEMU started the first verified block was there.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::demo_cmd::{free_port, start_pypmu, wait_for_port, write, Central, Service};

#[derive(Args)]
pub struct ApplianceArgs {
    /// The released image (`edgeward image build --out`).
    #[arg(long, value_name = "DIR")]
    image: PathBuf,
    /// The keys it was built with (for signing the device configuration).
    #[arg(long, value_name = "DIR")]
    keys: PathBuf,
    /// Where the central side, the device's disk and TPM, the store and the logs go.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Verified blocks to wait for before stopping.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    blocks: u64,
    /// Seconds to keep the appliance and the central side running after the first verified
    /// block, for outside tools to attach (`DIR/broker.txt`, `DIR/pki/admin.crt`). Ctrl-C ends
    /// the hold early.
    #[arg(long, value_name = "SECONDS", default_value_t = 0)]
    hold: u64,
}

/// The central side's address as a QEMU guest on the user network sees this machine.
const HOST: &str = "10.0.2.2";
const SWTPM_CA: &str = "/var/lib/swtpm-localca";

/// A file in the repository, found from the working directory or from this binary's place in
/// `target/<profile>/`.
fn repository_file(relative: &str) -> Result<PathBuf> {
    let candidates = std::iter::once(PathBuf::from(relative)).chain(
        std::env::current_exe().ok().into_iter().flat_map(|exe| {
            exe.ancestors()
                .skip(1)
                .map(|dir| dir.join(relative))
                .collect::<Vec<_>>()
        }),
    );
    for candidate in candidates {
        if candidate.exists() {
            return Ok(std::path::absolute(candidate)?);
        }
    }
    bail!("{relative} is not found (run from the repository root after scripts/setup)")
}

fn chronyd() -> Result<PathBuf> {
    if let Ok(unpacked) = repository_file(".tools/chrony/usr/sbin/chronyd") {
        return Ok(unpacked);
    }
    let on_path = Command::new("chronyd").arg("--version").output();
    match on_path {
        Ok(output) if output.status.success() => Ok(PathBuf::from("chronyd")),
        _ => bail!("chronyd is not available (scripts/setup unpacks it into .tools/chrony)"),
    }
}

fn edgeward(args: &[&str]) -> Result<String> {
    let output = Command::new(std::env::current_exe()?)
        .args(args)
        .output()
        .context("cannot run edgeward")?;
    if !output.status.success() {
        bail!(
            "edgeward {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Follows the guest's console file, echoing the lines an operator watches for.
fn follow_console(path: PathBuf, stop: std::sync::Arc<std::sync::atomic::AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(file) = std::fs::File::open(&path) else {
            return;
        };
        let mut reader = BufReader::new(file);
        let mut line = String::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => std::thread::sleep(Duration::from_millis(200)),
                Ok(_) => {
                    let text = line.trim_end();
                    let watched = (text.starts_with("EDGEWARD-")
                        && !text.starts_with("EDGEWARD-EVENTLOG")
                        && !text.starts_with("EDGEWARD-PCRS"))
                        || text.contains("device certificate written")
                        || text.contains("attestation failed")
                        || text.contains("BdsDxe: starting");
                    if watched {
                        eprintln!("guest: {text}");
                    }
                }
            }
        }
    });
}

/// Marks a directory as this demo's, so a later run may clear it.
const OUT_MARKER: &str = ".edgeward-demo-appliance";

/// Makes `out` ready for a run: new or empty, or a previous run's (then its parts are removed).
/// Anything else is refused rather than cleared.
fn fresh_out(out: &Path) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let marked = out.join(OUT_MARKER).exists();
    let empty = std::fs::read_dir(out)?.next().is_none();
    if !marked && !empty {
        bail!(
            "{} is neither empty nor a previous demo's output: give a new or empty directory",
            out.display()
        );
    }
    for part in ["verifier", "store", "run", "logs", "pki", "tpm"] {
        let path = out.join(part);
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("cannot clear {}", path.display()))?;
        }
    }
    std::fs::write(out.join(OUT_MARKER), "")?;
    Ok(())
}

fn manufacture_tpm(state: &Path, logs: &Path) -> Result<()> {
    std::fs::create_dir_all(state)?;
    let output = Command::new("swtpm_setup")
        .args([
            "--tpm2",
            "--create-ek-cert",
            "--create-platform-cert",
            "--overwrite",
        ])
        .args(["--pcr-banks", "sha256", "--tpmstate"])
        .arg(state)
        .output()
        .context("cannot run swtpm_setup (run scripts/setup)")?;
    std::fs::write(
        logs.join("swtpm_setup.log"),
        [&output.stdout[..], &output.stderr].concat(),
    )?;
    if !output.status.success() {
        bail!("swtpm_setup failed; see {}/swtpm_setup.log", logs.display());
    }
    Ok(())
}

/// QMP `system_powerdown`: the ACPI power button.
fn power_button(socket: &Path) -> Result<()> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("cannot reach QEMU's QMP socket {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    for command in ["qmp_capabilities", "system_powerdown"] {
        writer.write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())?;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                bail!("QEMU closed QMP during {command}");
            }
            if line.contains("\"return\"") {
                break;
            }
            if line.contains("\"error\"") {
                bail!("QMP {command}: {}", line.trim());
            }
        }
    }
    Ok(())
}

/// The blocks of `store` so far and how many of them verify: a block counts once its file and
/// both its proofs are filed and check.
struct BlockTally {
    anchors: edgeward_proof::block::ProofAnchors,
    verified: std::collections::BTreeSet<PathBuf>,
    files: usize,
}

impl BlockTally {
    fn update(&mut self, store: &Path) -> Result<usize> {
        let files = crate::verify_data::block_files(store)?;
        self.files = files.len();
        for file in files {
            if !self.verified.contains(&file)
                && crate::verify_data::verify_block(store, &file, &self.anchors).is_ok()
            {
                self.verified.insert(file);
            }
        }
        Ok(self.verified.len())
    }
}

/// SIGINT or SIGTERM, as a message: both are blocked in this thread (after every child
/// started, since children inherit the mask) and waited for in another.
fn interrupts() -> Result<std::sync::mpsc::Receiver<()>> {
    use nix::sys::signal::{SigSet, Signal};
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            let _ = sender.send(());
        }
    });
    Ok(receiver)
}

pub fn run(args: ApplianceArgs) -> Result<()> {
    let out = std::path::absolute(&args.out)?;
    let image = std::path::absolute(&args.image)?;
    let keys = std::path::absolute(&args.keys)?;
    fresh_out(&out)?;
    let boot_script = repository_file("qemu/boot")?;
    let say = |text: &str| eprintln!("demo: {text}");

    // The central side.
    let central = Central::start(&out, &["localhost", "127.0.0.1", HOST])?;
    let logs = central.logs.clone();
    let run_dir = out.join("run");
    let verifier_dir = out.join("verifier");
    let verifier_port = free_port()?;
    // The device's TPM leaves its factory (an EK certificate from swtpm's local CA, which the
    // first run creates) before the verifier is told whose TPMs to trust.
    let tpm_state = out.join("tpm");
    manufacture_tpm(&tpm_state, &logs)?;
    edgeward(&[
        "verifier",
        "init",
        "--dir",
        &verifier_dir.to_string_lossy(),
        "--listen",
        &format!("127.0.0.1:{verifier_port}"),
        "--hostname",
        HOST,
        "--hostname",
        "127.0.0.1",
        "--platform-ca",
        &central.pki.join("ca.crt").to_string_lossy(),
        "--platform-ca-key",
        &central.pki.join("ca.key").to_string_lossy(),
        "--release-key",
        &image.join("release.pub.raw").to_string_lossy(),
        "--manifest",
        &image.to_string_lossy(),
        "--ek-root",
        &format!("{SWTPM_CA}/swtpm-localca-rootca-cert.pem"),
        "--ek-intermediate",
        &format!("{SWTPM_CA}/issuercert.pem"),
    ])?;
    let verifier_config = verifier_dir.join("verifier.toml");
    let mut verifier = Service::start(
        "verifier",
        &logs,
        Command::new(std::env::current_exe()?)
            .args(["verifier", "serve", "--config"])
            .arg(&verifier_config)
            .env("EDGEWARD_LOG", "info"),
    )?;
    wait_for_port(verifier_port, "the verifier", &mut verifier)?;
    say(&format!(
        "verifier on https://127.0.0.1:{verifier_port} with the manifest of {}",
        image.display()
    ));
    let sntp_port = std::net::UdpSocket::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    write(
        &run_dir.join("chrony.conf"),
        &format!(
            "port {sntp_port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n\
             cmdport 0\npidfile {run}/chronyd.pid\ndriftfile {run}/chrony.drift\n",
            run = run_dir.display()
        ),
    )?;
    let _sntp = Service::start(
        "chronyd",
        &logs,
        Command::new(chronyd()?)
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(run_dir.join("chrony.conf")),
    )?;
    say(&format!("chronyd (SNTP) on 127.0.0.1:{sntp_port}"));
    let (pmu_address, _pmu) = start_pypmu(&logs, 7)?;
    let pmu_port = pmu_address
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_owned();
    let store = out.join("store");
    let device_ca = verifier_dir.join("device-ca.crt");
    // The pki/ of `demo data-path`: what verify-data and the platform's recorder are given.
    std::fs::copy(&device_ca, central.pki.join("device-ca.crt"))
        .context("cannot copy the verifier's device CA into pki/")?;
    let mut recorder = central.recorder(&store, &device_ca)?;

    // The device: its signed configuration on its disk.
    let pem = |path: PathBuf| {
        std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    };
    let config_file = out.join("device.toml");
    let draft = edgeward_config::draft::Draft {
        identity: "bay-1".into(),
        location: "substation-1".into(),
        sntp: vec![format!("{HOST}:{sntp_port}")],
        verifier_url: format!("https://{HOST}:{verifier_port}"),
        verifier_ca: pem(verifier_dir.join("tls-ca.crt"))?,
        ek: "rsa".into(),
        brokers: vec![format!("{HOST}:{}", central.mqtt)],
        broker_ca: pem(central.pki.join("ca.crt"))?,
        tsa_url: format!("http://{HOST}:{}/api/v1/timestamp", central.tsa_port),
        tsa_root: pem(central.pki.join("tsa-root.crt"))?,
        block_seconds: Some(2),
        heartbeat_seconds: Some(10),
        buffer_bytes: None,
        pmus: vec![("bay-1".into(), 7, format!("{HOST}:{pmu_port}"))],
    };
    write(&config_file, &draft.to_toml()?)?;
    let key = edgeward_image::keys::KeyDir::new(&keys).config_key()?;
    let text = std::fs::read(&config_file)?;
    write(
        &out.join("device.toml.sig"),
        &edgeward_config::sign(&text, &key)?,
    )?;
    let disk = out.join("disk.img");
    let copied = Command::new("cp")
        .arg("--sparse=always")
        .arg(image.join("disk.img"))
        .arg(&disk)
        .status()
        .context("cannot run cp")?;
    if !copied.success() {
        bail!("cannot copy {}/disk.img", image.display());
    }
    let identity = edgeward_image::configure::configure(&image, &disk, &config_file)?;
    say(&format!(
        "device {identity}: {} configured (signed {}), TPM state in {}",
        disk.display(),
        config_file.display(),
        tpm_state.display()
    ));

    // Boot it.
    let qmp = run_dir.join("qmp.sock");
    let console = logs.join("console.log");
    let started = Instant::now();
    let mut vm = Service::start(
        "console",
        &logs,
        Command::new(&boot_script)
            .arg(&image)
            .env("EDGEWARD_DISK", &disk)
            .env("EDGEWARD_QMP", &qmp)
            .env("EDGEWARD_TPM_STATE", &tpm_state),
    )?;
    let following = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    follow_console(console.clone(), following.clone());
    say("booting the appliance in QEMU (TCG, OVMF Secure Boot, swtpm)");
    let mut tally = BlockTally {
        anchors: crate::proof_trust::load_anchors(
            &central.pki.join("tsa-root.crt"),
            &device_ca,
            None,
        )?,
        verified: Default::default(),
        files: 0,
    };
    let interrupted = interrupts()?;
    let mut first_verified = None;
    loop {
        let verified = tally.update(&store)?;
        if verified > 0 && first_verified.is_none() {
            let elapsed = started.elapsed();
            say(&format!(
                "the first block verified {:.1} s after QEMU started",
                elapsed.as_secs_f64()
            ));
            if args.hold > 0 {
                say(&format!(
                    "holding for {} s: broker {} (DIR/broker.txt), reader identity {}/admin.crt",
                    args.hold,
                    std::fs::read_to_string(out.join("broker.txt"))?.trim(),
                    central.pki.display()
                ));
            }
            first_verified = Some(elapsed);
        }
        if let Some(first) = first_verified {
            let held = started.elapsed().saturating_sub(first) >= Duration::from_secs(args.hold);
            if held && verified as u64 >= args.blocks {
                break;
            }
        }
        if let Ok(Some(status)) = vm.child.try_wait() {
            bail!(
                "QEMU ended ({status}) with {verified} verified blocks; the verifier: {}; see {}",
                verdict(&verifier_config),
                console.display()
            );
        }
        if first_verified.is_none() && started.elapsed() > Duration::from_secs(240) {
            bail!(
                "no verified block within 240 s; the verifier: {}; see {}",
                verdict(&verifier_config),
                console.display()
            );
        }
        if interrupted.recv_timeout(Duration::from_millis(500)).is_ok() {
            say("interrupted");
            break;
        }
    }
    say("pressing the power button");
    power_button(&qmp)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !matches!(vm.child.try_wait(), Ok(Some(_))) {
        if Instant::now() > deadline {
            bail!(
                "the appliance did not power off within 60 s; see {}",
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    following.store(true, std::sync::atomic::Ordering::Relaxed);
    // The recorder files a block when the next one starts; give the last messages a moment.
    std::thread::sleep(Duration::from_secs(2));
    recorder.stop();
    let verdict = verdict(&verifier_config);
    drop(verifier);

    say(&format!(
        "store {}; verifying every block (TSA root, verifier's device CA):",
        store.display()
    ));
    let all_verified = crate::verify_data::check_store(&store, &tally.anchors)?;
    let verified = tally.update(&store)?;
    println!();
    println!("attestation:           {verdict}");
    println!(
        "blocks:                {} received, {verified} verified",
        tally.files
    );
    match first_verified {
        Some(first) => println!(
            "first verified block:  {:.1} s after QEMU started",
            first.as_secs_f64()
        ),
        None => println!("first verified block:  none"),
    }
    println!(
        "left in {}: store/, pki/ (ca.crt, device-ca.crt, tsa.crt, tsa-root.crt, admin.crt, \
         admin.key), broker.txt, logs/console.log",
        out.display()
    );
    if !all_verified {
        bail!("not every block verified");
    }
    Ok(())
}

/// The verifier's last verdict on the demo's device, in one line.
fn verdict(config: &Path) -> String {
    let listed = match edgeward(&[
        "verifier",
        "devices",
        "--json",
        "--config",
        &config.to_string_lossy(),
    ]) {
        Ok(listed) => listed,
        Err(error) => return format!("unknown ({error:#})"),
    };
    let Some(record) = listed
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .next()
    else {
        return "no device registered".to_owned();
    };
    let id = record["id"].as_str().unwrap_or("?");
    let state = record["state"].as_str().unwrap_or("?");
    let last = &record["last_verdict"];
    if last.is_null() {
        return format!("{id} {state}, no verdict yet");
    }
    if last["accepted"].as_bool() == Some(true) {
        format!(
            "{id} accepted ({}), {state}",
            last["manifest"].as_str().unwrap_or("")
        )
    } else {
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
}
