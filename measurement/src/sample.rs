//! The sample model the data path carries: what the platform's VILLAS protobuf `Sample` holds
//! (origin timestamp, sequence, a fixed layout of typed values), independent of where the sample
//! came from.

/// Seconds and nanoseconds since the Unix epoch (UTC), as VILLAS `Timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    pub sec: u64,
    /// 0..1_000_000_000.
    pub nsec: u32,
}

impl Timestamp {
    /// Returns `None` when `nsec` is not below one second.
    pub fn new(sec: u64, nsec: u32) -> Option<Self> {
        (nsec < 1_000_000_000).then_some(Self { sec, nsec })
    }

    /// Nanoseconds since the epoch.
    pub fn as_nanos(self) -> u128 {
        u128::from(self.sec) * 1_000_000_000 + u128::from(self.nsec)
    }
}

/// One signal value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Float(f64),
    Int(i64),
    Bool(bool),
    /// Phasors: VILLAS complex values are single precision.
    Complex {
        re: f32,
        im: f32,
    },
}

/// One sample: the PMU's time, the stream's sequence number, and the values in the topic's
/// fixed signal layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub ts_origin: Timestamp,
    pub sequence: u64,
    pub values: Vec<Value>,
}

/// Turns each PMU block of a C37.118 data frame into a sample for that PMU's topic, in the fixed
/// layout of the platform's contract: the phasors as complex values (V, A), then frequency (Hz),
/// ROCOF (Hz/s), the analogs, then each digital word as an integer. Absent values are NaN.
///
/// `sequence` is the frame's index on the stream's reporting grid (round(t × rate)), so it is the
/// same after a restart, and a gap in it is a frame the PMU did not deliver.
pub fn samples_from_data_frame(
    frame: &crate::c37118::DataFrame,
    config: &crate::c37118::ConfigFrame,
) -> Vec<(crate::c37118::IdCode, Sample)> {
    let base = u128::from(config.time_base.base());
    let count = u128::from(
        frame
            .header
            .fracsec
            .count()
            .min(config.time_base.base().saturating_sub(1)),
    );
    let nsec = (count * 1_000_000_000 + base / 2) / base;
    let ts_origin = Timestamp {
        sec: u64::from(frame.header.soc),
        nsec: u32::try_from(nsec.min(999_999_999)).unwrap_or(999_999_999),
    };
    let sequence = match config.data_rate.0 {
        rate if rate > 0 => {
            let rate = u128::from(rate.unsigned_abs());
            let nanos = ts_origin.as_nanos();
            u64::try_from((nanos * rate + 500_000_000) / 1_000_000_000).unwrap_or(u64::MAX)
        }
        rate if rate < 0 => ts_origin.sec / u64::from(rate.unsigned_abs()),
        _ => ts_origin.sec,
    };
    frame
        .pmus
        .iter()
        .zip(&config.pmus)
        .map(|(block, pmu)| {
            let mut values = Vec::with_capacity(
                block.phasors.len() + 2 + block.analogs.len() + block.digitals.len(),
            );
            for (phasor, channel) in block.phasors.iter().zip(&pmu.phasors) {
                let (re, im) = phasor
                    .to_engineering(&channel.scale)
                    .unwrap_or((f64::NAN, f64::NAN));
                values.push(Value::Complex {
                    re: re as f32,
                    im: im as f32,
                });
            }
            values.push(Value::Float(
                block
                    .frequency
                    .hertz(pmu.nominal_frequency)
                    .unwrap_or(f64::NAN),
            ));
            values.push(Value::Float(
                block.rocof.hertz_per_second().unwrap_or(f64::NAN),
            ));
            for (analog, channel) in block.analogs.iter().zip(&pmu.analogs) {
                values.push(Value::Float(
                    analog.to_engineering(&channel.scale).unwrap_or(f64::NAN),
                ));
            }
            values.extend(
                block
                    .digitals
                    .iter()
                    .map(|word| Value::Int(i64::from(*word))),
            );
            (
                pmu.idcode,
                Sample {
                    ts_origin,
                    sequence,
                    values,
                },
            )
        })
        .collect()
}
