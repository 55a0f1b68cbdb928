//! `edgeward-agent run` against pyPMU, as a new user first tries it: the final statistics it
//! prints when it stops are the stream's figures at that moment, so they count every frame it
//! printed (they once repeated the last periodic snapshot: 484 frames where 725 were printed).

use std::process::Command;

use edgeward_tests::agent_binary;
use edgeward_tests::pypmu::PyPmu;

/// The `key=value` of a STATS line.
fn stat(line: &str, key: &str) -> u64 {
    line.split_whitespace()
        .find_map(|word| word.strip_prefix(key)?.strip_prefix('='))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[test]
fn the_final_statistics_count_every_frame_printed() {
    let Some(pmu) = PyPmu::start(21, 50, "float-polar") else {
        return;
    };
    let dir = edgeward_tests::scratch("agent-run");
    let config = dir.join("agent.toml");
    // A periodic snapshot every 2 s: the run ends between two of them.
    std::fs::write(
        &config,
        format!(
            "statistics_interval = 2\n\n[[pmu]]\nname = \"bay-1\"\nidcode = 21\naddress = \"{}\"\n",
            pmu.address()
        ),
    )
    .expect("config");
    let output = Command::new(agent_binary())
        .args(["run", "--print-frames", "--duration", "5", "--config"])
        .arg(&config)
        .output()
        .expect("edgeward-agent runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "edgeward-agent run failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed = stdout
        .lines()
        .filter(|line| line.starts_with("bay-1: t="))
        .count() as u64;
    let stats: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("bay-1: STATS"))
        .collect();
    let last = stats.last().expect("final statistics");
    assert!(printed > 100, "about 5 s at 50 frames/s, got {printed}");
    assert_eq!(
        stat(last, "data"),
        printed,
        "the final statistics count exactly the frames printed"
    );
    assert!(
        stats.len() >= 2,
        "periodic snapshots before the final one: {stats:?}"
    );
    assert!(
        stat(stats[stats.len() - 2], "data") < printed,
        "the snapshot before the end counts fewer: the final line is not a repeat"
    );
}

/// The appliance as the PMU, as a user tries it with `agent run`: a simulated stream prints its
/// reports at the reporting rate with the simulated frequency, and an ADC stream whose device is
/// not there (no SPI ADC is attached to this machine) ends at once with the reason, never with
/// invented data.
#[test]
fn estimated_streams_print_their_reports_or_say_why_they_cannot() {
    let dir = edgeward_tests::scratch("agent-run-estimated");
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "statistics_interval = 2\n\
         [[pmu]]\nname = \"feeder-3\"\nidcode = 9\n[pmu.estimate]\nclass = \"M\"\nnominal = 60\n\
         rate = 30\nsampling = \"simulated\"\nfs = 9600\nfrequency = 59.97\n\
         [[pmu]]\nname = \"feeder-4\"\nidcode = 10\n[pmu.estimate]\nclass = \"P\"\nnominal = 50\n\
         rate = 50\nsampling = \"ads131m\"\nfs = 10000\n[pmu.estimate.adc]\n\
         spi = \"/dev/spidev-edgeward-absent\"\ndrdy_chip = \"/dev/gpiochip0\"\ndrdy_line = 25\n\
         clock_hz = 10240000\nosr = 512\ngains = [1, 1, 1, 4, 4, 4, 1, 1]\n\
         channels = [0, 1, 2, 3, 4, 5]\nscale = [400.0, 400.0, 400.0, 40.0, 40.0, 40.0]\n",
    )
    .expect("config");
    let output = Command::new(agent_binary())
        .args(["run", "--print-frames", "--duration", "4", "--config"])
        .arg(&config)
        .output()
        .expect("edgeward-agent runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "edgeward-agent run failed: {stderr}"
    );
    let reports: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("feeder-3: t="))
        .collect();
    // About 3 s of reports (sampling starts at the next second, the M window is 260 ms).
    assert!(reports.len() > 60, "{} reports at 30 fps", reports.len());
    for line in &reports {
        assert!(line.contains("[FEEDER-3 VA=230.00∠"), "{line}");
        assert!(line.contains(" f=59.970Hz"), "{line}");
    }
    assert!(
        !stdout.contains("feeder-4: t="),
        "no report from an ADC that is not there"
    );
    assert!(
        stderr.contains("the ADC did not open") && stderr.contains("/dev/spidev-edgeward-absent"),
        "{stderr}"
    );
    // Every stream's final figures are printed, the one that ended early too: none lost.
    assert!(
        stdout
            .lines()
            .any(|line| line.starts_with("feeder-4: STATS") && line.contains(" data=0 ")),
        "the ended stream's final figures: {stdout}"
    );
    let final_data = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("feeder-3: STATS frames="))
        .next_back()
        .and_then(|rest| rest.split_whitespace().nth(1)?.strip_prefix("data="))
        .and_then(|data| data.parse::<usize>().ok())
        .expect("feeder-3's final figures");
    assert_eq!(
        final_data,
        reports.len(),
        "the final figures count every printed report"
    );
}
