//! A pyPMU PMU (`tests/pypmu/pmu_server.py`) on a loopback port, stopped when dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::{required_peer_missing, workspace_root};

/// The Python interpreter with pyPMU: `$EDGEWARD_PYTHON`, else the repo's `.venv`.
pub fn python() -> Option<PathBuf> {
    python_with("synchrophasor")
}

/// The repo's Python (as [`python`]) if it can import `module`; else reports the peer missing.
pub fn python_with(module: &str) -> Option<PathBuf> {
    let python = std::env::var_os("EDGEWARD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let usable = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if usable {
        Some(python)
    } else {
        required_peer_missing(&format!(
            "{module} is not importable with {} (run scripts/setup)",
            python.display()
        ));
        None
    }
}

/// A running pyPMU server.
pub struct PyPmu {
    child: Child,
    pub port: u16,
    pub idcode: u16,
}

impl PyPmu {
    /// Starts pyPMU serving stream `idcode` at `rate` frames/s in `format` (`int-rect`,
    /// `int-polar`, `float-rect`, `float-polar`). `None` when pyPMU is not installed outside CI.
    pub fn start(idcode: u16, rate: u16, format: &str) -> Option<Self> {
        Self::start_with(idcode, rate, format, &[])
    }

    /// [`PyPmu::start`] with more arguments for `pmu_server.py` (`--unlock-from K`, …).
    pub fn start_with(idcode: u16, rate: u16, format: &str, extra: &[&str]) -> Option<Self> {
        let python = python()?;
        let port = free_port();
        let mut command = Command::new(python);
        command
            .arg(workspace_root().join("tests/pypmu/pmu_server.py"))
            .args(["--id", &idcode.to_string()])
            .args(["--port", &port.to_string()])
            .args(["--rate", &rate.to_string()])
            .args(["--format", format])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        // Its own process group, so that the processes pyPMU forks per client stop with it.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command.spawn().expect("pyPMU starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("LISTENING") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let guard = Self {
            child,
            port,
            idcode,
        };
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("pyPMU listens within 20 s");
        Some(guard)
    }

    /// Kills the processes pyPMU forked for earlier clients. pyPMU's per-client process does
    /// not notice a client that vanished (`kill -9`) and spins on its socket; many of them
    /// starve the machine. Call it only while no client is connected.
    pub fn reap_clients(&self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-P", &self.child.id().to_string()])
            .status();
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PyPmu {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback TCP port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free loopback port")
}

/// The values `pmu_server.py` puts in frame `k`, in engineering units, for checking.
pub mod expected {
    const VOLTS_PER_COUNT: f64 = 915_527.0 * 1e-5;
    const AMPS_PER_COUNT: f64 = 45_776.0 * 1e-5;

    /// Phasors `[re, im]` in V and A.
    pub fn phasors(format: &str, k: u64) -> Vec<(f64, f64)> {
        (0..4u64)
            .map(|i| {
                let unit = if i == 3 {
                    AMPS_PER_COUNT
                } else {
                    VOLTS_PER_COUNT
                };
                let k_f = k as f64;
                let i_f = i as f64;
                match format {
                    "int-rect" => (
                        (100 * (i + 1) + k % 1000) as f64 * unit,
                        -((k % 500) as f64 + i_f) * unit,
                    ),
                    "int-polar" => {
                        let magnitude = (1000 * (i + 1) + k % 1000) as f64 * unit;
                        let angle = ((37 * k) % 62832) as f64 - 31416.0;
                        let angle = angle * 1e-4;
                        (magnitude * angle.cos(), magnitude * angle.sin())
                    }
                    "float-rect" => (230.0 * (i_f + 1.0) + k_f / 4.0, -k_f / 8.0),
                    _ => {
                        let magnitude = 230.0 + i_f + k_f / 2.0;
                        // The literal 3.14 of pmu_server.py, not π.
                        #[allow(clippy::approx_constant)]
                        let angle = (k % 628) as f64 / 100.0 - 3.14;
                        (magnitude * angle.cos(), magnitude * angle.sin())
                    }
                }
            })
            .collect()
    }

    pub fn frequency(k: u64) -> f64 {
        50.0 + ((k % 200) as f64 - 100.0) / 1000.0
    }

    pub fn rocof(k: u64) -> f64 {
        ((k % 50) as f64 - 25.0) / 100.0
    }
}
