//! Data frames (C37.118.2 Tables 5–6): one block per PMU of the stream's configuration, each with
//! STAT, phasors, frequency, ROCOF, analogs and digitals in the formats the configuration names.
//!
//! Values are kept exactly as sent (integer or float, rectangular or polar), so a frame
//! re-encodes to the same bytes; the `*_engineering` methods turn them into volts, amperes, hertz
//! and hertz per second with the channel's configuration.

use super::config::{AnalogScale, ConfigFrame, NominalFrequency, PhasorScale, PmuConfig};
use super::frame::{finish_frame, split_frame, CommonHeader, FrameType, IdCode};
use super::time::FracSec;
use super::wire::{Reader, WriteBe};
use super::{DecodeError, MIN_FRAME_LEN};

/// STAT bits 15–14.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    Good,
    /// 01: PMU error, no information about the data.
    PmuErrorNoInformation,
    /// 10: PMU in test mode, or absent data tags inserted by a PDC.
    TestMode,
    /// 11: PMU error, do not use the values.
    PmuErrorDoNotUse,
}

/// STAT bits 8–6: the PMU's own estimate of its time error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmuTimeQuality {
    /// 0: not used (a 2005 device).
    NotUsed,
    /// 1–6: the error is below 100 ns, 1 µs, 10 µs, 100 µs, 1 ms or 10 ms.
    Within { code: u8 },
    /// 7: above 10 ms, or unknown.
    Unknown,
}

impl PmuTimeQuality {
    /// The error bound in seconds, when the code gives one.
    pub fn max_error_seconds(self) -> Option<f64> {
        match self {
            Self::Within { code } => Some(10f64.powi(i32::from(code) - 8)),
            Self::NotUsed | Self::Unknown => None,
        }
    }
}

/// STAT bits 5–4: how long the PMU's clock has been unlocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockedTime {
    LessThan10s,
    From10To100s,
    From100To1000s,
    MoreThan1000s,
}

/// STAT bits 3–0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TriggerReason {
    Manual,
    MagnitudeLow,
    MagnitudeHigh,
    PhaseAngleDifference,
    Frequency,
    RateOfChangeOfFrequency,
    Digital,
    /// 6 is reserved; 8–15 are user-defined.
    Other(u8),
}

/// The STAT word of one PMU block. Every 16-bit value is a valid STAT; the accessors name its
/// fields as the 2011 standard defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat(pub u16);

impl Stat {
    pub fn data_error(self) -> DataError {
        match self.0 >> 14 {
            0 => DataError::Good,
            1 => DataError::PmuErrorNoInformation,
            2 => DataError::TestMode,
            _ => DataError::PmuErrorDoNotUse,
        }
    }
    /// Bit 13: the PMU has lost time synchronisation.
    pub fn sync_error(self) -> bool {
        self.0 & (1 << 13) != 0
    }
    /// Bit 12: data sorted by arrival rather than by timestamp.
    pub fn sorted_by_arrival(self) -> bool {
        self.0 & (1 << 12) != 0
    }
    /// Bit 11.
    pub fn trigger(self) -> bool {
        self.0 & (1 << 11) != 0
    }
    /// Bit 10: the configuration changes within a minute; fetch CFG-2 again.
    pub fn config_change(self) -> bool {
        self.0 & (1 << 10) != 0
    }
    /// Bit 9: data modified by post-processing.
    pub fn data_modified(self) -> bool {
        self.0 & (1 << 9) != 0
    }
    pub fn time_quality(self) -> PmuTimeQuality {
        match (self.0 >> 6) & 0x7 {
            0 => PmuTimeQuality::NotUsed,
            7 => PmuTimeQuality::Unknown,
            code => PmuTimeQuality::Within { code: code as u8 },
        }
    }
    pub fn unlocked_time(self) -> UnlockedTime {
        match (self.0 >> 4) & 0x3 {
            0 => UnlockedTime::LessThan10s,
            1 => UnlockedTime::From10To100s,
            2 => UnlockedTime::From100To1000s,
            _ => UnlockedTime::MoreThan1000s,
        }
    }
    pub fn trigger_reason(self) -> TriggerReason {
        match (self.0 & 0xF) as u8 {
            0 => TriggerReason::Manual,
            1 => TriggerReason::MagnitudeLow,
            2 => TriggerReason::MagnitudeHigh,
            3 => TriggerReason::PhaseAngleDifference,
            4 => TriggerReason::Frequency,
            5 => TriggerReason::RateOfChangeOfFrequency,
            7 => TriggerReason::Digital,
            other => TriggerReason::Other(other),
        }
    }
}

/// Integer "absent data" marker (C37.118.2 §6.3.1).
const ABSENT: i16 = i16::MIN;

/// A phasor exactly as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phasor {
    IntRectangular {
        re: i16,
        im: i16,
    },
    /// Angle in 10⁻⁴ rad.
    IntPolar {
        magnitude: u16,
        angle: i16,
    },
    FloatRectangular {
        re: f32,
        im: f32,
    },
    /// Angle in radians.
    FloatPolar {
        magnitude: f32,
        angle: f32,
    },
}

impl Phasor {
    /// Whether the value is the standard's "absent data" marker (0x8000 or NaN).
    pub fn is_absent(self) -> bool {
        match self {
            Self::IntRectangular { re, im } => re == ABSENT || im == ABSENT,
            Self::IntPolar { angle, .. } => angle == ABSENT,
            Self::FloatRectangular { re, im } => re.is_nan() || im.is_nan(),
            Self::FloatPolar { magnitude, angle } => magnitude.is_nan() || angle.is_nan(),
        }
    }

    /// The phasor in volts or amperes as `(re, im)`, or `None` when absent.
    pub fn to_engineering(self, scale: &PhasorScale) -> Option<(f64, f64)> {
        if self.is_absent() {
            return None;
        }
        // Magnitude factor and angle offset of the channel: PHUNIT scales integers only (floats
        // are already in engineering units); CFG-3 PHSCALE corrects both.
        let (factor, theta) = match (*scale, self) {
            (PhasorScale::Unit(unit), Self::IntRectangular { .. } | Self::IntPolar { .. }) => {
                (f64::from(unit.factor) * 1e-5, 0.0)
            }
            (PhasorScale::Unit(_), _) => (1.0, 0.0),
            (
                PhasorScale::Cfg3 {
                    magnitude_scale,
                    angle_offset,
                    ..
                },
                _,
            ) => (f64::from(magnitude_scale), f64::from(angle_offset)),
        };
        let (magnitude, angle) = match self {
            Self::IntRectangular { re, im } => {
                let (re, im) = (f64::from(re), f64::from(im));
                (re.hypot(im), im.atan2(re))
            }
            Self::IntPolar { magnitude, angle } => (f64::from(magnitude), f64::from(angle) * 1e-4),
            Self::FloatRectangular { re, im } => {
                let (re, im) = (f64::from(re), f64::from(im));
                (re.hypot(im), im.atan2(re))
            }
            Self::FloatPolar { magnitude, angle } => (f64::from(magnitude), f64::from(angle)),
        };
        if theta == 0.0 {
            // Keep rectangular values exact rather than round-tripping through polar.
            if let Self::IntRectangular { re, im } = self {
                return Some((f64::from(re) * factor, f64::from(im) * factor));
            }
            if let Self::FloatRectangular { re, im } = self {
                return Some((f64::from(re) * factor, f64::from(im) * factor));
            }
        }
        let magnitude = magnitude * factor;
        let angle = angle - theta;
        Some((magnitude * angle.cos(), magnitude * angle.sin()))
    }
}

/// FREQ as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Frequency {
    /// Deviation from nominal in mHz.
    IntDeviation(i16),
    /// Frequency in Hz.
    Float(f32),
}

impl Frequency {
    /// The absolute frequency in Hz, or `None` when absent.
    pub fn hertz(self, nominal: NominalFrequency) -> Option<f64> {
        match self {
            Self::IntDeviation(ABSENT) => None,
            Self::IntDeviation(millihertz) => Some(nominal.hertz() + f64::from(millihertz) / 1e3),
            Self::Float(hz) if hz.is_nan() => None,
            Self::Float(hz) => Some(f64::from(hz)),
        }
    }
}

/// DFREQ (ROCOF) as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rocof {
    /// Hz/s × 100.
    IntHundredths(i16),
    /// Hz/s.
    Float(f32),
}

impl Rocof {
    pub fn hertz_per_second(self) -> Option<f64> {
        match self {
            Self::IntHundredths(ABSENT) => None,
            Self::IntHundredths(value) => Some(f64::from(value) / 100.0),
            Self::Float(value) if value.is_nan() => None,
            Self::Float(value) => Some(f64::from(value)),
        }
    }
}

/// An analog value as sent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Analog {
    Int(i16),
    Float(f32),
}

impl Analog {
    pub fn to_engineering(self, scale: &AnalogScale) -> Option<f64> {
        let raw = match self {
            Self::Int(ABSENT) => return None,
            Self::Int(value) => f64::from(value),
            Self::Float(value) if value.is_nan() => return None,
            Self::Float(value) => f64::from(value),
        };
        Some(match (*scale, self) {
            // ANUNIT's 24-bit factor is user-defined scaling for integers. A factor of 0 would
            // make every reading 0, which no device means: such values are reported unscaled.
            (AnalogScale::Unit(unit), Self::Int(_)) if unit.scale != 0 => {
                raw * f64::from(unit.scale)
            }
            (AnalogScale::Unit(_), _) => raw,
            (AnalogScale::Cfg3 { magnitude, offset }, _) => {
                raw * f64::from(magnitude) + f64::from(offset)
            }
        })
    }
}

/// One PMU's block of a data frame.
#[derive(Debug, Clone, PartialEq)]
pub struct PmuData {
    pub stat: Stat,
    pub phasors: Vec<Phasor>,
    pub frequency: Frequency,
    pub rocof: Rocof,
    pub analogs: Vec<Analog>,
    pub digitals: Vec<u16>,
}

/// A data frame must be exactly as long as its configuration says, so a stale configuration is
/// detected rather than misread.
fn check_size(
    header: &CommonHeader,
    payload: &[u8],
    config: &ConfigFrame,
) -> Result<(), DecodeError> {
    let expected = config.data_frame_len();
    let actual = payload.len() + MIN_FRAME_LEN;
    if expected != actual {
        return Err(DecodeError::DataSizeMismatch {
            idcode: header.idcode.0,
            cfgcnt: config.pmus.first().map_or(0, |pmu| pmu.cfgcnt),
            expected,
            actual,
        });
    }
    Ok(())
}

/// A decoded data frame. Its blocks are in the order of the configuration's PMUs.
#[derive(Debug, Clone, PartialEq)]
pub struct DataFrame {
    pub header: CommonHeader,
    pub pmus: Vec<PmuData>,
}

impl PmuData {
    fn empty() -> Self {
        Self {
            stat: Stat(0),
            phasors: Vec::new(),
            frequency: Frequency::IntDeviation(0),
            rocof: Rocof::IntHundredths(0),
            analogs: Vec::new(),
            digitals: Vec::new(),
        }
    }

    fn decode(reader: &mut Reader<'_>, config: &PmuConfig) -> Result<Self, DecodeError> {
        let mut block = Self {
            phasors: Vec::with_capacity(config.phasors.len()),
            analogs: Vec::with_capacity(config.analogs.len()),
            digitals: Vec::with_capacity(config.digitals.len()),
            ..Self::empty()
        };
        block.decode_in_place(reader, config)?;
        Ok(block)
    }

    /// Overwrites this block with the next one in `reader`, keeping its allocations.
    fn decode_in_place(
        &mut self,
        reader: &mut Reader<'_>,
        config: &PmuConfig,
    ) -> Result<(), DecodeError> {
        // One bounds check for the whole block; the fields are then cut from it by the sizes
        // the configuration gives, with exact-size chunks the compiler reads without checks.
        let offset = reader.position();
        let block = reader.take(config.data_block_len())?;
        let format = config.format;
        let truncated = || DecodeError::Truncated {
            offset,
            needed: config.data_block_len(),
            available: block.len(),
        };
        let phasor_len = if format.phasor_float() { 8 } else { 4 };
        let freq_len = if format.freq_float() { 4 } else { 2 };
        let analog_len = if format.analog_float() { 4 } else { 2 };
        let (stat, rest) = block.split_at_checked(2).ok_or_else(truncated)?;
        let (phasors, rest) = rest
            .split_at_checked(config.phasors.len() * phasor_len)
            .ok_or_else(truncated)?;
        let (frequency, rest) = rest.split_at_checked(2 * freq_len).ok_or_else(truncated)?;
        let (analogs, digitals) = rest
            .split_at_checked(config.analogs.len() * analog_len)
            .ok_or_else(truncated)?;

        self.stat = Stat(u16::from_be_bytes([stat[0], stat[1]]));
        self.phasors.clear();
        let chunks = phasors.chunks_exact(phasor_len);
        match (format.phasor_float(), format.polar()) {
            (false, false) => self.phasors.extend(chunks.map(|c| Phasor::IntRectangular {
                re: i16::from_be_bytes([c[0], c[1]]),
                im: i16::from_be_bytes([c[2], c[3]]),
            })),
            (false, true) => self.phasors.extend(chunks.map(|c| Phasor::IntPolar {
                magnitude: u16::from_be_bytes([c[0], c[1]]),
                angle: i16::from_be_bytes([c[2], c[3]]),
            })),
            (true, false) => self
                .phasors
                .extend(chunks.map(|c| Phasor::FloatRectangular {
                    re: f32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                    im: f32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                })),
            (true, true) => self.phasors.extend(chunks.map(|c| Phasor::FloatPolar {
                magnitude: f32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                angle: f32::from_be_bytes([c[4], c[5], c[6], c[7]]),
            })),
        }
        let f = frequency;
        (self.frequency, self.rocof) = if format.freq_float() {
            (
                Frequency::Float(f32::from_be_bytes([f[0], f[1], f[2], f[3]])),
                Rocof::Float(f32::from_be_bytes([f[4], f[5], f[6], f[7]])),
            )
        } else {
            (
                Frequency::IntDeviation(i16::from_be_bytes([f[0], f[1]])),
                Rocof::IntHundredths(i16::from_be_bytes([f[2], f[3]])),
            )
        };
        self.analogs.clear();
        let chunks = analogs.chunks_exact(analog_len);
        if format.analog_float() {
            self.analogs.extend(
                chunks.map(|c| Analog::Float(f32::from_be_bytes([c[0], c[1], c[2], c[3]]))),
            );
        } else {
            self.analogs
                .extend(chunks.map(|c| Analog::Int(i16::from_be_bytes([c[0], c[1]]))));
        }
        self.digitals.clear();
        self.digitals.extend(
            digitals
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]])),
        );
        Ok(())
    }

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u16(self.stat.0);
        for phasor in &self.phasors {
            match *phasor {
                Phasor::IntRectangular { re, im } => {
                    out.put_i16(re);
                    out.put_i16(im);
                }
                Phasor::IntPolar { magnitude, angle } => {
                    out.put_u16(magnitude);
                    out.put_i16(angle);
                }
                Phasor::FloatRectangular { re, im } => {
                    out.put_f32(re);
                    out.put_f32(im);
                }
                Phasor::FloatPolar { magnitude, angle } => {
                    out.put_f32(magnitude);
                    out.put_f32(angle);
                }
            }
        }
        match self.frequency {
            Frequency::IntDeviation(value) => out.put_i16(value),
            Frequency::Float(value) => out.put_f32(value),
        }
        match self.rocof {
            Rocof::IntHundredths(value) => out.put_i16(value),
            Rocof::Float(value) => out.put_f32(value),
        }
        for analog in &self.analogs {
            match *analog {
                Analog::Int(value) => out.put_i16(value),
                Analog::Float(value) => out.put_f32(value),
            }
        }
        for digital in &self.digitals {
            out.put_u16(*digital);
        }
    }
}

impl DataFrame {
    /// Decodes a data frame's payload with the configuration of its stream. The payload must
    /// be exactly as long as the configuration says, so a stale configuration is detected
    /// rather than misread.
    pub(crate) fn decode(
        header: CommonHeader,
        payload: &[u8],
        config: &ConfigFrame,
    ) -> Result<Self, DecodeError> {
        check_size(&header, payload, config)?;
        let mut reader = Reader::new(payload);
        let mut pmus = Vec::with_capacity(config.pmus.len());
        for pmu in &config.pmus {
            pmus.push(PmuData::decode(&mut reader, pmu)?);
        }
        Ok(Self { header, pmus })
    }

    /// An empty frame to decode into with [`decode_into`](Self::decode_into).
    pub fn empty() -> Self {
        Self {
            header: CommonHeader::new(FrameType::Data, IdCode(0), 0, FracSec::from_raw(0)),
            pmus: Vec::new(),
        }
    }

    /// Decodes the whole data frame `bytes` into `self`, reusing its allocations: the hot path
    /// of a stream, where every frame has the layout of the one before. On error `self` holds
    /// no meaningful frame.
    pub fn decode_into(&mut self, bytes: &[u8], config: &ConfigFrame) -> Result<(), DecodeError> {
        let (header, payload) = split_frame(bytes)?;
        if header.frame_type != FrameType::Data {
            return Err(DecodeError::UnexpectedFrameType {
                expected: FrameType::Data.name(),
                found: header.frame_type.name(),
            });
        }
        check_size(&header, payload, config)?;
        self.header = header;
        self.pmus.resize_with(config.pmus.len(), PmuData::empty);
        let mut reader = Reader::new(payload);
        for (block, pmu) in self.pmus.iter_mut().zip(&config.pmus) {
            block.decode_in_place(&mut reader, pmu)?;
        }
        Ok(())
    }

    /// Encodes the frame. The values carry their own formats, so no configuration is needed;
    /// the caller is responsible for matching the configuration it announced.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = self.header.start_frame(64);
        for pmu in &self.pmus {
            pmu.encode(&mut out);
        }
        finish_frame(out)
    }

    /// The frame's time in seconds since the epoch, with the stream's TIME_BASE.
    pub fn timestamp(&self, config: &ConfigFrame) -> f64 {
        f64::from(self.header.soc)
            + f64::from(self.header.fracsec.count()) / f64::from(config.time_base.base())
    }
}
