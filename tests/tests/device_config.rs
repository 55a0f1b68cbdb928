//! The device configuration as an operator handles it: `edgeward keys init` makes the
//! configuration key, `edgeward config sign` signs only a configuration an appliance would
//! accept, and `edgeward config check` verifies it as the appliance does (the image's
//! `config.pub.raw`), refusing an unsigned, altered or foreign-signed one with one line.

use std::path::Path;
use std::process::{Command, Output};

use edgeward_tests::openssl::root_ca;
use edgeward_tests::{edgeward_binary, run_edgeward, scratch};

fn edgeward(args: &[&str]) -> Output {
    Command::new(edgeward_binary())
        .args(args)
        .output()
        .expect("edgeward runs")
}

fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn configuration(dir: &Path) -> String {
    let ca = std::fs::read_to_string(root_ca(dir, "platform", "/CN=Platform CA")).expect("CA");
    edgeward_config::draft::Draft {
        serial: 1,
        identity: "bay-1".into(),
        location: "substation-1".into(),
        sntp: vec!["10.0.2.2:1123".into()],
        verifier_url: "https://10.0.2.2:8443".into(),
        verifier_ca: ca.clone(),
        ek: "rsa".into(),
        brokers: vec!["10.0.2.2:8883".into()],
        broker_ca: ca.clone(),
        tsa_url: "http://10.0.2.2:3000/api/v1/timestamp".into(),
        tsa_root: ca,
        block_seconds: None,
        heartbeat_seconds: None,
        buffer_bytes: None,
        pmus: vec![("bay-1".into(), 7, "10.0.2.2:4712".into())],
        estimated: Vec::new(),
        workloads: Vec::new(),
    }
    .to_toml()
    .expect("TOML")
}

#[test]
fn only_a_configuration_the_operator_signed_is_accepted() {
    let dir = scratch("device-config");
    let keys = dir.join("keys");
    let other_keys = dir.join("other-keys");
    run_edgeward(&["keys", "init", &keys.to_string_lossy()]);
    run_edgeward(&["keys", "init", &other_keys.to_string_lossy()]);
    let file = dir.join("device.toml");
    std::fs::write(&file, configuration(&dir)).expect("write");
    let path = file.to_string_lossy().into_owned();
    let keys_arg = keys.to_string_lossy().into_owned();

    let signed = run_edgeward(&["config", "sign", &path, "--keys", &keys_arg]);
    assert!(signed.trim().ends_with("device.toml.sig"), "{signed}");
    let summary = run_edgeward(&["config", "check", &path, "--keys", &keys_arg]);
    assert!(summary.contains("identity   bay-1"), "{summary}");
    assert!(summary.contains("serial     1 "), "{summary}");
    assert!(
        summary.contains("verifier   https://10.0.2.2:8443/"),
        "{summary}"
    );

    let refused = |output: Output, expected: &str, what: &str| {
        let text = said(&output);
        assert!(!output.status.success(), "{what}: accepted: {text}");
        assert!(
            text.contains(expected),
            "{what}: expected {expected:?} in {text}"
        );
        assert_eq!(text.trim().lines().count(), 1, "{what}: one line: {text}");
        eprintln!("refused as expected ({what}): {}", text.trim());
    };
    // Signed by another operator's key.
    refused(
        edgeward(&[
            "config",
            "check",
            &path,
            "--keys",
            &other_keys.to_string_lossy(),
        ]),
        "signed with another key",
        "a foreign key",
    );
    // One byte altered after signing (another PMU port).
    let original = std::fs::read_to_string(&file).expect("read");
    std::fs::write(&file, original.replace(":4712", ":4713")).expect("write");
    refused(
        edgeward(&["config", "check", &path, "--keys", &keys_arg]),
        "altered after signing",
        "an altered byte",
    );
    // No signature at all.
    std::fs::write(&file, &original).expect("write");
    std::fs::remove_file(dir.join("device.toml.sig")).expect("remove");
    refused(
        edgeward(&["config", "check", &path, "--keys", &keys_arg]),
        "is not signed",
        "an unsigned configuration",
    );
    // What an appliance would refuse is not signed either.
    std::fs::write(&file, original.replace("mode = \"dhcp\"", "mode = \"ppp\"")).expect("write");
    refused(
        edgeward(&["config", "sign", &path, "--keys", &keys_arg]),
        "network: mode \"ppp\"",
        "an invalid configuration",
    );
    assert!(!dir.join("device.toml.sig").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
