//! `edgeward pmu estimate` on raw samples written by Python's math library (not our signal
//! generator): the reports are on the k/Fs grid, the phasors are RMS values against a cosine that
//! peaks at every UTC second, and every bad input is refused with a message that says why.

use std::f64::consts::PI;
use std::path::Path;
use std::process::{Command, Output};

use edgeward_tests::{edgeward_binary, scratch};

/// Writes a 10 kHz three-phase CSV with Python: f Hz, 230 V and 5 A RMS (lagging 30°), from
/// `start` s for `seconds`, leaving out the rows listed in `skip`.
fn python_csv(path: &Path, frequency: f64, start: f64, seconds: f64, skip: &[usize]) {
    let script = format!(
        r#"
import math
fs, f, start, seconds, skip = 10000, {frequency}, {start}, {seconds}, set({skip:?})
with open({path:?}, "w") as out:
    out.write("t,va,vb,vc,ia,ib,ic\n")
    for n in range(int(seconds * fs)):
        if n in skip:
            continue
        t = start + n / fs
        shifts = (0.0, -2 * math.pi / 3, 2 * math.pi / 3)
        v = [230 * math.sqrt(2) * math.cos(2 * math.pi * f * t + s) for s in shifts]
        i = [5 * math.sqrt(2) * math.cos(2 * math.pi * f * t + s - math.pi / 6) for s in shifts]
        out.write("%.7f," % t + ",".join("%.9g" % x for x in v + i) + "\n")
"#,
        path = path.display().to_string(),
    );
    let status = Command::new("python3")
        .args(["-c", &script])
        .status()
        .expect("python3 runs");
    assert!(status.success(), "python3 wrote the CSV");
}

fn estimate(input: &Path, args: &[&str]) -> Output {
    Command::new(edgeward_binary())
        .args(["pmu", "estimate", "--input"])
        .arg(input)
        .args(args)
        .output()
        .expect("edgeward runs")
}

#[test]
fn estimate_reports_rms_phasors_against_utc_on_the_reporting_grid() {
    let dir = scratch("pmu-estimate");
    let input = dir.join("samples.csv");
    let frequency = 49.7;
    python_csv(&input, frequency, 7.25, 1.6, &[]);
    for (class, rate) in [("P", 50u32), ("M", 10), ("M", 25)] {
        let output = estimate(
            &input,
            &[
                "--fs",
                "10000",
                "--f0",
                "50",
                "--rate",
                &rate.to_string(),
                "--class",
                class,
                "--json",
            ],
        );
        assert!(
            output.status.success(),
            "{class} {rate}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
            .expect("UTF-8")
            .lines()
            .map(|line| serde_json::from_str(line).expect("one JSON object per line"))
            .collect();
        assert!(lines.len() >= 3, "{class} {rate}: {} reports", lines.len());
        let mut previous: Option<i64> = None;
        for report in &lines {
            let t = report["t"].as_f64().expect("t");
            let k = (t * f64::from(rate)).round();
            assert!(
                (t * f64::from(rate) - k).abs() < 1e-6,
                "{t} is on the 1/{rate} s grid"
            );
            if let Some(previous) = previous {
                assert_eq!(k as i64, previous + 1, "consecutive reports");
            }
            previous = Some(k as i64);
            assert!(t > 7.25 && t < 7.25 + 1.6, "{t} inside the input");
            let freq = report["freq"].as_f64().expect("freq");
            assert!(
                (freq - frequency).abs() <= 0.0005,
                "{class} {rate} at {t}: {freq} Hz"
            );
            let rocof = report["rocof"].as_f64().expect("rocof");
            assert!(rocof.abs() < 0.01, "{class} {rate} at {t}: ROCOF {rocof}");
            for (index, name) in ["va", "vb", "vc", "ia", "ib", "ic"].iter().enumerate() {
                let shift = -2.0 * PI / 3.0 * [0.0, 1.0, -1.0][index % 3];
                let (rms, lag) = if index < 3 {
                    (230.0, 0.0)
                } else {
                    (5.0, PI / 6.0)
                };
                // Against cos(2π·50·t): the phase advances by 2π(f − 50)t.
                let angle = 2.0 * PI * (frequency - 50.0) * t + shift - lag;
                let expected = (rms * angle.cos(), rms * angle.sin());
                let pair = report["phasors"][name].as_array().expect("[re, im]");
                let (re, im) = (pair[0].as_f64().expect("re"), pair[1].as_f64().expect("im"));
                let tve = ((re - expected.0).powi(2) + (im - expected.1).powi(2)).sqrt() / rms;
                assert!(tve <= 0.001, "{class} {rate} {name} at {t}: TVE {tve}");
            }
        }
    }
}

#[test]
fn estimate_refuses_a_gap_a_rate_outside_the_standard_and_too_short_an_input() {
    let dir = scratch("pmu-estimate-refusals");
    let gap = dir.join("gap.csv");
    python_csv(&gap, 50.0, 0.0, 0.5, &[1234]);
    let output = estimate(
        &gap,
        &[
            "--fs", "10000", "--f0", "50", "--rate", "50", "--class", "P",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("line 1236") && stderr.contains("gap"),
        "{stderr}"
    );

    let short = dir.join("short.csv");
    python_csv(&short, 50.0, 0.0, 0.3, &[]);
    let output = estimate(
        &short,
        &[
            "--fs", "10000", "--f0", "50", "--rate", "10", "--class", "M",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("no report"), "{stderr}");

    let output = estimate(
        &short,
        &[
            "--fs", "10000", "--f0", "50", "--rate", "60", "--class", "P",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("60 fps") && stderr.contains("[10, 25, 50, 100]"),
        "{stderr}"
    );

    // The wrong sampling rate shows as non-uniform time.
    let output = estimate(
        &short,
        &["--fs", "8000", "--f0", "50", "--rate", "50", "--class", "P"],
    );
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--fs"));
}
