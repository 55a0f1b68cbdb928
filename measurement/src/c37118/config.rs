//! Configuration frames: CFG-1 and CFG-2 (C37.118.2 Tables 8–9) and CFG-3 (Tables 10–12), with
//! the reassembly of CFG-3 sent in fragments.
//!
//! A configuration says how to read the data frames of its stream: how many PMU blocks, in which
//! number formats, with how many channels, and how to scale integers into volts, amperes and
//! hertz. Channels are grouped with their names and units, so a PMU's counts always agree with
//! its names and units by construction.

use super::frame::{finish_frame, CommonHeader, FrameType, IdCode};
use super::wire::{Reader, WriteBe};
use super::{DecodeError, MIN_FRAME_LEN};

/// Which configuration frame this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// What the PMU can send.
    Cfg1,
    /// What the PMU is sending now: the one to decode data frames with.
    Cfg2,
    /// The 2011 extended configuration: what CFG-2 says plus scaling, position and service class.
    Cfg3,
}

/// TIME_BASE: the number of FRACSEC counts in a second (24 bits), with 8 reserved flag bits kept
/// as sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeBase {
    raw: u32,
}

impl TimeBase {
    /// Returns `None` when the 24-bit base is zero, which would make every timestamp undefined.
    pub fn new(raw: u32) -> Option<Self> {
        (raw & 0x00FF_FFFF != 0).then_some(Self { raw })
    }

    pub fn raw(self) -> u32 {
        self.raw
    }

    /// Counts per second.
    pub fn base(self) -> u32 {
        self.raw & 0x00FF_FFFF
    }
}

/// FORMAT: the number formats of one PMU's data block (bits 3–0; bits 15–4 are kept as sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFormat {
    raw: u16,
}

impl DataFormat {
    pub fn from_raw(raw: u16) -> Self {
        Self { raw }
    }

    pub fn new(polar: bool, phasor_float: bool, analog_float: bool, freq_float: bool) -> Self {
        Self {
            raw: u16::from(polar)
                | (u16::from(phasor_float) << 1)
                | (u16::from(analog_float) << 2)
                | (u16::from(freq_float) << 3),
        }
    }

    pub fn raw(self) -> u16 {
        self.raw
    }
    /// Phasors are magnitude and angle rather than real and imaginary.
    pub fn polar(self) -> bool {
        self.raw & 0x1 != 0
    }
    pub fn phasor_float(self) -> bool {
        self.raw & 0x2 != 0
    }
    pub fn analog_float(self) -> bool {
        self.raw & 0x4 != 0
    }
    /// FREQ and DFREQ are f32 rather than i16.
    pub fn freq_float(self) -> bool {
        self.raw & 0x8 != 0
    }
}

/// What a phasor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhasorQuantity {
    Voltage,
    Current,
}

/// PHUNIT of CFG-1/CFG-2: the quantity and 10⁻⁵ V or A per integer count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PhasorUnit {
    pub quantity: PhasorQuantity,
    /// Low 24 bits: the scale in 10⁻⁵ units per count (ignored for float phasors).
    pub factor: u32,
}

impl PhasorUnit {
    fn from_raw(raw: u32) -> Self {
        Self {
            quantity: if raw >> 24 == 0 {
                PhasorQuantity::Voltage
            } else {
                PhasorQuantity::Current
            },
            factor: raw & 0x00FF_FFFF,
        }
    }

    fn raw(self) -> u32 {
        let kind = match self.quantity {
            PhasorQuantity::Voltage => 0,
            PhasorQuantity::Current => 1,
        };
        (kind << 24) | (self.factor & 0x00FF_FFFF)
    }
}

/// How a phasor channel's values become volts or amperes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PhasorScale {
    /// CFG-1/CFG-2 PHUNIT.
    Unit(PhasorUnit),
    /// CFG-3 PHSCALE: X′ = Y·Xm·e^{j(φ−θ)}.
    Cfg3 {
        /// Bits saying how the phasor was modified (up-sampled, filtered, calibrated, …).
        modification: u16,
        /// Phasor type: bit 3 set = current; bits 2–0 = component (zero, positive, negative
        /// sequence, phase A, B, C).
        phasor_type: u8,
        user: u8,
        magnitude_scale: f32,
        /// θ in radians.
        angle_offset: f32,
    },
}

impl PhasorScale {
    pub fn quantity(&self) -> PhasorQuantity {
        match self {
            Self::Unit(unit) => unit.quantity,
            Self::Cfg3 { phasor_type, .. } => {
                if phasor_type & 0x08 != 0 {
                    PhasorQuantity::Current
                } else {
                    PhasorQuantity::Voltage
                }
            }
        }
    }
}

/// ANUNIT of CFG-1/CFG-2: what an analog value is and a user-defined signed 24-bit scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnalogUnit {
    pub kind: AnalogKind,
    pub scale: i32,
}

/// The analog value's kind (ANUNIT most significant byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnalogKind {
    PointOnWave,
    Rms,
    Peak,
    /// 3–255: reserved or user-defined codes, kept as sent.
    Other(u8),
}

impl AnalogUnit {
    fn from_raw(raw: u32) -> Self {
        let kind = match (raw >> 24) as u8 {
            0 => AnalogKind::PointOnWave,
            1 => AnalogKind::Rms,
            2 => AnalogKind::Peak,
            code => AnalogKind::Other(code),
        };
        // Sign-extend the low 24 bits.
        let scale = ((raw << 8) as i32) >> 8;
        Self { kind, scale }
    }

    fn raw(self) -> u32 {
        let kind: u32 = match self.kind {
            AnalogKind::PointOnWave => 0,
            AnalogKind::Rms => 1,
            AnalogKind::Peak => 2,
            AnalogKind::Other(code) => u32::from(code),
        };
        (kind << 24) | (self.scale as u32 & 0x00FF_FFFF)
    }
}

/// How an analog channel's values become engineering units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnalogScale {
    Unit(AnalogUnit),
    /// CFG-3 ANSCALE: X′ = M·X + B.
    Cfg3 {
        magnitude: f32,
        offset: f32,
    },
}

/// DIGUNIT: the normal state and the valid-input mask of one 16-bit digital word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitalUnit {
    pub normal: u16,
    pub valid: u16,
}

/// FNOM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NominalFrequency {
    Hz50,
    Hz60,
}

impl NominalFrequency {
    fn from_raw(raw: u16) -> Self {
        if raw & 1 == 1 {
            Self::Hz50
        } else {
            Self::Hz60
        }
    }
    fn raw(self) -> u16 {
        match self {
            Self::Hz50 => 1,
            Self::Hz60 => 0,
        }
    }
    pub fn hertz(self) -> f64 {
        match self {
            Self::Hz50 => 50.0,
            Self::Hz60 => 60.0,
        }
    }
}

/// DATA_RATE: frames per second when positive, seconds per frame when negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataRate(pub i16);

impl DataRate {
    /// Frames per second; `None` for the meaningless rate 0.
    pub fn frames_per_second(self) -> Option<f64> {
        match self.0 {
            0 => None,
            rate if rate > 0 => Some(f64::from(rate)),
            rate => Some(1.0 / -f64::from(rate)),
        }
    }
}

/// M or P class (CFG-3 SVC_CLASS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceClass {
    M,
    P,
    Other(u8),
}

/// The CFG-3 fields CFG-1 and CFG-2 do not have.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cfg3Pmu {
    pub global_pmu_id: [u8; 16],
    /// Degrees; +∞ when unspecified.
    pub latitude: f32,
    pub longitude: f32,
    /// Metres; +∞ when unspecified.
    pub elevation: f32,
    pub service_class: ServiceClass,
    /// Measurement window, µs.
    pub window: i32,
    /// Group delay, µs.
    pub group_delay: i32,
}

/// A phasor channel.
#[derive(Debug, Clone, PartialEq)]
pub struct PhasorChannel {
    pub name: String,
    pub scale: PhasorScale,
}

/// An analog channel.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalogChannel {
    pub name: String,
    pub scale: AnalogScale,
}

/// A 16-bit digital word: one name per bit, starting at bit 0.
#[derive(Debug, Clone, PartialEq)]
pub struct DigitalWord {
    pub names: [String; 16],
    pub unit: DigitalUnit,
}

/// One PMU (data source) of a configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct PmuConfig {
    pub station: String,
    /// The data source's IDCODE, which may differ from the stream's.
    pub idcode: IdCode,
    pub format: DataFormat,
    pub phasors: Vec<PhasorChannel>,
    pub analogs: Vec<AnalogChannel>,
    pub digitals: Vec<DigitalWord>,
    pub nominal_frequency: NominalFrequency,
    pub cfgcnt: u16,
    /// Present exactly when the configuration is a CFG-3.
    pub cfg3: Option<Cfg3Pmu>,
}

impl PmuConfig {
    /// Bytes this PMU takes in a data frame.
    pub fn data_block_len(&self) -> usize {
        let phasor = if self.format.phasor_float() { 8 } else { 4 };
        let freq = if self.format.freq_float() { 4 } else { 2 };
        let analog = if self.format.analog_float() { 4 } else { 2 };
        2 + self.phasors.len() * phasor
            + 2 * freq
            + self.analogs.len() * analog
            + 2 * self.digitals.len()
    }

    /// Digital channel names, 16 per word, bit 0 first.
    pub fn digital_names(&self) -> impl Iterator<Item = &str> {
        self.digitals
            .iter()
            .flat_map(|word| word.names.iter().map(String::as_str))
    }
}

/// A decoded CFG-1, CFG-2 or CFG-3.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigFrame {
    pub header: CommonHeader,
    pub time_base: TimeBase,
    pub pmus: Vec<PmuConfig>,
    pub data_rate: DataRate,
}

/// The most PMUs or channels a configuration can declare and still fit in 65535 bytes is far
/// below u16::MAX; reading counts this large means the frame is lying about its contents.
fn check_count(reader: &Reader<'_>, count: usize, bytes_each: usize) -> Result<(), DecodeError> {
    let needed = count.saturating_mul(bytes_each);
    if needed > reader.remaining() {
        return Err(DecodeError::Truncated {
            offset: reader.position(),
            needed,
            available: reader.remaining(),
        });
    }
    Ok(())
}

fn fixed_name(bytes: &[u8]) -> String {
    // The standard says ASCII padded with spaces; devices also pad with NUL.
    String::from_utf8_lossy(bytes)
        .trim_end_matches([' ', '\0'])
        .to_owned()
}

fn put_fixed_name(out: &mut Vec<u8>, name: &str) -> Result<(), DecodeError> {
    if name.len() > 16 {
        return Err(DecodeError::NameTooLong {
            length: name.len(),
            limit: 16,
        });
    }
    out.extend_from_slice(name.as_bytes());
    out.resize(out.len() + 16 - name.len(), b' ');
    Ok(())
}

fn read_counted_name(reader: &mut Reader<'_>) -> Result<String, DecodeError> {
    let length = reader.u8()?;
    Ok(String::from_utf8_lossy(reader.take(usize::from(length))?).into_owned())
}

fn put_counted_name(out: &mut Vec<u8>, name: &str) -> Result<(), DecodeError> {
    let length = u8::try_from(name.len()).map_err(|_| DecodeError::NameTooLong {
        length: name.len(),
        limit: 255,
    })?;
    out.put_u8(length);
    out.extend_from_slice(name.as_bytes());
    Ok(())
}

fn read_time_base(reader: &mut Reader<'_>) -> Result<TimeBase, DecodeError> {
    TimeBase::new(reader.u32()?).ok_or(DecodeError::ZeroTimeBase)
}

/// Channel counts as read, before the names and units that follow them.
struct Counts {
    phasors: usize,
    analogs: usize,
    digitals: usize,
}

impl Counts {
    fn read(reader: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            phasors: usize::from(reader.u16()?),
            analogs: usize::from(reader.u16()?),
            digitals: usize::from(reader.u16()?),
        })
    }

    fn names(&self) -> usize {
        self.phasors + self.analogs + 16 * self.digitals
    }
}

fn put_counts(out: &mut Vec<u8>, pmu: &PmuConfig, index: usize) -> Result<(), DecodeError> {
    let count = |n: usize| {
        u16::try_from(n).map_err(|_| DecodeError::InconsistentPmu {
            pmu: index,
            detail: "more than 65535 channels",
        })
    };
    out.put_u16(count(pmu.phasors.len())?);
    out.put_u16(count(pmu.analogs.len())?);
    out.put_u16(count(pmu.digitals.len())?);
    Ok(())
}

fn read_digital_unit(reader: &mut Reader<'_>) -> Result<DigitalUnit, DecodeError> {
    Ok(DigitalUnit {
        normal: reader.u16()?,
        valid: reader.u16()?,
    })
}

fn assemble_digitals(
    mut names: std::vec::IntoIter<String>,
    units: Vec<DigitalUnit>,
) -> Vec<DigitalWord> {
    units
        .into_iter()
        .map(|unit| DigitalWord {
            names: std::array::from_fn(|_| names.next().unwrap_or_default()),
            unit,
        })
        .collect()
}

impl ConfigFrame {
    pub fn kind(&self) -> ConfigKind {
        match self.header.frame_type {
            FrameType::Cfg1 => ConfigKind::Cfg1,
            FrameType::Cfg3 => ConfigKind::Cfg3,
            _ => ConfigKind::Cfg2,
        }
    }

    /// The PMU whose data-source IDCODE is `idcode`.
    pub fn pmu(&self, idcode: IdCode) -> Option<&PmuConfig> {
        self.pmus.iter().find(|pmu| pmu.idcode == idcode)
    }

    /// Bytes a data frame of this configuration takes, CHK included.
    pub fn data_frame_len(&self) -> usize {
        MIN_FRAME_LEN
            + self
                .pmus
                .iter()
                .map(PmuConfig::data_block_len)
                .sum::<usize>()
    }

    /// Decodes the payload of a CFG-1 or CFG-2 (everything between FRACSEC and CHK).
    pub(crate) fn decode_cfg12(header: CommonHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(payload);
        let time_base = read_time_base(&mut reader)?;
        let num_pmu = usize::from(reader.u16()?);
        if num_pmu == 0 {
            return Err(DecodeError::NoPmus);
        }
        // The smallest PMU entry is 30 bytes (STN 16, IDCODE, FORMAT, 3 counts, FNOM, CFGCNT).
        check_count(&reader, num_pmu, 30)?;
        let mut pmus = Vec::with_capacity(num_pmu);
        for _ in 0..num_pmu {
            let station = fixed_name(reader.take(16)?);
            let idcode = IdCode(reader.u16()?);
            let format = DataFormat::from_raw(reader.u16()?);
            let counts = Counts::read(&mut reader)?;
            check_count(&reader, counts.names(), 16)?;
            let mut names = Vec::with_capacity(counts.names());
            for _ in 0..counts.names() {
                names.push(fixed_name(reader.take(16)?));
            }
            check_count(
                &reader,
                counts.phasors + counts.analogs + counts.digitals,
                4,
            )?;
            let mut names = names.into_iter();
            let mut phasors = Vec::with_capacity(counts.phasors);
            for _ in 0..counts.phasors {
                phasors.push(PhasorChannel {
                    name: names.next().unwrap_or_default(),
                    scale: PhasorScale::Unit(PhasorUnit::from_raw(reader.u32()?)),
                });
            }
            let mut analogs = Vec::with_capacity(counts.analogs);
            for _ in 0..counts.analogs {
                analogs.push(AnalogChannel {
                    name: names.next().unwrap_or_default(),
                    scale: AnalogScale::Unit(AnalogUnit::from_raw(reader.u32()?)),
                });
            }
            let mut units = Vec::with_capacity(counts.digitals);
            for _ in 0..counts.digitals {
                units.push(read_digital_unit(&mut reader)?);
            }
            let digitals = assemble_digitals(names, units);
            let nominal_frequency = NominalFrequency::from_raw(reader.u16()?);
            let cfgcnt = reader.u16()?;
            pmus.push(PmuConfig {
                station,
                idcode,
                format,
                phasors,
                analogs,
                digitals,
                nominal_frequency,
                cfgcnt,
                cfg3: None,
            });
        }
        let data_rate = DataRate(reader.i16()?);
        if reader.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                frame: "configuration",
                extra: reader.remaining(),
            });
        }
        Ok(Self {
            header,
            time_base,
            pmus,
            data_rate,
        })
    }

    /// Decodes the body of a CFG-3 (after CONT_IDX, all fragments joined).
    pub(crate) fn decode_cfg3(header: CommonHeader, body: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(body);
        let time_base = read_time_base(&mut reader)?;
        let num_pmu = usize::from(reader.u16()?);
        if num_pmu == 0 {
            return Err(DecodeError::NoPmus);
        }
        // The smallest CFG-3 PMU entry is 52 bytes (an empty STN, IDCODE, G_PMU_ID, FORMAT, three
        // counts, position, SVC_CLASS, WINDOW, GRP_DLY, FNOM, CFGCNT).
        check_count(&reader, num_pmu, 52)?;
        let mut pmus = Vec::with_capacity(num_pmu);
        for _ in 0..num_pmu {
            let station = read_counted_name(&mut reader)?;
            let idcode = IdCode(reader.u16()?);
            let global_pmu_id = reader.array::<16>()?;
            let format = DataFormat::from_raw(reader.u16()?);
            let counts = Counts::read(&mut reader)?;
            check_count(&reader, counts.names(), 1)?;
            let mut names = Vec::with_capacity(counts.names());
            for _ in 0..counts.names() {
                names.push(read_counted_name(&mut reader)?);
            }
            check_count(
                &reader,
                counts.phasors * 12 + counts.analogs * 8 + counts.digitals * 4,
                1,
            )?;
            let mut names = names.into_iter();
            let mut phasors = Vec::with_capacity(counts.phasors);
            for _ in 0..counts.phasors {
                let modification = reader.u16()?;
                let phasor_type = reader.u8()?;
                let user = reader.u8()?;
                let magnitude_scale = reader.f32()?;
                let angle_offset = reader.f32()?;
                phasors.push(PhasorChannel {
                    name: names.next().unwrap_or_default(),
                    scale: PhasorScale::Cfg3 {
                        modification,
                        phasor_type,
                        user,
                        magnitude_scale,
                        angle_offset,
                    },
                });
            }
            let mut analogs = Vec::with_capacity(counts.analogs);
            for _ in 0..counts.analogs {
                let magnitude = reader.f32()?;
                let offset = reader.f32()?;
                analogs.push(AnalogChannel {
                    name: names.next().unwrap_or_default(),
                    scale: AnalogScale::Cfg3 { magnitude, offset },
                });
            }
            let mut units = Vec::with_capacity(counts.digitals);
            for _ in 0..counts.digitals {
                units.push(read_digital_unit(&mut reader)?);
            }
            let digitals = assemble_digitals(names, units);
            let latitude = reader.f32()?;
            let longitude = reader.f32()?;
            let elevation = reader.f32()?;
            let service_class = match reader.u8()? {
                b'M' => ServiceClass::M,
                b'P' => ServiceClass::P,
                other => ServiceClass::Other(other),
            };
            let window = reader.i32()?;
            let group_delay = reader.i32()?;
            let nominal_frequency = NominalFrequency::from_raw(reader.u16()?);
            let cfgcnt = reader.u16()?;
            pmus.push(PmuConfig {
                station,
                idcode,
                format,
                phasors,
                analogs,
                digitals,
                nominal_frequency,
                cfgcnt,
                cfg3: Some(Cfg3Pmu {
                    global_pmu_id,
                    latitude,
                    longitude,
                    elevation,
                    service_class,
                    window,
                    group_delay,
                }),
            });
        }
        let data_rate = DataRate(reader.i16()?);
        if reader.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                frame: "CFG-3",
                extra: reader.remaining(),
            });
        }
        Ok(Self {
            header,
            time_base,
            pmus,
            data_rate,
        })
    }

    /// Encodes a CFG-1 or CFG-2 as one frame, or a CFG-3 as one unfragmented frame.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        match self.kind() {
            ConfigKind::Cfg3 => {
                let body = self.encode_cfg3_body()?;
                Cfg3Fragment {
                    header: self.header,
                    cont_idx: 0,
                    payload: body,
                }
                .encode()
            }
            ConfigKind::Cfg1 | ConfigKind::Cfg2 => self.encode_cfg12(),
        }
    }

    /// Encodes a CFG-3 in as many fragments as needed for no frame to exceed `max_frame_len`
    /// bytes (at least 19: one payload byte per fragment).
    pub fn encode_cfg3_fragments(&self, max_frame_len: usize) -> Result<Vec<Vec<u8>>, DecodeError> {
        let body = self.encode_cfg3_body()?;
        let whole_len = MIN_FRAME_LEN + 2 + body.len();
        if whole_len <= max_frame_len {
            return Ok(vec![self.encode()?]);
        }
        let capacity = max_frame_len.saturating_sub(MIN_FRAME_LEN + 2);
        if capacity == 0 {
            return Err(DecodeError::FrameSizeTooSmall {
                declared: u16::try_from(max_frame_len).unwrap_or(u16::MAX),
            });
        }
        let chunks: Vec<&[u8]> = body.chunks(capacity).collect();
        let last = chunks.len() - 1;
        chunks
            .iter()
            .enumerate()
            .map(|(index, chunk)| {
                let cont_idx = if index == last {
                    0xFFFF
                } else {
                    u16::try_from(index + 1)
                        .map_err(|_| DecodeError::FrameTooLarge { length: body.len() })?
                };
                Cfg3Fragment {
                    header: self.header,
                    cont_idx,
                    payload: chunk.to_vec(),
                }
                .encode()
            })
            .collect()
    }

    fn encode_cfg12(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = self.header.start_frame(512);
        out.put_u32(self.time_base.raw());
        out.put_u16(self.pmu_count()?);
        for (index, pmu) in self.pmus.iter().enumerate() {
            put_fixed_name(&mut out, &pmu.station)?;
            out.put_u16(pmu.idcode.0);
            out.put_u16(pmu.format.raw());
            put_counts(&mut out, pmu, index)?;
            for channel in &pmu.phasors {
                put_fixed_name(&mut out, &channel.name)?;
            }
            for channel in &pmu.analogs {
                put_fixed_name(&mut out, &channel.name)?;
            }
            for name in pmu.digital_names() {
                put_fixed_name(&mut out, name)?;
            }
            for channel in &pmu.phasors {
                let PhasorScale::Unit(unit) = channel.scale else {
                    return Err(DecodeError::InconsistentPmu {
                        pmu: index,
                        detail: "CFG-1/CFG-2 phasor channel carries a CFG-3 PHSCALE",
                    });
                };
                out.put_u32(unit.raw());
            }
            for channel in &pmu.analogs {
                let AnalogScale::Unit(unit) = channel.scale else {
                    return Err(DecodeError::InconsistentPmu {
                        pmu: index,
                        detail: "CFG-1/CFG-2 analog channel carries a CFG-3 ANSCALE",
                    });
                };
                out.put_u32(unit.raw());
            }
            for word in &pmu.digitals {
                out.put_u16(word.unit.normal);
                out.put_u16(word.unit.valid);
            }
            out.put_u16(pmu.nominal_frequency.raw());
            out.put_u16(pmu.cfgcnt);
        }
        out.put_i16(self.data_rate.0);
        finish_frame(out)
    }

    fn pmu_count(&self) -> Result<u16, DecodeError> {
        if self.pmus.is_empty() {
            return Err(DecodeError::NoPmus);
        }
        u16::try_from(self.pmus.len()).map_err(|_| DecodeError::FrameTooLarge {
            length: self.pmus.len(),
        })
    }

    fn encode_cfg3_body(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = Vec::with_capacity(512);
        out.put_u32(self.time_base.raw());
        out.put_u16(self.pmu_count()?);
        for (index, pmu) in self.pmus.iter().enumerate() {
            let extra = pmu.cfg3.ok_or(DecodeError::InconsistentPmu {
                pmu: index,
                detail: "CFG-3 PMU lacks its CFG-3 fields",
            })?;
            put_counted_name(&mut out, &pmu.station)?;
            out.put_u16(pmu.idcode.0);
            out.extend_from_slice(&extra.global_pmu_id);
            out.put_u16(pmu.format.raw());
            put_counts(&mut out, pmu, index)?;
            for channel in &pmu.phasors {
                put_counted_name(&mut out, &channel.name)?;
            }
            for channel in &pmu.analogs {
                put_counted_name(&mut out, &channel.name)?;
            }
            for name in pmu.digital_names() {
                put_counted_name(&mut out, name)?;
            }
            for channel in &pmu.phasors {
                let PhasorScale::Cfg3 {
                    modification,
                    phasor_type,
                    user,
                    magnitude_scale,
                    angle_offset,
                } = channel.scale
                else {
                    return Err(DecodeError::InconsistentPmu {
                        pmu: index,
                        detail: "CFG-3 phasor channel carries a CFG-1/CFG-2 PHUNIT",
                    });
                };
                out.put_u16(modification);
                out.put_u8(phasor_type);
                out.put_u8(user);
                out.put_f32(magnitude_scale);
                out.put_f32(angle_offset);
            }
            for channel in &pmu.analogs {
                let AnalogScale::Cfg3 { magnitude, offset } = channel.scale else {
                    return Err(DecodeError::InconsistentPmu {
                        pmu: index,
                        detail: "CFG-3 analog channel carries a CFG-1/CFG-2 ANUNIT",
                    });
                };
                out.put_f32(magnitude);
                out.put_f32(offset);
            }
            for word in &pmu.digitals {
                out.put_u16(word.unit.normal);
                out.put_u16(word.unit.valid);
            }
            out.put_f32(extra.latitude);
            out.put_f32(extra.longitude);
            out.put_f32(extra.elevation);
            out.put_u8(match extra.service_class {
                ServiceClass::M => b'M',
                ServiceClass::P => b'P',
                ServiceClass::Other(code) => code,
            });
            out.put_i32(extra.window);
            out.put_i32(extra.group_delay);
            out.put_u16(pmu.nominal_frequency.raw());
            out.put_u16(pmu.cfgcnt);
        }
        out.put_i16(self.data_rate.0);
        Ok(out)
    }
}

/// One CFG-3 frame as sent: CONT_IDX and its share of the configuration's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cfg3Fragment {
    pub header: CommonHeader,
    /// 0 = the only frame; 1 = the first of several; 2… = the next ones; 0xFFFF = the last.
    pub cont_idx: u16,
    pub payload: Vec<u8>,
}

impl Cfg3Fragment {
    pub(crate) fn decode(header: CommonHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(payload);
        let cont_idx = reader.u16()?;
        Ok(Self {
            header,
            cont_idx,
            payload: reader.take(reader.remaining())?.to_vec(),
        })
    }

    /// Whether this frame holds the whole configuration.
    pub fn is_whole(&self) -> bool {
        self.cont_idx == 0
    }

    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = self
            .header
            .start_frame(MIN_FRAME_LEN + 2 + self.payload.len());
        out.put_u16(self.cont_idx);
        out.extend_from_slice(&self.payload);
        finish_frame(out)
    }
}

/// Joins CFG-3 fragments of one stream back into a configuration.
///
/// Fragments must come in order (1, 2, …, 0xFFFF); a gap or a fragment without a first one drops
/// the partial configuration and is reported, so a lost fragment cannot splice two
/// configurations together.
#[derive(Debug, Default)]
pub struct Cfg3Assembler {
    partial: Option<(CommonHeader, u16, Vec<u8>)>,
}

impl Cfg3Assembler {
    /// A CFG-3 declares at most 65535 PMUs, each well under 64 KiB; this bounds memory while
    /// leaving room for any configuration a real PDC sends.
    pub const MAX_BYTES: usize = 16 * 1024 * 1024;

    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a fragment; returns the configuration once its last fragment arrived.
    pub fn push(&mut self, fragment: Cfg3Fragment) -> Result<Option<ConfigFrame>, DecodeError> {
        let idcode = fragment.header.idcode.0;
        match fragment.cont_idx {
            0 => {
                self.partial = None;
                ConfigFrame::decode_cfg3(fragment.header, &fragment.payload).map(Some)
            }
            1 => {
                self.partial = Some((fragment.header, 1, fragment.payload));
                Ok(None)
            }
            index => {
                let Some((header, last, mut body)) = self.partial.take() else {
                    return Err(DecodeError::FragmentWithoutStart { idcode, index });
                };
                if index != 0xFFFF && index != last + 1 {
                    return Err(DecodeError::FragmentOutOfOrder {
                        expected: last + 1,
                        found: index,
                    });
                }
                if body.len() + fragment.payload.len() > Self::MAX_BYTES {
                    return Err(DecodeError::FragmentsTooLarge {
                        idcode,
                        limit: Self::MAX_BYTES,
                    });
                }
                body.extend_from_slice(&fragment.payload);
                if index == 0xFFFF {
                    ConfigFrame::decode_cfg3(header, &body).map(Some)
                } else {
                    self.partial = Some((header, index, body));
                    Ok(None)
                }
            }
        }
    }
}
