//! Workload bundles on this host: made and signed with the real CLI, checked by the real agent
//! (`edgeward-agent workload verify`), and the example probe run in the real sandbox
//! (`edgeward-agent workload-sandbox`) from its image mounted read-only, as root (CI is root).
//! This host's kernel has neither device-mapper nor cgroup v2 controllers: the image is
//! mounted here through a plain loop device, and the sandbox runs without a cgroup; the
//! dm-verity mapping, read-time integrity, the limits and the measured launch are tested in
//! the booted appliance (tests/tests/appliance.rs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edgeward_blockdev::loop_device::LoopDevice;
use edgeward_bundle::Header;
use edgeward_tests::workloads::{assert_probe_passed, bundle, example_workload};
use edgeward_tests::{agent_binary, required_peer_missing, run_edgeward, scratch};
use edgeward_workload::sandbox::SandboxSpec;
use sha2::{Digest as _, Sha256};

fn verify(file: &Path, key: &Path) -> Output {
    Command::new(agent_binary())
        .args(["workload", "verify"])
        .arg(file)
        .arg("--trust")
        .arg(key)
        .output()
        .expect("the agent runs")
}

fn refused(file: &Path, key: &Path, expected: &str, what: &str) {
    let output = verify(file, key);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what}: accepted");
    assert!(stderr.contains(expected), "{what}: {stderr}");
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{what}: not one line: {stderr}"
    );
    eprintln!("refused as expected ({what}): {}", stderr.trim());
}

fn layout(file: &Path) -> edgeward_bundle::Layout {
    let bytes = std::fs::read(file).expect("bundle");
    Header::parse(&bytes, bytes.len() as u64)
        .expect("a header")
        .layout()
}

/// A copy of `file` with the byte at `at` changed.
fn altered(file: &Path, at: u64, out: &Path) -> PathBuf {
    let mut bytes = std::fs::read(file).expect("bundle");
    bytes[at as usize] ^= 0x01;
    std::fs::write(out, bytes).expect("altered copy");
    out.to_owned()
}

#[test]
fn only_a_bundle_signed_with_the_workload_key_and_unaltered_is_accepted() {
    let dir = scratch("workload-bundle");
    run_edgeward(&["keys", "init", dir.join("keys").to_str().expect("path")]);
    run_edgeward(&["keys", "init", dir.join("foreign").to_str().expect("path")]);
    let (key, public) = (dir.join("keys/workload.key"), dir.join("keys/workload.pub"));
    let probe = example_workload("workload-probe");
    let signed = bundle(
        &probe,
        "probe",
        "/bin/workload-probe --read-samples 3",
        &["--stream", "bay-1", "--size", "m"],
        Some(&key),
        &dir.join("probe.ewb"),
    );

    let output = verify(&signed, &public);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let said: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let bytes = std::fs::read(&signed).expect("bundle");
    let manifest = layout(&signed).manifest;
    let manifest_bytes = &bytes[manifest.start as usize..manifest.end as usize];
    // The digest the appliance measures is that of the signed manifest's bytes.
    assert_eq!(
        said["manifest_sha256"],
        hex::encode(Sha256::digest(manifest_bytes))
    );
    assert_eq!(said["pcr"], 15);
    let text = String::from_utf8_lossy(manifest_bytes);
    assert!(text.contains("name = \"probe\""), "{text}");
    assert!(
        text.contains("size = \"M\"") || text.contains("size = \"m\""),
        "{text}"
    );

    let unsigned = bundle(
        &probe,
        "probe",
        "/bin/workload-probe",
        &[],
        None,
        &dir.join("unsigned.ewb"),
    );
    refused(&unsigned, &public, "is not signed", "an unsigned bundle");
    let foreign = bundle(
        &probe,
        "probe",
        "/bin/workload-probe",
        &[],
        Some(&dir.join("foreign/workload.key")),
        &dir.join("foreign.ewb"),
    );
    refused(
        &foreign,
        &public,
        "does not verify with the trusted key",
        "another key",
    );
    // "probe" -> "prob\x65" with one bit: the manifest no longer matches its signature.
    let name_at = manifest.start
        + text.find("name = \"probe\"").expect("the name") as u64
        + "name = \"pro".len() as u64;
    refused(
        &altered(&signed, name_at, &dir.join("altered-manifest.ewb")),
        &public,
        "does not verify with the trusted key",
        "an altered manifest",
    );
    // A byte of the probe's code in the image: the signature still verifies (it covers the
    // root hash, not the bytes), the tree does not.
    let image = layout(&signed).image;
    refused(
        &altered(
            &signed,
            image.start + 3 * 4096 + 100,
            &dir.join("altered-image.ewb"),
        ),
        &public,
        "the image",
        "an altered image",
    );
    // A key that is not one: refused, not trusted.
    refused(
        &signed,
        &dir.join("keys/workload.key"),
        "workload key",
        "a private key given as the trusted key",
    );
}

fn as_root() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: the sandbox needs root (CI runs as root)");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        required_peer_missing("this kernel has no loop devices (/dev/loop-control)");
        return false;
    }
    true
}

/// Runs `probe_args` in the sandbox from a signed probe bundle's image; returns its output.
fn run_probe(dir: &Path, name: &str, network: bool, probe_args: &[&str]) -> Output {
    run_edgeward(&["keys", "init", dir.join("keys").to_str().expect("path")]);
    let file = bundle(
        &example_workload("workload-probe"),
        name,
        &format!("/bin/workload-probe {}", probe_args.join(" ")),
        if network { &["--network"] } else { &[] },
        Some(&dir.join("keys/workload.key")),
        &dir.join(format!("{name}.ewb")),
    );
    let image = layout(&file).image;
    let bundle_file = std::fs::File::open(&file).expect("bundle");
    let device = LoopDevice::attach(&bundle_file, image.start, image.end - image.start)
        .expect("a loop device");
    let root = dir.join("root");
    let io = dir.join("io");
    std::fs::create_dir_all(&root).expect("mount point");
    std::fs::create_dir_all(&io).expect("io directory");
    let mounted = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro,nosuid,nodev"])
        .arg(&device.path)
        .arg(&root)
        .status()
        .expect("mount runs");
    assert!(mounted.success(), "the image mounts");
    let spec = SandboxSpec {
        name: name.into(),
        uid: 61000,
        image_root: root.clone(),
        io_dir: io,
        cgroup: None,
        command: "/bin/workload-probe".into(),
        arguments: probe_args.iter().map(|arg| arg.to_string()).collect(),
        environment: Default::default(),
        network,
        tmp_bytes: 8 << 20,
    };
    let output = Command::new(agent_binary())
        .arg("workload-sandbox")
        .arg(spec.to_json())
        .output()
        .expect("the sandbox runs");
    let _ = Command::new("umount").arg(&root).status();
    drop(device);
    output
}

fn probe_lines(output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    eprintln!("{stdout}{}", String::from_utf8_lossy(&output.stderr));
    stdout
}

#[test]
fn the_sandbox_hides_the_host_drops_every_privilege_and_refuses_ip_sockets() {
    if !as_root() {
        return;
    }
    let dir = scratch("workload-sandbox");
    let output = run_probe(&dir, "probe", false, &[]);
    let stdout = probe_lines(&output);
    assert_probe_passed(
        &stdout,
        &[
            "own-hostname",
            "cannot-write-/bin/probe-was-here",
            "cannot-write-/run/probe-was-here",
            "no-ip-sockets",
        ],
    );
    assert!(output.status.success(), "exit {:?}", output.status);
    // Nothing it wrote reached the host: its /tmp was its own.
    assert!(!dir.join("root/tmp/probe-was-here").exists());
    assert!(!Path::new("/tmp/probe-was-here").exists());
}

#[test]
fn a_workload_with_the_network_may_open_sockets() {
    if !as_root() {
        return;
    }
    let dir = scratch("workload-sandbox-network");
    let output = run_probe(&dir, "netprobe", true, &["--expect-network"]);
    let stdout = probe_lines(&output);
    assert!(stdout.contains("probe: may-open-sockets ok"), "{stdout}");
    assert!(stdout.contains("probe: done, 0 failed"), "{stdout}");
}
