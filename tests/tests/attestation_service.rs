//! Remote attestation end to end, against real peers: the image is built and booted under OVMF
//! Secure Boot in QEMU, and the live boot's event log is what devices present. Each device is a
//! swtpm provisioned like a manufactured TPM into which that boot's measurements were extended,
//! so its quotes are real quotes of a real boot's PCRs. The verifier runs as `edgeward verifier
//! serve` over HTTPS; devices are `edgeward-agent attest`, or this test speaking the API with curl
//! where a request must be crafted. openssl checks the certificates.
//!
//! Checked: the happy path (registration, activation, attestation against the image's signed
//! manifest, a certificate for the TPM-held key that openssl verifies up to the platform CA),
//! keys and registration reused across agent and verifier restarts, and each refusal with its
//! reason and no certificate: wrong nonce, replayed quote, another TPM's quote, an AK never
//! activated, another TPM taking over an identity, an EK certificate from an unknown CA, an
//! unreleased image, a tampered event log, a PCR extended after boot, certification without a
//! valid attestation, and a denied device.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use edgeward_attestation::api::{AttestRequest, EkKey, Hex, RegisterRequest};
use edgeward_attestation::tpm::{
    create_attestation_keys, load_attestation_keys, open, quote_with, read_ek_certificate, EkKind,
    KeyBlob, Nonce, PcrSelection,
};
use edgeward_bootchain::eventlog::{parse, HashAlgorithm};
use edgeward_tests::qemu;
use edgeward_tests::swtpm::{EccManufacturer, Manufacturer, Swtpm};
use edgeward_tests::{agent_binary, build_image, edgeward_binary, run_edgeward, scratch};
use serde_json::Value;

struct Verifier {
    child: Child,
    config: PathBuf,
    url: String,
    ca: PathBuf,
}

impl Verifier {
    fn start(config: &Path, port: u16, ca: &Path) -> Self {
        let child = Command::new(edgeward_binary())
            .args(["verifier", "serve", "--config"])
            .arg(config)
            .env("EDGEWARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the verifier starts");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the verifier listens within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            config: config.to_owned(),
            url: format!("https://127.0.0.1:{port}"),
            ca: ca.to_owned(),
        }
    }

    /// POSTs a JSON body with curl; returns the HTTP status and the JSON answer.
    fn post(&self, endpoint: &str, body: &Value) -> (u16, Value) {
        let mut child = Command::new("curl")
            .args(["-sS", "--cacert"])
            .arg(&self.ca)
            .args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                "@-",
            ])
            .args(["-w", "\n%{http_code}"])
            .arg(format!("{}/v1/{endpoint}", self.url))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("curl runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(body.to_string().as_bytes())
            .expect("request written");
        let output = child.wait_with_output().expect("curl finishes");
        let text = String::from_utf8(output.stdout).expect("UTF-8");
        let (json, status) = text.rsplit_once('\n').expect("a status line");
        (
            status.trim().parse().expect("HTTP status"),
            serde_json::from_str(json).unwrap_or(Value::Null),
        )
    }

    fn devices(&self) -> Vec<Value> {
        run_edgeward(&[
            "verifier",
            "devices",
            "--json",
            "--config",
            &self.config.to_string_lossy(),
        ])
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON per device"))
        .collect()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One device: its TPM, its state directory, where its certificate goes.
struct Device<'a> {
    tpm: &'a Swtpm,
    state: PathBuf,
    out: PathBuf,
}

impl<'a> Device<'a> {
    fn new(root: &Path, name: &str, tpm: &'a Swtpm) -> Self {
        Self {
            tpm,
            state: root.join(name).join("state"),
            out: root.join(name).join("pki"),
        }
    }

    fn attest(&self, verifier: &Verifier, log: &Path, extra: &[&str]) -> Output {
        let _ = std::fs::remove_file(self.out.join("device.crt"));
        Command::new(agent_binary())
            .args(["attest", "--verifier", &verifier.url, "--ca"])
            .arg(&verifier.ca)
            .args(["--tcti", &self.tpm.tcti(), "--state"])
            .arg(&self.state)
            .arg("--out")
            .arg(&self.out)
            .arg("--event-log")
            .arg(log)
            .args(extra)
            .env("EDGEWARD_LOG", "info")
            .output()
            .expect("the agent runs")
    }

    fn certificate(&self) -> PathBuf {
        self.out.join("device.crt")
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The agent was refused: it failed, said `expected`, and left no certificate.
fn assert_refused(device: &Device<'_>, output: &Output, expected: &[&str], what: &str) {
    let said = text(output);
    assert!(
        !output.status.success(),
        "{what}: the agent succeeded: {said}"
    );
    for part in expected {
        assert!(said.contains(part), "{what}: expected {part:?} in: {said}");
    }
    assert!(
        !device.certificate().exists(),
        "{what}: a certificate was written"
    );
    eprintln!(
        "refused as expected ({what}): {}",
        said.lines().last().unwrap_or("")
    );
}

fn openssl(args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl runs")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A quote by `tpm`'s AK (loaded from the agent's blob, or `ak` itself) with `nonce`.
fn crafted_attest(
    tpm: &Swtpm,
    ak: &KeyBlob,
    device: &str,
    quote_nonce: &[u8],
    claimed_nonce: &[u8],
    pcrs: &[u8],
    log: &[u8],
) -> Value {
    let mut context = open(&tpm.tcti()).expect("TPM");
    let keys = load_attestation_keys(&mut context, EkKind::Rsa, ak).expect("the AK loads");
    let selection = PcrSelection {
        bank: tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
        pcrs: pcrs.to_vec(),
    };
    let quote = quote_with(
        &mut context,
        &keys,
        &Nonce::new(quote_nonce.to_vec()).expect("nonce"),
        &selection,
    )
    .expect("quote");
    keys.flush(&mut context);
    serde_json::to_value(AttestRequest {
        device: device.into(),
        nonce: Hex(claimed_nonce.to_vec()),
        quote: Hex(quote.attest),
        signature: Hex(quote.signature),
        pcr_values: Default::default(),
        event_log: Hex(log.to_vec()),
    })
    .expect("JSON")
}

fn nonce(verifier: &Verifier, device: &str) -> (Vec<u8>, Vec<u8>) {
    let (status, answer) = verifier.post("nonce", &serde_json::json!({ "device": device }));
    assert_eq!(status, 200, "nonce for {device}: {answer}");
    let nonce = hex::decode(answer["nonce"].as_str().expect("nonce")).expect("hex");
    let pcrs = answer["pcrs"]
        .as_array()
        .expect("pcrs")
        .iter()
        .map(|pcr| pcr.as_u64().expect("PCR") as u8)
        .collect();
    (nonce, pcrs)
}

fn read_blob(state: &Path, name: &str) -> KeyBlob {
    KeyBlob {
        public: std::fs::read(state.join(format!("{name}.pub"))).expect("blob"),
        private: std::fs::read(state.join(format!("{name}.priv"))).expect("blob"),
    }
}

#[test]
fn remote_attestation_end_to_end() {
    if !qemu::available() {
        return;
    }
    let dir = scratch("attestation-test");

    // The released image, booted for real: its event log is what the devices present.
    let keys = dir.join("keys");
    let image = dir.join("image");
    run_edgeward(&["keys", "init", &keys.to_string_lossy()]);
    build_image(&keys, &image, &agent_binary());
    let boot = qemu::boot(&image, &dir.join("qemu-tpm"), Duration::from_secs(90));
    let live_log = hex::decode(
        boot.line_starting("EDGEWARD-EVENTLOG ")
            .unwrap_or_else(|| panic!("the guest printed no event log: {:#?}", boot.lines)),
    )
    .expect("hex");
    let log_path = dir.join("binary_bios_measurements");
    std::fs::write(&log_path, &live_log).expect("log");

    // A tampered copy of the log: one byte of the UKI event's SHA-256 digest.
    let parsed = parse(&live_log).expect("the live log parses");
    let uki = parsed
        .events
        .iter()
        .find(|event| event.pcr.get() == 4 && event.event_type.name().ends_with("APPLICATION"))
        .expect("the UKI's event");
    let digest = uki.digest(HashAlgorithm::Sha256).expect("SHA-256");
    let position = live_log
        .windows(32)
        .position(|window| window == digest)
        .expect("the digest is in the log");
    let mut tampered = live_log.clone();
    tampered[position] ^= 0x01;
    let tampered_path = dir.join("tampered_measurements");
    std::fs::write(&tampered_path, &tampered).expect("log");

    // The platform's existing CA (openssl), under which the device CA is an intermediate.
    let platform = dir.join("platform");
    std::fs::create_dir_all(&platform).expect("dir");
    let made = openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        "/O=Grid Operator/CN=Platform CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        &platform.join("ca.key").to_string_lossy(),
        "-out",
        &platform.join("ca.crt").to_string_lossy(),
    ]);
    assert!(made.status.success(), "{}", text(&made));
    // openssl writes PKCS#8, which is what the verifier takes.

    // The verifier: swtpm's local CA is the only manufacturer it trusts.
    let swtpm_ca = Manufacturer::swtpm_localca();
    let port = free_port();
    let verifier_dir = dir.join("verifier");
    run_edgeward(&[
        "verifier",
        "init",
        "--dir",
        &verifier_dir.to_string_lossy(),
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--platform-ca",
        &platform.join("ca.crt").to_string_lossy(),
        "--platform-ca-key",
        &platform.join("ca.key").to_string_lossy(),
        "--ek-root",
        &swtpm_ca.root.to_string_lossy(),
        "--ek-intermediate",
        &swtpm_ca.intermediate.to_string_lossy(),
        "--release-key",
        &image.join("release.pub.raw").to_string_lossy(),
        "--manifest",
        &image.to_string_lossy(),
    ]);
    let config = verifier_dir.join("verifier.toml");
    let tls_ca = verifier_dir.join("tls-ca.crt");
    let mut verifier = Verifier::start(&config, port, &tls_ca);

    // The happy path: a manufactured TPM that booted the released image.
    let Some(tpm) = Swtpm::start_provisioned() else {
        return;
    };
    tpm.extend_log(&live_log);
    let bay1 = Device::new(&dir, "bay-1", &tpm);
    let output = bay1.attest(&verifier, &log_path, &["--device", "bay-1"]);
    assert!(output.status.success(), "bay-1 attests: {}", text(&output));
    let result: Value = serde_json::from_slice(&output.stdout).expect("JSON result");
    assert_eq!(result["device"], "bay-1");
    let certificate = bay1.certificate();
    let first_certificate = std::fs::read_to_string(&certificate).expect("a certificate");

    // openssl: the chain goes up to the platform CA; CN is the identity; EKU clientAuth.
    let verified = openssl(&[
        "verify",
        "-purpose",
        "sslclient",
        "-CAfile",
        &platform.join("ca.crt").to_string_lossy(),
        "-untrusted",
        &verifier_dir.join("device-ca.crt").to_string_lossy(),
        &certificate.to_string_lossy(),
    ]);
    assert!(
        verified.status.success(),
        "openssl verify: {}",
        text(&verified)
    );
    let shown = text(&openssl(&[
        "x509",
        "-noout",
        "-subject",
        "-ext",
        "extendedKeyUsage",
        "-dates",
        "-in",
        &certificate.to_string_lossy(),
    ]));
    assert!(
        shown.contains("CN = bay-1") || shown.contains("CN=bay-1"),
        "{shown}"
    );
    assert!(shown.contains("TLS Web Client Authentication"), "{shown}");
    let chain = std::fs::read_to_string(bay1.out.join("device-ca-chain.crt")).expect("chain");
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "device CA and platform CA"
    );
    let pubkey = |path: &Path| {
        text(&openssl(&[
            "x509",
            "-noout",
            "-pubkey",
            "-in",
            &path.to_string_lossy(),
        ]))
    };
    let first_key = pubkey(&certificate);

    // Restarts lose nothing: the verifier restarts, the agent runs again with the same TPM
    // keys and registration (no new registration), and the new certificate is for the same key.
    drop(verifier);
    verifier = Verifier::start(&config, port, &tls_ca);
    let ak_before = read_blob(&bay1.state, "ak");
    let output = bay1.attest(&verifier, &log_path, &["--device", "bay-1"]);
    assert!(
        output.status.success(),
        "bay-1 attests again: {}",
        text(&output)
    );
    assert!(
        !text(&output).contains("registered:"),
        "no second registration: {}",
        text(&output)
    );
    assert_eq!(read_blob(&bay1.state, "ak"), ak_before, "the AK is reused");
    assert_eq!(pubkey(&certificate), first_key, "the device key is reused");
    assert_ne!(
        std::fs::read_to_string(&certificate).expect("certificate"),
        first_certificate,
        "a new certificate was issued"
    );
    let devices = verifier.devices();
    let record = devices
        .iter()
        .find(|device| device["id"] == "bay-1")
        .expect("bay-1 listed");
    assert_eq!(record["state"], "attested");
    assert_eq!(record["certificates"].as_array().map(Vec::len), Some(2));

    // Crafted requests with bay-1's real AK.
    let ak = read_blob(&bay1.state, "ak");
    let (issued, pcrs) = nonce(&verifier, "bay-1");
    // A quote made for another nonce than the one presented.
    let body = crafted_attest(
        &tpm,
        &ak,
        "bay-1",
        b"not the verifier's nonce",
        &issued,
        &pcrs,
        &live_log,
    );
    let (status, answer) = verifier.post("attest", &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("nonce")),
        "{answer}"
    );
    // A genuine quote, accepted once, replayed.
    let (issued, _) = nonce(&verifier, "bay-1");
    let body = crafted_attest(&tpm, &ak, "bay-1", &issued, &issued, &pcrs, &live_log);
    let (status, answer) = verifier.post("attest", &body);
    assert_eq!(status, 200, "the genuine quote: {answer}");
    let (status, answer) = verifier.post("attest", &body);
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"], "nonce");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("already used")),
        "{answer}"
    );

    // Another TPM (same boot measurements) quotes for bay-1: its AK is not bay-1's.
    let Some(other_tpm) = Swtpm::start_provisioned() else {
        return;
    };
    other_tpm.extend_log(&live_log);
    let other_ak = {
        let mut context = open(&other_tpm.tcti()).expect("TPM");
        let keys = create_attestation_keys(&mut context, EkKind::Rsa).expect("keys");
        let blob = keys.ak_blob.clone();
        keys.flush(&mut context);
        blob
    };
    let (issued, _) = nonce(&verifier, "bay-1");
    let body = crafted_attest(
        &other_tpm, &other_ak, "bay-1", &issued, &issued, &pcrs, &live_log,
    );
    let (status, answer) = verifier.post("attest", &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("another TPM")),
        "{answer}"
    );

    // An AK never activated: the other TPM registers, but does not answer the challenge.
    let register = {
        let mut context = open(&other_tpm.tcti()).expect("TPM");
        let keys = load_attestation_keys(&mut context, EkKind::Rsa, &other_ak).expect("AK");
        let request = RegisterRequest {
            device: Some("bay-2".into()),
            ek: EkKey::from(&keys.ek_public),
            ek_certificate: Hex(read_ek_certificate(&mut context, EkKind::Rsa).expect("EK cert")),
            ek_intermediates: Vec::new(),
            ak_public: Hex(keys.ak_blob.public.clone()),
        };
        keys.flush(&mut context);
        serde_json::to_value(request).expect("JSON")
    };
    let (status, answer) = verifier.post("register", &register);
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = verifier.post("nonce", &serde_json::json!({"device": "bay-2"}));
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("not_activated")),
        "{answer}"
    );
    // A wrong activation secret is refused too.
    let (status, answer) = verifier.post(
        "activate",
        &serde_json::json!({"device": "bay-2", "secret": hex::encode([0u8; 32])}),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("activation")),
        "{answer}"
    );

    // The other TPM cannot take over bay-1's identity, nor register a second one.
    let other = Device::new(&dir, "other", &other_tpm);
    let output = other.attest(&verifier, &log_path, &["--device", "bay-1"]);
    assert_refused(
        &other,
        &output,
        &["identity_taken", "belongs to another TPM"],
        "identity takeover",
    );
    let output = other.attest(&verifier, &log_path, &["--device", "bay-3"]);
    assert_refused(
        &other,
        &output,
        &["ek_taken", "already registered as bay-2"],
        "second identity for one TPM",
    );

    // An EK certificate from a CA the verifier does not trust (a P-256 EK of another vendor).
    let Some(foreign_tpm) = Swtpm::start() else {
        return;
    };
    let vendor = EccManufacturer::new();
    vendor.certify_ek(&foreign_tpm);
    foreign_tpm.extend_log(&live_log);
    let foreign = Device::new(&dir, "foreign", &foreign_tpm);
    let output = foreign.attest(&verifier, &log_path, &["--device", "bay-4", "--ek", "ecc"]);
    assert_refused(
        &foreign,
        &output,
        &["ek_certificate", "no configured manufacturer root"],
        "unknown EK CA",
    );

    // An unreleased image: the TPM holds what the tampered log says (its UKI is not the
    // released one), so log and quote agree and the manifest does not.
    let Some(rogue_tpm) = Swtpm::start_provisioned() else {
        return;
    };
    rogue_tpm.extend_log(&tampered);
    let rogue = Device::new(&dir, "rogue", &rogue_tpm);
    let output = rogue.attest(&verifier, &tampered_path, &["--device", "bay-5"]);
    assert_refused(
        &rogue,
        &output,
        &[
            "PCR 4 is",
            "EV_EFI_BOOT_SERVICES_APPLICATION",
            "the signed UKI",
            "not image",
        ],
        "unreleased image",
    );

    // A tampered event log from a device whose TPM booted the released image.
    let output = bay1.attest(&verifier, &tampered_path, &["--device", "bay-1"]);
    assert_refused(
        &bay1,
        &output,
        &[
            "PCR 4 is",
            "in the TPM's signed quote but the event log replays to",
        ],
        "tampered event log",
    );
    // A failed attestation leaves no standing: a certification is refused.
    let (issued, _) = nonce(&verifier, "bay-1");
    let (status, answer) = verifier.post(
        "certify",
        &serde_json::json!({"device": "bay-1", "nonce": hex::encode(&issued),
            "device_key_public": "00", "certify_info": "00", "signature": "00"}),
    );
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some("attestation_required")),
        "{answer}"
    );

    // A PCR extended after boot without a log entry.
    tpm.extend(9, [0x42; 32]);
    let output = bay1.attest(&verifier, &log_path, &["--device", "bay-1"]);
    assert_refused(
        &bay1,
        &output,
        &["PCR 9 is", "extended after boot"],
        "PCR extended after boot",
    );

    // A denied device gets nothing, at once, while the verifier runs.
    run_edgeward(&[
        "verifier",
        "deny",
        "bay-1",
        "--config",
        &config.to_string_lossy(),
        "--reason",
        "stolen from substation 7",
    ]);
    let output = bay1.attest(&verifier, &log_path, &["--device", "bay-1"]);
    assert_refused(
        &bay1,
        &output,
        &["denied", "stolen from substation 7"],
        "denied device",
    );

    let devices = verifier.devices();
    let state = |id: &str| {
        devices
            .iter()
            .find(|device| device["id"] == id)
            .map(|device| device["state"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(state("bay-1").as_deref(), Some("denied"));
    assert_eq!(state("bay-2").as_deref(), Some("registering"));
    assert_eq!(state("bay-5").as_deref(), Some("failed"));
    assert_eq!(state("bay-4"), None, "an untrusted EK leaves no record");
    let table = run_edgeward(&["verifier", "devices", "--config", &config.to_string_lossy()]);
    eprintln!("{table}");
    drop(verifier);
    let _ = std::fs::remove_dir_all(&dir);
}
