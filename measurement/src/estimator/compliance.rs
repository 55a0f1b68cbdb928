//! The C37.118.1-2011 (with the 2014 amendment) compliance tests, run against [`Estimator`]:
//! each test signal, its range for a class and reporting rate, and the limits its errors are held
//! to (../shared/reference/c37118.md §2.2, from NIST's PMUCalPostProcessing specification tables).
//!
//! The tests and `examples/pmu_compliance.rs` (which writes docs/pmu-compliance.md) both run
//! these, so the table in the docs is what the tests assert.

use std::f64::consts::PI;
use std::fmt;

use num_complex::Complex64;

use super::signal::{Nameplate, TestSignal, Waveform};
use super::{Class, Estimator, EstimatorConfig, Report, Window};
use crate::c37118::{ClockState, NominalFrequency};
use crate::sample::Timestamp;

/// Total vector error: |X̂ − X| / |X|.
pub fn tve(measured: Complex64, truth: Complex64) -> f64 {
    (measured - truth).norm() / truth.norm()
}

/// The steady-state and dynamic tests of C37.118.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Test {
    FrequencyRange,
    MagnitudeRange,
    Harmonics,
    OutOfBand,
    AmplitudeModulation,
    PhaseModulation,
    FrequencyRamp,
    MagnitudeStep,
    PhaseStep,
}

impl Test {
    pub const ALL: [Test; 9] = [
        Test::FrequencyRange,
        Test::MagnitudeRange,
        Test::Harmonics,
        Test::OutOfBand,
        Test::AmplitudeModulation,
        Test::PhaseModulation,
        Test::FrequencyRamp,
        Test::MagnitudeStep,
        Test::PhaseStep,
    ];
}

impl fmt::Display for Test {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::FrequencyRange => "frequency range",
            Self::MagnitudeRange => "magnitude range",
            Self::Harmonics => "harmonics 2–50",
            Self::OutOfBand => "out-of-band interference",
            Self::AmplitudeModulation => "amplitude modulation",
            Self::PhaseModulation => "phase modulation",
            Self::FrequencyRamp => "frequency ramp ±1 Hz/s",
            Self::MagnitudeStep => "magnitude step ±10 %",
            Self::PhaseStep => "phase step ±10°",
        })
    }
}

/// Upper bounds on the errors; `None` where the standard sets no limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub tve: Option<f64>,
    pub fe: Option<f64>,
    pub rfe: Option<f64>,
}

/// Upper bounds for a step test, in seconds (times) and per unit of the step (overshoot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepLimits {
    pub tve_response: f64,
    pub delay: f64,
    pub overshoot: f64,
    pub fe_response: f64,
    pub rfe_response: f64,
}

/// One estimator configuration under test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setup {
    pub class: Class,
    pub nominal: NominalFrequency,
    pub rate: u32,
    pub fs: u32,
    /// Run M class with the standard's reference window instead of Edgeward's.
    pub reference_window: bool,
}

impl Setup {
    fn f0(&self) -> f64 {
        self.nominal.hertz()
    }
    fn fs_rate(&self) -> f64 {
        f64::from(self.rate)
    }

    /// Every class, nominal frequency and reporting rate C37.118.1 defines, at `fs`.
    pub fn all(fs: u32) -> Vec<Setup> {
        let mut setups = Vec::new();
        for class in [Class::P, Class::M] {
            for nominal in [NominalFrequency::Hz50, NominalFrequency::Hz60] {
                for &rate in super::reporting_rates(nominal) {
                    setups.push(Setup {
                        class,
                        nominal,
                        rate,
                        fs,
                        reference_window: false,
                    });
                }
            }
        }
        setups
    }

    pub fn config(&self) -> EstimatorConfig {
        let config = match EstimatorConfig::new(self.class, self.nominal, self.rate, self.fs) {
            Ok(config) => config,
            Err(error) => panic!("a compliance setup is a valid configuration: {error}"),
        };
        match Window::reference_m_class(self.nominal, self.rate) {
            Some(window) if self.reference_window && self.class == Class::M => {
                config.with_window(window)
            }
            _ => config,
        }
    }

    /// The frequency range around f0 of the frequency-range and ramp tests.
    pub fn frequency_range(&self) -> f64 {
        match self.class {
            Class::P => 2.0,
            Class::M if self.rate < 10 => 2.0,
            Class::M if self.rate < 25 => self.fs_rate() / 5.0,
            Class::M => 5.0,
        }
    }

    /// The highest modulation frequency Fr.
    pub fn modulation_range(&self) -> f64 {
        match self.class {
            Class::P => (self.fs_rate() / 10.0).min(2.0),
            Class::M => (self.fs_rate() / 5.0).min(5.0),
        }
    }

    /// The limits of a steady-state or modulation or ramp test.
    pub fn limits(&self, test: Test) -> Limits {
        let p = self.class == Class::P;
        let fr = self.modulation_range();
        match test {
            Test::FrequencyRange => Limits {
                tve: Some(0.01),
                fe: Some(0.005),
                rfe: Some(if p { 0.4 } else { 0.1 }),
            },
            Test::MagnitudeRange => Limits {
                tve: Some(0.01),
                fe: Some(0.005),
                rfe: Some(if p { 0.4 } else { 0.1 }),
            },
            Test::Harmonics => Limits {
                tve: Some(0.01),
                fe: Some(if p || self.rate <= 20 { 0.005 } else { 0.025 }),
                rfe: if p { Some(0.4) } else { None },
            },
            Test::OutOfBand => Limits {
                tve: Some(0.013),
                fe: Some(0.01),
                rfe: None,
            },
            Test::AmplitudeModulation | Test::PhaseModulation => Limits {
                tve: Some(0.03),
                fe: Some(if p { 0.03 * fr } else { 0.06 * fr }),
                rfe: Some(0.18 * PI * fr * fr),
            },
            Test::FrequencyRamp => Limits {
                tve: Some(0.01),
                fe: Some(0.01),
                rfe: Some(if p { 0.4 } else { 0.2 }),
            },
            Test::MagnitudeStep | Test::PhaseStep => self.limits(Test::FrequencyRange),
        }
    }

    /// The limits of the step tests.
    pub fn step_limits(&self) -> StepLimits {
        let f0 = self.f0();
        let fs = self.fs_rate();
        match self.class {
            Class::P => StepLimits {
                tve_response: 2.0 / f0,
                delay: 1.0 / (4.0 * fs),
                overshoot: 0.05,
                fe_response: 4.5 / f0,
                rfe_response: 6.0 / f0,
            },
            Class::M => StepLimits {
                tve_response: (7.0 / f0).max(7.0 / fs),
                delay: 1.0 / (4.0 * fs),
                overshoot: 0.10,
                fe_response: (14.0 / f0).max(14.0 / fs),
                rfe_response: (14.0 / f0).max(14.0 / fs),
            },
        }
    }

    /// Reports excluded at each edge of a ramp.
    fn ramp_exclusion(&self) -> f64 {
        match self.class {
            Class::P => 2.0 / self.fs_rate(),
            Class::M => 7.0 / self.fs_rate(),
        }
    }
}

/// The worst errors seen over a test's reports.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Errors {
    pub tve: f64,
    pub fe: f64,
    pub rfe: f64,
    pub reports: usize,
}

impl Errors {
    fn merge(&mut self, other: Errors) {
        self.tve = self.tve.max(other.tve);
        self.fe = self.fe.max(other.fe);
        self.rfe = self.rfe.max(other.rfe);
        self.reports += other.reports;
    }

    /// Whether every error is within its limit; a limit that does not exist always holds.
    pub fn within(&self, limits: &Limits) -> bool {
        limits.tve.is_none_or(|limit| self.tve <= limit)
            && limits.fe.is_none_or(|limit| self.fe <= limit)
            && limits.rfe.is_none_or(|limit| self.rfe <= limit)
    }
}

/// The measured response of a step test, worst over the steps' directions and offsets.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepResponse {
    pub tve_response: f64,
    pub delay: f64,
    pub overshoot: f64,
    pub fe_response: f64,
    pub rfe_response: f64,
}

impl StepResponse {
    fn merge(&mut self, other: StepResponse) {
        self.tve_response = self.tve_response.max(other.tve_response);
        self.delay = self.delay.max(other.delay);
        self.overshoot = self.overshoot.max(other.overshoot);
        self.fe_response = self.fe_response.max(other.fe_response);
        self.rfe_response = self.rfe_response.max(other.rfe_response);
    }

    pub fn within(&self, limits: &StepLimits) -> bool {
        self.tve_response <= limits.tve_response
            && self.delay <= limits.delay
            && self.overshoot <= limits.overshoot
            && self.fe_response <= limits.fe_response
            && self.rfe_response <= limits.rfe_response
    }
}

/// The outcome of one test on one setup.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Steady {
        errors: Errors,
        limits: Limits,
    },
    Step {
        response: StepResponse,
        limits: StepLimits,
    },
    /// The standard does not require this test of this class.
    NotRequired,
}

impl Outcome {
    pub fn passes(&self) -> bool {
        match self {
            Self::Steady { errors, limits } => errors.within(limits),
            Self::Step { response, limits } => response.within(limits),
            Self::NotRequired => true,
        }
    }
}

/// The time origin of every test run: an arbitrary UTC second.
const EPOCH: u64 = 1_700_000_000;

/// Runs one signal through a fresh estimator for `seconds` and returns each report with the
/// signal's truth at its instant (seconds after the epoch).
pub fn run(setup: &Setup, waveform: &Waveform, seconds: f64) -> Vec<(f64, Report)> {
    let config = setup.config();
    let fs = f64::from(setup.fs);
    let mut estimator = Estimator::new(
        config,
        Timestamp {
            sec: EPOCH,
            nsec: 0,
        },
    );
    let samples = (seconds * fs).ceil() as u64;
    let mut reports = Vec::new();
    for n in 0..samples {
        let t = n as f64 / fs;
        if let Some(report) = estimator.push(&waveform.sample(t), ClockState::Locked) {
            reports.push((report.time.seconds_since(EPOCH), report));
        }
    }
    reports
}

/// The worst TVE (over the six phasors), FE and RFE of reports against a waveform's truth.
fn errors<'a>(waveform: &Waveform, reports: impl IntoIterator<Item = &'a (f64, Report)>) -> Errors {
    let mut worst = Errors::default();
    for (t, report) in reports {
        let truth = waveform.truth(*t);
        let report_tve = report
            .phasors
            .iter()
            .zip(truth.phasors)
            .map(|(measured, truth)| tve(*measured, truth))
            .fold(0.0, f64::max);
        worst.merge(Errors {
            tve: report_tve,
            fe: (report.frequency - truth.frequency).abs(),
            rfe: (report.rocof - truth.rocof).abs(),
            reports: 1,
        });
    }
    worst
}

/// Seconds a steady test runs past the estimator's first report.
const STEADY_SECONDS: f64 = 1.0;

fn steady_run(setup: &Setup, signal: TestSignal) -> Errors {
    let waveform = Waveform::new(signal, Nameplate::default(), setup.f0());
    let warmup = setup.config().window_latency() + 0.01;
    let reports = run(setup, &waveform, warmup + STEADY_SECONDS);
    errors(&waveform, &reports)
}

/// `count` evenly spaced points from `from` to `to`, both included.
fn points(from: f64, to: f64, count: usize) -> impl Iterator<Item = f64> {
    (0..count).map(move |i| from + (to - from) * i as f64 / (count - 1) as f64)
}

/// Runs one test on one setup.
pub fn check(setup: &Setup, test: Test) -> Outcome {
    let f0 = setup.f0();
    let limits = setup.limits(test);
    let mut worst = Errors::default();
    match test {
        Test::FrequencyRange => {
            let range = setup.frequency_range();
            for frequency in points(f0 - range, f0 + range, 9) {
                worst.merge(steady_run(
                    setup,
                    TestSignal::Steady {
                        frequency,
                        magnitude: 1.0,
                    },
                ));
            }
        }
        Test::MagnitudeRange => {
            let magnitudes: &[f64] = match setup.class {
                Class::P => &[0.8, 1.0, 1.2],
                Class::M => &[0.1, 0.5, 1.0, 1.2],
            };
            for &magnitude in magnitudes {
                worst.merge(steady_run(
                    setup,
                    TestSignal::Steady {
                        frequency: f0,
                        magnitude,
                    },
                ));
            }
        }
        Test::Harmonics => {
            let fraction = match setup.class {
                Class::P => 0.01,
                Class::M => 0.10,
            };
            for order in 2..=50 {
                worst.merge(steady_run(setup, TestSignal::Harmonic { order, fraction }));
            }
        }
        Test::OutOfBand => {
            if setup.class == Class::P {
                return Outcome::NotRequired;
            }
            let half_rate = setup.fs_rate() / 2.0;
            // Interferers from 10 Hz up to f0 − Fs/2 and from f0 + Fs/2 up to 2·f0; at the
            // highest rates the lower band is empty and the upper one is 2·f0 alone.
            let mut interferers: Vec<f64> = Vec::new();
            if f0 - half_rate >= 10.0 {
                interferers.extend(points(10.0, f0 - half_rate, 8));
            }
            if f0 + half_rate < 2.0 * f0 {
                interferers.extend(points(f0 + half_rate, 2.0 * f0, 8));
            } else {
                interferers.push(2.0 * f0);
            }
            for frequency in [f0 - 0.1 * half_rate, f0, f0 + 0.1 * half_rate] {
                for &interferer in &interferers {
                    worst.merge(steady_run(
                        setup,
                        TestSignal::Interference {
                            frequency,
                            interferer,
                            fraction: 0.1,
                        },
                    ));
                }
            }
        }
        Test::AmplitudeModulation | Test::PhaseModulation => {
            let (kx, ka) = if test == Test::AmplitudeModulation {
                (0.1, 0.0)
            } else {
                (0.0, 0.1)
            };
            let fr = setup.modulation_range();
            let mut frequencies = vec![0.1];
            let mut fm = 0.5;
            while fm < fr {
                frequencies.push(fm);
                fm += 0.5;
            }
            frequencies.push(fr);
            for fm in frequencies {
                let waveform = Waveform::new(
                    TestSignal::Modulation { kx, ka, fm },
                    Nameplate::default(),
                    f0,
                );
                // One whole modulation period (at least two seconds) after the first report.
                let span = (1.0 / fm).max(2.0);
                let reports = run(setup, &waveform, setup.config().window_latency() + span);
                worst.merge(errors(&waveform, &reports));
            }
        }
        Test::FrequencyRamp => {
            let range = setup.frequency_range();
            let start = setup.config().window_latency() + 0.5;
            for (from, to, rate) in [
                (f0 - range, f0 + range, 1.0),
                (f0 + range, f0 - range, -1.0),
            ] {
                let waveform = Waveform::new(
                    TestSignal::Ramp {
                        from,
                        to,
                        rate,
                        start,
                    },
                    Nameplate::default(),
                    f0,
                );
                let end = start + (to - from) / rate;
                let exclusion = setup.ramp_exclusion();
                let reports = run(setup, &waveform, end + 0.5);
                let kept = reports
                    .iter()
                    .filter(|(t, _)| *t > start + exclusion && *t < end - exclusion);
                worst.merge(errors(&waveform, kept));
            }
        }
        Test::MagnitudeStep | Test::PhaseStep => {
            let mut response = StepResponse::default();
            let size = if test == Test::MagnitudeStep {
                0.1
            } else {
                PI / 18.0
            };
            for direction in [1.0, -1.0] {
                response.merge(step(setup, test, direction * size));
            }
            return Outcome::Step {
                response,
                limits: setup.step_limits(),
            };
        }
    }
    Outcome::Steady {
        errors: worst,
        limits,
    }
}

/// Step offsets within one reporting interval: the reports of all of them, interleaved, sample
/// the response every 1/(20·Fs) (equivalent-time sampling, 60255-118-1 §6.5.2).
const STEP_OFFSETS: u32 = 20;

/// One report of a step test: its time after the step, its errors, and the stepped quantity
/// (|Va| per unit, or the angle of Va).
struct StepPoint {
    after: f64,
    tve: f64,
    fe: f64,
    rfe: f64,
    quantity: f64,
}

/// One step test in one direction: `size` per unit (magnitude) or radians (phase).
fn step(setup: &Setup, test: Test, size: f64) -> StepResponse {
    let f0 = setup.f0();
    let window = setup.config().window_latency();
    let base = (window + 0.05) * 2.0;
    let mut series: Vec<StepPoint> = Vec::new();
    let mut initial_final = (0.0, 0.0);
    for offset in 0..STEP_OFFSETS {
        let at = base + f64::from(offset) / (f64::from(STEP_OFFSETS) * setup.fs_rate());
        let signal = if test == Test::MagnitudeStep {
            TestSignal::Step {
                kx: size,
                ka: 0.0,
                at,
            }
        } else {
            TestSignal::Step {
                kx: 0.0,
                ka: size,
                at,
            }
        };
        let waveform = Waveform::new(signal, Nameplate::default(), f0);
        let reports = run(setup, &waveform, at + 2.0 * window + 0.1);
        for (t, report) in &reports {
            let truth = waveform.truth(*t);
            let worst_tve = report
                .phasors
                .iter()
                .zip(truth.phasors)
                .map(|(measured, truth)| tve(*measured, truth))
                .fold(0.0, f64::max);
            let va = report.phasors[0];
            let quantity = if test == Test::MagnitudeStep {
                va.norm() / Nameplate::default().voltage
            } else {
                va.arg()
            };
            series.push(StepPoint {
                after: t - at,
                tve: worst_tve,
                fe: (report.frequency - truth.frequency).abs(),
                rfe: (report.rocof - truth.rocof).abs(),
                quantity,
            });
        }
        initial_final = if test == Test::MagnitudeStep {
            (1.0, 1.0 + size)
        } else {
            (0.0, size)
        };
    }
    series.sort_by(|a, b| a.after.total_cmp(&b.after));
    let resolution = 1.0 / (f64::from(STEP_OFFSETS) * setup.fs_rate());
    let limits = setup.limits(test);
    // From the first report outside the limit to the last one, plus one step of resolution.
    let span = |exceeds: &dyn Fn(&StepPoint) -> bool| -> f64 {
        let first = series.iter().find(|row| exceeds(row)).map(|row| row.after);
        let last = series
            .iter()
            .rev()
            .find(|row| exceeds(row))
            .map(|row| row.after);
        match (first, last) {
            (Some(first), Some(last)) => last - first + resolution,
            _ => 0.0,
        }
    };
    let tve_limit = limits.tve.unwrap_or(f64::INFINITY);
    let fe_limit = limits.fe.unwrap_or(f64::INFINITY);
    let rfe_limit = limits.rfe.unwrap_or(f64::INFINITY);
    let (initial, last) = initial_final;
    let middle = (initial + last) / 2.0;
    // Delay: where the stepped quantity crosses halfway, interpolated between reports.
    let delay = series
        .windows(2)
        .find(|pair| {
            let (a, b) = (pair[0].quantity, pair[1].quantity);
            (a - middle) * (b - middle) <= 0.0 && a != b
        })
        .map(|pair| {
            let fraction = (middle - pair[0].quantity) / (pair[1].quantity - pair[0].quantity);
            (pair[0].after + fraction * (pair[1].after - pair[0].after)).abs()
        })
        .unwrap_or(f64::INFINITY);
    let overshoot = series
        .iter()
        .map(|row| (row.quantity - last) / (last - initial))
        .fold(0.0, f64::max);
    let undershoot = series
        .iter()
        .map(|row| (initial - row.quantity) / (last - initial))
        .fold(0.0, f64::max);
    StepResponse {
        tve_response: span(&|row| row.tve > tve_limit),
        delay,
        overshoot: overshoot.max(undershoot),
        fe_response: span(&|row| row.fe > fe_limit),
        rfe_response: span(&|row| row.rfe > rfe_limit),
    }
}
