//! Looks at the sandbox from inside and says what it finds, one line per check:
//! `probe: <check> ok|FAIL <what it saw>`, then `probe: done, N failed`. The tests run it in the
//! appliance's sandbox and assert on these lines; an operator can run it to see what a
//! workload gets.
//!
//! `workload-probe [--expect-network] [--read-samples N] [--allocate-mib N]`: with
//! `--read-samples` it also reads N samples from the channel; with `--allocate-mib` it then
//! allocates and touches that much memory, 8 MiB at a time (to meet its memory limit).

use std::io::Write as _;
use std::time::Duration;

use edgeward_example_workloads::{argument, Channel};

fn main() {
    let mut failed = 0;
    let mut check = |name: &str, ok: bool, saw: String| {
        if !ok {
            failed += 1;
        }
        println!("probe: {name} {} {saw}", if ok { "ok" } else { "FAIL" });
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}:")))
            .map(|value| value.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    check(
        "pid-1",
        std::process::id() == 1,
        format!("pid {}", std::process::id()),
    );
    let processes: Vec<String> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .filter(|name| name.bytes().all(|byte| byte.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    check(
        "no-other-processes",
        processes == ["1"],
        format!("/proc lists {processes:?}"),
    );
    let uid = field("Uid");
    check(
        "unprivileged-user",
        uid.split(' ')
            .all(|id| id.parse::<u32>().is_ok_and(|id| id >= 1000)),
        format!("Uid {uid}"),
    );
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        let value = field(set);
        check(
            &format!("no-capabilities-{set}"),
            value.trim_start_matches('0').is_empty(),
            format!("{set} {value}"),
        );
    }
    check(
        "no-new-privs",
        field("NoNewPrivs") == "1",
        format!("NoNewPrivs {}", field("NoNewPrivs")),
    );
    check(
        "seccomp-filter",
        field("Seccomp") == "2",
        format!("Seccomp {}", field("Seccomp")),
    );
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = std::env::var("EDGEWARD_WORKLOAD").unwrap_or_default();
    check(
        "own-hostname",
        hostname.trim() == name,
        format!("hostname {:?}", hostname.trim()),
    );
    for path in [
        "/probe-was-here",
        "/bin/probe-was-here",
        "/run/probe-was-here",
    ] {
        let written = std::fs::write(path, b"x");
        check(
            &format!("cannot-write-{path}"),
            written.is_err(),
            format!("{written:?}"),
        );
    }
    let tmp = std::fs::write("/tmp/probe-was-here", b"x");
    check("writes-tmp", tmp.is_ok(), format!("{tmp:?}"));
    let appliance = ["/etc/edgeward", "/sbin/init", "/init", "/sys/fs/cgroup"]
        .into_iter()
        .filter(|path| std::path::Path::new(path).exists())
        .collect::<Vec<_>>();
    check(
        "sees-no-appliance-files",
        appliance.is_empty(),
        format!("present: {appliance:?}"),
    );
    let devices: Vec<String> = std::fs::read_dir("/dev")
        .map(|entries| {
            let mut names: Vec<String> = entries
                .filter_map(|entry| entry.ok())
                .filter_map(|entry| entry.file_name().into_string().ok())
                .collect();
            names.sort();
            names
        })
        .unwrap_or_default();
    check(
        "minimal-dev",
        devices == ["fd", "null", "random", "urandom", "zero"],
        format!("/dev holds {devices:?}"),
    );
    let expect_network = std::env::args().any(|argument| argument == "--expect-network");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0");
    let tcp = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([10, 0, 2, 2], 22)),
        Duration::from_millis(200),
    );
    if expect_network {
        check("may-open-sockets", udp.is_ok(), format!("{udp:?}"));
    } else {
        check(
            "no-ip-sockets",
            udp.is_err() && tcp.is_err(),
            format!("udp {udp:?}, tcp {tcp:?}"),
        );
    }
    let samples = argument::<u32>("--read-samples", 0).unwrap_or(0);
    if samples > 0 {
        let mut read = 0;
        let mut streams = Vec::new();
        match Channel::connect() {
            Ok(mut channel) => {
                while read < samples {
                    match channel.receive() {
                        Ok(Some(message)) if message["type"] == "sample" => {
                            read += 1;
                            if let Some(stream) = message["stream"].as_str() {
                                if !streams.iter().any(|known| known == stream) {
                                    streams.push(stream.to_owned());
                                }
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            Err(error) => eprintln!("probe: the samples channel: {error}"),
        }
        check(
            "reads-samples",
            read == samples,
            format!("{read} samples from {streams:?}"),
        );
    }
    println!("probe: done, {failed} failed");
    let _ = std::io::stdout().flush();
    let allocate = argument::<usize>("--allocate-mib", 0).unwrap_or(0);
    if allocate > 0 {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for step in 1..=allocate.div_ceil(8) {
            // Touched, so the pages are really the workload's.
            held.push(vec![0x5a; 8 << 20]);
            println!("probe: holding {} MiB", step * 8);
            let _ = std::io::stdout().flush();
        }
        println!("probe: allocated {allocate} MiB and was not stopped");
    }
    std::process::exit(if failed == 0 { 0 } else { 1 });
}
