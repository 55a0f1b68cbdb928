//! `edgeward-demo data-path` does what the README promises: it starts every part, streams,
//! stops them all, and leaves a store whose every block verifies, with the PKI an operator
//! needs to check it independently (here: openssl on one block).

use std::process::Command;

#[test]
fn the_data_path_demo_leaves_a_verifiable_store_and_its_pki() {
    if Command::new("mosquitto").arg("-h").output().is_err() {
        edgeward_tests::required_peer_missing("mosquitto is not installed (run scripts/setup)");
        return;
    }
    if edgeward_tests::pypmu::python().is_none() {
        return;
    }
    let out = edgeward_tests::scratch("demo-data-path");
    let output = Command::new(edgeward_tests::demo_binary())
        .args(["data-path", "--out"])
        .arg(&out)
        .args(["--duration", "7", "--block-seconds", "2"])
        .current_dir(edgeward_tests::workspace_root())
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let blocks = stdout.lines().filter(|line| line.contains(": ok ")).count();
    assert!(blocks >= 2, "{stdout}");
    assert!(
        stdout.contains(&format!("{blocks} of {blocks} blocks verified")),
        "{stdout}"
    );
    for file in [
        "ca.crt",
        "device-ca.crt",
        "tsa.crt",
        "tsa-root.crt",
        "admin.crt",
        "admin.key",
    ] {
        assert!(out.join("pki").join(file).is_file(), "pki/{file}");
    }
    let broker = std::fs::read_to_string(out.join("broker.txt")).expect("broker.txt");
    assert!(broker.trim().starts_with("127.0.0.1:"), "{broker}");
    for log in ["mosquitto", "tsa", "recorder", "agent"] {
        let text = std::fs::read_to_string(out.join(format!("logs/{log}.log"))).unwrap_or_default();
        assert!(!text.is_empty(), "logs/{log}.log holds the service's log");
    }
    // A directory that is not a demo's is refused, not cleared.
    let other = edgeward_tests::scratch("demo-data-path-other");
    std::fs::write(other.join("notes.txt"), "an operator's file").expect("write");
    let refused = Command::new(edgeward_tests::demo_binary())
        .args(["data-path", "--out"])
        .arg(&other)
        .output()
        .expect("the demo runs");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("neither empty nor an earlier demo's"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(other.join("notes.txt").is_file());
    // No process of the demo is left behind.
    let left = Command::new("pgrep")
        .args(["-f", &out.display().to_string()])
        .output()
        .expect("pgrep");
    assert!(
        String::from_utf8_lossy(&left.stdout).trim().is_empty(),
        "processes left running"
    );
    // The TSA certificate chains to the TSA root and is for time-stamping only.
    let tsa = edgeward_tests::openssl::openssl(
        &out.join("pki"),
        &[
            "verify",
            "-CAfile",
            "tsa-root.crt",
            "-purpose",
            "timestampsign",
            "tsa.crt",
        ],
    );
    assert!(String::from_utf8_lossy(&tsa.stdout).contains("OK"));
}
