//! The raw-sample CSV of `edgeward pmu estimate` from untrusted text, and every sample set it
//! accepts through the estimator (the lowest sampling rate, so a short input reaches reports).
#![no_main]

use edgeward_measurement::c37118::{ClockState, NominalFrequency};
use edgeward_measurement::estimator::csv::SampleCsv;
use edgeward_measurement::estimator::{Class, Estimator, EstimatorConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = EstimatorConfig::new(Class::P, NominalFrequency::Hz50, 100, 800) else {
        return;
    };
    let mut csv = SampleCsv::new(800);
    let mut estimator: Option<Estimator> = None;
    for line in text.lines() {
        let Ok(Some(set)) = csv.line(line) else {
            continue;
        };
        let Some(start) = csv.start() else {
            continue;
        };
        let estimator = estimator.get_or_insert_with(|| Estimator::new(config, start));
        let _ = estimator.push(&set, ClockState::Locked);
    }
});
