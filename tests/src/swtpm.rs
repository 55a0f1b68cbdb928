//! A software TPM (swtpm) on loopback TCP, started fresh and stopped when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        // Two consecutive free ports: the TPM and its control channel.
        let port = loop {
            let port = crate::pypmu::free_port();
            if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
                break port;
            }
        };
        let state =
            std::env::temp_dir().join(format!("edgeward-swtpm-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&state).expect("swtpm state directory");
        if provision {
            let output = Command::new("swtpm_setup")
                .args([
                    "--tpm2",
                    "--create-ek-cert",
                    "--create-platform-cert",
                    "--overwrite",
                ])
                .args(["--pcr-banks", "sha256", "--tpmstate"])
                .arg(&state)
                .output()
                .expect("swtpm_setup runs");
            assert!(
                output.status.success(),
                "swtpm_setup failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let child = Command::new("swtpm")
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
        let swtpm = Self { child, state, port };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "swtpm listens within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(swtpm)
    }

    /// The TCTI string for tss-esapi and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
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

/// A manufacturer for ECC P-256 EKs, made with openssl: swtpm_setup 0.7 certifies only a P-384
/// ECC EK (NV 0x01C00016), so tests put a P-256 EK certificate where TPM vendors do
/// (NV 0x01C0000A), issued by this CA.
pub struct EccManufacturer {
    dir: PathBuf,
    pub ca: Manufacturer,
}

impl EccManufacturer {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "edgeward-ecc-manufacturer-{}-{}",
            std::process::id(),
            crate::pypmu::free_port()
        ));
        std::fs::create_dir_all(&dir).expect("manufacturer directory");
        let file = |name: &str| dir.join(name);
        run(
            Command::new("openssl")
                .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
                .args(["-subj", "/O=Edgeward Test TPM Vendor/CN=ECC EK Root CA"])
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .arg("-keyout")
                .arg(file("root.key"))
                .arg("-out")
                .arg(file("root.pem")),
            "openssl (manufacturer root)",
        );
        run(
            Command::new("openssl")
                .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
                .args(["ec_paramgen_curve:P-256", "-nodes"])
                .args(["-subj", "/O=Edgeward Test TPM Vendor/CN=ECC EK Issuing CA"])
                .arg("-keyout")
                .arg(file("issuer.key"))
                .arg("-out")
                .arg(file("issuer.csr")),
            "openssl (manufacturer intermediate request)",
        );
        std::fs::write(
            file("ca.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .expect("extensions file");
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
            "openssl (manufacturer intermediate)",
        );
        Self {
            ca: Manufacturer {
                root: file("root.pem"),
                intermediate: file("issuer.pem"),
            },
            dir,
        }
    }

    /// Makes `tpm`'s P-256 EK (the TCG default template), certifies it and stores the DER
    /// certificate in NV 0x01C0000A as a TPM vendor does.
    pub fn certify_ek(&self, tpm: &Swtpm) {
        let work = self.dir.join(format!("tpm-{}", tpm.port));
        std::fs::create_dir_all(&work).expect("directory");
        let tools = |args: &[&str], what: &str| {
            run(
                Command::new(args[0])
                    .args(&args[1..])
                    .env("TPM2TOOLS_TCTI", tpm.tcti())
                    .current_dir(&work),
                what,
            )
        };
        tools(
            &[
                "tpm2_createek",
                "-G",
                "ecc",
                "-c",
                "ek.ctx",
                "-u",
                "ek.pem",
                "-f",
                "pem",
            ],
            "tpm2_createek",
        );
        tools(&["tpm2_flushcontext", "-t"], "tpm2_flushcontext");
        std::fs::write(
            work.join("ek.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyAgreement\n",
        )
        .expect("extensions file");
        run(
            Command::new("openssl")
                .args(["x509", "-new", "-days", "30", "-subj", "/CN=swtpm P-256 EK"])
                .args(["-force_pubkey", "ek.pem", "-CA"])
                .arg(&self.ca.intermediate)
                .arg("-CAkey")
                .arg(self.dir.join("issuer.key"))
                .args(["-extfile", "ek.ext", "-outform", "DER", "-out", "ek.der"])
                .current_dir(&work),
            "openssl (EK certificate)",
        );
        let size = std::fs::metadata(work.join("ek.der"))
            .expect("EK certificate")
            .len()
            .to_string();
        tools(
            &[
                "tpm2_nvdefine",
                "0x01c0000a",
                "-C",
                "p",
                "-s",
                &size,
                "-a",
                "ppwrite|ppread|ownerread|authread|no_da|platformcreate",
            ],
            "tpm2_nvdefine",
        );
        tools(
            &["tpm2_nvwrite", "0x01c0000a", "-C", "p", "-i", "ek.der"],
            "tpm2_nvwrite",
        );
    }
}

impl Default for EccManufacturer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for EccManufacturer {
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
