//! chronyd as the SNTP server of the booted appliance: on loopback (which a QEMU guest on the
//! user network reaches as 10.0.2.2), serving its own clock at stratum 8, setting nothing.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{required_peer_missing, workspace_root};

pub struct Chrony {
    child: Child,
    pub port: u16,
}

fn chronyd() -> Option<PathBuf> {
    let unpacked = workspace_root().join(".tools/chrony/usr/sbin/chronyd");
    if unpacked.is_file() {
        return Some(unpacked);
    }
    Command::new("chronyd")
        .arg("--version")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|_| PathBuf::from("chronyd"))
}

impl Chrony {
    /// Starts chronyd with its files in `dir`; `None` (after saying why) when it is missing
    /// outside CI.
    pub fn start(dir: &Path) -> Option<Self> {
        let Some(binary) = chronyd() else {
            required_peer_missing("chronyd is not available (run scripts/setup)");
            return None;
        };
        std::fs::create_dir_all(dir).expect("chrony dir");
        let port = free_udp_port();
        let config = dir.join("chrony.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\ncmdport 0\n\
                 pidfile {dir}/chronyd.pid\ndriftfile {dir}/drift\n",
                dir = dir.display()
            ),
        )
        .expect("chrony.conf");
        let log = std::fs::File::create(dir.join("chronyd.log")).expect("log");
        // -x: serve time, never set this machine's clock; -u root: no _chrony user here.
        let child = Command::new(binary)
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("chronyd starts");
        Some(Self { child, port })
    }
}

impl Drop for Chrony {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .map(|address| address.port())
        .expect("a free UDP port")
}
