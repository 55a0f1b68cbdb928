//! An old configuration put back is refused, by the TPM's configuration counter, on swtpm.
//! The judgement (`edgeward_config::rollback`) and the counter (`config_counter`) are the
//! appliance's own, through its one TPM owner; tpm2-tools is the independent peer that reads
//! the counter and plays the attacker who undefines it with the owner's authorisation.

use std::process::Command;

use edgeward_agent::appliance::admit_serial;
use edgeward_agent::tpm::Tpm;
use edgeward_attestation::config_counter::CONFIG_COUNTER_INDEX;
use edgeward_tests::swtpm::Swtpm;

fn tools(tpm: &Swtpm, args: &[&str]) -> std::process::Output {
    Command::new(args[0])
        .args(&args[1..])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("tpm2-tools runs")
}

/// The counter as tpm2_nvread reads it (8 bytes, big-endian).
fn counter_by_tools(tpm: &Swtpm) -> u64 {
    let index = format!("{CONFIG_COUNTER_INDEX:#x}");
    let output = tools(tpm, &["tpm2_nvread", &index, "-s", "8"]);
    assert!(
        output.status.success(),
        "tpm2_nvread: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    u64::from_be_bytes(output.stdout.try_into().expect("8 bytes"))
}

fn refusal(tpm: &Tpm, serial: u64) -> String {
    let error = admit_serial(tpm, serial).expect_err("refused");
    format!("{error:#}")
}

#[test]
fn an_older_configuration_is_refused_and_undefining_the_counter_does_not_wind_it_back() {
    let found = Command::new("tpm2_nvread")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        edgeward_tests::required_peer_missing("tpm2-tools is not installed (run scripts/setup)");
        return;
    }
    let Some(swtpm) = Swtpm::start() else { return };

    // A new appliance runs serial 1, then the operator issues 2 and 3.
    {
        let tpm = Tpm::open(&swtpm.tcti()).expect("the TPM opens");
        let first = admit_serial(&tpm, 1).expect("serial 1 on a new TPM");
        assert!(first.contains("serial=1"), "{first}");
        assert!(
            admit_serial(&tpm, 1)
                .expect("again")
                .contains("the TPM counter's"),
            "the same configuration again, at the next boot"
        );
        let advanced = admit_serial(&tpm, 3).expect("serial 3");
        assert!(advanced.contains("advanced from 1"), "{advanced}");
        tpm.close().expect("closes");
        // Closed means closed: the TSS context is gone (so swtpm takes the next client at once)
        // and a late caller is told so, not served.
        let late = refusal(&tpm, 3);
        assert!(late.contains("the TPM thread has stopped"), "{late}");
        tpm.close().expect("a second close is nothing");
    }
    assert_eq!(counter_by_tools(&swtpm), 3, "tpm2_nvread sees serial 3");

    // Someone puts back the configuration of serial 2, validly signed: refused, and the
    // counter does not move.
    let tpm = Tpm::open(&swtpm.tcti()).expect("the TPM opens");
    let refused = refusal(&tpm, 2);
    assert!(
        refused.contains("serial 2 is older than serial 3"),
        "{refused}"
    );
    // A serial from a date, not a count: refused before the counter is touched.
    let far = refusal(&tpm, 2_026_120_401);
    assert!(far.contains("more than 1000 ahead"), "{far}");
    tpm.close().expect("closes");
    drop(tpm);
    assert_eq!(
        counter_by_tools(&swtpm),
        3,
        "refusals leave the counter alone"
    );

    // With the owner's authorisation (empty on swtpm, as on many machines) the attacker
    // undefines the counter, hoping the appliance will start again from nothing.
    let index = format!("{CONFIG_COUNTER_INDEX:#x}");
    let undefined = tools(&swtpm, &["tpm2_nvundefine", &index, "-C", "o"]);
    assert!(
        undefined.status.success(),
        "tpm2_nvundefine: {}",
        String::from_utf8_lossy(&undefined.stderr)
    );
    let tpm = Tpm::open(&swtpm.tcti()).expect("the TPM opens");
    // The new counter starts above the highest the TPM ever held: the old configuration is
    // still refused, and so is the one that was current, until the operator issues a newer
    // one. A denial of service, which root on the device has anyway; never a rollback.
    let still = refusal(&tpm, 2);
    assert!(still.contains("older than serial 4"), "{still}");
    let current = refusal(&tpm, 3);
    assert!(current.contains("older than serial 4"), "{current}");
    let newer = admit_serial(&tpm, 5).expect("the operator's next issue");
    assert!(newer.contains("advanced from 4"), "{newer}");
    tpm.close().expect("closes");
    drop(tpm);
    assert_eq!(counter_by_tools(&swtpm), 5);
}
