//! The appliance's own PMU served as C37.118.2 on loopback: a simulated source in real time,
//! the estimator, and the server, read at once by pyPMU's PDC (a C37.118 peer no one here
//! wrote) and by our own client over TCP, by our client as spontaneous UDP, and by a PDC that
//! sends its commands over UDP. Every reader checks the values against the signal's truth. A
//! PDC that stops reading is let go, and its place goes to the next.

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgeward_measurement::c37118::{
    Command as PmuCommand, CommandFrame, CommonHeader, ConfigFrame, DataFrame, FracSec, Frame,
    FrameType, IdCode, NominalFrequency, Phasor, TimeQuality,
};
use edgeward_measurement::client::{
    ClientEvent, ClientOptions, PmuClient, SessionEvent, Transport,
};
use edgeward_measurement::estimator::signal::{Nameplate, TestSignal, Waveform};
use edgeward_measurement::estimator::{Class, EstimatorConfig};
use edgeward_measurement::sample::Timestamp;
use edgeward_measurement::server::{FrequencyFormat, PmuServer, ServerOptions, Station};
use edgeward_measurement::source::{run_simulated, SimulatedSource};
use edgeward_tests::pypmu::{free_port, python};
use edgeward_tests::workspace_root;

const IDCODE: u16 = 4242;
const FREQUENCY: f64 = 50.1;
const RATE: u32 = 50;

fn waveform() -> Waveform {
    Waveform::new(
        TestSignal::Steady {
            frequency: FREQUENCY,
            magnitude: 1.0,
        },
        Nameplate::default(),
        50.0,
    )
}

/// The server fed by the estimator on a simulated source that starts at a UTC second boundary,
/// so the waveform's t is seconds after `start`.
struct Live {
    server: Arc<PmuServer>,
    start: u64,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Live {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The test PMU's station: IDCODE 4242, "EDGEWARD BAY 1", configuration count 1.
fn station(config: EstimatorConfig) -> Station {
    Station::new(
        IdCode(IDCODE),
        "EDGEWARD BAY 1",
        config,
        "Edgeward test PMU",
        1,
    )
    .expect("a valid station")
}

async fn live(spontaneous: Vec<SocketAddr>, format: FrequencyFormat) -> Live {
    let config = EstimatorConfig::new(Class::P, NominalFrequency::Hz50, RATE, 10_000)
        .expect("a valid configuration");
    let station = station(config).with_frequency_format(format);
    let server = Arc::new(
        PmuServer::bind(
            station,
            ServerOptions {
                tcp: Some("127.0.0.1:0".parse().expect("address")),
                udp: Some("127.0.0.1:0".parse().expect("address")),
                spontaneous,
                config_interval: Duration::from_secs(1),
                max_clients: 4,
            },
        )
        .await
        .expect("the server binds"),
    );
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let source = SimulatedSource::new(
        waveform(),
        10_000,
        Timestamp {
            sec: start,
            nsec: 0,
        },
        0.0,
        1,
    )
    .expect("a valid source");
    let (sender, mut reports) = tokio::sync::mpsc::channel(64);
    let source_task = tokio::spawn(run_simulated(source, config, sender));
    let publisher = server.clone();
    let publish_task = tokio::spawn(async move {
        while let Some(report) = reports.recv().await {
            publisher.publish(&report).expect("a report encodes");
        }
    });
    Live {
        server,
        start,
        tasks: vec![source_task, publish_task],
    }
}

/// Checks one report as a reader decoded it: time on the 1/50 s grid, phasors within 0.1 % TVE
/// of the truth (at f32 precision), frequency within 0.5 mHz (1 mHz when sent as integer mHz).
fn check_values(what: &str, seconds_after_start: f64, phasors: &[(f64, f64)], frequency: f64) {
    let tolerance = if what.contains("integer") {
        0.001
    } else {
        0.0005
    };
    let k = seconds_after_start * f64::from(RATE);
    assert!(
        (k - k.round()).abs() < 1e-3,
        "{what}: {seconds_after_start} is off the grid"
    );
    let truth = waveform().truth(seconds_after_start);
    assert_eq!(phasors.len(), 6, "{what}: six phasors");
    for (index, (re, im)) in phasors.iter().enumerate() {
        let expected = truth.phasors[index];
        let error = ((re - expected.re).powi(2) + (im - expected.im).powi(2)).sqrt();
        let tve = error / expected.norm();
        assert!(
            tve <= 0.001,
            "{what}: phasor {index} at {seconds_after_start}: TVE {tve}"
        );
    }
    assert!(
        (frequency - FREQUENCY).abs() <= tolerance,
        "{what}: {frequency} Hz"
    );
}

fn data_values(frame: &DataFrame, start: u64) -> (f64, Vec<(f64, f64)>, f64) {
    let seconds =
        f64::from(frame.header.soc) - start as f64 + f64::from(frame.header.fracsec.count()) / 1e6;
    let block = &frame.pmus[0];
    let phasors = block
        .phasors
        .iter()
        .map(|phasor| match phasor {
            Phasor::FloatRectangular { re, im } => (f64::from(*re), f64::from(*im)),
            other => panic!("float rectangular phasors, not {other:?}"),
        })
        .collect();
    let frequency = block
        .frequency
        .hertz(NominalFrequency::Hz50)
        .expect("a frequency");
    (seconds, phasors, frequency)
}

/// Reads `count` data frames from our client and checks each, and that none is missing.
async fn read_with_client(client: &mut PmuClient, what: &str, start: u64, count: usize) {
    let mut previous: Option<f64> = None;
    let mut read = 0;
    while read < count {
        let event = tokio::time::timeout(Duration::from_secs(15), client.next_event())
            .await
            .unwrap_or_else(|_| panic!("{what}: no event in 15 s"))
            .expect("the client runs");
        let (frame, config) = match event {
            ClientEvent::Session(SessionEvent::Data { frame, config }) => (frame, config),
            ClientEvent::Session(SessionEvent::Dropped(reason)) => {
                panic!("{what}: dropped {reason}")
            }
            ClientEvent::Disconnected { reason } => panic!("{what}: disconnected: {reason}"),
            _ => continue,
        };
        check_config(what, &config);
        let (seconds, phasors, frequency) = data_values(&frame, start);
        check_values(what, seconds, &phasors, frequency);
        assert_eq!(
            frame.pmus[0].stat.0, 0,
            "{what}: STAT says good, locked data"
        );
        if let Some(previous) = previous {
            let step = (seconds - previous) * f64::from(RATE);
            assert!(
                (step - 1.0).abs() < 1e-3,
                "{what}: a frame is missing after {previous}"
            );
        }
        previous = Some(seconds);
        read += 1;
    }
}

fn check_config(what: &str, config: &ConfigFrame) {
    let pmu = &config.pmus[0];
    assert_eq!(pmu.station, "EDGEWARD BAY 1", "{what}");
    let names: Vec<&str> = pmu
        .phasors
        .iter()
        .map(|phasor| phasor.name.as_str())
        .collect();
    assert_eq!(names, ["VA", "VB", "VC", "IA", "IB", "IC"], "{what}");
    assert_eq!(config.data_rate.0, RATE as i16, "{what}");
    assert_eq!(pmu.nominal_frequency, NominalFrequency::Hz50, "{what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pypmu_and_our_client_read_the_pmu_over_tcp_at_once() {
    let Some(python) = python() else {
        return;
    };
    let live = live(Vec::new(), FrequencyFormat::Integer).await;
    let port = live.server.tcp_address().expect("TCP").port();
    let mut ours = PmuClient::spawn(ClientOptions::tcp(
        format!("127.0.0.1:{port}"),
        IdCode(IDCODE),
    ));
    let pdc = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(workspace_root().join("tests/pypmu/pdc_client.py"))
            .args([
                "--port",
                &port.to_string(),
                "--id",
                &IDCODE.to_string(),
                "--frames",
                "50",
            ])
            .output()
            .expect("pyPMU's PDC runs")
    });
    read_with_client(&mut ours, "our TCP client (integer FREQ)", live.start, 50).await;
    let output = pdc.await.expect("the PDC thread");
    assert!(
        output.status.success(),
        "pyPMU's PDC failed: {}\n{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .expect("UTF-8")
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON"))
        .collect();
    assert_eq!(lines[0]["header"], "Edgeward test PMU");
    let cfg2 = &lines[1]["cfg2"];
    assert_eq!(cfg2["station"], "EDGEWARD BAY 1");
    assert_eq!(cfg2["idcode"], IDCODE);
    assert_eq!(cfg2["data_rate"], RATE);
    assert_eq!(cfg2["time_base"], 1_000_000);
    let channels: Vec<&str> = cfg2["channels"]
        .as_array()
        .expect("channel names")
        .iter()
        .map(|name| name.as_str().expect("a name"))
        .collect();
    assert_eq!(channels, ["VA", "VB", "VC", "IA", "IB", "IC"]);
    let mut checked = 0;
    for line in &lines[2..] {
        let Some(data) = line.get("data") else {
            continue;
        };
        let seconds = data["soc"].as_f64().expect("soc") - live.start as f64
            + data["fracsec"].as_f64().expect("fracsec") / 1e6;
        let phasors: Vec<(f64, f64)> = data["phasors_polar"]
            .as_array()
            .expect("phasors")
            .iter()
            .map(|pair| {
                let (magnitude, angle) = (
                    pair[0].as_f64().expect("mag"),
                    pair[1].as_f64().expect("angle"),
                );
                (magnitude * angle.cos(), magnitude * angle.sin())
            })
            .collect();
        // Integer FREQ: the deviation from 50 Hz in mHz.
        let frequency = 50.0 + data["freq"].as_f64().expect("freq") / 1e3;
        check_values("pyPMU (integer FREQ)", seconds, &phasors, frequency);
        assert_eq!(data["stat"], "ok", "pyPMU reads STAT as good data");
        checked += 1;
    }
    assert_eq!(checked, 50, "pyPMU read every frame it asked for");
    let done = lines.last().expect("a last line");
    assert_eq!(done["done"], 50);
    eprintln!(
        "pyPMU could not split {} coalesced reads",
        done["unreadable"]
    );
    ours.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spontaneous_udp_carries_data_and_a_periodic_cfg2_to_our_client() {
    let port = free_port();
    let bind: SocketAddr = format!("127.0.0.1:{port}").parse().expect("address");
    let live = live(vec![bind], FrequencyFormat::Float).await;
    let mut client = PmuClient::spawn(ClientOptions {
        idcode: IdCode(IDCODE),
        transport: Transport::SpontaneousUdp { bind, config: None },
        backoff: Default::default(),
        connect_timeout: Duration::from_secs(5),
        config_cache: None,
    });
    read_with_client(&mut client, "spontaneous UDP", live.start, 25).await;
    client.stop().await;
}

fn command(idcode: u16, command: PmuCommand) -> Vec<u8> {
    CommandFrame {
        header: CommonHeader::new(
            FrameType::Command,
            IdCode(idcode),
            0,
            FracSec::new(TimeQuality::from_raw(0), 0),
        ),
        command,
    }
    .encode()
    .expect("a command encodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdc_on_udp_gets_the_configuration_and_data_only_when_it_asks() {
    let live = live(Vec::new(), FrequencyFormat::Float).await;
    let server = live.server.udp_address().expect("UDP");
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("a socket");
    let mut buffer = vec![0u8; 65_535];
    let mut receive = async |socket: &tokio::net::UdpSocket, wait: u64| {
        tokio::time::timeout(Duration::from_millis(wait), socket.recv(&mut buffer))
            .await
            .ok()
            .map(|received| buffer[..received.expect("a datagram")].to_vec())
    };
    // A command to another IDCODE gets nothing, as C37.118.2 §6.2 wants.
    socket
        .send_to(&command(IDCODE + 1, PmuCommand::SendCfg2), server)
        .await
        .expect("sent");
    assert!(
        receive(&socket, 500).await.is_none(),
        "another IDCODE was answered"
    );
    socket
        .send_to(&command(IDCODE, PmuCommand::SendCfg3), server)
        .await
        .expect("sent");
    let cfg3 = receive(&socket, 2000).await.expect("CFG-3");
    let Ok(Frame::Config(cfg3)) = Frame::decode(&cfg3, None) else {
        panic!("a CFG-3");
    };
    check_config("UDP CFG-3", &cfg3);
    let extra = cfg3.pmus[0].cfg3.expect("CFG-3 fields");
    assert_eq!(
        extra.window, 40_000,
        "the P-class window is two cycles: 40 ms"
    );
    socket
        .send_to(&command(IDCODE, PmuCommand::SendCfg2), server)
        .await
        .expect("sent");
    let cfg2 = receive(&socket, 2000).await.expect("CFG-2");
    let Ok(Frame::Config(cfg2)) = Frame::decode(&cfg2, None) else {
        panic!("a CFG-2");
    };
    // No data before data on.
    assert!(
        receive(&socket, 300).await.is_none(),
        "data before it was asked for"
    );
    socket
        .send_to(&command(IDCODE, PmuCommand::DataOn), server)
        .await
        .expect("sent");
    for _ in 0..10 {
        let bytes = receive(&socket, 3000).await.expect("a data frame");
        let Ok(Frame::Data(frame)) = Frame::decode(&bytes, Some(&cfg2)) else {
            panic!("a data frame");
        };
        let (seconds, phasors, frequency) = data_values(&frame, live.start);
        check_values("UDP PDC", seconds, &phasors, frequency);
    }
    socket
        .send_to(&command(IDCODE, PmuCommand::DataOff), server)
        .await
        .expect("sent");
    // Frames already on their way may still arrive; then nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while receive(&socket, 50).await.is_some() {}
    assert!(receive(&socket, 500).await.is_none(), "data after data off");
}

/// One report of the test signal, to publish as often as a test needs.
fn one_report(config: EstimatorConfig) -> edgeward_measurement::estimator::Report {
    use edgeward_measurement::c37118::ClockState;
    use edgeward_measurement::estimator::Estimator;
    use edgeward_measurement::source::SampleSource;
    let start = Timestamp { sec: 0, nsec: 0 };
    let mut source = SimulatedSource::new(waveform(), 10_000, start, 0.0, 1).expect("a source");
    let mut estimator = Estimator::new(config, start);
    loop {
        let (set, _) = source.next_set().expect("simulated samples");
        if let Some(report) = estimator.push(&set, ClockState::Locked) {
            return report;
        }
    }
}

/// Whether a PDC connecting now is served: it asks for CFG-2 and gets it.
async fn served(server: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(server).await else {
        return false;
    };
    if stream
        .write_all(&command(IDCODE, PmuCommand::SendCfg2))
        .await
        .is_err()
    {
        return false;
    }
    let mut buffer = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), stream.read_exact(&mut buffer)).await,
        Ok(Ok(_)) if buffer[0] == 0xAA
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pdc_that_stops_reading_is_let_go_and_its_place_freed() {
    use tokio::io::AsyncWriteExt;
    let config = EstimatorConfig::new(Class::P, NominalFrequency::Hz50, RATE, 10_000)
        .expect("a valid configuration");
    let server = PmuServer::bind(
        station(config),
        ServerOptions {
            tcp: Some("127.0.0.1:0".parse().expect("address")),
            udp: None,
            spontaneous: Vec::new(),
            config_interval: Duration::from_secs(60),
            max_clients: 1,
        },
    )
    .await
    .expect("the server binds");
    let address = server.tcp_address().expect("TCP");
    // A PDC asks for data and never reads it.
    let mut stalled = tokio::net::TcpStream::connect(address)
        .await
        .expect("connects");
    stalled
        .write_all(&command(IDCODE, PmuCommand::DataOn))
        .await
        .expect("sent");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !served(address).await,
        "a second PDC while the place is taken"
    );
    // Data flows until the stalled PDC's socket is full; five seconds later it is let go.
    let report = one_report(config);
    let started = std::time::Instant::now();
    let mut freed = None;
    while started.elapsed() < Duration::from_secs(30) {
        for _ in 0..2_000 {
            server.publish(&report).expect("a report encodes");
            tokio::task::yield_now().await;
        }
        if served(address).await {
            freed = Some(started.elapsed());
            break;
        }
    }
    let freed = freed.expect("the place was freed within 30 s");
    assert!(
        freed >= Duration::from_secs(5),
        "freed after {freed:?}, before a write had waited 5 s"
    );
    eprintln!("the stalled PDC was let go after {freed:?}");
}
