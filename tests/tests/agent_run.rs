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
