//! A software TPM (swtpm) on loopback TCP, started fresh and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_attestation::tpm::EkKind;

use crate::required_peer_missing;

pub struct Swtpm {
    child: Child,
    state: PathBuf,
    pub port: u16,
}

impl Swtpm {
    /// Starts swtpm with a new state directory; `None` (after saying why) when not installed.
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// Starts swtpm after `swtpm_setup` gave it an EK and EK certificate from swtpm's local CA
    /// (`/var/lib/swtpm-localca`), as a manufactured TPM has.
    pub fn start_provisioned() -> Option<Self> {
        Self::start_with(true)
    }

    fn start_with(provision: bool) -> Option<Self> {
        let installed = Command::new("swtpm")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !installed {
            required_peer_missing("swtpm is not installed (run scripts/setup)");
            return None;
        }
        let state = std::env::temp_dir().join(format!(
            "edgeward-swtpm-{}-{}",
            std::process::id(),
            crate::pypmu::free_port()
        ));
        std::fs::create_dir_all(&state).expect("swtpm state directory");
        if provision {
            manufacture(&state);
        }
        // Two consecutive free ports: the TPM and its control channel. Tests running at the
        // same time pick theirs the same way, so a pair can be taken between the check and
        // swtpm's bind (CI saw "Address already in use"): then another pair is tried.
        for _ in 0..5 {
            let port = loop {
                let port = crate::pypmu::free_port();
                if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                    break port;
                }
            };
            match spawn(&state, port) {
                Ok(child) => return Some(Self { child, state, port }),
                Err(reason) => eprintln!("swtpm on ports {port}/{}: {reason}", port + 1),
            }
        }
        panic!("swtpm did not start on five pairs of free ports");
    }

    /// A power cycle: swtpm stops and starts again on its state, as a TPM does when the machine
    /// reboots (TPM2_Startup(CLEAR): PCRs empty, the reset count one higher, keys kept).
    pub fn reboot(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The ports are free once the process is gone.
        self.child = spawn(&self.state, self.port).expect("swtpm starts again on its ports");
    }
    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }
}

/// Starts swtpm on `state`, listening on `port` (TPM) and `port + 1` (control), and waits until
/// both accept connections; the reason if it exits first (a port taken) or takes over 10 s.
fn spawn(state: &std::path::Path, port: u16) -> Result<Child, String> {
    let mut child = Command::new("swtpm")
        .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
        .arg("--tpmstate")
        .arg(format!("dir={}", state.display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("swtpm starts");
    let started = Instant::now();
    let listening = |port: u16| std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
    loop {
        // Its own process first: the TPM port answers before the control port is bound, and a
        // connection to a port can be another process's.
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("swtpm exited ({status})"));
        }
        if listening(port) && listening(port + 1) {
            // Bound both and still running a moment later (a failed bind ends it at once):
            // the ports are its own.
            std::thread::sleep(Duration::from_millis(100));
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("swtpm exited ({status})"));
            }
            return Ok(child);
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            return Err("not listening after 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// What a TPM manufacturer ships with its TPMs: the root and the intermediate that issue EK
/// certificates, as PEM files.
#[derive(Debug, Clone)]
pub struct Manufacturer {
    pub root: PathBuf,
    pub intermediate: PathBuf,
}

impl Manufacturer {
    /// swtpm's local CA, which `swtpm_setup --create-ek-cert` uses for the RSA EK certificate.
    pub fn swtpm_localca() -> Self {
        let ca = std::path::Path::new("/var/lib/swtpm-localca");
        Self {
            root: ca.join("swtpm-localca-rootca-cert.pem"),
            intermediate: ca.join("issuercert.pem"),
        }
    }

    /// The root and intermediate, DER.
    pub fn der(&self) -> (Vec<u8>, Vec<u8>) {
        let read = |path: &std::path::Path| {
            let text = std::fs::read(path).expect("CA certificate is readable");
            pem::parse(text).expect("PEM").contents().to_vec()
        };
        (read(&self.root), read(&self.intermediate))
    }
}

/// Gives the TPM state in `state` an EK and an EK certificate from swtpm's local CA (which the
/// first run creates, `/var/lib/swtpm-localca`), as a TPM leaves its factory; as `qemu/boot`
/// does for a state it finds empty.
pub fn manufacture(state: &std::path::Path) {
    std::fs::create_dir_all(state).expect("swtpm state directory");
    let output = Command::new("swtpm_setup")
        .args([
            "--tpm2",
            "--create-ek-cert",
            "--create-platform-cert",
            "--overwrite",
        ])
        .args(["--pcr-banks", "sha256", "--tpmstate"])
        .arg(state)
        .output()
        .expect("swtpm_setup runs");
    assert!(
        output.status.success(),
        "swtpm_setup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error}"));
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The extensions a test vendor puts in its certificates (openssl `-extfile` syntax), so that
/// tests can make the certificates real vendors get wrong.
#[derive(Debug, Clone)]
pub struct VendorProfile {
    pub root: String,
    pub intermediate: String,
    /// The EK certificate's; `{usage}` becomes keyEncipherment (RSA) or keyAgreement (ECC).
    pub ek: String,
}

impl Default for VendorProfile {
    /// What the TCG EK Credential Profile asks for.
    fn default() -> Self {
        let ca = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n";
        Self {
            root: ca.into(),
            intermediate: ca.into(),
            ek: "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{usage}\n\
                 extendedKeyUsage=2.23.133.8.1\n"
                .into(),
        }
    }
}

/// A TPM vendor made with openssl: a root and an issuing CA that certify EKs, and puts the
/// certificate in NV where vendors do (0x01C00002 for RSA-2048, 0x01C0000A for P-256). swtpm_setup
/// 0.7 certifies only RSA and P-384 EKs, so P-256 EKs, and EKs of a vendor the verifier does not
/// trust, come from here.
pub struct Vendor {
    dir: PathBuf,
    pub ca: Manufacturer,
}

impl Vendor {
    pub fn new() -> Self {
        Self::with(&VendorProfile::default())
    }

    pub fn with(profile: &VendorProfile) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "edgeward-vendor-{}-{}",
            std::process::id(),
            crate::pypmu::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("vendor directory");
        let file = |name: &str| dir.join(name);
        std::fs::write(file("root.ext"), &profile.root).expect("extensions file");
        std::fs::write(file("ca.ext"), &profile.intermediate).expect("extensions file");
        run(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes"])
                .args(["-subj", "/O=Edgeward Test TPM Vendor/CN=EK Root CA"])
                .arg("-keyout")
                .arg(file("root.key"))
                .arg("-out")
                .arg(file("root.csr.pem")),
            "openssl (vendor root key)",
        );
        // The root is self-signed with exactly the profile's extensions.
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "30", "-in"])
                .arg(file("root.csr.pem"))
                .arg("-signkey")
                .arg(file("root.key"))
                .arg("-extfile")
                .arg(file("root.ext"))
                .arg("-out")
                .arg(file("root.pem")),
            "openssl (vendor root)",
        );
        run(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes"])
                .args(["-subj", "/O=Edgeward Test TPM Vendor/CN=EK Issuing CA"])
                .arg("-keyout")
                .arg(file("issuer.key"))
                .arg("-out")
                .arg(file("issuer.csr")),
            "openssl (vendor intermediate request)",
        );
        run(
            Command::new("openssl")
                .args(["x509", "-req", "-days", "30", "-in"])
                .arg(file("issuer.csr"))
                .arg("-CA")
                .arg(file("root.pem"))
                .arg("-CAkey")
                .arg(file("root.key"))
                .arg("-extfile")
                .arg(file("ca.ext"))
                .arg("-out")
                .arg(file("issuer.pem")),
            "openssl (vendor intermediate)",
        );
        Self {
            ca: Manufacturer {
                root: file("root.pem"),
                intermediate: file("issuer.pem"),
            },
            dir,
        }
    }

    /// Makes `tpm`'s EK of `kind` (the TCG default template) and certifies it with `extensions`
    /// ([`VendorProfile::ek`] syntax). Returns the DER certificate.
    pub fn issue_ek(&self, tpm: &Swtpm, kind: EkKind, extensions: &str) -> Vec<u8> {
        let work = self.dir.join(format!("tpm-{}", tpm.port));
        std::fs::create_dir_all(&work).expect("directory");
        let (algorithm, usage) = match kind {
            EkKind::Rsa => ("rsa", "keyEncipherment"),
            EkKind::Ecc => ("ecc", "keyAgreement"),
        };
        let public = format!("ek-{algorithm}.pem");
        if !work.join(&public).exists() {
            tools(
                tpm,
                &work,
                &[
                    "tpm2_createek",
                    "-G",
                    algorithm,
                    "-c",
                    "ek.ctx",
                    "-u",
                    &public,
                    "-f",
                    "pem",
                ],
            );
            tools(tpm, &work, &["tpm2_flushcontext", "-t"]);
        }
        let serial = crate::pypmu::free_port();
        let ext = format!("ek-{serial}.ext");
        let der = format!("ek-{serial}.der");
        std::fs::write(work.join(&ext), extensions.replace("{usage}", usage))
            .expect("extensions file");
        run(
            Command::new("openssl")
                .args(["x509", "-new", "-days", "30", "-subj"])
                .arg(format!("/CN=swtpm {algorithm} EK"))
                .args(["-force_pubkey", &public, "-CA"])
                .arg(&self.ca.intermediate)
                .arg("-CAkey")
                .arg(self.dir.join("issuer.key"))
                .args(["-extfile", &ext, "-outform", "DER", "-out", &der])
                .current_dir(&work),
            "openssl (EK certificate)",
        );
        std::fs::read(work.join(der)).expect("EK certificate")
    }

    /// Certifies `tpm`'s EK of `kind` as the profile says and stores the DER certificate in NV
    /// as a TPM vendor does.
    pub fn certify_ek_with(&self, tpm: &Swtpm, kind: EkKind, extensions: &str) {
        let certificate = self.issue_ek(tpm, kind, extensions);
        let work = self.dir.join(format!("tpm-{}", tpm.port));
        let path = work.join(format!("nv-{}.der", kind.name()));
        std::fs::write(&path, &certificate).expect("certificate");
        let index = format!("{:#010x}", kind.certificate_index());
        let size = certificate.len().to_string();
        let path = path.to_string_lossy().into_owned();
        tools(
            tpm,
            &work,
            &[
                "tpm2_nvdefine",
                &index,
                "-C",
                "p",
                "-s",
                &size,
                "-a",
                "ppwrite|ppread|ownerread|authread|no_da|platformcreate",
            ],
        );
        tools(
            tpm,
            &work,
            &["tpm2_nvwrite", &index, "-C", "p", "-i", &path],
        );
    }

    /// Certifies `tpm`'s EK of `kind` as the TCG profile says and stores it in NV.
    pub fn certify_ek(&self, tpm: &Swtpm, kind: EkKind) {
        self.certify_ek_with(tpm, kind, &VendorProfile::default().ek);
    }
}

fn tools(tpm: &Swtpm, dir: &std::path::Path, args: &[&str]) {
    run(
        Command::new(args[0])
            .args(&args[1..])
            .env("TPM2TOOLS_TCTI", tpm.tcti())
            .current_dir(dir),
        args[0],
    )
}

impl Default for Vendor {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Vendor {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Swtpm {
    /// Extends every SHA-256 digest of a TCG event log into this TPM's PCRs, in log order, with
    /// tpm2-tools: afterwards the TPM holds what a machine that booted with this log holds, and
    /// its quotes are real quotes of those values.
    pub fn extend_log(&self, log: &[u8]) {
        use edgeward_bootchain::eventlog::{parse, EventType, HashAlgorithm};
        let parsed = parse(log).expect("the event log parses");
        let specs: Vec<String> = parsed
            .events
            .iter()
            .filter(|event| event.event_type != EventType::NO_ACTION)
            .filter_map(|event| {
                event
                    .digest(HashAlgorithm::Sha256)
                    .map(|digest| format!("{}:sha256={}", event.pcr.get(), hex::encode(digest)))
            })
            .collect();
        for chunk in specs.chunks(16) {
            run(
                Command::new("tpm2_pcrextend")
                    .args(chunk)
                    .env("TPM2TOOLS_TCTI", self.tcti()),
                "tpm2_pcrextend",
            );
        }
    }

    /// Extends one SHA-256 PCR, as software that measures something after boot would.
    pub fn extend(&self, pcr: u32, digest: [u8; 32]) {
        run(
            Command::new("tpm2_pcrextend")
                .arg(format!("{pcr}:sha256={}", hex::encode(digest)))
                .env("TPM2TOOLS_TCTI", self.tcti()),
            "tpm2_pcrextend",
        );
    }
}
