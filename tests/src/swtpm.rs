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
