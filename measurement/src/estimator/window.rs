//! The estimation windows of C37.118.1-2011 Annex C (IEC/IEEE 60255-118-1 Annex D), written as
//! functions of continuous time rather than of a sample index.
//!
//! The standard tabulates its windows for one reference sampling rate (1 kHz at 50 Hz, 960 Hz at
//! 60 Hz). Written in seconds, the same window serves any ADC rate, and a report instant that falls
//! between two samples (10 kHz at 60 Hz with 12 fps, for example) needs no resampling: the weights
//! are the window's values at the samples' true offsets from the report instant.

use std::f64::consts::PI;

use crate::c37118::NominalFrequency;

use super::Class;

/// A symmetric window centred on the report instant, zero outside `±half`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Window {
    /// P class: a triangle two nominal cycles wide (`half` = 1/f0).
    Triangle { half: f64 },
    /// M class as the standard's reference model has it: a Hamming window times a sinc low-pass
    /// whose ideal cut-off is `2·Ffr`.
    HammingSinc { half: f64, ffr: f64 },
    /// M class as Edgeward has it: a Kaiser window times a sinc low-pass with its ideal cut-off
    /// at `cutoff` Hz, designed per reporting rate (`examples/m_class_design.rs`).
    KaiserSinc { half: f64, beta: f64, cutoff: f64 },
}

/// M-class filter reference frequency Ffr (Hz) and order N at the reference sampling rate, per
/// reporting rate (C37.118.1-2011 Table C.1 / 60255-118-1 Table D.1; ../shared/reference/c37118.md
/// §2.3).
const M_CLASS_50: &[(u32, f64, u32)] = &[
    (10, 1.779, 806),
    (25, 4.355, 338),
    (50, 7.75, 142),
    (100, 14.1, 66),
];
const M_CLASS_60: &[(u32, f64, u32)] = &[
    (10, 1.78, 968),
    (12, 2.125, 816),
    (15, 2.64, 662),
    (20, 3.5, 502),
    (30, 5.02, 306),
    (60, 8.19, 164),
    (120, 16.25, 70),
];

/// Edgeward's M-class windows per reporting rate: (fps, half length s, Kaiser β, cut-off Hz), as
/// `examples/m_class_design.rs` finds them (docs/decisions/0040).
const KAISER_50: &[(u32, f64, f64, f64)] = &[
    (10, 0.36, 4.0, 3.1),
    (25, 0.159, 4.75, 7.75),
    (50, 0.066, 5.5, 11.667),
    (100, 0.0278, 7.75, 6.5),
];
const KAISER_60: &[(u32, f64, f64, f64)] = &[
    (10, 0.36, 4.0, 3.1),
    (12, 0.3063, 4.25, 3.78),
    (15, 0.255, 4.25, 4.8),
    (20, 0.195, 4.5, 6.3),
    (30, 0.13, 5.25, 8.667),
    (60, 0.0525, 6.0, 11.667),
    (120, 0.0238, 6.25, 16.917),
];

/// The sampling rate the standard's filter orders are given for.
fn reference_rate(nominal: NominalFrequency) -> f64 {
    match nominal {
        NominalFrequency::Hz50 => 1000.0,
        NominalFrequency::Hz60 => 960.0,
    }
}

/// The reporting rates C37.118.1 defines for a nominal frequency (Table 1, with 100 and 120).
pub fn reporting_rates(nominal: NominalFrequency) -> &'static [u32] {
    match nominal {
        NominalFrequency::Hz50 => &[10, 25, 50, 100],
        NominalFrequency::Hz60 => &[10, 12, 15, 20, 30, 60, 120],
    }
}

impl Window {
    /// The window for a class, nominal frequency and reporting rate; `None` when the rate is not
    /// one of [`reporting_rates`].
    pub fn for_class(class: Class, nominal: NominalFrequency, rate: u32) -> Option<Self> {
        if !reporting_rates(nominal).contains(&rate) {
            return None;
        }
        match class {
            Class::P => Some(Self::Triangle {
                half: 1.0 / nominal.hertz(),
            }),
            Class::M => {
                let table = match nominal {
                    NominalFrequency::Hz50 => KAISER_50,
                    NominalFrequency::Hz60 => KAISER_60,
                };
                let &(_, half, beta, cutoff) = table.iter().find(|row| row.0 == rate)?;
                Some(Self::KaiserSinc { half, beta, cutoff })
            }
        }
    }

    /// The standard's reference M-class window (Hamming-windowed sinc with the tabulated Ffr and
    /// order), kept to show in docs/pmu-compliance.md what it fails that Edgeward's passes.
    pub fn reference_m_class(nominal: NominalFrequency, rate: u32) -> Option<Self> {
        let table = match nominal {
            NominalFrequency::Hz50 => M_CLASS_50,
            NominalFrequency::Hz60 => M_CLASS_60,
        };
        let &(_, ffr, order) = table.iter().find(|(fps, _, _)| *fps == rate)?;
        let half = f64::from(order) / 2.0 / reference_rate(nominal);
        Some(Self::HammingSinc { half, ffr })
    }

    /// Half the window's length in seconds: how long after a report instant its last sample
    /// arrives.
    pub fn half(self) -> f64 {
        match self {
            Self::Triangle { half }
            | Self::HammingSinc { half, .. }
            | Self::KaiserSinc { half, .. } => half,
        }
    }

    /// The window's value `tau` seconds from its centre.
    pub fn weight(self, tau: f64) -> f64 {
        let half = self.half();
        if tau.abs() > half {
            return 0.0;
        }
        match self {
            Self::Triangle { half } => 1.0 - tau.abs() / half,
            Self::HammingSinc { half, ffr } => {
                let hamming = 0.54 + 0.46 * (PI * tau / half).cos();
                let x = 2.0 * PI * 2.0 * ffr * tau;
                let sinc = if x.abs() < 1e-12 { 1.0 } else { x.sin() / x };
                hamming * sinc
            }
            Self::KaiserSinc { half, beta, cutoff } => {
                let r = tau / half;
                let kaiser = bessel_i0(beta * (1.0 - r * r).max(0.0).sqrt()) / bessel_i0(beta);
                let x = 2.0 * PI * cutoff * tau;
                let sinc = if x.abs() < 1e-12 { 1.0 } else { x.sin() / x };
                kaiser * sinc
            }
        }
    }
}

/// The modified Bessel function of the first kind, order 0, by its power series (no crate of the
/// field offers it without a numerics library; the series converges quickly for the β ≤ 12 of
/// any window here).
fn bessel_i0(x: f64) -> f64 {
    let quarter = x * x / 4.0;
    let mut term = 1.0;
    let mut sum = 1.0;
    for k in 1..64 {
        term *= quarter / f64::from(k * k);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    sum
}

/// The gain, relative to DC, of a Kaiser-windowed sinc sampled at 2 kHz, for a tone `frequency`
/// Hz from the demodulation frequency: for the design search of `examples/m_class_design.rs`.
pub fn kaiser_sinc_response(half: f64, beta: f64, cutoff: f64, frequency: f64) -> f64 {
    let window = Window::KaiserSinc { half, beta, cutoff };
    let step = 1.0 / 2000.0;
    let count = (half / step).floor() as i64;
    let mut sum = 0.0;
    let mut gain = 0.0;
    for k in -count..=count {
        let tau = k as f64 * step;
        let w = window.weight(tau);
        gain += w;
        sum += w * (2.0 * PI * frequency * tau).cos();
    }
    sum / gain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_p_window_is_the_standards_triangle_at_its_reference_rate() {
        // N = 2(fs/f0 − 1) = 38 at 1 kHz, W(k) = 1 − 2|k|/(N + 2).
        let window = Window::for_class(Class::P, NominalFrequency::Hz50, 50).expect("defined");
        for k in -19i32..=19 {
            let expected = 1.0 - 2.0 * f64::from(k.abs()) / 40.0;
            let got = window.weight(f64::from(k) / 1000.0);
            assert!((got - expected).abs() < 1e-12, "k {k}: {got} vs {expected}");
        }
        assert_eq!(window.weight(0.0201), 0.0);
    }

    #[test]
    fn the_m_window_is_hamming_times_sinc_with_the_tabulated_length() {
        let window = Window::reference_m_class(NominalFrequency::Hz50, 50).expect("defined");
        assert!((window.half() - 0.071).abs() < 1e-12);
        assert_eq!(window.weight(0.0), 1.0);
        // At the ends the Hamming window is 0.08.
        let end = window.weight(0.071);
        let x = 2.0 * PI * 2.0 * 7.75 * 0.071;
        assert!((end - 0.08 * x.sin() / x).abs() < 1e-12);
    }

    #[test]
    fn only_the_standards_rates_have_windows() {
        assert!(Window::for_class(Class::P, NominalFrequency::Hz50, 60).is_none());
        assert!(Window::for_class(Class::M, NominalFrequency::Hz60, 25).is_none());
        for nominal in [NominalFrequency::Hz50, NominalFrequency::Hz60] {
            for &rate in reporting_rates(nominal) {
                let window = Window::for_class(Class::M, nominal, rate).expect("tabulated");
                assert!(
                    window.half() <= 5.0 / f64::from(rate),
                    "latency at {rate} fps"
                );
            }
        }
    }
}
