//! `edgeward verifier serve` as a peer: started on a configuration `edgeward verifier init`
//! wrote, spoken to over HTTPS with curl (an independent client), stopped on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{edgeward_binary, run_edgeward};

pub struct Verifier {
    child: Child,
    pub config: PathBuf,
    pub url: String,
    /// The CA of its TLS certificate.
    pub ca: PathBuf,
}

impl Verifier {
    pub fn start(config: &Path, port: u16, ca: &Path) -> Self {
        Self::start_logging(config, port, ca, Stdio::inherit())
    }

    /// [`Verifier::start`] with its log going to `log`.
    pub fn start_logging(config: &Path, port: u16, ca: &Path, log: impl Into<Stdio>) -> Self {
        let child = Command::new(edgeward_binary())
            .args(["verifier", "serve", "--config"])
            .arg(config)
            .env("EDGEWARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
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
    pub fn post(&self, endpoint: &str, body: &Value) -> (u16, Value) {
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

    pub fn devices(&self) -> Vec<Value> {
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
