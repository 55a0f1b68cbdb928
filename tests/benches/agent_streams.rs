//! What the agent costs per PMU stream: `edgeward-agent stream` (the release build) reads ten
//! PMUs at 50 frames/s each over C37.118/TCP and does everything it does in the field: samples
//! accepted into the durable buffer, 10 s blocks signed by the device key in swtpm and stamped
//! by the TSA, all published over mutual TLS to Mosquitto with the platform's configuration,
//! QoS 1. Its CPU time (`/proc/PID/stat`, user + system) is read over 30 s after a 10 s warm-up,
//! and its peak RSS (`VmHWM`) at the end of that window.
//!
//! The PMUs are [`edgeward_tests::pmu_sim`] (why not pyPMU: see there).
//!
//! Run: `cargo build --release --workspace --bins && cargo bench -p edgeward-tests --bench
//! agent_streams`. Results go to docs/benchmarks.md.

use std::time::Duration;

use edgeward_tests::platform::Platform;
use edgeward_tests::pmu_sim::{SimulatedPmu, RATE};

const STREAMS: u16 = 10;
const WARM_UP: Duration = Duration::from_secs(10);
const WINDOW: Duration = Duration::from_secs(30);
const RUNS: usize = 3;

/// User plus system CPU time of `pid` in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the agent runs");
    // The command name may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    let field = |index: usize| fields[index].parse::<u64>().expect("a tick count");
    field(11) + field(12)
}

/// A `kB` line of `/proc/PID/status`.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the agent runs")
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("{key} in the agent's status"))
}

fn clock_ticks_per_second() -> u64 {
    let output = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf runs");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK is a number")
}

struct Run {
    cpu_percent: f64,
    peak_rss_kib: u64,
    samples_per_second: f64,
}

fn main() {
    let dir = edgeward_tests::scratch("bench-agent-streams");
    let Some(platform) = Platform::start(&dir) else {
        return;
    };
    let Some(device) = platform.device("bench") else {
        return;
    };
    let pmus: Vec<SimulatedPmu> = (1..=STREAMS).map(SimulatedPmu::start).collect();
    let mut config = String::from("statistics_interval = 60\n");
    for pmu in &pmus {
        config.push_str(&format!(
            "\n[[pmu]]\nname = \"bay-{id}\"\nidcode = {id}\naddress = \"127.0.0.1:{port}\"\n",
            id = pmu.idcode,
            port = pmu.port
        ));
    }
    let config_path = dir.join("agent-streams.toml");
    std::fs::write(&config_path, config).expect("agent config");
    let ticks = clock_ticks_per_second() as f64;
    let duration = WARM_UP + WINDOW + Duration::from_secs(5);

    let mut runs = Vec::new();
    for run in 0..RUNS {
        let buffer = dir.join(format!("buffer-{run}"));
        let _ = std::fs::remove_dir_all(&buffer);
        let log = dir.join(format!("agent-{run}.log"));
        let mut agent = platform
            .agent_with(&device, &config_path, &buffer)
            .args(["--duration", &duration.as_secs().to_string()])
            .env("EDGEWARD_LOG", "info")
            .stderr(std::fs::File::create(&log).expect("log"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the agent starts");
        let pid = agent.id();
        std::thread::sleep(WARM_UP);
        let before = cpu_ticks(pid);
        std::thread::sleep(WINDOW);
        let after = cpu_ticks(pid);
        let peak_rss_kib = status_kib(pid, "VmHWM:");
        let status = agent.wait().expect("the agent ends");
        let text = std::fs::read_to_string(&log).expect("agent log");
        assert!(
            status.success(),
            "the agent failed; {}:\n{text}",
            log.display()
        );
        // The run counts only if the agent kept up: every stream's frames were accepted.
        let samples: u64 = text
            .lines()
            .filter(|line| line.contains("stopping"))
            .flat_map(|line| line.split_whitespace())
            .find_map(|word| word.strip_prefix("samples=")?.parse().ok())
            .unwrap_or_else(|| panic!("no sample count in {}", log.display()));
        let samples_per_second = samples as f64 / duration.as_secs_f64();
        let offered = f64::from(STREAMS) * f64::from(RATE);
        assert!(
            samples_per_second > 0.8 * offered,
            "the agent took {samples_per_second:.0} samples/s of {offered}: see {}",
            log.display()
        );
        let cpu_percent = (after - before) as f64 / ticks / WINDOW.as_secs_f64() * 100.0;
        println!(
            "run {}: {:.2} % of one core for {STREAMS} streams ({:.3} % per stream), peak RSS \
             {peak_rss_kib} KiB, {samples_per_second:.0} samples/s accepted",
            run + 1,
            cpu_percent,
            cpu_percent / f64::from(STREAMS)
        );
        runs.push(Run {
            cpu_percent,
            peak_rss_kib,
            samples_per_second,
        });
    }
    runs.sort_by(|a, b| a.cpu_percent.total_cmp(&b.cpu_percent));
    let median = &runs[RUNS / 2];
    println!(
        "median: {:.2} % of one core for {STREAMS} streams at {RATE} frames/s, {:.3} % per stream \
         (target 0.5 %); peak RSS {} KiB (target 32 MiB); {:.0} samples/s",
        median.cpu_percent,
        median.cpu_percent / f64::from(STREAMS),
        median.peak_rss_kib,
        median.samples_per_second
    );
}
