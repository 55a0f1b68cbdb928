//! Boots an image with `qemu/boot` (OVMF Secure Boot, a fresh swtpm) and reads its serial
//! console, stopping QEMU and swtpm when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{required_peer_missing, workspace_root};

/// Whether QEMU, swtpm and OVMF are installed; reports what is missing otherwise.
pub fn available() -> bool {
    let tools = ["qemu-system-x86_64", "swtpm", "swtpm_setup"];
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !found {
            required_peer_missing(&format!("{tool} is not installed (run scripts/setup)"));
            return false;
        }
    }
    if !Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd").is_file() {
        required_peer_missing("OVMF is not installed (run scripts/setup)");
        return false;
    }
    true
}

/// How a boot ended.
#[derive(Debug)]
pub struct BootOutcome {
    /// Every console line, escape sequences included.
    pub lines: Vec<String>,
    /// Time from starting QEMU to the `EDGEWARD-READY` line, if it came.
    pub ready_after: Option<Duration>,
}

impl BootOutcome {
    pub fn line_starting(&self, prefix: &str) -> Option<&str> {
        self.lines
            .iter()
            .find_map(|line| line.find(prefix).map(|start| &line[start + prefix.len()..]))
    }

    pub fn contains(&self, text: &str) -> bool {
        self.lines.iter().any(|line| line.contains(text))
    }
}

struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// Boots `image_dir` and reads the console until the guest reports READY and powers off, the
/// firmware gives up on every boot option, or `timeout` passes.
pub fn boot(image_dir: &Path, tpm_state: &Path, timeout: Duration) -> BootOutcome {
    let mut command = Command::new(workspace_root().join("qemu/boot"));
    command
        .arg(image_dir)
        .env("EDGEWARD_TPM_STATE", tpm_state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let started = Instant::now();
    let mut child = command.spawn().expect("qemu/boot starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let guard = Guard(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while reader
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            let text = String::from_utf8_lossy(&line).trim_end().to_owned();
            if tx.send(text).is_err() {
                return;
            }
            line.clear();
        }
    });
    let mut lines = Vec::new();
    let mut ready_after = None;
    let mut gave_up: Option<Instant> = None;
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() || gave_up.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) => {
                if line.contains("EDGEWARD-READY") && ready_after.is_none() {
                    ready_after = Some(started.elapsed());
                }
                if line.contains("No bootable option or device was found") {
                    gave_up = Some(Instant::now());
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // QEMU exited (the guest powered off).
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(guard);
    BootOutcome { lines, ready_after }
}
