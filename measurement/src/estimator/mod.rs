//! Synchrophasor estimation from raw samples, held to C37.118.1-2011 with its 2014 amendment.
//!
//! The estimator follows the standard's reference model (Annex C: quadrature demodulation at f0,
//! a symmetric low-pass window, positive sequence, frequency and ROCOF from the positive-sequence
//! angle) with four changes, each measured by the compliance tests (docs/pmu-compliance.md,
//! docs/decisions/0040):
//!
//! - The window is a function of time, not of a sample index, so any integer ADC rate works and a
//!   report instant that falls between two samples needs no resampling.
//! - The M-class window is a Kaiser-windowed sinc designed per reporting rate: the reference
//!   Hamming-windowed sinc lets an interferer just outside Fs/2 move the frequency by more than
//!   the 10 mHz out-of-band limit, and its 60 Hz, 10 fps window exceeds the 5/Fs latency.
//! - The phasor is solved from the window's known response at the estimated frequency offset and
//!   at the demodulation image −(2f0 + offset): this replaces the P-class sine magnitude
//!   correction and removes the image a window without a zero at 2f0 lets through.
//! - Frequency and ROCOF come from the angle at the report instant and one and two derivative
//!   steps (about 1 ms) before it, not from the samples around it, so a report needs no sample
//!   beyond the end of its window: the latency is half the window.
//!
//! It is sans-I/O: samples go in with [`Estimator::push`], reports come out, and time is the
//! sample count from a start instant on a UTC-locked time base.

pub mod compliance;
pub mod csv;
pub mod signal;
pub mod window;

use std::f64::consts::{PI, SQRT_2};
use std::fmt;

use num_complex::Complex64;

use crate::c37118::{ClockState, NominalFrequency};
use crate::sample::Timestamp;

pub use window::{reporting_rates, Window};

/// The performance class of C37.118.1: P for protection (short window, fast response), M for
/// measurement (long window, rejects out-of-band interference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    P,
    M,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::P => "P",
            Self::M => "M",
        })
    }
}

/// The six channels of a three-phase voltage and current set, in the order every sample set and
/// report holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Va,
    Vb,
    Vc,
    Ia,
    Ib,
    Ic,
}

impl Channel {
    pub const ALL: [Channel; 6] = [
        Channel::Va,
        Channel::Vb,
        Channel::Vc,
        Channel::Ia,
        Channel::Ib,
        Channel::Ic,
    ];

    /// The column and JSON name: `va` … `ic`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Va => "va",
            Self::Vb => "vb",
            Self::Vc => "vc",
            Self::Ia => "ia",
            Self::Ib => "ib",
            Self::Ic => "ic",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_voltage(self) -> bool {
        matches!(self, Self::Va | Self::Vb | Self::Vc)
    }
}

/// One instantaneous value per channel (volts and amperes), taken at the same instant.
pub type SampleSet = [f64; 6];

/// Why an estimator cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum EstimatorError {
    #[error(
        "{fps} fps is not a C37.118.1 reporting rate at {nominal} Hz (use one of {allowed:?})"
    )]
    ReportingRate {
        fps: u32,
        nominal: u32,
        allowed: &'static [u32],
    },
    #[error(
        "a sampling rate of {fs} Hz is below the {min} Hz this estimator needs at {nominal} Hz"
    )]
    SamplingRateTooLow { fs: u32, min: u32, nominal: u32 },
    #[error("a sampling rate of {fs} Hz is above the {max} Hz this estimator accepts")]
    SamplingRateTooHigh { fs: u32, max: u32 },
}

/// What the estimator is asked to be: class, nominal frequency, reporting rate and ADC rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorConfig {
    class: Class,
    nominal: NominalFrequency,
    rate: u32,
    fs: u32,
    window: Window,
}

/// The highest sampling rate accepted: 1 MS/s, far beyond any PMU front end, keeps the window
/// buffers bounded (an M-class 10 fps window is 0.8 s).
const MAX_FS: u32 = 1_000_000;

impl EstimatorConfig {
    pub fn new(
        class: Class,
        nominal: NominalFrequency,
        rate: u32,
        fs: u32,
    ) -> Result<Self, EstimatorError> {
        let f0 = nominal_hz(nominal);
        let window =
            Window::for_class(class, nominal, rate).ok_or(EstimatorError::ReportingRate {
                fps: rate,
                nominal: f0,
                allowed: reporting_rates(nominal),
            })?;
        // Sixteen samples a cycle keeps the demodulated image at 2·f0 inside the band the window
        // rejects and gives the P-class triangle at least 31 points.
        let min = 16 * f0;
        if fs < min {
            return Err(EstimatorError::SamplingRateTooLow {
                fs,
                min,
                nominal: f0,
            });
        }
        if fs > MAX_FS {
            return Err(EstimatorError::SamplingRateTooHigh { fs, max: MAX_FS });
        }
        Ok(Self {
            class,
            nominal,
            rate,
            fs,
            window,
        })
    }

    /// The same configuration with another window: for comparing windows (the standard's
    /// reference M-class window in docs/pmu-compliance.md), not for a product configuration.
    pub fn with_window(self, window: Window) -> Self {
        Self { window, ..self }
    }

    pub fn class(&self) -> Class {
        self.class
    }
    pub fn nominal(&self) -> NominalFrequency {
        self.nominal
    }
    /// Reports per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }
    /// Samples per second.
    pub fn fs(&self) -> u32 {
        self.fs
    }
    pub fn window(&self) -> Window {
        self.window
    }

    /// The time from a report instant until its last sample is taken: the estimator's part of
    /// the reporting latency.
    pub fn window_latency(&self) -> f64 {
        self.window.half()
    }

    /// The derivative step for frequency and ROCOF. P class: the sample count closest to 1 ms,
    /// the step of the standard's reference model at its own sampling rate. M class: an eighth
    /// of the half window. A second difference over 1 ms multiplies the angle's residual ripple
    /// (a harmonic's leak through the window, 10⁻⁵ of it) by about 10⁶: an M-class window
    /// passes nothing that fast, and the longer step keeps the ripple out of the ROCOF, which
    /// the phasor solve uses.
    fn derivative_step(&self) -> usize {
        let fs = f64::from(self.fs);
        let step = match self.class {
            Class::P => fs / 1000.0,
            Class::M => fs * self.window.half() / 8.0,
        };
        (step.round() as usize).max(1)
    }
}

fn nominal_hz(nominal: NominalFrequency) -> u32 {
    match nominal {
        NominalFrequency::Hz50 => 50,
        NominalFrequency::Hz60 => 60,
    }
}

/// A report instant on the k/Fs grid: `index` reports after the UTC second `sec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportTime {
    pub sec: u64,
    pub index: u32,
    pub rate: u32,
}

impl ReportTime {
    /// Seconds after the UTC second `origin`, for output relative to an input's time origin.
    pub fn seconds_since(self, origin: u64) -> f64 {
        (self.sec as f64 - origin as f64) + f64::from(self.index) / f64::from(self.rate)
    }

    /// The instant to the nanosecond (rounded).
    pub fn timestamp(self) -> Timestamp {
        let nsec = (u64::from(self.index) * 1_000_000_000 + u64::from(self.rate) / 2)
            / u64::from(self.rate);
        Timestamp {
            sec: self.sec,
            nsec: nsec as u32,
        }
    }

    fn next(self) -> Self {
        if self.index + 1 >= self.rate {
            Self {
                sec: self.sec.saturating_add(1),
                index: 0,
                rate: self.rate,
            }
        } else {
            Self {
                index: self.index + 1,
                ..self
            }
        }
    }
}

/// The largest ROCOF (Hz/s) the phasor solve models as a sweep across the window. A steady
/// sweep (the ±1 Hz/s ramp test, a grid's frequency excursion) bends the phase quadratically
/// across a long M-class window, which biases the phasor by 1.5 % TVE at 10 fps unless modelled;
/// the ROCOF of a phase step or a fast modulation is not steady across the window, and modelling
/// it as a sweep makes the phasor worse (docs/decisions/0040 has the measurements).
const SWEEP_LIMIT: f64 = 1.5;

/// One synchrophasor report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub time: ReportTime,
    /// RMS phasors against a cosine at f0 that peaks at every UTC second, in [`Channel`] order.
    pub phasors: [Complex64; 6],
    /// The positive-sequence voltage phasor, (Va + αVb + α²Vc)/3.
    pub positive_sequence: Complex64,
    /// Hz.
    pub frequency: f64,
    /// Hz/s.
    pub rocof: f64,
    /// The worst clock state of the samples in the window.
    pub clock: ClockState,
}

impl Report {
    pub fn phasor(&self, channel: Channel) -> Complex64 {
        self.phasors[channel.index()]
    }
}

/// Weights of the window for one sub-sample offset of the report instant.
#[derive(Debug, Clone)]
struct Weights {
    /// The report instant's position after its preceding sample, in samples, in [0, 1).
    delta: f64,
    /// Offset of the first weighted sample from the sample preceding the report instant.
    first: i64,
    weights: Vec<f64>,
    /// 1 / Σ weights.
    inverse_gain: f64,
}

/// The streaming estimator: push sample sets in order, take reports as they complete.
#[derive(Debug, Clone)]
pub struct Estimator {
    config: EstimatorConfig,
    f0: u64,
    fs: u64,
    start: Timestamp,
    /// Phase of the f0 cosine at the start instant, in cycles.
    start_cycles: f64,
    /// The start instant's offset after its UTC second, in samples.
    start_offset: f64,
    step: usize,
    /// Demodulated samples x·e^{−jω0t} of the six channels, then the positive-sequence voltage.
    buffer: std::collections::VecDeque<[Complex64; 7]>,
    clocks: std::collections::VecDeque<ClockState>,
    /// Absolute index of the buffer's first sample.
    first: u64,
    /// Absolute index of the next sample to arrive.
    next: u64,
    capacity: usize,
    due: ReportTime,
    weights: Option<Weights>,
}

impl Estimator {
    /// An estimator whose first sample is taken at `start` (UTC, on a locked time base).
    pub fn new(config: EstimatorConfig, start: Timestamp) -> Self {
        let f0 = u64::from(nominal_hz(config.nominal));
        let fs = u64::from(config.fs);
        let start_cycles = ((f0 * u64::from(start.nsec)) % 1_000_000_000) as f64 / 1e9;
        let start_offset = f64::from(start.nsec) * 1e-9 * fs as f64;
        let step = config.derivative_step();
        let half_samples = (config.window.half() * fs as f64).ceil() as usize;
        let capacity = 2 * half_samples + 2 * step + 4;
        let mut estimator = Self {
            config,
            f0,
            fs,
            start,
            start_cycles,
            start_offset,
            step,
            buffer: std::collections::VecDeque::with_capacity(capacity),
            clocks: std::collections::VecDeque::with_capacity(capacity),
            first: 0,
            next: 0,
            capacity,
            due: ReportTime {
                sec: start.sec,
                index: 0,
                rate: config.rate,
            },
            weights: None,
        };
        estimator.due = estimator.first_report();
        estimator
    }

    pub fn config(&self) -> &EstimatorConfig {
        &self.config
    }

    /// The first grid instant whose whole window, and the derivative steps before it, lie at or
    /// after the first sample.
    fn first_report(&self) -> ReportTime {
        let lead = self.config.window.half() + (2 * self.step) as f64 / self.fs as f64;
        let earliest = f64::from(self.start.nsec) * 1e-9 + lead;
        let rate = self.config.rate;
        let reports = (earliest * f64::from(rate)).ceil() as u64;
        ReportTime {
            sec: self.start.sec.saturating_add(reports / u64::from(rate)),
            index: (reports % u64::from(rate)) as u32,
            rate,
        }
    }

    /// Position of a report instant in samples after the first sample: the sample at or before
    /// it, and the fraction of a sample it lies after that one.
    fn position(&self, time: ReportTime) -> (i64, f64) {
        let whole = time.sec.saturating_sub(self.start.sec) as i64 * self.fs as i64;
        let within =
            f64::from(time.index) * self.fs as f64 / f64::from(time.rate) - self.start_offset;
        let floor = within.floor();
        let mut delta = within - floor;
        let mut sample = whole + floor as i64;
        // A fraction a rounding error short of 1 is the next sample itself.
        if delta > 1.0 - 1e-9 {
            delta = 0.0;
            sample += 1;
        }
        (sample, delta)
    }

    /// Takes the next sample set (taken 1/fs after the previous one) and returns the report it
    /// completes, if any.
    pub fn push(&mut self, samples: &SampleSet, clock: ClockState) -> Option<Report> {
        let n = self.next;
        self.next += 1;
        let cycles =
            self.start_cycles + ((self.f0 * (n % self.fs)) % self.fs) as f64 / self.fs as f64;
        let (sin, cos) = (2.0 * PI * cycles.fract()).sin_cos();
        let carrier = Complex64::new(cos, -sin);
        let mut row = [Complex64::new(0.0, 0.0); 7];
        for (slot, value) in row.iter_mut().zip(samples) {
            *slot = carrier * *value;
        }
        row[6] = positive_sequence(row[0], row[1], row[2]);
        if self.buffer.len() == self.capacity {
            self.buffer.pop_front();
            self.clocks.pop_front();
            self.first += 1;
        }
        self.buffer.push_back(row);
        self.clocks.push_back(clock);

        let (sample, delta) = self.position(self.due);
        let weights = self.weights_for(delta);
        let last_needed = sample + weights.first + weights.weights.len() as i64 - 1;
        if (n as i64) < last_needed {
            self.weights = Some(weights);
            return None;
        }
        let report = self.estimate(self.due, sample, &weights);
        self.weights = Some(weights);
        self.due = self.due.next();
        report
    }

    fn weights_for(&mut self, delta: f64) -> Weights {
        if let Some(weights) = self.weights.take() {
            if (weights.delta - delta).abs() < 1e-9 {
                return weights;
            }
        }
        let fs = self.fs as f64;
        let half = self.config.window.half() * fs;
        let first = (delta - half).ceil() as i64;
        let last = (delta + half).floor() as i64;
        let weights: Vec<f64> = (first..=last)
            .map(|j| self.config.window.weight((j as f64 - delta) / fs))
            .collect();
        let gain: f64 = weights.iter().sum();
        Weights {
            delta,
            first,
            weights,
            inverse_gain: 1.0 / gain,
        }
    }

    /// The weighted sum of one buffered stream for the window starting at absolute sample
    /// `start`; `None` when the buffer no longer (or does not yet) hold it.
    fn filter(&self, start: i64, stream: usize, weights: &Weights) -> Option<Complex64> {
        let offset = usize::try_from(start - self.first as i64).ok()?;
        if offset + weights.weights.len() > self.buffer.len() {
            return None;
        }
        let mut sum = Complex64::new(0.0, 0.0);
        for (w, row) in weights.weights.iter().zip(self.buffer.range(offset..)) {
            sum += row[stream] * *w;
        }
        Some(sum * (SQRT_2 * weights.inverse_gain))
    }

    fn estimate(&self, time: ReportTime, sample: i64, weights: &Weights) -> Option<Report> {
        let start = sample + weights.first;
        let step = self.step as i64;
        let now = self.filter(start, 6, weights)?;
        let before = self.filter(start - step, 6, weights)?;
        let earlier = self.filter(start - 2 * step, 6, weights)?;
        let h = self.step as f64 / self.fs as f64;
        let d1 = wrap(now.arg() - before.arg());
        let d2 = wrap(before.arg() - earlier.arg());
        // Second-order backward differences: no sample after the window is needed.
        let omega = (3.0 * d1 - d2) / (2.0 * h);
        let frequency = self.f0 as f64 + omega / (2.0 * PI);
        let rocof = (d1 - d2) / (h * h) / (2.0 * PI);

        // Y = a·P + ā·Q: the window's response P to the tone as estimated (its offset from f0
        // and its sweep), and the image at −(2f0 + offset) that the demodulation leaves, which a
        // window without a zero at 2f0 (M class) lets through. Both are known once frequency and
        // ROCOF are, so a is solved for.
        let offset = frequency - self.f0 as f64;
        let sweep = rocof.clamp(-SWEEP_LIMIT, SWEEP_LIMIT);
        let p = self.response(offset, sweep, weights);
        let carrier_cycles = ((self.f0 * u64::from(time.index)) % u64::from(time.rate)) as f64
            / f64::from(time.rate);
        let q = Complex64::from_polar(1.0, -2.0 * 2.0 * PI * carrier_cycles)
            * self.response(-(2.0 * self.f0 as f64 + offset), -sweep, weights);
        let determinant = p.norm_sqr() - q.norm_sqr();
        let mut phasors = [Complex64::new(0.0, 0.0); 6];
        for (stream, phasor) in phasors.iter_mut().enumerate() {
            let y = self.filter(start, stream, weights)?;
            *phasor = if p.norm() < 0.5 {
                // Far outside any tested range the window's response nears a zero: report
                // what was measured rather than amplify noise.
                y
            } else {
                (y * p.conj() - y.conj() * q) / determinant
            };
        }
        let offset = usize::try_from(start - self.first as i64).ok()?;
        let clock = self
            .clocks
            .range(offset.saturating_sub(2 * self.step)..offset + weights.weights.len())
            .copied()
            .fold(ClockState::Locked, worse_clock);
        Some(Report {
            time,
            phasors,
            positive_sequence: positive_sequence(phasors[0], phasors[1], phasors[2]),
            frequency,
            rocof,
            clock,
        })
    }

    /// The window's response, relative to its response at f0, to a tone that passes the report
    /// instant `offset` Hz from f0 and sweeps at `rocof` Hz/s: e^{j(2π·offset·τ + π·rocof·τ²)}.
    fn response(&self, offset: f64, rocof: f64, weights: &Weights) -> Complex64 {
        let d = 1.0 / self.fs as f64;
        let tau = (weights.first as f64 - weights.delta) * d;
        let phase_at = |tau: f64| 2.0 * PI * offset * tau + PI * rocof * tau * tau;
        // The phase step from one sample to the next grows by 2π·rocof·d² each sample.
        let mut phase = Complex64::from_polar(1.0, phase_at(tau));
        let mut turn = Complex64::from_polar(1.0, phase_at(tau + d) - phase_at(tau));
        let bend = Complex64::from_polar(1.0, 2.0 * PI * rocof * d * d);
        let mut sum = Complex64::new(0.0, 0.0);
        for w in &weights.weights {
            sum += phase * *w;
            phase *= turn;
            turn *= bend;
        }
        sum * weights.inverse_gain
    }
}

/// (a + αb + α²c)/3 with α = e^{j2π/3}.
pub fn positive_sequence(a: Complex64, b: Complex64, c: Complex64) -> Complex64 {
    let alpha = Complex64::from_polar(1.0, 2.0 * PI / 3.0);
    (a + alpha * b + alpha * alpha * c) / 3.0
}

fn wrap(angle: f64) -> f64 {
    let wrapped = (angle + PI).rem_euclid(2.0 * PI) - PI;
    if wrapped <= -PI {
        wrapped + 2.0 * PI
    } else {
        wrapped
    }
}

/// The worse of two clock states: failure, then the largest unlocked error, then locked.
fn worse_clock(a: ClockState, b: ClockState) -> ClockState {
    fn rank(state: ClockState) -> u8 {
        match state {
            ClockState::Locked => 0,
            ClockState::Unlocked { code } => code,
            ClockState::Reserved { .. } | ClockState::Failure => 0x10,
        }
    }
    if rank(b) > rank(a) {
        b
    } else {
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steady(config: EstimatorConfig, freq: f64, seconds: f64) -> Vec<Report> {
        let fs = f64::from(config.fs());
        let mut estimator = Estimator::new(config, Timestamp { sec: 100, nsec: 0 });
        let mut reports = Vec::new();
        for n in 0..(seconds * fs) as u64 {
            let t = n as f64 / fs;
            let mut set = [0.0; 6];
            for (k, value) in set.iter_mut().enumerate() {
                let shift = -2.0 * PI / 3.0 * (k % 3) as f64;
                let amplitude = if k < 3 { 100.0 } else { 5.0 };
                *value = amplitude * SQRT_2 * (2.0 * PI * freq * t + shift).cos();
            }
            reports.extend(estimator.push(&set, ClockState::Locked));
        }
        reports
    }

    #[test]
    fn a_nominal_cosine_peaking_at_the_second_is_a_real_rms_phasor() {
        let config = EstimatorConfig::new(Class::P, NominalFrequency::Hz50, 50, 10_000)
            .expect("valid configuration");
        let reports = steady(config, 50.0, 1.0);
        assert!(!reports.is_empty());
        for report in &reports {
            let va = report.phasor(Channel::Va);
            assert!((va.re - 100.0).abs() < 1e-6 && va.im.abs() < 1e-6, "{va}");
            assert!((report.frequency - 50.0).abs() < 1e-6);
            assert!(report.rocof.abs() < 1e-3);
        }
        // On the k/Fs grid, the first as soon as a whole window (and two derivative steps) lie
        // after the first sample: 20 ms + 2 ms → 40 ms.
        assert_eq!(
            reports[0].time,
            ReportTime {
                sec: 100,
                index: 2,
                rate: 50
            }
        );
        assert_eq!(reports[1].time.index, 3);
    }

    #[test]
    fn rates_and_sampling_rates_outside_the_standard_are_refused() {
        assert!(matches!(
            EstimatorConfig::new(Class::P, NominalFrequency::Hz50, 60, 10_000),
            Err(EstimatorError::ReportingRate { fps: 60, .. })
        ));
        assert!(matches!(
            EstimatorConfig::new(Class::M, NominalFrequency::Hz60, 50, 10_000),
            Err(EstimatorError::ReportingRate { .. })
        ));
        assert!(matches!(
            EstimatorConfig::new(Class::P, NominalFrequency::Hz60, 60, 900),
            Err(EstimatorError::SamplingRateTooLow { min: 960, .. })
        ));
    }

    #[test]
    fn reports_between_samples_are_placed_by_their_true_offset() {
        // 10 kHz at 60 Hz, 12 fps: every report instant but the second's first falls between
        // samples.
        let config = EstimatorConfig::new(Class::P, NominalFrequency::Hz60, 12, 10_000)
            .expect("valid configuration");
        let reports = steady(config, 61.0, 2.0);
        for report in &reports {
            let t = report.time.seconds_since(100);
            let expected = Complex64::from_polar(100.0, 2.0 * PI * 1.0 * t);
            let tve = (report.phasor(Channel::Va) - expected).norm() / expected.norm();
            assert!(tve < 1e-3, "TVE {tve} at {t}");
            assert!(
                (report.frequency - 61.0).abs() < 1e-4,
                "{}",
                report.frequency
            );
        }
    }
}
