//! Remote attestation end to end, against real peers: the image is built and booted under OVMF
//! Secure Boot in QEMU, and the live boot's event log is what devices present. Each device is a
//! swtpm provisioned like a manufactured TPM into which that boot's measurements were extended,
//! so its quotes are real quotes of a real boot's PCRs. The verifier runs as `edgeward verifier
//! serve` over HTTPS; devices are `edgeward-agent attest`, or this test speaking the API with curl
//! where a request must be crafted. openssl checks the certificates.
//!
//! Checked: the happy path (registration, activation, attestation against the image's signed
//! manifest with the skipped checks named, a certificate for the TPM-held key that openssl
//! verifies up to the platform CA), keys and registration reused across agent and verifier
//! restarts, and each refusal with its reason and no certificate: wrong nonce, replayed quote,
//! another TPM's quote, an AK never activated, another TPM taking over an identity, an EK
//! certificate from an unknown CA, an unreleased image, a tampered event log, a PCR extended
//! after boot, certification without a valid attestation, and a denied device. Then the holes
//! an attacker would try next (issue 10): one TPM presenting its EK in another encoding or of
//! another kind to escape a denial; a certification from another boot, or of a key usable
//! outside the attested boot; a configuration that lets a PCR pass unchecked; and
//! unauthenticated requests that would change a device's standing or lock devices out.
//!
//! The image is built and booted once for the whole file; each test starts its own verifier
//! and TPMs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use edgeward_attestation::agent_log::AgentEvent;
use edgeward_attestation::api::{AttestRequest, EkKey, Hex, RegisterRequest};
use edgeward_attestation::tpm::{
    create_attestation_keys, load_attestation_keys, open, quote_with, read_ek_certificate, EkKind,
    KeyBlob, Nonce, PcrSelection,
};
use edgeward_bootchain::eventlog::{parse, HashAlgorithm};
use edgeward_tests::qemu;
use edgeward_tests::swtpm::{Manufacturer, Swtpm, Vendor};
use edgeward_tests::verifier::Verifier;
use edgeward_tests::{agent_binary, build_image, edgeward_binary, run_edgeward};
use serde_json::Value;

/// One device: its TPM, its state directory, where its certificate goes.
struct Device {
    tcti: String,
    state: PathBuf,
    out: PathBuf,
}

impl Device {
    fn new(root: &Path, name: &str, tpm: &Swtpm) -> Self {
        Self {
            tcti: tpm.tcti(),
            state: root.join(name).join("state"),
            out: root.join(name).join("pki"),
        }
    }

    fn attest(&self, verifier: &Verifier, log: &Path, extra: &[&str]) -> Output {
        let _ = std::fs::remove_file(self.out.join("device.crt"));
        Command::new(agent_binary())
            .args(["attest", "--verifier", &verifier.url, "--ca"])
            .arg(&verifier.ca)
            .args(["--tcti", &self.tcti, "--state"])
            .arg(&self.state)
            .arg("--pki")
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
fn assert_refused(device: &Device, output: &Output, expected: &[&str], what: &str) {
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
    crafted_attest_logged(tpm, ak, device, quote_nonce, claimed_nonce, pcrs, log, &[])
}

/// [`crafted_attest`] with the agent's log of its own measurements (the workloads it launched).
#[allow(clippy::too_many_arguments)]
fn crafted_attest_logged(
    tpm: &Swtpm,
    ak: &KeyBlob,
    device: &str,
    quote_nonce: &[u8],
    claimed_nonce: &[u8],
    pcrs: &[u8],
    log: &[u8],
    agent_log: &[AgentEvent],
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
        agent_log: agent_log.to_vec(),
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

/// The released image, booted once under OVMF Secure Boot: its live event log is what the
/// devices present, and a tampered copy is what an unreleased image's devices present.
struct Released {
    dir: PathBuf,
    keys: PathBuf,
    image: PathBuf,
    live_log: Vec<u8>,
    log_path: PathBuf,
    tampered: Vec<u8>,
    tampered_path: PathBuf,
    /// The platform's existing CA (openssl), under which device CAs are intermediates.
    platform: PathBuf,
}

static RELEASED: OnceLock<Option<Released>> = OnceLock::new();

fn released() -> Option<&'static Released> {
    RELEASED.get_or_init(boot_released).as_ref()
}

fn boot_released() -> Option<Released> {
    if !qemu::available() {
        return None;
    }
    // Shared by every test of this file, so not removed at the end: the next run removes it.
    let dir = edgeward_tests::scratch_shared("attestation-test");

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
    Some(Released {
        dir,
        keys,
        image,
        live_log,
        log_path,
        tampered,
        tampered_path,
        platform,
    })
}

/// `edgeward verifier init` of a verifier named `name` for the released image, trusting swtpm's
/// local CA and the `vendors` given, with `extra` arguments. Returns its configuration file and
/// port; the caller may edit the file before starting it.
fn init_verifier(
    released: &Released,
    name: &str,
    vendors: &[&Manufacturer],
    extra: &[&str],
) -> (PathBuf, u16) {
    init_verifier_under(released, &released.platform, name, vendors, extra)
}

/// [`init_verifier`] with the device CA under the CA in `platform` (`ca.crt`, `ca.key`).
fn init_verifier_under(
    released: &Released,
    platform: &Path,
    name: &str,
    vendors: &[&Manufacturer],
    extra: &[&str],
) -> (PathBuf, u16) {
    let swtpm_ca = Manufacturer::swtpm_localca();
    let port = free_port();
    let verifier_dir = released.dir.join(name);
    let mut args: Vec<String> = [
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
        "--release-key",
        &released.image.join("release.pub.raw").to_string_lossy(),
        "--manifest",
        &released.image.to_string_lossy(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    for manufacturer in [&swtpm_ca].into_iter().chain(vendors.iter().copied()) {
        args.push("--ek-root".into());
        args.push(manufacturer.root.to_string_lossy().into_owned());
        args.push("--ek-intermediate".into());
        args.push(manufacturer.intermediate.to_string_lossy().into_owned());
    }
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_edgeward(&args);
    (verifier_dir.join("verifier.toml"), port)
}

fn start_verifier(config: &Path, port: u16) -> Verifier {
    let tls_ca = config.with_file_name("tls-ca.crt");
    Verifier::start(config, port, &tls_ca)
}

#[test]
fn remote_attestation_end_to_end() {
    let Some(released) = released() else { return };
    let Released {
        dir,
        live_log,
        log_path,
        tampered,
        tampered_path,
        platform,
        ..
    } = released;
    let (live_log, tampered) = (live_log.clone(), tampered.clone());
    let (log_path, tampered_path) = (log_path.clone(), tampered_path.clone());

    // The verifier: swtpm's local CA is the only manufacturer it trusts.
    let (config, port) = init_verifier(released, "verifier", &[], &[]);
    let verifier_dir = config.parent().expect("dir").to_owned();
    let tls_ca = verifier_dir.join("tls-ca.crt");
    let mut verifier = Verifier::start(&config, port, &tls_ca);

    // The happy path: a manufactured TPM that booted the released image.
    let Some(tpm) = Swtpm::start_provisioned() else {
        return;
    };
    tpm.extend_log(&live_log);
    let bay1 = Device::new(dir, "bay-1", &tpm);
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
    // Nothing passed unnamed: the firmware PCRs the image cannot predict are listed as skipped,
    // and only those.
    let skipped: Vec<&str> = record["last_verdict"]["skipped"]
        .as_array()
        .expect("skipped checks")
        .iter()
        .map(|check| check["check"].as_str().expect("name"))
        .collect();
    assert_eq!(skipped, ["pcr0", "pcr1", "pcr2", "pcr3", "pcr5", "pcr6"]);
    assert!(
        record["last_verdict"]["skipped"][0]["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("log_only_pcrs")),
        "{record}"
    );

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
    // The broker's reader identities are no device's to take, whatever TPM asks: a device
    // certificate named "recorder" would read every topic.
    for reserved in ["recorder", "admin"] {
        let mut request = register.clone();
        request["device"] = reserved.into();
        let (status, answer) = verifier.post("register", &request);
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("reserved_identity")),
            "{answer}"
        );
        assert!(
            answer["reason"]
                .as_str()
                .is_some_and(|reason| reason.contains(&format!("{reserved} is reserved"))),
            "{answer}"
        );
    }
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
    let other = Device::new(dir, "other", &other_tpm);
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

    // An EK certificate from a CA the verifier does not trust (another vendor's TPM).
    let Some(foreign_tpm) = Swtpm::start() else {
        return;
    };
    let vendor = Vendor::new();
    vendor.certify_ek(&foreign_tpm, EkKind::Rsa);
    foreign_tpm.extend_log(&live_log);
    let foreign = Device::new(dir, "foreign", &foreign_tpm);
    let output = foreign.attest(&verifier, &log_path, &["--device", "bay-4"]);
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
    let rogue = Device::new(dir, "rogue", &rogue_tpm);
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

    // A workload launched as the agent launches one (its manifest's digest into PCR 15, an
    // entry in the agent's log) that no one released: refused by name. The same quote with the
    // workload left out of the agent's log: the log no longer replays to the quoted PCR 15.
    let rogue_manifest: [u8; 32] = {
        use sha2::Digest as _;
        sha2::Sha256::digest(b"format = 1\nname = \"rogue\"\n").into()
    };
    tpm.extend(15, rogue_manifest);
    let rogue = AgentEvent::workload(rogue_manifest, "rogue", "6.6.6");
    let (issued, _) = nonce(&verifier, "bay-1");
    let body = crafted_attest_logged(
        &tpm,
        &ak,
        "bay-1",
        &issued,
        &issued,
        &pcrs,
        &live_log,
        &[rogue],
    );
    let (status, answer) = verifier.post("attest", &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("workload rogue 6.6.6 (manifest")
                && reason.contains("is not released")),
        "{answer}"
    );
    eprintln!(
        "refused as expected (an unreleased workload): {}",
        answer["reason"]
    );
    let (issued, _) = nonce(&verifier, "bay-1");
    let body = crafted_attest(&tpm, &ak, "bay-1", &issued, &issued, &pcrs, &live_log);
    let (status, answer) = verifier.post("attest", &body);
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["reason"]
            .as_str()
            .is_some_and(|reason| reason.contains("is not what the event log replays to")),
        "{answer}"
    );
    eprintln!(
        "refused as expected (a workload left out of the agent's log): {}",
        answer["reason"]
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
}

/// A TPM2_Certify of `key` by `device`'s AK (from its state) with a fresh nonce, as the body of
/// `POST /v1/certify`.
fn crafted_certify(
    verifier: &Verifier,
    tpm: &Swtpm,
    device: &str,
    state: &Path,
    key: impl FnOnce(&mut tss_esapi::Context) -> edgeward_attestation::tpm::DeviceKey,
) -> Value {
    let (issued, _) = nonce(verifier, device);
    let mut context = open(&tpm.tcti()).expect("TPM");
    let key = key(&mut context);
    let keys = load_attestation_keys(&mut context, EkKind::Rsa, &read_blob(state, "ak"))
        .expect("the AK loads");
    let (certify_info, signature) = edgeward_attestation::tpm::certify(
        &mut context,
        &keys,
        &key,
        &Nonce::new(issued.clone()).expect("nonce"),
    )
    .expect("TPM2_Certify");
    let public = key.public.clone();
    keys.flush(&mut context);
    key.flush(&mut context);
    serde_json::to_value(edgeward_attestation::api::CertifyRequest {
        device: device.into(),
        nonce: Hex(issued),
        device_key_public: Hex(public),
        certify_info: Hex(certify_info),
        signature: Hex(signature),
    })
    .expect("JSON")
}

fn state_of(verifier: &Verifier, device: &str) -> Value {
    verifier
        .devices()
        .into_iter()
        .find(|record| record["id"] == device)
        .unwrap_or(Value::Null)
}

/// The verifier refused with `code` and a reason containing each of `expected`.
fn assert_refused_with(status: u16, answer: &Value, code: &str, expected: &[&str], what: &str) {
    assert_eq!(
        (status, answer["error"].as_str()),
        (403, Some(code)),
        "{what}: {answer}"
    );
    let reason = answer["reason"].as_str().unwrap_or("");
    for part in expected {
        assert!(
            reason.contains(part),
            "{what}: expected {part:?} in {reason}"
        );
    }
    eprintln!("refused as expected ({what}): {reason}");
}

#[test]
fn one_tpm_holds_one_identity_whatever_ek_it_presents() {
    let Some(released) = released() else { return };
    let Some(tpm) = Swtpm::start_provisioned() else {
        return;
    };
    // A TPM with two genuine EK certificates: RSA from swtpm's CA, P-256 from a vendor.
    let vendor = Vendor::new();
    vendor.certify_ek(&tpm, EkKind::Ecc);
    tpm.extend_log(&released.live_log);

    // A fleet of RSA EKs: the ECC EK of the same TPM is not a second way in.
    let (config, port) = init_verifier(released, "verifier-rsa-fleet", &[&vendor.ca], &[]);
    let verifier = start_verifier(&config, port);
    let device = Device::new(&released.dir, "dual-ek", &tpm);
    let output = device.attest(&verifier, &released.log_path, &["--device", "bay-10"]);
    assert!(output.status.success(), "bay-10 attests: {}", text(&output));
    // As an attacker would: fresh agent state, the other EK, another name.
    let other = Device::new(&released.dir, "dual-ek-other", &tpm);
    let output = other.attest(
        &verifier,
        &released.log_path,
        &["--device", "bay-11", "--ek", "ecc"],
    );
    assert_refused(
        &other,
        &output,
        &["ek_kind", "registers an RSA-2048 EK only", "--ek rsa"],
        "the same TPM's other EK",
    );
    drop(verifier);

    // A fleet of P-256 EKs: the EK's encoding is canonical, and a denial holds.
    let Some(ecc_tpm) = Swtpm::start() else {
        return;
    };
    vendor.certify_ek(&ecc_tpm, EkKind::Ecc);
    ecc_tpm.extend_log(&released.live_log);
    let (config, port) = init_verifier(
        released,
        "verifier-ecc-fleet",
        &[&vendor.ca],
        &["--ek", "ecc"],
    );
    let verifier = start_verifier(&config, port);
    let device = Device::new(&released.dir, "ecc-ek", &ecc_tpm);
    let output = device.attest(
        &verifier,
        &released.log_path,
        &["--device", "bay-20", "--ek", "ecc"],
    );
    assert!(output.status.success(), "bay-20 attests: {}", text(&output));
    run_edgeward(&[
        "verifier",
        "deny",
        "bay-20",
        "--config",
        &config.to_string_lossy(),
        "--reason",
        "taken from substation 9",
    ]);
    // The same EK with a leading zero before x: the certificate check and MakeCredential would
    // take it, and its fingerprint would differ. Refused before anything is computed.
    let (ek, certificate, ak_public) = {
        let mut context = open(&ecc_tpm.tcti()).expect("TPM");
        let keys =
            load_attestation_keys(&mut context, EkKind::Ecc, &read_blob(&device.state, "ak"))
                .expect("the AK loads");
        let certificate = read_ek_certificate(&mut context, EkKind::Ecc).expect("EK certificate");
        let ek = keys.ek_public.clone();
        let ak_public = keys.ak_blob.public.clone();
        keys.flush(&mut context);
        (ek, certificate, ak_public)
    };
    let edgeward_attestation::tpm::EkPublic::Ecc { x, y } = &ek else {
        panic!("a P-256 EK")
    };
    for name in [Some("bay-21"), None] {
        let request = RegisterRequest {
            device: name.map(str::to_owned),
            ek: EkKey::Ecc {
                x: Hex([&[0u8][..], x].concat()),
                y: Hex(y.to_vec()),
            },
            ek_certificate: Hex(certificate.clone()),
            ek_intermediates: Vec::new(),
            ak_public: Hex(ak_public.clone()),
        };
        let (status, answer) =
            verifier.post("register", &serde_json::to_value(request).expect("JSON"));
        assert_refused_with(
            status,
            &answer,
            "ek_key",
            &["x coordinate is 33 bytes", "exactly 32"],
            "a padded EK",
        );
    }
    // In its one encoding the EK is bay-20's: denied, under that name or another.
    let output = device.attest(
        &verifier,
        &released.log_path,
        &["--device", "bay-21", "--ek", "ecc"],
    );
    assert_refused(
        &device,
        &output,
        &["ek_taken", "already registered as bay-20"],
        "a second identity for a denied TPM",
    );
    let output = device.attest(
        &verifier,
        &released.log_path,
        &["--device", "bay-20", "--ek", "ecc"],
    );
    assert_refused(
        &device,
        &output,
        &["denied", "taken from substation 9"],
        "the denied device",
    );
    assert_eq!(state_of(&verifier, "bay-20")["state"], "denied");
    assert_eq!(
        state_of(&verifier, "bay-21"),
        Value::Null,
        "no new identity"
    );
}

#[test]
fn certification_comes_from_the_attested_boot() {
    let Some(released) = released() else { return };
    let Some(mut tpm) = Swtpm::start_provisioned() else {
        return;
    };
    tpm.extend_log(&released.live_log);
    let (config, port) = init_verifier(released, "verifier-boots", &[], &[]);
    let verifier = start_verifier(&config, port);
    let device = Device::new(&released.dir, "rebooting", &tpm);
    let output = device.attest(&verifier, &released.log_path, &["--device", "bay-30"]);
    assert!(output.status.success(), "bay-30 attests: {}", text(&output));
    // The agent leaves nothing loaded: swtpm has three object slots and no resource manager.
    let leftovers =
        edgeward_attestation::tpm::flush_leftover_objects(&mut open(&tpm.tcti()).expect("TPM"))
            .expect("listing the TPM's objects");
    assert_eq!(leftovers, 0, "edgeward-agent attest left objects loaded");
    let genuine = |context: &mut tss_esapi::Context| {
        edgeward_attestation::tpm::load_device_key(context, &read_blob(&device.state, "device-key"))
            .expect("the device key loads")
    };

    // In the attested boot: the genuine key is certified again (the crafted request is right).
    let body = crafted_certify(&verifier, &tpm, "bay-30", &device.state, genuine);
    let (status, answer) = verifier.post("certify", &body);
    assert_eq!(
        status, 200,
        "the genuine key in the attested boot: {answer}"
    );
    // A key whose policy is bound to other PCR values, and one with no policy at all.
    let body = crafted_certify(&verifier, &tpm, "bay-30", &device.state, |context| {
        edgeward_tests::device_keys::signing_key(context, Some([0x11; 32]))
    });
    let (status, answer) = verifier.post("certify", &body);
    assert_refused_with(
        status,
        &answer,
        "device_key",
        &["does not bind it to the attested boot's PCRs"],
        "a key bound to other PCRs",
    );
    let body = crafted_certify(&verifier, &tpm, "bay-30", &device.state, |context| {
        edgeward_tests::device_keys::signing_key(context, None)
    });
    let (status, answer) = verifier.post("certify", &body);
    assert_refused_with(
        status,
        &answer,
        "device_key",
        &["userWithAuth"],
        "a key any boot can use",
    );

    // A reboot into the same released image keeps the device key: its PCRs are the same.
    let key_before = read_blob(&device.state, "device-key");
    tpm.reboot();
    tpm.extend_log(&released.live_log);
    let output = device.attest(&verifier, &released.log_path, &["--device", "bay-30"]);
    assert!(
        output.status.success(),
        "bay-30 after a reboot: {}",
        text(&output)
    );
    assert_eq!(
        read_blob(&device.state, "device-key"),
        key_before,
        "the same key"
    );

    // Reboot into an unreleased image within the hour and ask for a certificate.
    tpm.reboot();
    tpm.extend_log(&released.tampered);
    let body = crafted_certify(&verifier, &tpm, "bay-30", &device.state, genuine);
    let (status, answer) = verifier.post("certify", &body);
    assert_refused_with(
        status,
        &answer,
        "attestation_required",
        &["another boot than the accepted attestation", "reset"],
        "a certification from another boot",
    );
    // In that boot the device key does not even sign: its PCRs are not the attested ones.
    let mut context = open(&tpm.tcti()).expect("TPM");
    let key = genuine(&mut context);
    assert!(
        edgeward_attestation::tpm::sign_digest(&mut context, &key, &[7; 32]).is_err(),
        "the device key signs in an unreleased boot"
    );
    key.flush(&mut context);
    drop(context);
    // And the agent there is refused, and writes no certificate.
    let output = device.attest(&verifier, &released.tampered_path, &["--device", "bay-30"]);
    assert_refused(
        &device,
        &output,
        &["PCR 4 is", "not image"],
        "the unreleased boot",
    );
    assert!(
        text(&output).contains("bound to another boot's PCRs"),
        "the agent saw its key is of another boot: {}",
        text(&output)
    );

    // Back in the released image (an update and its rollback look the same): a new key, bound
    // to this boot, and a certificate for it.
    tpm.reboot();
    tpm.extend_log(&released.live_log);
    let output = device.attest(&verifier, &released.log_path, &["--device", "bay-30"]);
    assert!(
        output.status.success(),
        "bay-30 back in the release: {}",
        text(&output)
    );
    assert_ne!(
        read_blob(&device.state, "device-key"),
        key_before,
        "a new key"
    );
    // Three unorderly shutdowns (swtpm killed, as a power cut) and a refused signature left
    // the TPM's dictionary-attack counter alone: the agent's keys are noDA, so power cuts do
    // not lock the appliance out of them.
    let properties = Command::new("tpm2_getcap")
        .args(["-T", &tpm.tcti(), "properties-variable"])
        .output()
        .expect("tpm2_getcap");
    let properties = String::from_utf8_lossy(&properties.stdout);
    assert!(
        properties.contains("TPM2_PT_LOCKOUT_COUNTER: 0x0"),
        "{properties}"
    );
}

#[test]
fn nothing_passes_by_omission() {
    let Some(released) = released() else { return };
    // PCR 9, which the manifest predicts, taken out of the quote: its value would come from the
    // device's own log. The verifier does not start, and says why.
    let (config, port) = init_verifier(released, "verifier-omissions", &[], &[]);
    let original = std::fs::read_to_string(&config).expect("configuration");
    let refused_start = |text: &str, expected: &[&str], what: &str| {
        std::fs::write(&config, text).expect("write");
        let output = Command::new(edgeward_binary())
            .args(["verifier", "serve", "--config"])
            .arg(&config)
            .output()
            .expect("runs");
        let said = text_of(&output);
        assert!(
            !output.status.success(),
            "{what}: the verifier started: {said}"
        );
        for part in expected {
            assert!(said.contains(part), "{what}: expected {part:?} in {said}");
        }
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "{what}: something listens"
        );
        eprintln!(
            "refused as expected ({what}): {}",
            said.lines().last().unwrap_or("")
        );
    };
    let without_nine = original.replace(
        "pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 15]",
        "pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13, 15]",
    );
    assert_ne!(without_nine, original);
    refused_start(
        &without_nine,
        &[
            "predicts PCR 9, which pcrs does not quote",
            "pcrs must quote PCR 9",
        ],
        "a predicted PCR not quoted",
    );
    // The firmware PCRs with neither values nor the explicit log-only setting.
    let without_log_only = original.replace("log_only_pcrs = [0, 1, 2, 3, 5, 6]\n", "");
    assert_ne!(without_log_only, original);
    refused_start(
        &without_log_only,
        &[
            "PCR 0 is quoted but",
            "PCR 6 is quoted but",
            "log_only_pcrs does not name it",
        ],
        "quoted PCRs without a reference",
    );
    // No reserved identities named: not taken as "none".
    let without_reserved = original
        .lines()
        .filter(|line| !line.starts_with("reserved_identities"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(without_reserved.trim_end(), original.trim_end());
    refused_start(
        &without_reserved,
        &["reserved_identities is not set"],
        "reader identities left unstated",
    );
    // A PCR both pinned and log-only.
    let both = format!(
        "{original}\n[platform_pcrs]\n0 = [\"{}\"]\n",
        "00".repeat(32)
    );
    refused_start(
        &both,
        &["PCR 0 is both in platform_pcrs and in log_only_pcrs"],
        "a contradictory policy",
    );
    std::fs::write(&config, &original).expect("write");

    // A signed manifest that predicts nothing would match any boot: it is not released.
    let empty = released.dir.join("empty-manifest");
    std::fs::create_dir_all(&empty).expect("dir");
    let key = edgeward_image::keys::KeyDir::new(&released.keys)
        .release_key()
        .expect("release key");
    edgeward_image::manifest::sign_manifest(
        &empty,
        &serde_json::json!({"format": 2, "image_version": "empty", "pcrs": {"sha256": {}}, "events": {}}),
        &key,
    )
    .expect("signed");
    let output = Command::new(edgeward_binary())
        .args(["verifier", "init", "--dir"])
        .arg(released.dir.join("verifier-empty"))
        .args(["--ek-root"])
        .arg(Manufacturer::swtpm_localca().root)
        .args(["--release-key"])
        .arg(empty.join("release.pub.raw"))
        .args(["--manifest"])
        .arg(&empty)
        .output()
        .expect("runs");
    let said = text_of(&output);
    assert!(
        !output.status.success(),
        "an empty manifest was released: {said}"
    );
    assert!(said.contains("predicts no PCR"), "{said}");
    eprintln!(
        "refused as expected (an empty manifest): {}",
        said.lines().last().unwrap_or("")
    );
}

fn text_of(output: &Output) -> String {
    text(output)
}

#[test]
fn unauthenticated_requests_change_nothing() {
    let Some(released) = released() else { return };
    let Some(tpm) = Swtpm::start_provisioned() else {
        return;
    };
    tpm.extend_log(&released.live_log);
    let (config, port) = init_verifier(released, "verifier-strangers", &[], &[]);
    let verifier = start_verifier(&config, port);
    let device = Device::new(&released.dir, "standing", &tpm);
    let output = device.attest(&verifier, &released.log_path, &["--device", "bay-40"]);
    assert!(output.status.success(), "bay-40 attests: {}", text(&output));
    let before = state_of(&verifier, "bay-40");
    assert_eq!(before["state"], "attested");

    // Anyone may ask for bay-40's nonce; a garbage attestation with it is refused and leaves
    // bay-40's standing as it was.
    let (issued, pcrs) = nonce(&verifier, "bay-40");
    let (status, answer) = verifier.post(
        "attest",
        &serde_json::json!({"device": "bay-40", "nonce": hex::encode(&issued),
            "quote": "ff544347", "signature": "0014000b0000", "event_log": "00"}),
    );
    assert_eq!(status, 403, "{answer}");
    // bay-40's own AK signing for another nonce (an old quote replayed) changes nothing either.
    let ak = read_blob(&device.state, "ak");
    let old_quote = crafted_attest(
        &tpm,
        &ak,
        "bay-40",
        b"an old nonce of an earlier day",
        &issued,
        &pcrs,
        &released.live_log,
    );
    let (status, answer) = verifier.post("attest", &old_quote);
    assert_refused_with(
        status,
        &answer,
        "nonce",
        &["another nonce"],
        "a replayed quote",
    );
    let after = state_of(&verifier, "bay-40");
    assert_eq!(after["state"], "attested", "{after}");
    assert_eq!(after["last_verdict"], before["last_verdict"]);
    assert_eq!(after["counters"], before["counters"]);

    // 100,000 nonce requests for bay-40 (over one kept-alive connection): the verifier keeps no
    // book of them, and bay-40 attests right after.
    let requests = 100_000;
    let body = serde_json::json!({"device": "bay-40"}).to_string();
    let mut script = String::new();
    for index in 0..requests {
        if index > 0 {
            script.push_str("next\n");
        }
        script.push_str(&format!(
            "url = \"{}/v1/nonce\"\ncacert = {:?}\nheader = \"content-type: application/json\"\ndata = {body:?}\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\\\n\"\n",
            verifier.url,
            verifier.ca.to_string_lossy()
        ));
    }
    let script_path = released.dir.join("nonce-flood.curl");
    std::fs::write(&script_path, script).expect("curl script");
    let started = Instant::now();
    let flood = Command::new("curl")
        .args(["-sS", "--parallel", "--parallel-max", "8", "-K"])
        .arg(&script_path)
        .output()
        .expect("curl runs");
    let codes = String::from_utf8_lossy(&flood.stdout);
    let answered = codes.lines().filter(|code| *code == "200").count();
    eprintln!(
        "{answered} of {requests} nonce requests answered in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(answered, requests, "every nonce request is answered");
    let output = device.attest(&verifier, &released.log_path, &["--device", "bay-40"]);
    assert!(
        output.status.success(),
        "bay-40 attests after the flood: {}",
        text(&output)
    );
}

#[test]
fn the_appliance_attests_and_streams_as_one_supervised_process() {
    use edgeward_tests::platform::{subscribe, Platform};
    use edgeward_tests::pypmu::PyPmu;
    let Some(released) = released() else { return };
    let dir = released.dir.join("appliance-on-host");
    std::fs::create_dir_all(&dir).expect("dir");
    let Some(platform) = Platform::start(&dir) else {
        return;
    };
    let Some(tpm) = Swtpm::start_provisioned() else {
        return;
    };
    tpm.extend_log(&released.live_log);
    let Some(pmu) = PyPmu::start(7, 50, "int-rect") else {
        return;
    };
    // The verifier's device CA under the rig's platform CA, which the broker trusts.
    let (config, port) =
        init_verifier_under(released, &dir.join("pki"), "verifier-appliance", &[], &[]);
    let verifier = start_verifier(&config, port);
    let device_ca = config.with_file_name("device-ca.crt");
    let pem = |path: PathBuf| std::fs::read_to_string(path).expect("PEM");
    let device_toml = dir.join("device.toml");
    let draft = edgeward_config::draft::Draft {
        serial: 1,
        identity: "bay-50".into(),
        location: "sub1".into(),
        sntp: vec!["127.0.0.1:123".into()],
        verifier_url: verifier.url.clone(),
        verifier_ca: pem(verifier.ca.clone()),
        ek: "rsa".into(),
        brokers: vec![format!("127.0.0.1:{}", platform.mqtt_port)],
        broker_ca: pem(platform.pki("ca.crt")),
        tsa_url: format!("http://127.0.0.1:{}/api/v1/timestamp", platform.tsa_port),
        tsa_root: pem(platform.pki("tsa-root.crt")),
        block_seconds: Some(1),
        heartbeat_seconds: Some(2),
        buffer_bytes: None,
        pmus: vec![("bay-1".into(), 7, format!("127.0.0.1:{}", pmu.port))],
        estimated: Vec::new(),
        workloads: Vec::new(),
    };
    std::fs::write(&device_toml, draft.to_toml().expect("TOML")).expect("write");
    run_edgeward(&[
        "config",
        "sign",
        &device_toml.to_string_lossy(),
        "--keys",
        &released.keys.to_string_lossy(),
    ]);
    let key = released.image.join("config.pub.raw");
    let data = dir.join("data");
    let appliance = |config: &Path| {
        let mut command = Command::new(agent_binary());
        command
            .args(["appliance", "--config"])
            .arg(config)
            .arg("--config-key")
            .arg(&key)
            .args(["--tcti", &tpm.tcti(), "--data"])
            .arg(&data)
            .arg("--event-log")
            .arg(&released.log_path)
            .env("EDGEWARD_LOG", "info");
        command
    };

    // An altered configuration (the broker moved) with the old signature: refused at once,
    // in one line, and nothing starts.
    let altered = dir.join("altered.toml");
    let text = std::fs::read_to_string(&device_toml).expect("read");
    std::fs::write(
        &altered,
        text.replace("block_seconds = 1", "block_seconds = 2"),
    )
    .expect("write");
    std::fs::copy(dir.join("device.toml.sig"), dir.join("altered.toml.sig")).expect("copy");
    let output = appliance(&altered).output().expect("runs");
    let said = text_of(&output);
    assert!(
        !output.status.success(),
        "an altered configuration ran: {said}"
    );
    assert!(
        said.contains("is refused") && said.contains("altered after signing"),
        "{said}"
    );
    assert!(!data.join("buffer").exists(), "nothing started: {said}");
    eprintln!(
        "refused as expected (altered configuration): {}",
        said.trim()
    );

    let store = dir.join("store");
    let recorder = platform.recorder_trusting(&store, &device_ca);
    let heartbeats = subscribe(&platform, "heartbeats", 12);
    let mut child = appliance(&device_toml)
        .stderr(std::fs::File::create(dir.join("appliance.log")).expect("log"))
        .spawn()
        .expect("the appliance starts");
    std::thread::sleep(Duration::from_secs(9));
    // SIGTERM: every role stops, the buffer is flushed, the process exits cleanly.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the appliance stops within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = std::fs::read_to_string(dir.join("appliance.log")).expect("log");
    assert!(
        status.success(),
        "the appliance exited with {status:?}: {log}"
    );
    assert!(
        log.contains("appliance stopped; the buffer is on disk"),
        "{log}"
    );
    assert!(log.contains("device certificate written"), "{log}");
    std::thread::sleep(Duration::from_secs(1));
    drop(recorder);
    let (ok, report) = platform.verify_data_trusting(&store, &device_ca);
    assert!(ok, "verify-data:\n{report}");
    let blocks = report.lines().filter(|line| line.contains(": ok ")).count();
    assert!(blocks >= 3, "at least three 1 s blocks: {report}");
    assert!(report.contains("device=bay-50"), "{report}");
    let beats = heartbeats.wait_with_output().expect("heartbeats");
    let beats = String::from_utf8_lossy(&beats.stdout);
    assert!(
        beats.contains("\"attestation\":\"running\"") && beats.contains("\"stream\":\"running\""),
        "roles in the heartbeats: {beats}"
    );
    drop(verifier);
}
