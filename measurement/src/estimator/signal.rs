//! The C37.118.1 test signals for three voltages and three currents, with the true phasors,
//! frequency and ROCOF at any instant.
//!
//! Every signal is a balanced three-phase fundamental, Xm·A(t)·cos(2πf0·t + ψ(t) + φk) with
//! φk = 0, −2π/3, +2π/3, plus at most one interfering tone. Its truth is the phasor
//! (Xm/√2)·A(t)·e^{j(ψ(t)+φk)}, the frequency f0 + ψ′(t)/2π and the ROCOF ψ″(t)/2π (C37.118.1-2011
//! §4.2, 5.5; the test ranges of ../shared/reference/c37118.md §2.2). Time `t` is in seconds after
//! a UTC second boundary, the one the cosine at f0 peaks at.

use std::f64::consts::{PI, SQRT_2};

use num_complex::Complex64;

/// The rated values the per-unit test signals are scaled by.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Nameplate {
    /// Phase-to-neutral voltage, volts RMS.
    pub voltage: f64,
    /// Phase current, amperes RMS.
    pub current: f64,
    /// The angle by which each current lags its voltage, radians.
    pub current_lag: f64,
}

impl Default for Nameplate {
    /// 230 V, 5 A (a 5 A current-transformer secondary), lagging by 30°.
    fn default() -> Self {
        Self {
            voltage: 230.0,
            current: 5.0,
            current_lag: PI / 6.0,
        }
    }
}

/// One test signal, in per unit of the nameplate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TestSignal {
    /// A steady fundamental at `frequency` Hz and `magnitude` per unit.
    Steady { frequency: f64, magnitude: f64 },
    /// The nominal fundamental plus harmonic `order` at `fraction` of its magnitude, in each phase
    /// at `order` times the phase's angle (as a balanced load's harmonics are).
    Harmonic { order: u32, fraction: f64 },
    /// A fundamental at `frequency` plus a positive-sequence tone at `interferer` Hz and `fraction`
    /// of the fundamental: the out-of-band test.
    Interference {
        frequency: f64,
        interferer: f64,
        fraction: f64,
    },
    /// The nominal fundamental modulated in amplitude by `kx` and in phase by `ka` radians at
    /// `fm` Hz: A = 1 + kx·cos(2πfm·t), ψ = ka·cos(2πfm·t − π).
    Modulation { kx: f64, ka: f64, fm: f64 },
    /// Steady at `from` Hz until `start` seconds, then ramping at `rate` Hz/s until `to` Hz, then
    /// steady again.
    Ramp {
        from: f64,
        to: f64,
        rate: f64,
        start: f64,
    },
    /// The nominal fundamental stepping by `kx` in magnitude and `ka` radians in phase at `at`.
    Step { kx: f64, ka: f64, at: f64 },
}

/// The true state of a signal at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Truth {
    /// RMS phasors in [`super::Channel`] order.
    pub phasors: [Complex64; 6],
    pub frequency: f64,
    pub rocof: f64,
}

/// The phase angles φk of phases a, b, c.
const PHASES: [f64; 3] = [0.0, -2.0 * PI / 3.0, 2.0 * PI / 3.0];

/// A test signal on a nameplate, at a nominal frequency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waveform {
    pub signal: TestSignal,
    pub nameplate: Nameplate,
    /// f0, Hz.
    pub nominal: f64,
}

impl Waveform {
    pub fn new(signal: TestSignal, nameplate: Nameplate, nominal: f64) -> Self {
        Self {
            signal,
            nameplate,
            nominal,
        }
    }

    /// A(t), ψ(t), ψ′(t)/2π and ψ″(t)/2π of the fundamental.
    fn fundamental(&self, t: f64) -> (f64, f64, f64, f64) {
        let f0 = self.nominal;
        match self.signal {
            TestSignal::Steady {
                frequency,
                magnitude,
            } => (
                magnitude,
                2.0 * PI * (frequency - f0) * t,
                frequency - f0,
                0.0,
            ),
            TestSignal::Harmonic { .. } => (1.0, 0.0, 0.0, 0.0),
            TestSignal::Interference { frequency, .. } => {
                (1.0, 2.0 * PI * (frequency - f0) * t, frequency - f0, 0.0)
            }
            TestSignal::Modulation { kx, ka, fm } => {
                let wm = 2.0 * PI * fm;
                let amplitude = 1.0 + kx * (wm * t).cos();
                let psi = ka * (wm * t - PI).cos();
                let dpsi = -ka * wm * (wm * t - PI).sin();
                let ddpsi = -ka * wm * wm * (wm * t - PI).cos();
                (amplitude, psi, dpsi / (2.0 * PI), ddpsi / (2.0 * PI))
            }
            TestSignal::Ramp {
                from,
                to,
                rate,
                start,
            } => {
                let duration = (to - from) / rate;
                let d0 = from - f0;
                if t < start {
                    (1.0, 2.0 * PI * d0 * t, d0, 0.0)
                } else if t < start + duration {
                    let s = t - start;
                    let psi = 2.0 * PI * (d0 * t + rate * s * s / 2.0);
                    (1.0, psi, d0 + rate * s, rate)
                } else {
                    let s = t - start - duration;
                    let at_end = d0 * (start + duration) + rate * duration * duration / 2.0;
                    let psi = 2.0 * PI * (at_end + (to - f0) * s);
                    (1.0, psi, to - f0, 0.0)
                }
            }
            TestSignal::Step { kx, ka, at } => {
                if t >= at {
                    (1.0 + kx, ka, 0.0, 0.0)
                } else {
                    (1.0, 0.0, 0.0, 0.0)
                }
            }
        }
    }

    /// The instantaneous values of the six channels at `t`.
    pub fn sample(&self, t: f64) -> [f64; 6] {
        let (amplitude, psi, _, _) = self.fundamental(t);
        // The carrier's phase from the fractional cycle count keeps it exact for long runs.
        let carrier = 2.0 * PI * (self.nominal * t).fract();
        let mut set = [0.0; 6];
        for (k, phase) in PHASES.iter().enumerate() {
            for (scale, lag, slot) in [
                (self.nameplate.voltage, 0.0, k),
                (self.nameplate.current, self.nameplate.current_lag, k + 3),
            ] {
                let peak = SQRT_2 * scale;
                let mut value = peak * amplitude * (carrier + psi + phase - lag).cos();
                value += peak * self.interference(t, *phase, lag);
                set[slot] = value;
            }
        }
        set
    }

    /// The interfering tone of one phase, per unit of the fundamental's peak.
    fn interference(&self, t: f64, phase: f64, lag: f64) -> f64 {
        match self.signal {
            TestSignal::Harmonic { order, fraction } => {
                let h = f64::from(order);
                fraction * (2.0 * PI * (h * self.nominal * t).fract() + h * (phase - lag)).cos()
            }
            TestSignal::Interference {
                interferer,
                fraction,
                ..
            } => fraction * (2.0 * PI * (interferer * t).fract() + phase - lag).cos(),
            _ => 0.0,
        }
    }

    /// The true phasors, frequency and ROCOF at `t`.
    pub fn truth(&self, t: f64) -> Truth {
        let (amplitude, psi, offset, rocof) = self.fundamental(t);
        let mut phasors = [Complex64::new(0.0, 0.0); 6];
        for (k, phase) in PHASES.iter().enumerate() {
            phasors[k] = Complex64::from_polar(self.nameplate.voltage * amplitude, psi + phase);
            phasors[k + 3] = Complex64::from_polar(
                self.nameplate.current * amplitude,
                psi + phase - self.nameplate.current_lag,
            );
        }
        Truth {
            phasors,
            frequency: self.nominal + offset,
            rocof,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_truth_is_the_signal_it_describes() {
        // x(t) = √2·Re(X·e^{j2πf0t}) for every signal without interference.
        let signals = [
            TestSignal::Steady {
                frequency: 51.3,
                magnitude: 0.8,
            },
            TestSignal::Modulation {
                kx: 0.1,
                ka: 0.1,
                fm: 2.0,
            },
            TestSignal::Ramp {
                from: 48.0,
                to: 52.0,
                rate: 1.0,
                start: 0.5,
            },
            TestSignal::Step {
                kx: 0.1,
                ka: 0.2,
                at: 0.3,
            },
        ];
        for signal in signals {
            let waveform = Waveform::new(signal, Nameplate::default(), 50.0);
            for n in 0..8000 {
                let t = f64::from(n) * 1e-3;
                let set = waveform.sample(t);
                let truth = waveform.truth(t);
                let carrier = Complex64::from_polar(1.0, 2.0 * PI * 50.0 * t);
                for (value, phasor) in set.iter().zip(truth.phasors) {
                    let expected = SQRT_2 * (phasor * carrier).re;
                    assert!((value - expected).abs() < 1e-6, "{signal:?} at {t}");
                }
            }
        }
    }

    #[test]
    fn the_ramp_truth_is_continuous_and_its_frequency_is_the_phase_slope() {
        let waveform = Waveform::new(
            TestSignal::Ramp {
                from: 48.0,
                to: 52.0,
                rate: 1.0,
                start: 1.0,
            },
            Nameplate::default(),
            50.0,
        );
        let dt = 1e-6;
        for t in [0.5, 1.0, 2.5, 4.999_99, 5.0, 6.0] {
            let a = waveform.truth(t - dt).phasors[0].arg();
            let b = waveform.truth(t + dt).phasors[0].arg();
            let slope = (b - a) / (2.0 * dt) / (2.0 * PI) + 50.0;
            assert!((slope - waveform.truth(t).frequency).abs() < 1e-3, "at {t}");
        }
        assert_eq!(waveform.truth(3.0).rocof, 1.0);
        assert_eq!(waveform.truth(7.0).frequency, 52.0);
    }
}
