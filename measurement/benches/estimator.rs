//! CPU time of the phasor estimator per three-phase voltage and current set sampled at 10 kHz:
//! one second of samples (10 000 sets of six channels) pushed through one estimator, for the
//! cheapest and the costliest window of each class. The time per second of signal is the share
//! of one core the estimator needs (issue 13's target: at most 1 %).
//!
//! Run: `cargo bench -p edgeward-measurement --bench estimator`. Results go to
//! docs/benchmarks.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use edgeward_measurement::c37118::{ClockState, NominalFrequency};
use edgeward_measurement::estimator::signal::{Nameplate, TestSignal, Waveform};
use edgeward_measurement::estimator::{Class, Estimator, EstimatorConfig, SampleSet};
use edgeward_measurement::sample::Timestamp;

const FS: u32 = 10_000;

fn main() {
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(8))
        .configure_from_args();
    let waveform = Waveform::new(
        TestSignal::Steady {
            frequency: 50.3,
            magnitude: 1.0,
        },
        Nameplate::default(),
        50.0,
    );
    // One second of samples, generated once: the benchmark times the estimator only.
    let second: Vec<SampleSet> = (0..FS)
        .map(|n| waveform.sample(f64::from(n) / f64::from(FS)))
        .collect();
    let mut group = criterion.benchmark_group("estimator_10kHz");
    group.throughput(Throughput::Elements(u64::from(FS)));
    for (class, rate) in [
        (Class::P, 10),
        (Class::P, 100),
        (Class::M, 10),
        (Class::M, 50),
    ] {
        let config = match EstimatorConfig::new(class, NominalFrequency::Hz50, rate, FS) {
            Ok(config) => config,
            Err(error) => panic!("a valid configuration: {error}"),
        };
        // Warm: the window's buffer is full and reports come out, as in a running stream.
        let mut estimator = Estimator::new(config, Timestamp { sec: 1, nsec: 0 });
        for set in &second {
            let _ = estimator.push(set, ClockState::Locked);
        }
        group.bench_function(format!("{class}_class_{rate}fps/one_second"), |b| {
            b.iter(|| {
                let mut reports = 0;
                for set in &second {
                    reports +=
                        usize::from(estimator.push(black_box(set), ClockState::Locked).is_some());
                }
                black_box(reports)
            })
        });
    }
    group.finish();
    criterion.final_summary();
}
