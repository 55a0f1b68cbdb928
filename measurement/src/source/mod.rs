//! Where raw samples come from: an ADC behind `embedded-hal` ([`ads131m`]) or the simulated
//! source of the C37.118.1 test signals ([`SimulatedSource`]). Both give sample sets of three
//! voltages and three currents, one every 1/fs, on a time base locked to UTC seconds, with the
//! clock state of that time base.

pub mod ads131m;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};

use crate::c37118::ClockState;
use crate::estimator::signal::Waveform;
use crate::estimator::SampleSet;
use crate::sample::Timestamp;

/// A source of sample sets taken 1/fs apart from `start` on.
pub trait SampleSource {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Samples per second.
    fn rate(&self) -> u32;

    /// The UTC instant of the first sample.
    fn start(&self) -> Timestamp;

    /// The next sample set and the state of the clock it was taken by; blocks until it is taken.
    fn next_set(&mut self) -> Result<(SampleSet, ClockState), Self::Error>;
}

/// A simulated ADC: a [`Waveform`] sampled at `fs` from `start`, plus white Gaussian noise of
/// `noise` times each channel's rated RMS value. It does not pace itself: [`Self::due`] says how
/// many sets wall-clock time has made due, and the caller takes them.
#[derive(Debug, Clone)]
pub struct SimulatedSource {
    waveform: Waveform,
    fs: u32,
    start: Timestamp,
    taken: u64,
    noise: Option<(Normal<f64>, StdRng)>,
}

/// Why a simulated source cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimulatedError {
    #[error("noise of {noise} per unit is not a standard deviation between 0 and 1")]
    Noise { noise: f64 },
    #[error("a sampling rate of 0 Hz")]
    ZeroRate,
}

impl SimulatedSource {
    /// `seed` makes the noise repeatable; the appliance seeds from the OS.
    pub fn new(
        waveform: Waveform,
        fs: u32,
        start: Timestamp,
        noise: f64,
        seed: u64,
    ) -> Result<Self, SimulatedError> {
        if fs == 0 {
            return Err(SimulatedError::ZeroRate);
        }
        if !(0.0..=1.0).contains(&noise) {
            return Err(SimulatedError::Noise { noise });
        }
        let noise = (noise > 0.0)
            .then(|| Normal::new(0.0, noise).map(|normal| (normal, StdRng::seed_from_u64(seed))))
            .transpose()
            .map_err(|_| SimulatedError::Noise { noise })?;
        Ok(Self {
            waveform,
            fs,
            start,
            taken: 0,
            noise,
        })
    }

    /// Sets taken so far.
    pub fn taken(&self) -> u64 {
        self.taken
    }

    /// How many sets are due by the UTC instant `now` and not yet taken.
    pub fn due(&self, now: Timestamp) -> u64 {
        let elapsed = now.as_nanos().saturating_sub(self.start.as_nanos());
        let due = elapsed * u128::from(self.fs) / 1_000_000_000 + 1;
        (due as u64).saturating_sub(self.taken)
    }

    /// The next set, as the ADC would have taken it.
    pub fn take(&mut self) -> SampleSet {
        let t = f64::from(self.start.nsec) * 1e-9 + self.taken as f64 / f64::from(self.fs);
        self.taken += 1;
        let mut set = self.waveform.sample(t);
        if let Some((normal, rng)) = &mut self.noise {
            let rated = [
                self.waveform.nameplate.voltage,
                self.waveform.nameplate.current,
            ];
            for (index, value) in set.iter_mut().enumerate() {
                *value += normal.sample(rng) * rated[index / 3];
            }
        }
        set
    }
}

impl SampleSource for SimulatedSource {
    type Error = std::convert::Infallible;

    fn rate(&self) -> u32 {
        self.fs
    }

    fn start(&self) -> Timestamp {
        self.start
    }

    /// The simulated time base is UTC-locked by construction.
    fn next_set(&mut self) -> Result<(SampleSet, ClockState), Self::Error> {
        Ok((self.take(), ClockState::Locked))
    }
}

/// Runs a simulated source in real time: every 5 ms it takes the sets wall-clock time has made
/// due, pushes them through an estimator and sends each report on. Ends when the receiver is
/// dropped.
pub async fn run_simulated(
    mut source: SimulatedSource,
    config: crate::estimator::EstimatorConfig,
    reports: tokio::sync::mpsc::Sender<crate::estimator::Report>,
) {
    let mut estimator = crate::estimator::Estimator::new(config, source.start());
    let mut ticker = tokio::time::interval(std::time::Duration::from_millis(5));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        ticker.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| Timestamp {
                sec: elapsed.as_secs(),
                nsec: elapsed.subsec_nanos(),
            })
            .unwrap_or(Timestamp { sec: 0, nsec: 0 });
        for _ in 0..source.due(now) {
            let set = source.take();
            if let Some(report) = estimator.push(&set, ClockState::Locked) {
                if reports.send(report).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::estimator::signal::{Nameplate, TestSignal};

    fn steady() -> Waveform {
        Waveform::new(
            TestSignal::Steady {
                frequency: 50.0,
                magnitude: 1.0,
            },
            Nameplate::default(),
            50.0,
        )
    }

    #[test]
    fn samples_are_the_waveform_on_the_utc_grid() {
        let start = Timestamp {
            sec: 10,
            nsec: 250_000_000,
        };
        let mut source = SimulatedSource::new(steady(), 1000, start, 0.0, 1).expect("valid");
        // 0.25 s after the second: cos(2π·50·0.25) = cos(25π) = −1.
        let (first, clock) = source.next_set().expect("infallible");
        assert_eq!(clock, ClockState::Locked);
        assert!((first[0] + 230.0 * std::f64::consts::SQRT_2).abs() < 1e-9);
        assert_eq!(source.taken(), 1);
        // 10 ms later, 10 sets are due (the one at the instant included), one was taken.
        let now = Timestamp {
            sec: 10,
            nsec: 260_000_000,
        };
        assert_eq!(source.due(now), 10);
    }

    #[test]
    fn noise_has_the_asked_spread_and_bad_values_are_refused() {
        let start = Timestamp { sec: 0, nsec: 0 };
        let mut clean = SimulatedSource::new(steady(), 10_000, start, 0.0, 7).expect("valid");
        let mut noisy = SimulatedSource::new(steady(), 10_000, start, 0.01, 7).expect("valid");
        let mut sum = 0.0;
        let count = 20_000;
        for _ in 0..count {
            let (a, b) = (clean.take(), noisy.take());
            sum += ((b[0] - a[0]) / 230.0).powi(2);
        }
        let spread = (sum / f64::from(count)).sqrt();
        assert!((spread - 0.01).abs() < 0.0005, "{spread}");
        assert!(matches!(
            SimulatedSource::new(steady(), 10_000, start, -0.1, 7),
            Err(SimulatedError::Noise { .. })
        ));
        assert!(matches!(
            SimulatedSource::new(steady(), 0, start, 0.0, 7),
            Err(SimulatedError::ZeroRate)
        ));
    }
}
