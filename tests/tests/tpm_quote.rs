//! Our TPM quotes checked by an independent tool: `edgeward-agent quote` against swtpm writes
//! quote.msg, quote.sig, quote.pcrs and ak.pub.pem, and `tpm2_checkquote` (tpm2-tools) accepts
//! them with the right nonce and refuses a wrong nonce, an altered message, and another TPM's AK.

use std::path::Path;
use std::process::Command;

use edgeward_tests::swtpm::Swtpm;

fn agent_quote(tpm: &Swtpm, nonce: &str, pcrs: &str, out: &Path) {
    let output = Command::new(edgeward_tests::agent_binary())
        .args([
            "quote",
            "--tcti",
            &tpm.tcti(),
            "--nonce",
            nonce,
            "--pcrs",
            pcrs,
            "--out",
        ])
        .arg(out)
        .output()
        .expect("edgeward-agent runs");
    assert!(
        output.status.success(),
        "edgeward-agent quote failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn checkquote(dir: &Path, ak: &Path, nonce: &str) -> std::process::Output {
    Command::new("tpm2_checkquote")
        .arg("-u")
        .arg(ak)
        .arg("-m")
        .arg(dir.join("quote.msg"))
        .arg("-s")
        .arg(dir.join("quote.sig"))
        .arg("-f")
        .arg(dir.join("quote.pcrs"))
        .args(["-g", "sha256", "-q", nonce])
        .output()
        .expect("tpm2_checkquote runs")
}

fn tools_available() -> bool {
    let found = Command::new("tpm2_checkquote")
        .arg("--version")
        .output()
        .is_ok_and(|output| output.status.success());
    if !found {
        edgeward_tests::required_peer_missing("tpm2-tools is not installed (run scripts/setup)");
    }
    found
}

#[test]
fn tpm2_checkquote_accepts_our_quotes_and_refuses_altered_ones() {
    if !tools_available() {
        return;
    }
    let Some(tpm) = Swtpm::start() else { return };
    let Some(other_tpm) = Swtpm::start() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("edgeward-quote-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let nonce = "5eed0fdeadbeef00112233445566778899aabbcc";
    // Ten PCRs: more than one TPML_DIGEST in the values file.
    let pcrs = "sha256:0,1,2,3,4,5,6,7,8,9";
    let quote = dir.join("quote");
    agent_quote(&tpm, nonce, pcrs, &quote);
    let ak = quote.join("ak.pub.pem");

    let accepted = checkquote(&quote, &ak, nonce);
    assert!(
        accepted.status.success(),
        "tpm2_checkquote refused our quote: {}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    assert!(String::from_utf8_lossy(&accepted.stdout).contains("9 :"));

    let wrong_nonce = checkquote(&quote, &ak, "5eed0fdeadbeef00112233445566778899aabbcd");
    assert!(!wrong_nonce.status.success(), "a wrong nonce was accepted");

    let altered = dir.join("altered");
    std::fs::create_dir_all(&altered).expect("dir");
    for file in ["quote.sig", "quote.pcrs"] {
        std::fs::copy(quote.join(file), altered.join(file)).expect("copy");
    }
    let mut message = std::fs::read(quote.join("quote.msg")).expect("quote.msg");
    let last = message.len() - 1;
    message[last] ^= 0x01;
    std::fs::write(altered.join("quote.msg"), message).expect("write");
    assert!(
        !checkquote(&altered, &ak, nonce).status.success(),
        "an altered quote was accepted"
    );

    // A quote is bound to the TPM whose AK signed it.
    let other = dir.join("other");
    agent_quote(&other_tpm, nonce, pcrs, &other);
    assert!(
        !checkquote(&quote, &other.join("ak.pub.pem"), nonce)
            .status
            .success(),
        "another TPM's AK verified our quote"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
