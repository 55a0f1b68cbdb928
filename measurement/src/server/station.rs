//! What the appliance's own PMU says on the wire, without I/O: its CFG-1, CFG-2 and CFG-3, its
//! header frame, a data frame per estimator report, and the answer to each command a PDC sends
//! (C37.118.2-2011 §6).

use crate::c37118::{
    Cfg3Pmu, ClockState, Command, CommonHeader, ConfigFrame, ConfigKind, DataFormat, DataFrame,
    DataRate, DecodeError, FracSec, Frame, FrameType, Frequency, HeaderFrame, IdCode, Phasor,
    PhasorChannel, PhasorQuantity, PhasorScale, PhasorUnit, PmuConfig, PmuData, Rocof,
    ServiceClass, Stat, TimeBase, TimeQuality,
};
use crate::estimator::{Channel, Class, EstimatorConfig, Report};

/// FRACSEC counts per second: a microsecond (the standard's example base). Rates that do not
/// divide a million (12 and 15 fps... and 120) are placed to the microsecond below the instant.
const TIME_BASE: u32 = 1_000_000;

/// Why a station cannot be described.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StationError {
    #[error("the station name `{name}` is longer than the 16 characters of STN")]
    NameTooLong { name: String },
    #[error("the station name must be ASCII: `{name}`")]
    NameNotAscii { name: String },
    #[error("the header text is longer than {max} bytes")]
    HeaderTooLong { max: usize },
    #[error("second {sec} does not fit the 32 bits of SOC")]
    SocOutOfRange { sec: u64 },
    #[error("the frame did not encode: {0}")]
    Encode(#[from] DecodeError),
}

/// The identity and the fixed facts of the appliance's PMU stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Station {
    idcode: IdCode,
    name: String,
    config: EstimatorConfig,
    header: String,
    /// CFGCNT: changes whenever the configuration does.
    cfgcnt: u16,
    frequency_format: FrequencyFormat,
}

/// How FREQ and DFREQ go on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrequencyFormat {
    /// f32: the frequency in Hz and the ROCOF in Hz/s (C37.118.2 Table 6). Full precision.
    #[default]
    Float,
    /// i16: the deviation from nominal in mHz and the ROCOF in hundredths of Hz/s, for PDCs that
    /// mis-read float FREQ (pyPMU takes it for a deviation and refuses 50 Hz). 1 mHz steps.
    Integer,
}

/// The largest header text: what fits in one frame.
const MAX_HEADER: usize = 60_000;

impl Station {
    pub fn new(
        idcode: IdCode,
        name: &str,
        config: EstimatorConfig,
        header: &str,
        cfgcnt: u16,
    ) -> Result<Self, StationError> {
        if !name.is_ascii() {
            return Err(StationError::NameNotAscii { name: name.into() });
        }
        if name.len() > 16 {
            return Err(StationError::NameTooLong { name: name.into() });
        }
        if header.len() > MAX_HEADER {
            return Err(StationError::HeaderTooLong { max: MAX_HEADER });
        }
        Ok(Self {
            idcode,
            name: name.into(),
            config,
            header: header.into(),
            cfgcnt,
            frequency_format: FrequencyFormat::Float,
        })
    }

    /// The same station sending FREQ and DFREQ as `format`.
    pub fn with_frequency_format(self, format: FrequencyFormat) -> Self {
        Self {
            frequency_format: format,
            ..self
        }
    }

    pub fn idcode(&self) -> IdCode {
        self.idcode
    }

    pub fn estimator(&self) -> &EstimatorConfig {
        &self.config
    }

    /// CFG-1, CFG-2 or CFG-3, stamped `soc`.
    pub fn config_frame(&self, kind: ConfigKind, soc: u32) -> ConfigFrame {
        let frame_type = match kind {
            ConfigKind::Cfg1 => FrameType::Cfg1,
            ConfigKind::Cfg2 => FrameType::Cfg2,
            ConfigKind::Cfg3 => FrameType::Cfg3,
        };
        let cfg3 = kind == ConfigKind::Cfg3;
        let phasors = Channel::ALL
            .iter()
            .map(|channel| {
                let quantity = if channel.is_voltage() {
                    PhasorQuantity::Voltage
                } else {
                    PhasorQuantity::Current
                };
                let scale = if cfg3 {
                    // Bits 2–0: phase A, B, C are 4, 5, 6; bit 3: current.
                    let phase = 4 + (channel.index() % 3) as u8;
                    let current = if channel.is_voltage() { 0 } else { 0x08 };
                    PhasorScale::Cfg3 {
                        modification: 0,
                        phasor_type: current | phase,
                        user: 0,
                        magnitude_scale: 1.0,
                        angle_offset: 0.0,
                    }
                } else {
                    // Float phasors: the factor is not used; 1 (10⁻⁵ per count) is harmless.
                    PhasorScale::Unit(PhasorUnit {
                        quantity,
                        factor: 1,
                    })
                };
                PhasorChannel {
                    name: channel.name().to_ascii_uppercase(),
                    scale,
                }
            })
            .collect();
        let window = self.config.window_latency() * 2.0;
        ConfigFrame {
            header: CommonHeader::new(frame_type, self.idcode, soc, FracSec::from_raw(0)),
            time_base: TimeBase::new(TIME_BASE).unwrap_or_else(|| unreachable!("non-zero")),
            pmus: vec![PmuConfig {
                station: self.name.clone(),
                idcode: self.idcode,
                format: DataFormat::new(
                    false,
                    true,
                    true,
                    self.frequency_format == FrequencyFormat::Float,
                ),
                phasors,
                analogs: Vec::new(),
                digitals: Vec::new(),
                nominal_frequency: self.config.nominal(),
                cfgcnt: self.cfgcnt,
                cfg3: cfg3.then(|| Cfg3Pmu {
                    global_pmu_id: self.global_id(),
                    latitude: f32::INFINITY,
                    longitude: f32::INFINITY,
                    elevation: f32::INFINITY,
                    service_class: match self.config.class() {
                        Class::P => ServiceClass::P,
                        Class::M => ServiceClass::M,
                    },
                    window: (window * 1e6).round() as i32,
                    // Symmetric windows: the report is centred on its timestamp.
                    group_delay: 0,
                }),
            }],
            data_rate: DataRate(self.config.rate() as i16),
        }
    }

    /// G_PMU_ID: the station name and IDCODE, which together name the stream.
    fn global_id(&self) -> [u8; 16] {
        let mut id = [0u8; 16];
        let name = self.name.as_bytes();
        let used = name.len().min(14);
        id[..used].copy_from_slice(&name[..used]);
        id[14..].copy_from_slice(&self.idcode.0.to_be_bytes());
        id
    }

    pub fn encode_config(&self, kind: ConfigKind, soc: u32) -> Result<Vec<u8>, DecodeError> {
        self.config_frame(kind, soc).encode()
    }

    pub fn encode_header(&self, soc: u32) -> Result<Vec<u8>, DecodeError> {
        HeaderFrame {
            header: CommonHeader::new(FrameType::Header, self.idcode, soc, FracSec::from_raw(0)),
            text: self.header.as_bytes().to_vec(),
        }
        .encode()
    }

    /// The data frame of one report: float rectangular phasors in V and A, frequency and ROCOF
    /// in the station's format, the report's clock state in FRACSEC and STAT.
    pub fn data_frame(&self, report: &Report) -> Result<DataFrame, StationError> {
        let count = (u64::from(report.time.index) * u64::from(TIME_BASE)
            / u64::from(report.time.rate)) as u32;
        let soc = u32::try_from(report.time.sec).map_err(|_| StationError::SocOutOfRange {
            sec: report.time.sec,
        })?;
        let (quality, stat) = clock_fields(report.clock);
        let phasors = report
            .phasors
            .iter()
            .map(|phasor| Phasor::FloatRectangular {
                re: phasor.re as f32,
                im: phasor.im as f32,
            })
            .collect();
        Ok(DataFrame {
            header: CommonHeader::new(
                FrameType::Data,
                self.idcode,
                soc,
                FracSec::new(quality, count),
            ),
            pmus: vec![PmuData {
                stat,
                phasors,
                frequency: self.frequency(report.frequency),
                rocof: self.rocof(report.rocof),
                analogs: Vec::new(),
                digitals: Vec::new(),
            }],
        })
    }

    /// [`Self::data_frame`], encoded.
    pub fn encode_data(&self, report: &Report) -> Result<Vec<u8>, StationError> {
        Ok(self.data_frame(report)?.encode()?)
    }

    fn frequency(&self, hertz: f64) -> Frequency {
        match self.frequency_format {
            FrequencyFormat::Float => Frequency::Float(hertz as f32),
            FrequencyFormat::Integer => {
                // −32 768 is the "absent" marker; a value off the scale is clamped to it minus one.
                let millihertz = ((hertz - self.config.nominal().hertz()) * 1e3).round();
                Frequency::IntDeviation(millihertz.clamp(-32_767.0, 32_767.0) as i16)
            }
        }
    }

    fn rocof(&self, hertz_per_second: f64) -> Rocof {
        match self.frequency_format {
            FrequencyFormat::Float => Rocof::Float(hertz_per_second as f32),
            FrequencyFormat::Integer => {
                let hundredths = (hertz_per_second * 100.0).round();
                Rocof::IntHundredths(hundredths.clamp(-32_767.0, 32_767.0) as i16)
            }
        }
    }

    /// What to do about one frame from a PDC: frames to send back, and whether data starts or
    /// stops. Anything but a command to this stream's IDCODE is ignored, as C37.118.2 §6.2 wants.
    pub fn answer(&self, frame: &Frame, soc: u32) -> Answer {
        let Frame::Command(command) = frame else {
            return Answer::ignored("not a command frame");
        };
        if command.header.idcode != self.idcode {
            return Answer::ignored("a command to another IDCODE");
        }
        let reply = |bytes: Result<Vec<u8>, DecodeError>| match bytes {
            Ok(bytes) => Answer {
                frames: vec![bytes],
                data: None,
                ignored: None,
            },
            Err(_) => Answer::ignored("the reply did not encode"),
        };
        match &command.command {
            Command::DataOn => Answer {
                frames: Vec::new(),
                data: Some(true),
                ignored: None,
            },
            Command::DataOff => Answer {
                frames: Vec::new(),
                data: Some(false),
                ignored: None,
            },
            Command::SendHeader => reply(self.encode_header(soc)),
            Command::SendCfg1 => reply(self.encode_config(ConfigKind::Cfg1, soc)),
            Command::SendCfg2 => reply(self.encode_config(ConfigKind::Cfg2, soc)),
            Command::SendCfg3 => reply(self.encode_config(ConfigKind::Cfg3, soc)),
            Command::Extended(_) | Command::UserDefined(_) | Command::Reserved(_) => {
                Answer::ignored("a command this PMU does not implement")
            }
        }
    }
}

/// The answer to one frame from a PDC.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub frames: Vec<Vec<u8>>,
    /// `Some(true)`: start sending data; `Some(false)`: stop.
    pub data: Option<bool>,
    /// Why the frame was ignored, when it was.
    pub ignored: Option<&'static str>,
}

impl Answer {
    fn ignored(reason: &'static str) -> Self {
        Self {
            frames: Vec::new(),
            data: None,
            ignored: Some(reason),
        }
    }
}

/// FRACSEC's time-quality byte and STAT for a clock state: unlocked sets STAT's sync error bit
/// and the time quality both fields have codes for; a failed clock marks the data as not to be
/// used.
fn clock_fields(clock: ClockState) -> (TimeQuality, Stat) {
    let quality = TimeQuality::from_raw(clock.code());
    let stat = match clock {
        ClockState::Locked => 0,
        ClockState::Unlocked { code } => {
            // MSG_TQ admits 10^(code−10) s; STAT's code c admits 10^(c−8) s (1..=6), 7 above.
            let pmu_code = u16::from(code.saturating_sub(2)).clamp(1, 7);
            (1 << 13) | (pmu_code << 6)
        }
        ClockState::Reserved { .. } | ClockState::Failure => (1 << 13) | (7 << 6) | (3 << 14),
    };
    (quality, Stat(stat))
}

#[cfg(test)]
mod tests {
    use num_complex::Complex64;

    use super::*;
    use crate::c37118::{CommandFrame, NominalFrequency};
    use crate::estimator::ReportTime;

    fn station() -> Station {
        let config = EstimatorConfig::new(Class::M, NominalFrequency::Hz60, 30, 10_000)
            .expect("valid configuration");
        Station::new(IdCode(7), "BAY 2", config, "header text", 3).expect("valid station")
    }

    fn report(clock: ClockState) -> Report {
        Report {
            time: ReportTime {
                sec: 1_800_000_000,
                index: 7,
                rate: 30,
            },
            phasors: [Complex64::new(230.0, -1.5); 6],
            positive_sequence: Complex64::new(230.0, -1.5),
            frequency: 60.0123,
            rocof: -0.25,
            clock,
        }
    }

    #[test]
    fn every_configuration_frame_decodes_to_what_the_station_is() {
        let station = station();
        for (kind, frame_type) in [
            (ConfigKind::Cfg1, FrameType::Cfg1),
            (ConfigKind::Cfg2, FrameType::Cfg2),
            (ConfigKind::Cfg3, FrameType::Cfg3),
        ] {
            let bytes = station.encode_config(kind, 1_800_000_000).expect("encodes");
            let Ok(Frame::Config(config)) = Frame::decode(&bytes, None) else {
                panic!("{kind:?} decodes as a configuration");
            };
            assert_eq!(config.header.frame_type, frame_type);
            assert_eq!(config, station.config_frame(kind, 1_800_000_000));
            assert_eq!(config.data_rate, DataRate(30));
            let pmu = &config.pmus[0];
            assert_eq!((pmu.station.as_str(), pmu.cfgcnt), ("BAY 2", 3));
            assert_eq!(pmu.phasors[3].scale.quantity(), PhasorQuantity::Current);
            assert_eq!(pmu.cfg3.is_some(), kind == ConfigKind::Cfg3);
            if let Some(extra) = pmu.cfg3 {
                assert_eq!(extra.service_class, ServiceClass::M);
                assert_eq!(
                    extra.window, 260_000,
                    "the 60 Hz, 30 fps M window is 260 ms"
                );
            }
        }
    }

    #[test]
    fn a_report_becomes_a_data_frame_with_its_time_and_clock() {
        let station = station();
        let config = station.config_frame(ConfigKind::Cfg2, 0);
        for (clock, sync_error) in [
            (ClockState::Locked, false),
            (ClockState::Unlocked { code: 6 }, true),
        ] {
            let bytes = station.encode_data(&report(clock)).expect("encodes");
            let Ok(Frame::Data(frame)) = Frame::decode(&bytes, Some(&config)) else {
                panic!("decodes as data");
            };
            assert_eq!(frame.header.soc, 1_800_000_000);
            // 7/30 s in microseconds, rounded down.
            assert_eq!(frame.header.fracsec.count(), 233_333);
            assert_eq!(frame.header.fracsec.quality().clock(), clock);
            let block = &frame.pmus[0];
            assert_eq!(block.stat.sync_error(), sync_error);
            assert_eq!(
                block.phasors[5],
                Phasor::FloatRectangular {
                    re: 230.0,
                    im: -1.5
                }
            );
            assert_eq!(block.frequency, Frequency::Float(60.0123));
            assert_eq!(block.rocof, Rocof::Float(-0.25));
        }
        let integer = station.with_frequency_format(FrequencyFormat::Integer);
        let config = integer.config_frame(ConfigKind::Cfg2, 0);
        let bytes = integer
            .encode_data(&report(ClockState::Locked))
            .expect("encodes");
        let Ok(Frame::Data(frame)) = Frame::decode(&bytes, Some(&config)) else {
            panic!("decodes as data");
        };
        assert_eq!(frame.pmus[0].frequency, Frequency::IntDeviation(12));
        assert_eq!(frame.pmus[0].rocof, Rocof::IntHundredths(-25));
    }

    fn command(idcode: u16, command: Command) -> Frame {
        Frame::Command(CommandFrame {
            header: CommonHeader::new(FrameType::Command, IdCode(idcode), 0, FracSec::from_raw(0)),
            command,
        })
    }

    #[test]
    fn commands_to_this_stream_are_answered_and_all_else_is_ignored() {
        let station = station();
        let on = station.answer(&command(7, Command::DataOn), 5);
        assert_eq!((on.data, on.frames.len()), (Some(true), 0));
        let off = station.answer(&command(7, Command::DataOff), 5);
        assert_eq!(off.data, Some(false));
        let header = station.answer(&command(7, Command::SendHeader), 5);
        let Ok(Frame::Header(text)) = Frame::decode(&header.frames[0], None) else {
            panic!("a header frame");
        };
        assert_eq!(text.text, b"header text");
        let cfg2 = station.answer(&command(7, Command::SendCfg2), 5);
        assert_eq!(
            cfg2.frames,
            vec![station.encode_config(ConfigKind::Cfg2, 5).expect("encodes")]
        );
        for ignored in [
            station.answer(&command(8, Command::SendCfg2), 5),
            station.answer(&command(7, Command::UserDefined(0x0100)), 5),
            station.answer(
                &Frame::decode(&station.encode_header(5).expect("encodes"), None).expect("frame"),
                5,
            ),
        ] {
            assert!(ignored.frames.is_empty() && ignored.data.is_none());
            assert!(ignored.ignored.is_some());
        }
    }

    #[test]
    fn names_the_stn_field_cannot_hold_are_refused() {
        let config = *station().estimator();
        assert!(matches!(
            Station::new(IdCode(1), "A NAME LONGER THAN 16", config, "", 1),
            Err(StationError::NameTooLong { .. })
        ));
        assert!(matches!(
            Station::new(IdCode(1), "BAY Ø", config, "", 1),
            Err(StationError::NameNotAscii { .. })
        ));
    }
}
