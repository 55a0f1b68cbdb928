//! Per-stream statistics as PDC operators expect them: frames received, frames missing on the
//! k/Fs reporting grid, frames out of order, CRC errors, configuration changes, arrival latency
//! and the state of the PMU's clock.
//!
//! Sans-I/O: the caller passes each frame's arrival time in, so results are exact in tests.

use serde::Serialize;

use crate::c37118::{ClockState, ConfigFrame, DataFrame, DiscardReason};

/// Arrival latency: how long after its timestamp a data frame arrived, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub last: f64,
}

impl Latency {
    fn record(&mut self, seconds: f64) {
        if self.count == 0 {
            self.min = seconds;
            self.max = seconds;
        } else {
            self.min = self.min.min(seconds);
            self.max = self.max.max(seconds);
        }
        self.count += 1;
        self.mean += (seconds - self.mean) / self.count as f64;
        self.last = seconds;
    }
}

/// The clock state last reported by the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeState {
    #[default]
    Unknown,
    /// FRACSEC says locked and no PMU block reports a sync error.
    Locked,
    /// FRACSEC says unlocked, or a PMU block reports a sync error.
    Unlocked,
    /// FRACSEC reports a clock failure.
    Failed,
}

/// Counters of one PMU stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamStatistics {
    /// Whole frames with a correct CHK, of any type.
    pub frames: u64,
    pub data_frames: u64,
    pub config_frames: u64,
    /// Reporting instants on the k/Fs grid between received frames with no frame.
    pub missing: u64,
    /// Data frames older than one already received (including duplicates).
    pub out_of_order: u64,
    /// Frame-sized runs of bytes whose CHK did not match.
    pub crc_errors: u64,
    /// Frames with a correct CHK that could not be decoded (no configuration, size mismatch…).
    pub undecodable: u64,
    /// Bytes thrown away while resynchronising.
    pub discarded_bytes: u64,
    /// Configurations received whose content differs from the one before.
    pub config_changes: u64,
    pub latency: Latency,
    pub time_state: TimeState,
    /// Data frames whose time was not locked.
    pub unlocked_frames: u64,
    /// The index on the reporting grid of the newest data frame.
    #[serde(skip)]
    newest_slot: Option<i128>,
}

impl StreamStatistics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts a discard reported by the framer.
    pub fn record_discard(&mut self, bytes: usize, reason: DiscardReason) {
        if reason == DiscardReason::CrcMismatch {
            self.crc_errors += 1;
        }
        self.discarded_bytes += bytes as u64;
    }

    pub fn record_undecodable(&mut self) {
        self.frames += 1;
        self.undecodable += 1;
    }

    /// Counts a configuration frame; `changed` when it differs from the previous one.
    pub fn record_config(&mut self, changed: bool) {
        self.frames += 1;
        self.config_frames += 1;
        if changed {
            self.config_changes += 1;
        }
    }

    pub fn record_other(&mut self) {
        self.frames += 1;
    }

    /// Counts a data frame that arrived at `arrival` (seconds since the Unix epoch).
    pub fn record_data(&mut self, frame: &DataFrame, config: &ConfigFrame, arrival: f64) {
        self.frames += 1;
        self.data_frames += 1;
        let timestamp = frame.timestamp(config);
        self.latency.record(arrival - timestamp);

        if let Some(slot) = reporting_slot(frame, config) {
            match self.newest_slot {
                Some(newest) if slot <= newest => self.out_of_order += 1,
                Some(newest) => {
                    self.missing += u64::try_from(slot - newest - 1).unwrap_or(u64::MAX);
                    self.newest_slot = Some(slot);
                }
                None => self.newest_slot = Some(slot),
            }
        }

        let clock = frame.header.fracsec.quality().clock();
        let sync_error = frame.pmus.iter().any(|pmu| pmu.stat.sync_error());
        self.time_state = match clock {
            ClockState::Failure => TimeState::Failed,
            ClockState::Locked if !sync_error => TimeState::Locked,
            _ => TimeState::Unlocked,
        };
        if self.time_state != TimeState::Locked {
            self.unlocked_frames += 1;
        }
    }
}

/// The frame's index on the reporting grid: instants k/Fs s for Fs frames per second, or every
/// |rate| seconds when the rate is negative (C37.118.2 §4.6.2).
fn reporting_slot(frame: &DataFrame, config: &ConfigFrame) -> Option<i128> {
    let base = i128::from(config.time_base.base());
    let soc = i128::from(frame.header.soc);
    let count = i128::from(frame.header.fracsec.count());
    match config.data_rate.0 {
        0 => None,
        rate if rate > 0 => {
            let rate = i128::from(rate);
            // Round to the nearest slot: FRACSEC counts are rounded to TIME_BASE by the PMU.
            Some(soc * rate + (count * rate * 2 + base) / (2 * base))
        }
        rate => Some(soc / i128::from(rate).abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c37118::{
        CommonHeader, DataFormat, DataRate, FracSec, FrameType, Frequency, IdCode,
        NominalFrequency, PmuConfig, PmuData, Rocof, Stat, TimeBase, TimeQuality,
    };

    fn config(rate: i16) -> ConfigFrame {
        ConfigFrame {
            header: CommonHeader::new(FrameType::Cfg2, IdCode(7), 0, FracSec::from_raw(0)),
            time_base: TimeBase::new(1_000_000).expect("non-zero"),
            pmus: vec![PmuConfig {
                station: "S".into(),
                idcode: IdCode(7),
                format: DataFormat::new(false, false, false, false),
                phasors: vec![],
                analogs: vec![],
                digitals: vec![],
                nominal_frequency: NominalFrequency::Hz50,
                cfgcnt: 0,
                cfg3: None,
            }],
            data_rate: DataRate(rate),
        }
    }

    fn frame(soc: u32, micros: u32, quality: u8, stat: u16) -> DataFrame {
        DataFrame {
            header: CommonHeader::new(
                FrameType::Data,
                IdCode(7),
                soc,
                FracSec::new(TimeQuality::from_raw(quality), micros),
            ),
            pmus: vec![PmuData {
                stat: Stat(stat),
                phasors: vec![],
                frequency: Frequency::IntDeviation(0),
                rocof: Rocof::IntHundredths(0),
                analogs: vec![],
                digitals: vec![],
            }],
        }
    }

    #[test]
    fn counts_missing_and_out_of_order_frames_on_the_reporting_grid() {
        let config = config(50);
        let mut stats = StreamStatistics::new();
        // Slots 0, 1, then 4 (2 and 3 missing), then 2 late, then 4 again (duplicate).
        for micros in [0, 20_000, 80_000, 40_000, 80_000] {
            stats.record_data(&frame(100, micros, 0, 0), &config, 100.5);
        }
        assert_eq!(stats.data_frames, 5);
        assert_eq!(stats.missing, 2);
        assert_eq!(stats.out_of_order, 2);
        assert_eq!(stats.time_state, TimeState::Locked);
    }

    #[test]
    fn counts_missing_frames_across_a_second_boundary_and_slow_rates() {
        let mut stats = StreamStatistics::new();
        let config = config(10);
        stats.record_data(&frame(100, 900_000, 0, 0), &config, 101.0);
        stats.record_data(&frame(101, 100_000, 0, 0), &config, 101.2);
        assert_eq!(stats.missing, 1);

        let mut slow = StreamStatistics::new();
        let config = config_with_rate(-5);
        slow.record_data(&frame(100, 0, 0, 0), &config, 100.0);
        slow.record_data(&frame(115, 0, 0, 0), &config, 115.0);
        assert_eq!(slow.missing, 2);
    }

    fn config_with_rate(rate: i16) -> ConfigFrame {
        config(rate)
    }

    #[test]
    fn tracks_latency_and_clock_state() {
        let config = config(50);
        let mut stats = StreamStatistics::new();
        stats.record_data(&frame(100, 0, 0, 0), &config, 100.010);
        stats.record_data(&frame(100, 20_000, 0x05, 0), &config, 100.050);
        assert_eq!(stats.time_state, TimeState::Unlocked);
        stats.record_data(&frame(100, 40_000, 0, 1 << 13), &config, 100.060);
        assert_eq!(stats.time_state, TimeState::Unlocked);
        stats.record_data(&frame(100, 60_000, 0x0F, 0), &config, 100.070);
        assert_eq!(stats.time_state, TimeState::Failed);
        assert_eq!(stats.unlocked_frames, 3);
        assert!((stats.latency.min - 0.010).abs() < 1e-9);
        assert!((stats.latency.max - 0.030).abs() < 1e-9);
        assert!((stats.latency.mean - 0.0175).abs() < 1e-9);
    }
}
