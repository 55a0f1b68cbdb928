//! The appliance's DHCP client (the bring-up and the `network` role's [`LeaseKeeper`]) against
//! a real DHCP server, busybox's udhcpd, across a veth pair between two network namespaces.
//! With a 20 s lease: the address comes with the lease's lifetime, is renewed at T1 before it
//! runs out, and when the server is gone it is dropped at the lease's end (not before) and
//! taken again once a server answers, default route and all.
//!
//! Needs root (namespaces, port 68); CI runs as root, elsewhere it says why it skips.

use std::net::Ipv4Addr;
use std::os::fd::AsFd as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use edgeward_agent::bringup::network;
use edgeward_config::device::Network;
use edgeward_tests::required_peer_missing;

const LEASE: Duration = Duration::from_secs(20);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("ip (iproute2) runs");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Two namespaces joined by a veth pair; deleted (with the pair) on drop.
struct Namespaces {
    server: String,
    client: String,
    server_link: String,
    client_link: String,
}

impl Namespaces {
    fn new() -> Self {
        let id = std::process::id() % 100_000;
        let namespaces = Self {
            server: format!("ew-dhcp-s-{id}"),
            client: format!("ew-dhcp-c-{id}"),
            server_link: format!("ewds{id}"),
            client_link: format!("ewdc{id}"),
        };
        for namespace in [&namespaces.server, &namespaces.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", namespace]);
        }
        ip(&[
            "link",
            "add",
            &namespaces.server_link,
            "netns",
            &namespaces.server,
            "type",
            "veth",
            "peer",
            "name",
            &namespaces.client_link,
            "netns",
            &namespaces.client,
        ]);
        let server = &namespaces.server;
        ip(&["-n", server, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            server,
            "addr",
            "add",
            &format!("{SERVER}/24"),
            "dev",
            &namespaces.server_link,
        ]);
        ip(&["-n", server, "link", "set", &namespaces.server_link, "up"]);
        namespaces
    }

    /// The client interface's IPv4 address and its remaining valid lifetime in seconds
    /// (`None` for "forever").
    fn client_address(&self) -> Option<(Ipv4Addr, Option<u64>)> {
        let json = ip(&[
            "-n",
            &self.client,
            "-j",
            "-4",
            "addr",
            "show",
            "dev",
            &self.client_link,
        ]);
        let links: serde_json::Value = serde_json::from_str(&json).expect("ip -j gives JSON");
        let info = links.get(0)?.get("addr_info")?.get(0)?;
        let address = info.get("local")?.as_str()?.parse().ok()?;
        let valid = info.get("valid_life_time").and_then(|value| value.as_u64());
        Some((
            address,
            valid.filter(|seconds| *seconds != u64::from(u32::MAX)),
        ))
    }

    fn client_default_route(&self) -> String {
        ip(&["-n", &self.client, "-4", "route", "show", "default"])
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for namespace in [&self.server, &self.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
        }
    }
}

/// udhcpd in the server namespace, handing out 10.77.0.100–110 for 20 s.
struct Udhcpd {
    child: Child,
}

impl Udhcpd {
    fn start(namespaces: &Namespaces, dir: &std::path::Path) -> Self {
        let leases = dir.join("udhcpd.leases");
        let _ = std::fs::write(&leases, b"");
        let config = dir.join("udhcpd.conf");
        std::fs::write(
            &config,
            format!(
                "start 10.77.0.100\nend 10.77.0.110\ninterface {link}\nlease_file {leases}\n\
                 pidfile {pid}\nopt subnet 255.255.255.0\nopt router {SERVER}\nopt lease {lease}\n",
                link = namespaces.server_link,
                leases = leases.display(),
                pid = dir.join("udhcpd.pid").display(),
                lease = LEASE.as_secs(),
            ),
        )
        .expect("udhcpd.conf");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &namespaces.server,
                "busybox",
                "udhcpd",
                "-f",
            ])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("udhcpd starts");
        Self { child }
    }
}

impl Drop for Udhcpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn have(tool: &str, probe: &[&str]) -> bool {
    Command::new(tool)
        .args(probe)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Polls `condition` every 100 ms for up to `limit`; the time it took, if it came true.
fn within(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

#[test]
fn the_lease_is_kept_renewed_lost_with_its_server_and_taken_again() {
    if !nix::unistd::geteuid().is_root() {
        required_peer_missing("the DHCP test needs root (network namespaces, UDP port 68)");
        return;
    }
    if !have("busybox", &["udhcpd", "--help"]) || !have("ip", &["-V"]) {
        required_peer_missing("busybox (udhcpd) or iproute2 is missing: run scripts/setup");
        return;
    }
    let dir = std::env::temp_dir().join(format!("edgeward-dhcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a work directory");
    let namespaces = Namespaces::new();
    let mut server = Some(Udhcpd::start(&namespaces, &dir));

    // The client side runs on a thread that has entered the client namespace: every socket it
    // opens (netlink, port 68) is that namespace's.
    let (reports, reported) = mpsc::channel::<String>();
    let (stopping, stop) = tokio::sync::watch::channel(false);
    let (up_sender, up_received) = mpsc::channel();
    let client_link = namespaces.client_link.clone();
    let namespace_file = format!("/run/netns/{}", namespaces.client);
    let client = std::thread::spawn(move || -> anyhow::Result<()> {
        let file = std::fs::File::open(&namespace_file)?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let (up, keeper) = network::bring_up(&Network::Dhcp {
                interface: Some(client_link),
            })
            .await?;
            let _ = up_sender.send(up);
            let keeper = keeper.ok_or_else(|| anyhow::anyhow!("DHCP gave no keeper"))?;
            keeper
                .keep(stop, move |line| {
                    let _ = reports.send(line);
                })
                .await
        })
    });

    let up = up_received
        .recv_timeout(Duration::from_secs(30))
        .expect("the client is given an address within 30 s");
    let bound_at = Instant::now();
    let range = u32::from(Ipv4Addr::new(10, 77, 0, 100))..=u32::from(Ipv4Addr::new(10, 77, 0, 110));
    assert!(range.contains(&u32::from(up.address)), "{up:?}");
    assert_eq!((up.prefix, up.gateway), (24, Some(SERVER)), "{up:?}");
    assert_eq!(up.lease.as_ref().map(|lease| lease.lease), Some(LEASE));
    // The kernel holds the address for the lease's time, no longer: if the agent stopped, the
    // address would go with the lease.
    let (address, valid) = namespaces.client_address().expect("the address is set");
    assert_eq!(address, up.address);
    assert!(
        valid.is_some_and(|seconds| seconds <= 20),
        "valid_lft {valid:?}"
    );
    assert!(
        namespaces
            .client_default_route()
            .contains(&SERVER.to_string()),
        "{}",
        namespaces.client_default_route()
    );

    // T1 is at 10 s. At 14 s an unrenewed address would have 6 s left; a renewed one has more
    // than 10.
    std::thread::sleep(Duration::from_secs(14).saturating_sub(bound_at.elapsed()));
    let (address, valid) = namespaces.client_address().expect("the address stays");
    assert_eq!(address, up.address);
    assert!(
        valid.is_some_and(|seconds| seconds > 10),
        "the lease was not renewed at T1: valid_lft {valid:?}"
    );
    let renewed_at = bound_at + LEASE / 2;

    // The server goes away. The renewal at T1 and the rebinding at T2 go unanswered; the
    // address stays until the lease ends, 20 s after the last renewal, and is gone then.
    drop(server.take());
    let lease_end = renewed_at + LEASE;
    std::thread::sleep(
        lease_end
            .saturating_duration_since(Instant::now())
            .saturating_sub(Duration::from_secs(2)),
    );
    assert!(
        namespaces.client_address().is_some(),
        "the address went before the lease ended"
    );
    within(Duration::from_secs(5), || {
        namespaces.client_address().is_none()
    })
    .expect("the address is dropped when the lease ends");

    // A server answers again: the client, asking all along, gets an address and its route.
    let _server = Udhcpd::start(&namespaces, &dir);
    within(Duration::from_secs(15), || {
        namespaces.client_address().is_some()
    })
    .expect("an address again within 15 s of a server answering");
    within(Duration::from_secs(2), || {
        namespaces
            .client_default_route()
            .contains(&SERVER.to_string())
    })
    .expect("the default route is back");

    let _ = stopping.send(true);
    client
        .join()
        .expect("the client thread does not panic")
        .expect("the lease keeper stops cleanly");
    let lines: Vec<String> = reported.try_iter().collect();
    assert!(
        lines.iter().any(|line| line.contains("lost")),
        "the keeper reported the loss: {lines:?}"
    );
    assert!(
        lines.len() >= 3,
        "bound, renewed, lost, bound again: {lines:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
