//! Nothing accepted is lost: through a broker outage and a TSA outage (with the notifications
//! they cause), and through `kill -9` of the agent at random moments, many times, while it
//! streams. A message that arrives twice is a redelivery of the same message, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use edgeward_tests::platform::{recorded_sequences, subscribe, Device, Platform, Process};
use edgeward_tests::pypmu::PyPmu;

fn agent(platform: &Platform, device: &Device, pmu: &PyPmu, dir: &Path, log: &str) -> Child {
    platform
        .agent(device, pmu.port, 7, &dir.join("buffer"))
        .env("EDGEWARD_LOG", "info,edgeward_agent::pipeline=debug")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(log))
                .expect("log"),
        )
        .spawn()
        .expect("agent starts")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait().expect("agent ends");
    assert!(status.success(), "the agent failed on SIGTERM: {status:?}");
}

/// The sequences the agent logged as accepted (logged after the fsync).
fn accepted(log: &Path) -> BTreeSet<u64> {
    let text = std::fs::read_to_string(log).expect("agent log");
    text.lines()
        .filter(|line| line.contains(" accepted"))
        .filter_map(|line| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix("sequences="))
        })
        .flat_map(|list| {
            list.split(',')
                .filter_map(|sequence| sequence.parse().ok())
                .collect::<Vec<u64>>()
        })
        .collect()
}

/// Waits until the recorder filed a block that starts after `sequence`, or the deadline.
fn wait_recorded_past(store: &Path, sequence: u64, seconds: u64) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if recorded_sequences(store)
            .last()
            .is_some_and(|last| *last >= sequence)
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_broker_outage_and_a_tsa_outage_lose_nothing_and_are_reported() {
    let dir = edgeward_tests::scratch("durability-outage");
    let Some(mut platform) = Platform::start(&dir) else {
        return;
    };
    let Some(device) = platform.device("pmu-a") else {
        return;
    };
    let Some(pmu) = PyPmu::start(7, 50, "int-rect") else {
        return;
    };
    let store = dir.join("store");
    let recorder = platform.recorder(&store);
    let notifications = subscribe(&platform, "notifications", 14);
    let agent = agent(&platform, &device, &pmu, &dir, "agent.log");
    std::thread::sleep(Duration::from_secs(3));
    platform.stop_tsa();
    std::thread::sleep(Duration::from_secs(2));
    platform.stop_broker();
    std::thread::sleep(Duration::from_secs(3));
    platform.start_broker();
    platform.start_tsa();
    std::thread::sleep(Duration::from_secs(4));
    stop(agent);
    let accepted = accepted(&dir.join("agent.log"));
    wait_recorded_past(
        &store,
        *accepted.iter().next_back().expect("accepted samples") - 60,
        10,
    );
    drop(recorder);

    let (ok, report) = platform.verify_data(&store);
    assert!(ok, "verify-data:\n{report}");
    let recorded: BTreeSet<u64> = recorded_sequences(&store).into_iter().collect();
    // Every accepted sample up to the last closed block is recorded (the open block at the
    // stop stays in the buffer for the next run).
    let last = *recorded.iter().next_back().expect("recorded");
    let missing: Vec<&u64> = accepted
        .iter()
        .filter(|s| **s <= last && !recorded.contains(s))
        .collect();
    assert!(missing.is_empty(), "accepted but not recorded: {missing:?}");
    assert!(
        recorded.len() > 400,
        "samples from before, during and after the outages"
    );

    let notes = notifications.wait_with_output().expect("mosquitto_sub");
    let notes = String::from_utf8_lossy(&notes.stdout);
    let titles: Vec<String> = notes
        .lines()
        .filter_map(|line| line.strip_prefix("notifications "))
        .filter_map(|json| serde_json::from_str::<serde_json::Value>(json).ok())
        .map(|note| {
            assert_eq!(
                note["tag"].as_str().map(|tag| tag.starts_with("pmu-a/")),
                Some(true)
            );
            note["title"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    assert!(
        titles.iter().any(|title| title == "TSA unreachable"),
        "{notes}"
    );
    assert!(
        titles.iter().any(|title| title == "TSA reachable again"),
        "{notes}"
    );
}

#[test]
fn kill_9_at_random_moments_loses_no_accepted_message() {
    let rounds: usize = std::env::var("EDGEWARD_CRASH_ROUNDS")
        .ok()
        .and_then(|rounds| rounds.parse().ok())
        .unwrap_or(200);
    let dir = edgeward_tests::scratch("durability-crash");
    let Some(platform) = Platform::start(&dir) else {
        return;
    };
    let Some(device) = platform.device("pmu-a") else {
        return;
    };
    let Some(pmu) = PyPmu::start(7, 50, "int-rect") else {
        return;
    };
    let store = dir.join("store");
    let recorder = platform.recorder(&store);
    // Every sample message the broker delivers, to check that repeats are true redeliveries.
    let wire = edgeward_tests::platform::recorder_subscriber(&platform)
        .args(["-t", "data/measurements/#", "-q", "1", "-F", "%x"])
        .stdout(std::fs::File::create(dir.join("wire.hex")).expect("file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto_sub");
    let wire = Process(wire);
    std::thread::sleep(Duration::from_millis(300));

    for round in 0..rounds {
        let mut child = agent(&platform, &device, &pmu, &dir, "agent.log");
        let wait = 50 + rand::random::<u64>() % 900;
        std::thread::sleep(Duration::from_millis(wait));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().expect("killed");
        pmu.reap_clients();
        assert!(
            status.code().is_none(),
            "round {round}: the agent exited by itself ({status:?}); see {}/agent.log",
            dir.display()
        );
    }
    // A last, orderly run drains what the crashes left and closes the blocks they opened.
    let child = agent(&platform, &device, &pmu, &dir, "agent.log");
    std::thread::sleep(Duration::from_secs(4));
    stop(child);
    let accepted = accepted(&dir.join("agent.log"));
    wait_recorded_past(
        &store,
        *accepted.iter().next_back().expect("accepted") - 60,
        15,
    );
    drop(recorder);
    drop(wire);

    let recorded: BTreeSet<u64> = recorded_sequences(&store).into_iter().collect();
    let last = *recorded.iter().next_back().expect("recorded");
    let missing: Vec<&u64> = accepted
        .iter()
        .filter(|s| **s <= last && !recorded.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} accepted samples were not recorded: {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
    let (ok, report) = platform.verify_data(&store);
    assert!(ok, "verify-data after {rounds} crashes:\n{report}");

    // Repeats on the wire are redeliveries: the same sequence always carries the same bytes.
    let text = std::fs::read_to_string(dir.join("wire.hex")).expect("wire");
    let mut seen: BTreeMap<u64, String> = BTreeMap::new();
    let mut repeats = 0;
    for line in text.lines() {
        let bytes: Vec<u8> = (0..line.len() / 2)
            .filter_map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).ok())
            .collect();
        let Ok(samples) = edgeward_platform::villas::decode(&bytes) else {
            panic!("something not VILLAS under data/measurements: {line}");
        };
        for sample in samples {
            match seen.get(&sample.sample.sequence) {
                Some(before) => {
                    repeats += 1;
                    assert_eq!(
                        before, line,
                        "sequence {} sent twice with other content",
                        sample.sample.sequence
                    );
                }
                None => {
                    seen.insert(sample.sample.sequence, line.to_owned());
                }
            }
        }
    }
    eprintln!(
        "{rounds} kill -9 rounds: {} samples accepted, {} recorded, {repeats} redelivered, {} blocks verified",
        accepted.len(),
        recorded.len(),
        report.lines().filter(|line| line.contains(": ok ")).count()
    );
}
