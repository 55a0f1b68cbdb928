//! Live C37.118 over TCP on loopback against pyPMU, a PMU implementation no one here wrote:
//! our client fetches its CFG-2, turns data on, and decodes every value it was told to send.

use std::process::Command;
use std::time::Duration;

use edgeward_measurement::c37118::{Frame, IdCode};
use edgeward_measurement::client::{ClientEvent, ClientOptions, PmuClient, SessionEvent};
use edgeward_measurement::report::frame_report;
use edgeward_tests::pypmu::{expected, PyPmu};

fn close(a: f64, b: f64, what: &str) {
    // pyPMU sends float32; compare at float32 precision relative to the value.
    let tolerance = 1e-6 * b.abs().max(1.0);
    assert!((a - b).abs() <= tolerance, "{what}: decoded {a}, sent {b}");
}

/// Reads `count` data frames through our client and checks each against what pyPMU sent.
async fn read_and_check(format: &str, idcode: u16) {
    let Some(pmu) = PyPmu::start(idcode, 50, format) else {
        return;
    };
    let mut client = PmuClient::spawn(ClientOptions::tcp(pmu.address(), IdCode(idcode)));
    let mut previous_k: Option<u64> = None;
    let mut checked = 0;
    while checked < 25 {
        let event = tokio::time::timeout(Duration::from_secs(20), client.next_event())
            .await
            .unwrap_or_else(|_| panic!("{format}: no event from pyPMU within 20 s"))
            .expect("the client keeps running");
        let (frame, config) = match event {
            ClientEvent::Session(SessionEvent::Data { frame, config }) => (frame, config),
            ClientEvent::Session(SessionEvent::Dropped(reason)) => {
                panic!("{format}: a frame from pyPMU was dropped: {reason}")
            }
            ClientEvent::Disconnected { reason } => panic!("{format}: disconnected: {reason}"),
            _ => continue,
        };
        let station = &config.pmus[0];
        assert_eq!(station.station, "EDGEWARD TEST");
        assert_eq!(station.phasors[3].name, "IA");
        let block = &frame.pmus[0];
        let analog = block.analogs[0]
            .to_engineering(&station.analogs[0].scale)
            .expect("analog 0 present");
        let k = analog as u64;
        if let Some(previous) = previous_k {
            assert_eq!(
                k,
                previous + 1,
                "{format}: frames arrive in order, none lost"
            );
        }
        previous_k = Some(k);
        for (index, (phasor, sent)) in block
            .phasors
            .iter()
            .zip(expected::phasors(format, k))
            .enumerate()
        {
            let (re, im) = phasor
                .to_engineering(&station.phasors[index].scale)
                .expect("phasor present");
            // Integer polar angles are 1e-4 rad: compare rectangular values to that resolution.
            let tolerance = if format == "int-polar" { 2e-4 } else { 1e-6 };
            let scale = sent.0.hypot(sent.1).max(1.0);
            assert!(
                (re - sent.0).abs() <= tolerance * scale
                    && (im - sent.1).abs() <= tolerance * scale,
                "{format}: frame {k} phasor {index}: decoded ({re}, {im}), sent {sent:?}"
            );
        }
        close(
            block
                .frequency
                .hertz(station.nominal_frequency)
                .expect("freq"),
            expected::frequency(k),
            "frequency",
        );
        close(
            block.rocof.hertz_per_second().expect("dfreq"),
            expected::rocof(k),
            "rocof",
        );
        assert_eq!(block.digitals, vec![(k % 65536) as u16]);
        assert!(
            frame.timestamp(&config) > 1.6e9,
            "frames carry pyPMU's wall-clock time"
        );
        checked += 1;
    }
    let statistics = client.statistics();
    assert!(statistics.data_frames >= 25);
    assert_eq!(statistics.crc_errors, 0);
    assert_eq!(statistics.undecodable, 0);
    assert_eq!(statistics.config_frames, 1);
}

#[tokio::test]
async fn integer_rectangular_stream_from_pypmu() {
    read_and_check("int-rect", 41).await;
}

#[tokio::test]
async fn integer_polar_stream_from_pypmu() {
    read_and_check("int-polar", 42).await;
}

#[tokio::test]
async fn float_rectangular_stream_from_pypmu() {
    read_and_check("float-rect", 43).await;
}

#[tokio::test]
async fn float_polar_stream_from_pypmu() {
    read_and_check("float-polar", 44).await;
}

#[test]
fn cli_read_prints_json_data_frames_then_exits() {
    let Some(pmu) = PyPmu::start(45, 50, "int-rect") else {
        return;
    };
    let output = Command::new(edgeward_tests::edgeward_binary())
        .args(["c37118", "read", "--tcp", &pmu.address()])
        .args(["--id", "45", "--frames", "5", "--json", "--timeout", "20"])
        .output()
        .expect("edgeward runs");
    assert!(
        output.status.success(),
        "edgeward c37118 read failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is one JSON object"))
        .collect();
    assert_eq!(lines.len(), 5);
    for line in &lines {
        assert_eq!(line["type"], "data");
        assert_eq!(line["idcode"], 45);
        let pmu = &line["pmus"][0];
        assert_eq!(pmu["idcode"], 45);
        assert_eq!(pmu["stat"], 0);
        assert_eq!(pmu["stat_fields"]["data_error"], "good");
        let k = pmu["analog"][0].as_f64().expect("analog 0") as u64;
        let sent = expected::phasors("int-rect", k);
        let re = pmu["phasors"][0][0].as_f64().expect("re");
        let im = pmu["phasors"][0][1].as_f64().expect("im");
        assert!((re - sent[0].0).abs() < 1e-6 && (im - sent[0].1).abs() < 1e-6);
        let freq = pmu["freq"].as_f64().expect("freq");
        assert!((freq - expected::frequency(k)).abs() < 1e-9);
    }
}

#[test]
fn the_json_report_matches_the_library_decode() {
    // The CLI's JSON is the library's report: a data frame without configuration has none.
    let frame = Frame::Command(edgeward_measurement::c37118::CommandFrame {
        header: edgeward_measurement::c37118::CommonHeader::new(
            edgeward_measurement::c37118::FrameType::Command,
            IdCode(3),
            1,
            edgeward_measurement::c37118::FracSec::from_raw(0),
        ),
        command: edgeward_measurement::c37118::Command::SendCfg2,
    });
    let report = frame_report(&frame, None).expect("commands need no configuration");
    assert_eq!(report["type"], "command");
    assert_eq!(report["command"], "send_cfg2");
    assert_eq!(report["cmd"], 5);
}

#[tokio::test]
async fn stopping_hands_back_the_frames_its_statistics_count() {
    // Figures read while frames wait unread count frames the application never saw; the figures
    // `stop` returns count exactly the frames read plus the ones it hands back.
    let Some(pmu) = PyPmu::start(46, 50, "float-polar") else {
        return;
    };
    let mut client = PmuClient::spawn(ClientOptions::tcp(pmu.address(), IdCode(46)));
    let mut read = 0u64;
    while read < 10 {
        let event = tokio::time::timeout(Duration::from_secs(20), client.next_event())
            .await
            .expect("an event from pyPMU within 20 s")
            .expect("the client keeps running");
        if let ClientEvent::Session(SessionEvent::Data { .. }) = event {
            read += 1;
        }
    }
    // About 25 frames arrive while nobody reads.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (queued, statistics) = client.stop().await;
    let queued_data = queued
        .iter()
        .filter(|event| matches!(event, ClientEvent::Session(SessionEvent::Data { .. })))
        .count() as u64;
    assert!(
        queued_data > 5,
        "frames arrived unread: {queued_data} queued"
    );
    assert_eq!(
        statistics.data_frames,
        read + queued_data,
        "the final figures count the frames read and the frames handed back, no more"
    );
}
