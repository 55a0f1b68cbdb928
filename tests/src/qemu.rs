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

/// A running appliance VM: `qemu/boot` with a writable disk and a QMP socket, its console read
/// into memory as it comes.
pub struct Vm {
    child: Option<Guard>,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    qmp: std::path::PathBuf,
    pub started: Instant,
}

impl Vm {
    /// Boots `disk` (a configured copy of the image's disk.img) with the image's firmware
    /// variables and the TPM in `tpm_state`; the console is also written to `console`.
    pub fn start(image_dir: &Path, disk: &Path, tpm_state: &Path, console: &Path) -> Self {
        let qmp = disk.with_extension("qmp");
        let _ = std::fs::remove_file(&qmp);
        let mut command = Command::new(workspace_root().join("qemu/boot"));
        command
            .arg(image_dir)
            .env("EDGEWARD_TPM_STATE", tpm_state)
            .env("EDGEWARD_DISK", disk)
            .env("EDGEWARD_QMP", &qmp)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let started = Instant::now();
        let mut child = command.spawn().expect("qemu/boot starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(console)
            .expect("console log");
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                use std::io::Write as _;
                let mut reader = BufReader::new(stdout);
                let mut line = Vec::new();
                while reader
                    .read_until(b'\n', &mut line)
                    .is_ok_and(|read| read > 0)
                {
                    let text = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if !text.starts_with("EDGEWARD-EVENTLOG") {
                        let _ = writeln!(log, "{text}");
                    }
                    lines.lock().expect("lines").push(text);
                    line.clear();
                }
            });
        }
        Self {
            child: Some(Guard(child)),
            lines,
            qmp,
            started,
        }
    }

    /// The console so far.
    pub fn console(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }

    /// Waits for a console line containing `text`; returns it, or `None` after `timeout`.
    pub fn wait_for(&self, text: &str, timeout: Duration) -> Option<String> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(line) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|line| line.contains(text))
            {
                return Some(line.clone());
            }
            if Instant::now() >= until || self.exited() {
                // One last look: the line may have come with the exit.
                std::thread::sleep(Duration::from_millis(200));
                return self
                    .lines
                    .lock()
                    .expect("lines")
                    .iter()
                    .find(|line| line.contains(text))
                    .cloned();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether QEMU has ended.
    pub fn exited(&self) -> bool {
        let Some(Guard(child)) = &self.child else {
            return true;
        };
        // qemu/boot's own process ends when QEMU does.
        !Path::new(&format!("/proc/{}", child.id())).exists()
            || std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
                .is_ok_and(|stat| stat.split_whitespace().nth(2) == Some("Z"))
    }

    /// Presses the ACPI power button (QMP `system_powerdown`).
    pub fn power_button(&self) {
        use std::io::Write as _;
        let socket = std::os::unix::net::UnixStream::connect(&self.qmp).expect("QEMU's QMP socket");
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut writer = socket.try_clone().expect("socket");
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        reader.read_line(&mut line).expect("the QMP greeting");
        for command in ["qmp_capabilities", "system_powerdown"] {
            writer
                .write_all(format!("{{\"execute\":\"{command}\"}}\n").as_bytes())
                .expect("QMP command");
            // Events (POWERDOWN, …) may come before the answer.
            loop {
                line.clear();
                reader.read_line(&mut line).expect("QMP answer");
                if line.contains("\"return\"") {
                    break;
                }
                assert!(
                    !line.contains("\"error\"") && !line.is_empty(),
                    "QMP {command}: {line}"
                );
            }
        }
    }

    /// Cuts the power: QEMU is killed at once, nothing in the guest runs again; qemu/boot then
    /// stops swtpm as after any exit.
    pub fn power_cut(&mut self) {
        if let Some(Guard(child)) = &self.child {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &child.id().to_string(), "qemu-system"])
                .status();
        }
        self.wait_exit(Duration::from_secs(10));
        self.child = None;
    }

    /// Waits for QEMU to end; whether it did within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while let Some(Guard(child)) = self.child.as_mut() {
            if child.try_wait().ok().flatten().is_some() {
                self.child = None;
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }
}
