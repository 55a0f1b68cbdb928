//! SEV-SNP verification on real AMD data: the Milan report, VCEK and chain shipped in the `sev`
//! crate's source (`tests/certs_data/`, Apache-2.0, virtee/sev). The valid report passes; any
//! flipped byte of it fails; a VCEK of another chip, a foreign chain, a wrong nonce or
//! measurement, and a TCB below the minimum are refused with their reason.

use std::path::PathBuf;
use std::process::Command;

use edgeward_attestation::snp::{
    appraise, read_chain, read_report, Check, MinimumTcb, Product, SnpPolicy,
};

/// The `sev` crate's source directory, from cargo's own metadata (for this platform only, so
/// that no other platform's crates need to be downloaded).
fn sev_crate_dir() -> Result<PathBuf, String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--filter-platform",
        ])
        .arg(env!("EDGEWARD_HOST_TARGET"))
        .current_dir(edgeward_tests::workspace_root())
        .output()
        .map_err(|error| format!("cannot run cargo metadata: {error}"))?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|_| {
        format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )
    })?;
    let manifest = metadata["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|package| package["name"] == "sev"))
        .and_then(|package| package["manifest_path"].as_str())
        .ok_or("the sev crate is not in the dependency graph")?;
    PathBuf::from(manifest)
        .parent()
        .map(|dir| dir.to_owned())
        .ok_or_else(|| "the sev manifest has no directory".to_owned())
}

fn sev_test_data() -> Option<PathBuf> {
    match sev_crate_dir().map(|dir| dir.join("tests/certs_data")) {
        Ok(dir) if dir.is_dir() => Some(dir),
        Ok(dir) => {
            edgeward_tests::required_peer_missing(&format!("{} is missing", dir.display()));
            None
        }
        Err(reason) => {
            edgeward_tests::required_peer_missing(&format!("the sev crate's test data: {reason}"));
            None
        }
    }
}

struct Milan {
    report: Vec<u8>,
    vcek: Vec<u8>,
    chain: (Vec<u8>, Vec<u8>),
    turin_vcek: Vec<u8>,
}

fn milan() -> Option<Milan> {
    let dir = sev_test_data()?;
    let read = |name: &str| std::fs::read(dir.join(name)).expect("sev test data");
    Some(Milan {
        report: read_report(&read("report_milan.hex")).expect("a report"),
        vcek: read("vcek_milan.der"),
        chain: read_chain(&read("cert_chain_milan")).expect("ASK and ARK"),
        turin_vcek: read("vcek_turin.der"),
    })
}

fn report_field<const N: usize>(report: &[u8], offset: usize) -> [u8; N] {
    report[offset..offset + N].try_into().expect("in range")
}

#[test]
fn the_real_milan_report_verifies() {
    let Some(milan) = milan() else { return };
    let policy = SnpPolicy {
        report_data: Some(report_field(&milan.report, 0x50)),
        measurement: Some(report_field(&milan.report, 0x90)),
        minimum_tcb: Some(MinimumTcb {
            bootloader: 0,
            tee: 0,
            snp: 0,
            microcode: 0,
        }),
        allow_debug: false,
        vmpl: 0,
    };
    let appraisal = appraise(&milan.report, &milan.vcek, None, &policy).expect("examinable");
    assert_eq!(appraisal.product, Some(Product::Milan));
    // The VCEK is bound to this report: AMD derived it for this chip at this TCB.
    for bound in [
        "vcek_tcb",
        "chip_id",
        "vmpl",
        "report_version",
        "signature_algorithm",
    ] {
        assert!(
            appraisal
                .checks
                .iter()
                .any(|(name, check)| *name == bound && matches!(check, Check::Passed(_))),
            "{bound}: {:#?}",
            appraisal.checks
        );
    }
    assert!(appraisal.accepted(), "{:#?}", appraisal.checks);
    assert!(appraisal
        .checks
        .iter()
        .all(|(_, check)| matches!(check, Check::Passed(_))));
    let (ask, ark) = (&milan.chain.0, &milan.chain.1);
    let with_chain =
        appraise(&milan.report, &milan.vcek, Some((ask, ark)), &policy).expect("examinable");
    assert!(with_chain.accepted(), "{:#?}", with_chain.checks);
}

#[test]
fn any_flipped_byte_of_the_report_is_refused() {
    let Some(milan) = milan() else { return };
    let policy = SnpPolicy::default();
    for offset in 0..milan.report.len() {
        let mut report = milan.report.clone();
        report[offset] ^= 0x01;
        // A flip that makes the report unparseable is a refusal too.
        if let Ok(appraisal) = appraise(&report, &milan.vcek, None, &policy) {
            assert!(
                !appraisal.accepted(),
                "a flipped byte at {offset:#x} was accepted"
            );
        }
    }
}

#[test]
fn wrong_chip_nonce_measurement_tcb_and_root_are_refused_with_reasons() {
    let Some(milan) = milan() else { return };
    let failed = |appraisal: &edgeward_attestation::snp::SnpAppraisal, check: &str| {
        appraisal.failures().any(|(name, _)| name == check)
    };
    // The VCEK of another chip (a Turin) did not sign this report.
    let other = appraise(
        &milan.report,
        &milan.turin_vcek,
        None,
        &SnpPolicy::default(),
    )
    .expect("examinable");
    assert!(failed(&other, "signature"), "{:#?}", other.checks);
    // Its certificate also names another chip and TCB than the report's: refused by name, not
    // only through the signature (the binding that keeps a genuine VCEK of an older TCB, or of
    // another chip, from vouching for a report).
    for check in ["vcek_tcb", "chip_id"] {
        assert!(failed(&other, check), "{check}: {:#?}", other.checks);
    }
    let reason = |appraisal: &edgeward_attestation::snp::SnpAppraisal, check: &str| {
        appraisal
            .failures()
            .find(|(name, _)| *name == check)
            .map(|(_, reason)| reason.to_owned())
            .unwrap_or_default()
    };
    eprintln!(
        "refused as expected: vcek_tcb: {}",
        reason(&other, "vcek_tcb")
    );
    eprintln!(
        "refused as expected: chip_id: {}",
        reason(&other, "chip_id")
    );
    // A report from VMPL 0 when the policy asks for another level, and the other way round.
    let vmpl = appraise(
        &milan.report,
        &milan.vcek,
        None,
        &SnpPolicy {
            vmpl: 2,
            ..SnpPolicy::default()
        },
    )
    .expect("examinable");
    assert!(failed(&vmpl, "vmpl"), "{:#?}", vmpl.checks);
    assert!(reason(&vmpl, "vmpl").contains("requested at VMPL 0, the policy requires VMPL 2"));

    let mut nonce: [u8; 64] = report_field(&milan.report, 0x50);
    nonce[0] ^= 0xFF;
    let mut measurement: [u8; 48] = report_field(&milan.report, 0x90);
    measurement[47] ^= 0xFF;
    let policy = SnpPolicy {
        report_data: Some(nonce),
        measurement: Some(measurement),
        minimum_tcb: Some(MinimumTcb {
            bootloader: 255,
            tee: 0,
            snp: 0,
            microcode: 0,
        }),
        allow_debug: false,
        vmpl: 0,
    };
    let appraisal = appraise(&milan.report, &milan.vcek, None, &policy).expect("examinable");
    for check in ["report_data", "measurement", "tcb"] {
        assert!(
            failed(&appraisal, check),
            "{check} should fail: {:#?}",
            appraisal.checks
        );
    }

    // A chain whose root is not AMD's (here: the ASK offered as the root) is not trusted.
    let (ask, _) = &milan.chain;
    let foreign = appraise(
        &milan.report,
        &milan.vcek,
        Some((ask, ask)),
        &SnpPolicy::default(),
    )
    .expect("examinable");
    assert!(failed(&foreign, "vcek_chain"), "{:#?}", foreign.checks);
    assert_eq!(foreign.product, None);
}

#[test]
fn the_cli_exits_zero_for_the_valid_report_and_non_zero_with_the_reason_otherwise() {
    let Some(dir) = sev_test_data() else { return };
    let run = |report: &std::path::Path| {
        Command::new(edgeward_tests::edgeward_binary())
            .args(["sev", "verify", "--report"])
            .arg(report)
            .arg("--vcek")
            .arg(dir.join("vcek_milan.der"))
            .arg("--chain")
            .arg(dir.join("cert_chain_milan"))
            .output()
            .expect("edgeward runs")
    };
    let ok = run(&dir.join("report_milan.hex"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(
        stdout.contains("signature") && stdout.contains("Milan"),
        "{stdout}"
    );

    let mut raw =
        read_report(&std::fs::read(dir.join("report_milan.hex")).expect("report")).expect("report");
    raw[0x90] ^= 0x01;
    let altered = std::env::temp_dir().join(format!("edgeward-snp-{}.bin", std::process::id()));
    std::fs::write(&altered, &raw).expect("write");
    let refused = run(&altered);
    let _ = std::fs::remove_file(&altered);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("signature"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// On a machine that is not an SEV-SNP guest, the agent says so and writes nothing (the real
/// request through /dev/sev-guest needs AMD hardware; QEMU cannot emulate SNP).
#[test]
fn the_agent_refuses_to_make_a_report_outside_a_confidential_vm() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        eprintln!("skipping: this machine is an SEV-SNP guest");
        return;
    }
    let out = std::env::temp_dir().join(format!("edgeward-snp-{}", std::process::id()));
    let output = std::process::Command::new(edgeward_tests::agent_binary())
        .args(["sev-report", "--nonce", "00112233", "--out"])
        .arg(&out)
        .output()
        .expect("the agent runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("not an SEV-SNP guest"), "{stderr}");
    assert!(!out.join("report.bin").exists());
}
