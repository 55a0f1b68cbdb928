//! The measured-boot image end to end, all real: `edgeward keys init` and `edgeward image build`
//! (twice, byte-identical), the prediction against `systemd-measure`, a Secure Boot boot under
//! OVMF with swtpm in QEMU whose PCRs equal the manifest and whose event log replays to them, and
//! the firmware refusing an unsigned UKI, one signed by a foreign key, and one altered byte; then
//! the same with Debian's kernel and its modules instead of the appliance kernel.
//!
//! One test, because every step needs the image the first one builds and QEMU boots are the
//! expensive part (about 10 s each under TCG).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use edgeward_bootchain::eventlog::{parse, replay, HashAlgorithm, PcrIndex};
use edgeward_bootchain::manifest::{find_match, EventDifference, ReleaseKey};
use edgeward_image::manifest::{verify_manifest, ManifestError};
use edgeward_tests::qemu::{self, BootOutcome};
use edgeward_tests::{
    agent_binary, build_image, build_image_with, copy_sparse, run_edgeward, scratch,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);

fn build(keys: &Path, out: &Path) {
    build_image(keys, out, &agent_binary());
}

fn manifest_pcrs(image: &Path) -> BTreeMap<String, String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    serde_json::from_value(manifest["pcrs"]["sha256"].clone()).expect("PCR map")
}

/// PCR 11 as `systemd-measure calculate` computes it from the UKI's sections.
fn systemd_measure_pcr11(uki: &Path, dir: &Path) -> Option<String> {
    let tool = Path::new("/usr/lib/systemd/systemd-measure");
    if !tool.is_file() {
        edgeward_tests::required_peer_missing("systemd-measure (Debian systemd 252) is missing");
        return None;
    }
    // The appliance kernel's UKI has no initrd (its root is a verity partition).
    let bytes = std::fs::read(uki).expect("UKI");
    let image = edgeward_bootchain::pe::PeImage::parse(&bytes).expect("the UKI parses");
    let sections: Vec<&str> = ["linux", "osrel", "cmdline", "initrd"]
        .into_iter()
        .filter(|name| image.section(&format!(".{name}")).is_some())
        .collect();
    let mut objcopy = Command::new("objcopy");
    for section in &sections {
        objcopy
            .arg("--dump-section")
            .arg(format!(".{section}={}", dir.join(section).display()));
    }
    let status = objcopy
        .arg(uki)
        .arg(dir.join("dumped.efi"))
        .status()
        .expect("objcopy runs");
    assert!(
        status.success(),
        "objcopy could not dump the UKI's sections"
    );
    let mut measure = Command::new(tool);
    measure.args(["calculate", "--bank=sha256", "--phase=:"]);
    for section in &sections {
        measure.arg(format!("--{section}={}", dir.join(section).display()));
    }
    let output = measure.output().expect("systemd-measure runs");
    assert!(output.status.success(), "systemd-measure failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("11:sha256="))
        .map(str::to_owned)
}

fn live_pcrs(outcome: &BootOutcome) -> BTreeMap<String, String> {
    let json = outcome
        .line_starting("EDGEWARD-PCRS ")
        .expect("the agent printed its PCRs");
    let value: serde_json::Value = serde_json::from_str(json).expect("PCR JSON");
    serde_json::from_value(value["sha256"].clone()).expect("PCR map")
}

/// Puts `uki` on a copy of `image`'s disk as EFI/BOOT/BOOTX64.EFI and boots it.
fn boot_with_uki(image: &Path, uki: &Path, dir: &Path, tpm: &Path) -> BootOutcome {
    std::fs::create_dir_all(dir).expect("variant directory");
    for file in ["disk.img", "OVMF_VARS.fd"] {
        copy_sparse(&image.join(file), &dir.join(file));
    }
    let target = format!("{}@@1M", dir.join("disk.img").display());
    let status = Command::new("mcopy")
        .args(["-o", "-i", &target])
        .arg(uki)
        .arg("::EFI/BOOT/BOOTX64.EFI")
        .env("MTOOLS_SKIP_CHECK", "1")
        .status()
        .expect("mcopy runs");
    assert!(status.success(), "mcopy could not replace the UKI");
    boot_and_discard_disk(dir, tpm)
}

/// Boots the variant in `dir`; its disk goes once the console is read (each is a copy of the
/// image's).
fn boot_and_discard_disk(dir: &Path, tpm: &Path) -> BootOutcome {
    let outcome = qemu::boot(dir, tpm, REFUSAL_TIMEOUT);
    let _ = std::fs::remove_file(dir.join("disk.img"));
    outcome
}

/// Boots a copy of `image`'s disk whose root partition has one byte changed in the first block
/// of `/init`'s data, the first thing the kernel reads from the root after the file system.
fn boot_with_altered_root(image: &Path, dir: &Path, tpm: &Path) -> BootOutcome {
    std::fs::create_dir_all(dir).expect("variant directory");
    for file in ["disk.img", "OVMF_VARS.fd"] {
        copy_sparse(&image.join(file), &dir.join(file));
    }
    let disk = dir.join("disk.img");
    // The partition by its GPT name, as sfdisk reads the table.
    let table: serde_json::Value = serde_json::from_slice(
        &Command::new("sfdisk")
            .arg("--json")
            .arg(&disk)
            .output()
            .expect("sfdisk runs")
            .stdout,
    )
    .expect("sfdisk's JSON");
    let start = table["partitiontable"]["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .find(|partition| partition["name"] == "edgeward-root")
        .and_then(|partition| partition["start"].as_u64())
        .expect("a partition named edgeward-root")
        * 512;
    // /init's first extent in the erofs image, from dump.erofs.
    let root_image = dir.join("root.erofs");
    let status = Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", root_image.display()))
        .args(["bs=1M", "iflag=skip_bytes,count_bytes", "status=none"])
        .arg(format!("skip={start}"))
        .arg("count=64M")
        .status()
        .expect("dd runs");
    assert!(status.success());
    let dump = Command::new("dump.erofs")
        .args(["-e", "--path=/init"])
        .arg(&root_image)
        .output()
        .expect("dump.erofs runs (erofs-utils; scripts/setup)");
    let text = String::from_utf8_lossy(&dump.stdout);
    // An extent line: " 0: 0..4096 | 4096 : 1601536..1605632 | 4096"
    let physical = text
        .lines()
        .find_map(|line| {
            let (_, rest) = line.split_once('|')?;
            let (_, physical) = rest.split_once(':')?;
            physical
                .trim()
                .split("..")
                .next()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no extent of /init in dump.erofs's output: {text}"));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .expect("disk");
    use std::io::{Read as _, Seek as _, Write as _};
    let at = start + physical + 100;
    let mut byte = [0u8; 1];
    file.seek(std::io::SeekFrom::Start(at)).expect("seek");
    file.read_exact(&mut byte).expect("read");
    byte[0] ^= 0x01;
    file.seek(std::io::SeekFrom::Start(at)).expect("seek");
    file.write_all(&byte).expect("write");
    drop(file);
    boot_and_discard_disk(dir, tpm)
}

fn assert_refused(outcome: &BootOutcome, what: &str) {
    assert!(
        outcome.ready_after.is_none(),
        "{what}: the firmware booted it (READY seen)"
    );
    assert!(
        outcome.contains("Access Denied"),
        "{what}: expected the firmware to deny the image; console: {:#?}",
        outcome.lines
    );
}

#[test]
fn measured_boot_image_end_to_end() {
    if !qemu::available() {
        return;
    }
    let dir = scratch("image-test");
    let keys = dir.join("keys");
    run_edgeward(&["keys", "init", &keys.to_string_lossy()]);

    // Two builds from the same inputs give the same bytes.
    let image = dir.join("image");
    let again = dir.join("again");
    build(&keys, &image);
    build(&keys, &again);
    for file in [
        "uki.efi",
        "manifest.json",
        "manifest.json.sig",
        "disk.img",
        "OVMF_VARS.fd",
    ] {
        let a = std::fs::read(image.join(file)).expect("built");
        let b = std::fs::read(again.join(file)).expect("built");
        assert!(
            a == b,
            "{file} differs between two builds of the same inputs"
        );
    }
    let uki_len = std::fs::metadata(image.join("uki.efi")).expect("UKI").len();
    eprintln!("signed UKI: {uki_len} bytes");
    // The appliance kernel, and the manifest names its source and configuration.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(image.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    assert_eq!(manifest["kernel"]["package"], "linux-source-6.1");
    assert!(
        manifest["kernel"]["config_sha256"]
            .as_str()
            .is_some_and(|digest| digest.len() == 64),
        "{}",
        manifest["kernel"]
    );

    // The manifest is signed by the release key, and only that key.
    let public = ReleaseKey::from_hex(
        &std::fs::read_to_string(image.join("release.pub.raw")).expect("public key"),
    )
    .expect("hex");
    let reference = verify_manifest(&image, &public).expect("the manifest verifies");
    let tampered = dir.join("tampered");
    std::fs::create_dir_all(&tampered).expect("dir");
    let text = std::fs::read_to_string(image.join("manifest.json")).expect("manifest");
    std::fs::write(
        tampered.join("manifest.json"),
        text.replacen("\"4\"", "\"5\"", 1),
    )
    .expect("write");
    std::fs::copy(
        image.join("manifest.json.sig"),
        tampered.join("manifest.json.sig"),
    )
    .expect("copy");
    assert!(matches!(
        verify_manifest(&tampered, &public),
        Err(ManifestError::Reference(
            edgeward_bootchain::manifest::ManifestError::BadSignature
        ))
    ));

    // The prediction from the image directory is the manifest's, and PCR 11 is systemd's.
    let predicted: serde_json::Value = serde_json::from_str(&run_edgeward(&[
        "bootchain",
        "predict",
        "--image",
        &image.to_string_lossy(),
        "--json",
    ]))
    .expect("JSON");
    let expected = manifest_pcrs(&image);
    let predicted: BTreeMap<String, String> =
        serde_json::from_value(predicted["pcrs"]["sha256"].clone()).expect("PCR map");
    assert_eq!(predicted, expected);
    assert_eq!(
        expected.keys().map(String::as_str).collect::<Vec<_>>(),
        ["11", "12", "13", "4", "7", "9"]
    );
    if let Some(pcr11) = systemd_measure_pcr11(&image.join("uki.efi"), &dir) {
        assert_eq!(pcr11, expected["11"], "PCR 11 differs from systemd-measure");
    }

    // Boot under Secure Boot: READY, PCRs as predicted, the event log replays to the PCRs.
    let tpm = dir.join("tpm");
    let outcome = qemu::boot(&image, &tpm, BOOT_TIMEOUT);
    let ready = outcome.ready_after.unwrap_or_else(|| {
        panic!(
            "no EDGEWARD-READY within {BOOT_TIMEOUT:?}; console: {:#?}",
            outcome.lines
        )
    });
    eprintln!("power-on to READY: {:.1} s", ready.as_secs_f64());
    assert!(
        outcome.contains("EDGEWARD-TPM ok"),
        "the TPM stack (tss-esapi, device TCTI) does not work in the image: {:?}",
        outcome
            .lines
            .iter()
            .find(|line| line.contains("EDGEWARD-TPM"))
    );
    let live = live_pcrs(&outcome);
    for (pcr, value) in &expected {
        assert_eq!(
            &live[pcr], value,
            "PCR {pcr}: live value differs from the manifest"
        );
    }
    let log = hex::decode(
        outcome
            .line_starting("EDGEWARD-EVENTLOG ")
            .expect("the agent printed its event log"),
    )
    .expect("hex");
    let replayed = replay(&parse(&log).expect("the live log parses")).expect("replays");
    let bank = &replayed.banks[&HashAlgorithm::Sha256];
    assert!(bank.len() >= 9, "the log touches PCRs 0-7 and 9, 11");
    for (pcr, value) in bank {
        assert_eq!(
            hex::encode(value),
            live[&pcr.to_string()],
            "PCR {pcr}: the replayed log differs from the TPM"
        );
    }
    // PCR 10 is IMA's, measured by the kernel and not in the firmware log; the agent replays
    // the kernel's IMA list for it, and then every PCR agrees with the TPM. The appliance
    // kernel has its drivers built in and no module support: the agent loads nothing, and the
    // list holds the boot aggregate alone.
    assert!(!bank.contains_key(&PcrIndex::new(10).expect("valid")));
    assert_replays_with_modules(&outcome, 0);
    assert_ne!(live["10"], "0".repeat(64), "IMA measured into PCR 10");

    // The verifier's manifest match on the live boot: the log matches the signed manifest event
    // for event (types and digests, not only the values).
    let parsed = parse(&log).expect("parses");
    let manifests = [reference];
    let matched = find_match(&parsed, &replayed, &manifests).expect("the live boot matches");
    assert_eq!(matched.image_version, manifests[0].image_version);
    for (pcr, events) in &manifests[0].events {
        let live: Vec<_> = parsed
            .events
            .iter()
            .filter(|event| event.pcr.get() == *pcr && event.event_type.0 != 3)
            .map(|event| event.event_type.name())
            .collect();
        let predicted: Vec<_> = events
            .iter()
            .map(|event| event.event_type.clone())
            .collect();
        assert_eq!(live, predicted, "PCR {pcr}: event types");
    }
    // A log whose UKI event was altered: the refusal names PCR 4 and that event.
    let uki_event = parsed
        .events
        .iter()
        .position(|event| event.pcr.get() == 4 && event.event_type.name().ends_with("APPLICATION"))
        .expect("the UKI's event");
    let mut tampered_log = parsed.clone();
    for digest in &mut tampered_log.events[uki_event].digests {
        digest.bytes[0] ^= 0x01;
    }
    let tampered_replay = replay(&tampered_log).expect("replays");
    let refusal = find_match(&tampered_log, &tampered_replay, &manifests)
        .expect_err("an altered UKI event does not match");
    let differences = &refusal.comparisons[0].differences;
    assert_eq!(differences.len(), 1, "{refusal}");
    assert_eq!(differences[0].pcr, 4);
    assert!(
        matches!(&differences[0].event, EventDifference::Differs { log_index, .. } if *log_index == tampered_log.events[uki_event].index),
        "{refusal}"
    );
    eprintln!("refusal of an altered log: {refusal}");

    // The firmware refuses what the owner did not sign.
    let variants = dir.join("variants");
    std::fs::create_dir_all(&variants).expect("dir");
    let unsigned = image.join("uki.unsigned.efi");
    let outcome = boot_with_uki(&image, &unsigned, &variants.join("unsigned"), &tpm);
    assert_refused(&outcome, "unsigned UKI");

    let foreign_keys = dir.join("foreign-keys");
    run_edgeward(&["keys", "init", &foreign_keys.to_string_lossy()]);
    let foreign = variants.join("foreign.efi");
    let status = Command::new("sbsign")
        .arg("--key")
        .arg(foreign_keys.join("db.key"))
        .arg("--cert")
        .arg(foreign_keys.join("db.crt"))
        .arg("--output")
        .arg(&foreign)
        .arg(&unsigned)
        .status()
        .expect("sbsign runs");
    assert!(status.success());
    let outcome = boot_with_uki(&image, &foreign, &variants.join("foreign"), &tpm);
    assert_refused(&outcome, "UKI signed by a foreign key");

    let mut altered = std::fs::read(image.join("uki.efi")).expect("UKI");
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    let altered_path = variants.join("altered.efi");
    std::fs::write(&altered_path, &altered).expect("write");
    let outcome = boot_with_uki(&image, &altered_path, &variants.join("altered"), &tpm);
    assert_refused(&outcome, "signed UKI with one altered byte");

    // The root partition is read through dm-verity: one byte changed in the agent's first
    // block (found with erofs-utils' dump.erofs) and the block cannot be read, so the agent
    // never runs; the kernel names the corrupted block on the console.
    let outcome = boot_with_altered_root(&image, &variants.join("altered-root"), &tpm);
    assert!(
        outcome.ready_after.is_none(),
        "an altered root partition booted to READY"
    );
    assert!(
        outcome
            .lines
            .iter()
            .any(|line| line.contains("verity") && line.contains("is corrupted")),
        "expected dm-verity to report the altered block; console: {:#?}",
        outcome.lines
    );

    // Debian's signed kernel instead (`--kernel debian`), for hardware the appliance kernel
    // has no driver for: its drivers are modules the agent loads, and IMA measures each one
    // (Debian's kernel applies its Secure Boot architecture policy), which the replay explains.
    let debian = dir.join("debian-kernel");
    build_image_with(&keys, &debian, &agent_binary(), &["--kernel", "debian"]);
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(debian.join("manifest.json")).expect("manifest"))
            .expect("JSON");
    assert!(
        manifest["kernel"]["package"]
            .as_str()
            .is_some_and(|package| package.starts_with("linux-image-")),
        "{}",
        manifest["kernel"]
    );
    let outcome = qemu::boot(&debian, &dir.join("debian-tpm"), BOOT_TIMEOUT);
    assert!(
        outcome.ready_after.is_some(),
        "the image with Debian's kernel did not reach READY; console: {:#?}",
        outcome.lines
    );
    let live = live_pcrs(&outcome);
    for (pcr, value) in &manifest_pcrs(&debian) {
        assert_eq!(
            &live[pcr], value,
            "Debian's kernel: PCR {pcr} differs from the manifest"
        );
    }
    let modules = outcome
        .line_starting("EDGEWARD-MODULES loaded=")
        .and_then(|count| count.trim().parse().ok())
        .expect("the agent reported the modules it loaded");
    assert!(modules > 0, "Debian's kernel loads its modules");
    assert_replays_with_modules(&outcome, modules);

    let _ = std::fs::remove_dir_all(&dir);
}

/// The boot reported `modules` loaded kernel modules, and the firmware log with the kernel's
/// IMA list (the boot aggregate, then one entry per module) explains every PCR.
fn assert_replays_with_modules(outcome: &BootOutcome, modules: usize) {
    let loaded: usize = outcome
        .line_starting("EDGEWARD-MODULES loaded=")
        .and_then(|count| count.trim().parse().ok())
        .expect("the agent reported the modules it loaded");
    assert_eq!(loaded, modules, "kernel modules loaded");
    let replay_line = outcome
        .line_starting("EDGEWARD-REPLAY ")
        .expect("the agent reported its replay");
    assert_eq!(
        replay_line,
        format!("differing_pcrs=[] ima_entries={}", modules + 1),
        "the firmware log and the IMA list explain every PCR"
    );
}
