//! Bring-up when the agent is `/init` (PID 1) of the image's verity root, or of its initramfs
//! with Debian's kernel: mount the kernel filesystems, load the kernel modules the image ships,
//! read what the firmware measured (the SHA-256 PCRs and the event log) and report it on the
//! console.
//!
//! The console lines are a contract with the image tests and with an operator watching the
//! serial port: `EDGEWARD-PCRS {json}`, `EDGEWARD-EVENTLOG <hex>`, then `EDGEWARD-READY`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use nix::kmod::{finit_module, ModuleInitFlags};
use nix::mount::{mount, MsFlags};
use serde_json::{json, Map, Value};

/// The list of modules to load, in dependency order, written by the image build.
pub const MODULE_LIST: &str = "/etc/edgeward/modules";
const PCR_DIR: &str = "/sys/class/tpm/tpm0/pcr-sha256";
const EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
const IMA_LIST: &str = "/sys/kernel/security/ima/binary_runtime_measurements";

fn mount_filesystems() -> Result<()> {
    // The root file system is read-only: what the agent writes outside the data partition
    // (resolv.conf through /etc's link, mount points under /run) goes to memory.
    let mounts: [(&str, &str, &str); 6] = [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
        ("securityfs", "/sys/kernel/security", "securityfs"),
        ("tmpfs", "/run", "tmpfs"),
        ("tmpfs", "/tmp", "tmpfs"),
    ];
    for (source, target, fstype) in mounts {
        std::fs::create_dir_all(target).with_context(|| format!("cannot create {target}"))?;
        match mount(
            Some(source),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            None::<&str>,
        ) {
            Ok(()) => {}
            // The kernel mounts devtmpfs on the root's /dev itself (CONFIG_DEVTMPFS_MOUNT) when
            // it boots from a root partition rather than an initramfs.
            Err(nix::errno::Errno::EBUSY) if fstype == "devtmpfs" => {}
            Err(error) => {
                return Err(error).with_context(|| format!("cannot mount {fstype} on {target}"))
            }
        }
    }
    Ok(())
}

fn load_modules() -> Result<usize> {
    let Ok(list) = std::fs::read_to_string(MODULE_LIST) else {
        return Ok(0);
    };
    let mut loaded = 0;
    for path in list.lines().filter(|line| !line.trim().is_empty()) {
        let file = File::open(path).with_context(|| format!("cannot open module {path}"))?;
        match finit_module(&file, c"", ModuleInitFlags::empty()) {
            Ok(()) => loaded += 1,
            // Built in, or loaded as another module's dependency.
            Err(nix::errno::Errno::EEXIST) => {}
            Err(error) => return Err(error).with_context(|| format!("cannot load module {path}")),
        }
    }
    Ok(loaded)
}

/// SHA-256 PCRs 0–15 as the kernel exposes them (upper-case hex text, one file each).
fn read_pcrs() -> Result<BTreeMap<u32, String>> {
    let mut pcrs = BTreeMap::new();
    for index in 0..16u32 {
        let path = Path::new(PCR_DIR).join(index.to_string());
        let value = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {} (is there a TPM?)", path.display()))?;
        pcrs.insert(index, value.trim().to_ascii_lowercase());
    }
    Ok(pcrs)
}

/// Runs bring-up and reports; the caller powers off or goes on.
pub fn run() -> Result<()> {
    mount_filesystems()?;
    let loaded = load_modules()?;
    let pcrs = read_pcrs()?;
    let event_log = std::fs::read(EVENT_LOG).with_context(|| format!("cannot read {EVENT_LOG}"))?;
    // Check our own log against our own PCRs before reporting: a mismatch is worth a line.
    let replayed = edgeward_bootchain::eventlog::parse(&event_log)
        .map_err(anyhow::Error::from)
        .and_then(|log| Ok(edgeward_bootchain::eventlog::replay(&log)?));
    // The kernel's IMA list (no policy is set: the boot aggregate alone), for PCR 10.
    let mut ima_count = 0;
    let ima = match std::fs::read(IMA_LIST) {
        Ok(list) => edgeward_bootchain::ima::parse(&list)
            .map(|entries| {
                ima_count = entries.len();
                edgeward_bootchain::ima::replay_sha256(&entries)
            })
            .map_err(anyhow::Error::from),
        // A kernel without IMA extends nothing.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Default::default()),
        Err(error) => Err(anyhow::Error::from(error).context(format!("cannot read {IMA_LIST}"))),
    };
    let pcr_json: Map<String, Value> = pcrs
        .iter()
        .map(|(index, value)| (index.to_string(), Value::String(value.clone())))
        .collect();
    let mut console = std::io::stdout().lock();
    writeln!(console, "EDGEWARD-MODULES loaded={loaded}")?;
    writeln!(console, "EDGEWARD-PCRS {}", json!({ "sha256": pcr_json }))?;
    writeln!(console, "EDGEWARD-EVENTLOG {}", hex::encode(&event_log))?;
    match replayed {
        Ok(banks) => {
            let sha256 = edgeward_bootchain::eventlog::HashAlgorithm::Sha256;
            let differing: Vec<String> = pcrs
                .iter()
                .filter_map(|(index, value)| {
                    let pcr = edgeward_bootchain::eventlog::PcrIndex::new(*index)?;
                    // IMA extends after the firmware log ends: its PCRs come from its list.
                    let replayed = match ima.as_ref().ok().and_then(|ima| ima.get(index)) {
                        Some(value) => hex::encode(value),
                        None => banks
                            .get(sha256, pcr)
                            .map(hex::encode)
                            .unwrap_or_else(|| "0".repeat(64)),
                    };
                    (&replayed != value).then(|| index.to_string())
                })
                .collect();
            let ima_entries = match &ima {
                Ok(pcrs) if pcrs.is_empty() => "none".to_owned(),
                Ok(_) => ima_count.to_string(),
                Err(error) => format!("unreadable ({error:#})"),
            };
            writeln!(
                console,
                "EDGEWARD-REPLAY differing_pcrs=[{}] ima_entries={ima_entries}",
                differing.join(",")
            )?;
        }
        Err(error) => writeln!(console, "EDGEWARD-REPLAY error={error:#}")?,
    }
    writeln!(console, "EDGEWARD-READY")?;
    console.flush()?;
    // The TPM stack the attestation client uses (tss-esapi, the device TCTI it loads at run
    // time) must work in the image too: read PCR 0 through it and compare with the kernel's.
    let through_tss = (|| -> Result<String> {
        let mut context = edgeward_attestation::tpm::open("device:/dev/tpmrm0")?;
        let selection: edgeward_attestation::tpm::PcrSelection = "sha256:0".parse()?;
        let values = edgeward_attestation::tpm::read_pcrs(&mut context, &selection)?;
        Ok(values.first().map(hex::encode).unwrap_or_default())
    })();
    match through_tss {
        Ok(value) if Some(&value) == pcrs.get(&0) => writeln!(console, "EDGEWARD-TPM ok")?,
        Ok(value) => writeln!(console, "EDGEWARD-TPM mismatch pcr0={value}")?,
        Err(error) => writeln!(console, "EDGEWARD-TPM error={error:#}")?,
    }
    console.flush()?;
    Ok(())
}

/// Ends PID 1 without a kernel panic.
pub fn power_off() -> ! {
    let _ = std::io::stdout().flush();
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(error) => {
            eprintln!("edgeward-agent: cannot power off: {error}");
            loop {
                std::thread::park();
            }
        }
    }
}
