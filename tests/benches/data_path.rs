//! The device's data path end to end, with durability on: C37.118 data frames decoded, turned
//! into samples, framed into blocks with their digest, accepted into the redb buffer (fsynced
//! before counting) and published by the forwarder over mutual TLS (device key in swtpm) to a
//! local Mosquitto 2, QoS 1, until each PUBACK.
//!
//! Three measurements:
//! 1. throughput: as many frames as the path takes, 10 PMUs, until every PUBACK;
//! 2. latency at the field's load, 10 PMUs × 50 frames/s paced: frame arrival to PUBACK;
//! 3. drain: the broker down for 10 s at that load, then up; backlog plus live ingest drained,
//!    as a multiple of the live ingest rate.
//!
//! Run: `cargo bench -p edgeward-tests --bench data_path`. Results go to docs/benchmarks.md.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use edgeward_agent::buffer::{Buffer, Limits};
use edgeward_agent::forwarder::{self, BrokerOptions, ForwarderStats};
use edgeward_agent::pipeline::{Accepter, Input};
use edgeward_agent::tpm::TpmSigner;
use edgeward_measurement::block::BlockInterval;
use edgeward_measurement::c37118::{ConfigFrame, Frame};
use edgeward_measurement::sample::samples_from_data_frame;
use edgeward_platform::topics::{PointTopic, TopicSegment};
use edgeward_tests::platform::Platform;
use edgeward_tests::pmu_sim;

const PMUS: u16 = 10;
const RATE: u32 = pmu_sim::RATE;

/// Data frame `k` of PMU `idcode` (k counts from the start of 2023-11-14 at 50/s).
fn frame(idcode: u16, k: u64) -> Vec<u8> {
    pmu_sim::data_frame(idcode, 1_700_000_000 * u64::from(RATE) + k)
}

struct Rig {
    platform: Platform,
    _device: edgeward_tests::platform::Device,
    platform_dir: std::path::PathBuf,
    broker: BrokerOptions,
}

/// Arrival times by buffer id, and the latencies of the acknowledged.
#[derive(Default)]
struct Clock {
    arrivals: HashMap<u64, Instant>,
    /// When each PUBACK arrived; joined with the arrivals afterwards, since a PUBACK may come
    /// back before `accept` has returned the ids.
    acks: Vec<(u64, Instant)>,
    acknowledged: u64,
}

impl Clock {
    fn latencies(&self) -> Vec<Duration> {
        let mut latencies: Vec<Duration> = self
            .acks
            .iter()
            .filter_map(|(id, at)| Some(at.duration_since(*self.arrivals.get(id)?)))
            .collect();
        latencies.sort();
        latencies
    }
}

struct Path {
    buffer: Buffer,
    accepter: Accepter,
    configs: Vec<ConfigFrame>,
    topics: Vec<Arc<PointTopic>>,
    clock: Arc<Mutex<Clock>>,
    stats: Arc<ForwarderStats>,
    forwarder: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Path {
    fn new(dir: &std::path::Path) -> Self {
        let _ = std::fs::remove_dir_all(dir);
        let buffer = Buffer::open(dir, Limits { max_bytes: 1 << 30 }).expect("buffer");
        let segment = |text: &str| TopicSegment::new(text).expect("valid");
        let accepter = Accepter::new(
            buffer.clone(),
            BlockInterval::from_secs(10).expect("valid"),
            segment("bench"),
        )
        .expect("accepter");
        Self {
            buffer,
            accepter,
            configs: (1..=PMUS).map(pmu_sim::config).collect(),
            topics: (1..=PMUS)
                .map(|pmu| {
                    Arc::new(PointTopic {
                        location: segment("sub1"),
                        device: segment("bench"),
                        point: segment(&format!("pmu{pmu}")),
                    })
                })
                .collect(),
            clock: Arc::new(Mutex::new(Clock::default())),
            stats: Arc::new(ForwarderStats::default()),
            forwarder: None,
        }
    }

    fn start_forwarder(&mut self, runtime: &tokio::runtime::Runtime, broker: &BrokerOptions) {
        let clock = self.clock.clone();
        let hook: forwarder::AckHook = Arc::new(move |id| {
            let mut clock = clock.lock().expect("clock");
            clock.acknowledged += 1;
            clock.acks.push((id, Instant::now()));
        });
        self.forwarder = Some(runtime.spawn(forwarder::run(
            broker.clone(),
            self.buffer.clone(),
            self.stats.clone(),
            Some(hook),
        )));
    }

    /// Decodes and accepts frames (index into PMUs by position), all arriving at `arrival`.
    /// Returns the number of messages they became (samples of a topic that arrive together
    /// share one).
    fn ingest(&mut self, frames: &[(usize, Vec<u8>)], arrival: Instant) -> usize {
        let mut inputs = Vec::with_capacity(frames.len());
        for (pmu, bytes) in frames {
            let Ok(Frame::Data(data)) = Frame::decode(bytes, Some(&self.configs[*pmu])) else {
                panic!("a bench frame does not decode");
            };
            for (_, sample) in samples_from_data_frame(&data, &self.configs[*pmu]) {
                inputs.push(Input::Sample {
                    topic: self.topics[*pmu].clone(),
                    sample,
                });
            }
        }
        let accepted = self.accepter.accept(inputs).expect("accepted");
        let count = accepted.ids.len();
        let mut clock = self.clock.lock().expect("clock");
        for id in accepted.ids {
            clock.arrivals.insert(id, arrival);
        }
        count
    }

    fn wait_acknowledged(&self, total: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.clock.lock().expect("clock").acknowledged >= total {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        false
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn rig() -> Option<Rig> {
    let dir = edgeward_tests::scratch("bench-data-path");
    let platform = Platform::start(&dir)?;
    let device = platform.device("bench")?;
    let signer = TpmSigner::start(&device.tpm.tcti(), &device.state).expect("TPM signer");
    let read = |path: std::path::PathBuf| std::fs::read_to_string(path).expect("PEM");
    let chain = format!(
        "{}\n{}",
        read(device.pki.join("device.crt")),
        read(device.pki.join("device-ca-chain.crt"))
    );
    let ca = read(platform.pki("ca.crt"));
    let tls: edgeward_agent::forwarder::TlsSource = std::sync::Arc::new(move || {
        edgeward_agent::mtls::client_config(&ca, &chain, signer.clone())
    });
    let broker = BrokerOptions {
        addresses: vec![("127.0.0.1".into(), platform.mqtt_port)],
        client_id: "bench".into(),
        tls,
        window: 1000,
        credentials_changed: None,
    };
    Some(Rig {
        platform_dir: dir,
        platform,
        _device: device,
        broker,
    })
}

/// Re-runs this bench in a network namespace of its own (as root), where the device's route to
/// the broker can be given quick ACKs without touching the machine's; `false` when that is not
/// possible (the device-route variant is then skipped, and says so).
fn private_network() -> bool {
    const INSIDE: &str = "EDGEWARD_BENCH_PRIVATE_NETWORK";
    if std::env::var_os(INSIDE).is_some() {
        return ip(&["link", "set", "lo", "up"]);
    }
    if !is_root() {
        println!("not root: the variant with quick ACKs on the device's route is skipped");
        return false;
    }
    let status = std::process::Command::new("unshare")
        .arg("--net")
        .arg("--")
        .arg(std::env::current_exe().expect("bench path"))
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .status()
        .expect("unshare runs");
    std::process::exit(status.code().unwrap_or(1));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|status| status.success())
}

/// What the appliance does to its own routes (agent::bringup::network): RTAX_QUICKACK on the
/// device's route to the broker. Here the device reaches the broker at 127.0.0.1; that route
/// gets quick ACKs and the source 127.0.0.2, so the broker's side of the connection (towards
/// 127.0.0.2, the /8 route) keeps the kernel's defaults.
fn device_route_quick_acks(on: bool) -> bool {
    let (source, extra): (&str, &[&str]) = if on {
        ("127.0.0.2", &["quickack", "1"])
    } else {
        ("127.0.0.1", &[])
    };
    let mut args = vec![
        "route",
        "replace",
        "local",
        "127.0.0.1",
        "dev",
        "lo",
        "table",
        "local",
        "proto",
        "kernel",
        "scope",
        "host",
        "src",
        source,
    ];
    args.extend_from_slice(extra);
    ip(&args)
}

fn main() {
    let private = private_network();
    let Some(mut rig) = rig() else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");

    // 1. Throughput: frames from 10 PMUs, taken in batches as a busy stream delivers them.
    let total_frames: u64 = 200_000;
    let mut path = Path::new(&rig.platform_dir.join("buffer-throughput"));
    path.start_forwarder(&runtime, &rig.broker);
    std::thread::sleep(Duration::from_millis(500));
    let frames: Vec<(usize, Vec<u8>)> = (0..total_frames)
        .map(|n| {
            (
                (n % u64::from(PMUS)) as usize,
                frame((n % u64::from(PMUS)) as u16 + 1, n / u64::from(PMUS)),
            )
        })
        .collect();
    let started = Instant::now();
    let mut ingested = 0u64;
    for batch in frames.chunks(2_000) {
        ingested += path.ingest(batch, Instant::now()) as u64;
        // Keep the backlog bounded as a live source would: at most 50 000 unacknowledged.
        while ingested - path.clock.lock().expect("clock").acknowledged > 50_000 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let accepted_at = started.elapsed();
    assert!(
        path.wait_acknowledged(ingested, Duration::from_secs(120)),
        "every message acknowledged"
    );
    let elapsed = started.elapsed();
    let messages = ingested;
    println!(
        "throughput: {total_frames} frames in {messages} messages ({PMUS} PMUs) decoded, framed, digested, fsynced and acknowledged in {:.2} s: {:.0} frames/s (accepted in {:.2} s: {:.0} frames/s)",
        elapsed.as_secs_f64(),
        total_frames as f64 / elapsed.as_secs_f64(),
        accepted_at.as_secs_f64(),
        total_frames as f64 / accepted_at.as_secs_f64(),
    );
    if let Some(task) = path.forwarder.take() {
        task.abort();
    }

    // 2. Latency at 10 PMUs × 50 frames/s: every 20 ms, one frame from each PMU; with the
    //    platform's broker configuration, and with `set_tcp_nodelay true` in the broker.
    //    And the device's side of the fix: quick ACKs on its route to the broker, the broker
    //    as the platform configures it.
    for (nodelay, quick_acks) in [(false, false), (false, true), (true, false)] {
        if quick_acks && !(private && device_route_quick_acks(true)) {
            println!("latency with quick ACKs on the device's route: skipped (no private network namespace)");
            continue;
        }
        rig.platform.broker_nodelay = nodelay;
        rig.platform.stop_broker();
        rig.platform.start_broker();
        latency(&mut rig, &runtime, nodelay, quick_acks);
        if quick_acks {
            assert!(device_route_quick_acks(false), "the route restored");
        }
    }

    // 3. Drain: 10 s of live ingest with the broker down, then the broker back while ingest
    //    goes on; the time until the buffer is empty again.
    let mut path = Path::new(&rig.platform_dir.join("buffer-drain"));
    rig.platform.stop_broker();
    path.start_forwarder(&runtime, &rig.broker);
    let outage = 10u64;
    let mut tick = 0u64;
    let start = Instant::now();
    let live = |path: &mut Path, tick: &mut u64, start: Instant| {
        let due = start + Duration::from_millis(*tick * 1000 / u64::from(RATE));
        while Instant::now() < due {
            std::thread::sleep(Duration::from_micros(200));
        }
        let frames: Vec<(usize, Vec<u8>)> = (0..PMUS)
            .map(|pmu| (pmu as usize, frame(pmu + 1, 2_000_000 + *tick)))
            .collect();
        path.ingest(&frames, Instant::now());
        *tick += 1;
    };
    while tick < outage * u64::from(RATE) {
        live(&mut path, &mut tick, start);
    }
    rig.platform.start_broker();
    let restarted = Instant::now();
    // The forwarder's backoff decides when it tries again; the drain starts when it is in.
    while !path
        .stats
        .connected
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        live(&mut path, &mut tick, start);
    }
    let reconnect = restarted.elapsed();
    let backlog = path.buffer.fill().expect("fill").messages;
    let back = Instant::now();
    // Drained when the broker acknowledged as many messages as were buffered (oldest go
    // first), timed by the PUBACKs themselves from the first on the new connection: the buffer's
    // own count lags by the forwarder's grouping of removals (ACK_GROUP), and the drain is over
    // within a few of this loop's 20 ms ticks.
    let acks_since = |path: &Path| -> Vec<Instant> {
        let clock = path.clock.lock().expect("clock");
        clock
            .acks
            .iter()
            .map(|(_, at)| *at)
            .filter(|at| *at >= restarted)
            .collect()
    };
    let drained = loop {
        let acks = acks_since(&path);
        if backlog > 0 && acks.len() as u64 >= backlog {
            break acks[backlog as usize - 1].duration_since(acks[0]);
        }
        live(&mut path, &mut tick, start);
        assert!(
            back.elapsed() < Duration::from_secs(120),
            "the backlog drains"
        );
    };
    let ingest_rate = f64::from(PMUS) * f64::from(RATE);
    // The first `backlog` PUBACKs are the backlog's; live ingest went on meanwhile.
    let sent = backlog as f64;
    let drain_rate = sent / drained.as_secs_f64();
    println!(
        "drain: {backlog} messages buffered in a {outage} s outage at {ingest_rate:.0}/s; reconnected {:.2} s after the broker returned; drained with live ingest going on in {:.2} s: {:.0} messages/s = {:.1}x live ingest",
        reconnect.as_secs_f64(),
        drained.as_secs_f64(),
        drain_rate,
        drain_rate / ingest_rate,
    );
    if let Some(task) = path.forwarder.take() {
        task.abort();
    }
}

fn latency(rig: &mut Rig, runtime: &tokio::runtime::Runtime, nodelay: bool, quick_acks: bool) {
    let mut path = Path::new(&rig.platform_dir.join("buffer-latency"));
    path.start_forwarder(runtime, &rig.broker);
    std::thread::sleep(Duration::from_millis(500));
    let seconds = 20u64;
    let ticks = seconds * u64::from(RATE);
    let start = Instant::now();
    for tick in 0..ticks {
        let due = start + Duration::from_millis(tick * 1000 / u64::from(RATE));
        while Instant::now() < due {
            std::thread::sleep(Duration::from_micros(200));
        }
        // The PMUs are GPS-synchronised: their frames of this instant arrive together, and the
        // agent accepts what has arrived in one fsync, as its loop does.
        let frames: Vec<(usize, Vec<u8>)> = (0..PMUS)
            .map(|pmu| (pmu as usize, frame(pmu + 1, 1_000_000 + tick)))
            .collect();
        path.ingest(&frames, Instant::now());
    }
    assert!(
        path.wait_acknowledged(ticks * u64::from(PMUS), Duration::from_secs(30)),
        "every frame acknowledged"
    );
    let latencies = path.clock.lock().expect("clock").latencies();
    println!(
        "latency at {PMUS} PMUs x {RATE} frames/s over {seconds} s ({} frames), arrival to PUBACK, broker set_tcp_nodelay {nodelay}, device route quickack {quick_acks}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if let Some(task) = path.forwarder.take() {
        task.abort();
    }
}
