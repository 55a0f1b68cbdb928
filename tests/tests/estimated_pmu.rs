//! The appliance as the PMU, in the data path: `edgeward-agent stream` with a `[pmu.estimate]`
//! stream (simulated samples at 10 kHz, P class, 50 fps) signs, time-stamps and forwards its
//! reports like a remote PMU's, through Mosquitto to the recorder's store, which `verify-data`
//! checks; at the same time it serves the stream as C37.118.2, which our client reads. A second
//! estimated stream whose ADC is missing is retried with a growing delay, each failure told to
//! the platform, without holding up the first.

use std::process::Stdio;
use std::time::Duration;

use edgeward_measurement::c37118::{IdCode, NominalFrequency};
use edgeward_measurement::client::{ClientEvent, ClientOptions, PmuClient, SessionEvent};
use edgeward_measurement::sample::Value;
use edgeward_tests::platform::{block_files, recorded_samples_of, Collector, Platform};
use edgeward_tests::pypmu::free_port;

const FREQUENCY: f64 = 50.02;

#[test]
fn estimated_reports_reach_the_store_signed_and_are_served_as_c37118() {
    let dir = edgeward_tests::scratch("estimated-pmu");
    let Some(platform) = Platform::start(&dir) else {
        return;
    };
    let Some(device) = platform.device("pmu-a") else {
        return;
    };
    let serve = free_port();
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "statistics_interval = 5\n[[pmu]]\nname = \"bay-1\"\nidcode = 9\n[pmu.estimate]\n\
             class = \"P\"\nnominal = 50\nrate = 50\nsampling = \"simulated\"\nfs = 10000\n\
             frequency = {FREQUENCY}\nserve_tcp = \"127.0.0.1:{serve}\"\n\
             [[pmu]]\nname = \"bay-2\"\nidcode = 10\n[pmu.estimate]\nclass = \"P\"\n\
             nominal = 50\nrate = 50\nsampling = \"ads131m\"\nfs = 10000\n\
             [pmu.estimate.adc]\nspi = \"/dev/spidev-edgeward-absent\"\n\
             drdy_chip = \"/dev/gpiochip0\"\ndrdy_line = 25\nclock_hz = 10240000\nosr = 512\n\
             gains = [1, 1, 1, 4, 4, 4, 1, 1]\nchannels = [0, 1, 2, 3, 4, 5]\n\
             scale = [400.0, 400.0, 400.0, 40.0, 40.0, 40.0]\n"
        ),
    )
    .expect("agent config");
    let store = dir.join("store");
    let recorder = platform.recorder(&store);
    let notifications = Collector::start(&platform, "notifications");
    let mut agent = platform
        .agent_with(&device, &config, &dir.join("buffer"))
        .args([
            "--block-seconds",
            "1",
            "--heartbeat-seconds",
            "2",
            "--duration",
            "7",
        ])
        .env("EDGEWARD_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("agent.log")).expect("log"))
        .spawn()
        .expect("agent runs");

    // While it runs, a PDC reads the same reports over C37.118.2.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let served = runtime.block_on(async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut client =
            PmuClient::spawn(ClientOptions::tcp(format!("127.0.0.1:{serve}"), IdCode(9)));
        let mut frequencies = Vec::new();
        while frequencies.len() < 50 {
            let event = tokio::time::timeout(Duration::from_secs(10), client.next_event())
                .await
                .expect("an event from the served stream within 10 s")
                .expect("the client runs");
            if let ClientEvent::Session(SessionEvent::Data { frame, config }) = event {
                assert_eq!(config.pmus[0].station, "BAY-1");
                frequencies.push(
                    frame.pmus[0]
                        .frequency
                        .hertz(NominalFrequency::Hz50)
                        .expect("a frequency"),
                );
            }
        }
        client.stop().await;
        frequencies
    });
    for frequency in &served {
        assert!(
            (frequency - FREQUENCY).abs() <= 0.0005,
            "served {frequency} Hz"
        );
    }

    let status = agent.wait().expect("agent ends");
    assert!(
        status.success(),
        "agent failed: see {}/agent.log",
        dir.display()
    );
    // bay-2's ADC is not there (no SPI ADC on this machine): the platform hears why, and that
    // the appliance keeps trying, each time waiting longer; bay-1 is not held up by it.
    notifications.wait_for_all(
        &["retrying in 1 s", "retrying in 2 s", "retrying in 4 s"],
        Duration::from_secs(10),
    );
    let heard = notifications.lines().join("\n");
    for retry in [1, 2, 4] {
        assert!(
            heard.lines().any(|line| line.contains("PMU source failed")
                && line.contains("bay-2: the ADC did not open")
                && line.contains("/dev/spidev-edgeward-absent")
                && line.contains(&format!("retrying in {retry} s"))),
            "no retry after {retry} s in: {heard}"
        );
    }
    std::thread::sleep(Duration::from_secs(1));
    drop(recorder);
    let (ok, report) = platform.verify_data(&store);
    assert!(ok, "verify-data:\n{report}");
    assert!(
        block_files(&store).len() >= 3,
        "at least three 1 s blocks: {report}"
    );
    // Every report of the run is there, on the 50/s grid, none twice, none missing, and each
    // carries the estimate: six phasors, then the frequency.
    let samples = recorded_samples_of(&store, "sub1/pmu-a/bay-1");
    assert!(samples.len() >= 150, "{} samples", samples.len());
    for pair in samples.windows(2) {
        assert_eq!(
            pair[1].sequence,
            pair[0].sequence + 1,
            "no report missing or repeated"
        );
    }
    for sample in &samples {
        let Value::Complex { re, im } = sample.values[0] else {
            panic!("VA first: {:?}", sample.values[0]);
        };
        let magnitude = f64::from(re).hypot(f64::from(im));
        assert!((magnitude - 230.0).abs() < 0.23, "|VA| {magnitude}");
        let Value::Float(frequency) = sample.values[6] else {
            panic!("the frequency after six phasors: {:?}", sample.values[6]);
        };
        assert!(
            (frequency - FREQUENCY).abs() <= 0.0005,
            "recorded {frequency} Hz"
        );
    }
}
