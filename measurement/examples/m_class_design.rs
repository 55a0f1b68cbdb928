//! How the M-class window table in `estimator/window.rs` was found: for each reporting rate, the
//! shortest Kaiser-windowed sinc whose response meets the M-class pass band (gain ≥ 0.9 at the
//! highest modulation frequency Fr) and out-of-band rejection (an interferer at 10 % and at least
//! Fs/2 from f0 moves the frequency by at most 4 mHz, 2.5 times under the 10 mHz limit, and the
//! phasor by at most 0.5 % TVE), within 90 % of the 5/Fs latency.
//!
//! Run: `cargo run --release -p edgeward-measurement --example m_class_design`.

use edgeward_measurement::estimator::window::kaiser_sinc_response;

fn main() {
    for (f0, rates) in [
        (50.0, &[10.0, 25.0, 50.0, 100.0][..]),
        (60.0, &[10.0, 12.0, 15.0, 20.0, 30.0, 60.0, 120.0][..]),
    ] {
        for &fs in rates {
            let fr = f64::min(fs / 5.0, 5.0);
            let budget = 0.9 * 5.0 / fs;
            let mut best: Option<(f64, f64, f64)> = None;
            'search: for step in 1..=60 {
                let half = budget * f64::from(step) / 60.0;
                for b in 0..=40 {
                    let beta = f64::from(b) * 0.25;
                    for c in 0..=60 {
                        let cutoff = fr + (fs / 2.0 - fr) * f64::from(c) / 60.0;
                        if kaiser_sinc_response(half, beta, cutoff, fr) < 0.9 {
                            continue;
                        }
                        let mut ok = true;
                        let mut f = fs / 2.0;
                        while f <= 2.5 * f0 {
                            let h = kaiser_sinc_response(half, beta, cutoff, f).abs();
                            if 0.1 * h * (f + 0.05 * fs) > 0.004 || 0.1 * h > 0.005 {
                                ok = false;
                                break;
                            }
                            f += 0.25;
                        }
                        if ok {
                            best = Some((half, beta, cutoff));
                            break 'search;
                        }
                    }
                }
            }
            match best {
                Some((half, beta, cutoff)) => println!(
                    "f0 {f0} Fs {fs}: half {half:.4} s (budget {budget:.4}), beta {beta}, cut-off {cutoff:.3} Hz, gain at Fr {:.3}",
                    kaiser_sinc_response(half, beta, cutoff, fr)
                ),
                None => println!("f0 {f0} Fs {fs}: nothing within the budget"),
            }
        }
    }
}
