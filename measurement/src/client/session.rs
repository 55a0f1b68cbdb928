//! The PDC side of one C37.118 stream, without I/O: what to ask the PMU for, when to fetch the
//! configuration again, and what each received frame means.
//!
//! The driver ([`super::PmuClient`]) feeds it frames and arrival times and sends the commands it
//! returns; everything that decides is here, so it is tested with bytes.

use std::sync::Arc;

use crate::c37118::{
    Command, ConfigFrame, DataFrame, DecodeError, Decoded, Decoder, Frame, FramerEvent, IdCode,
};
use crate::stats::StreamStatistics;

/// What the stream is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// CFG-2 requested, not yet received.
    AwaitingConfig,
    /// Data on requested (or, for spontaneous UDP, expected).
    Streaming,
}

/// How long to wait before asking again for a CFG-2 that did not come, and how often to re-ask
/// while STAT bit 10 announces a change.
pub const CONFIG_RETRY_SECONDS: f64 = 2.0;

/// What the session made of one framer event.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    Data {
        frame: DataFrame,
        config: Arc<ConfigFrame>,
    },
    Config {
        config: Arc<ConfigFrame>,
        changed: bool,
    },
    Header(String),
    /// A frame that was dropped, and why.
    Dropped(String),
}

/// The outcome of [`Session::handle`]: an event for the application and commands for the PMU.
#[derive(Debug, Default, PartialEq)]
pub struct SessionOutput {
    pub event: Option<SessionEvent>,
    pub commands: Vec<Command>,
}

/// One stream's protocol state.
#[derive(Debug)]
pub struct Session {
    idcode: IdCode,
    decoder: Decoder,
    state: SessionState,
    statistics: StreamStatistics,
    last_config_request: Option<f64>,
    /// Whether commands can be sent at all (false for spontaneous UDP).
    commands_enabled: bool,
}

impl Session {
    /// A session that drives the PMU with commands (TCP, or TCP/UDP).
    pub fn commanded(idcode: IdCode) -> Self {
        Self {
            idcode,
            decoder: Decoder::new(),
            state: SessionState::AwaitingConfig,
            statistics: StreamStatistics::new(),
            last_config_request: None,
            commands_enabled: true,
        }
    }

    /// A session for spontaneous UDP: no commands, data decoded with `config` (a cached or
    /// imported CFG-2) until the stream sends a configuration of its own.
    pub fn spontaneous(idcode: IdCode, config: Option<ConfigFrame>) -> Self {
        let mut session = Self::commanded(idcode);
        session.commands_enabled = false;
        session.state = SessionState::Streaming;
        if let Some(config) = config {
            session.decoder.install_config(config);
        }
        session
    }

    pub fn idcode(&self) -> IdCode {
        self.idcode
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn statistics(&self) -> &StreamStatistics {
        &self.statistics
    }

    /// The configuration data frames are read with.
    pub fn config(&self) -> Option<&Arc<ConfigFrame>> {
        self.decoder.config(self.idcode)
    }

    /// Commands to send after (re)connecting: ask for the current configuration; data is
    /// turned on once it arrives.
    ///
    /// Only one command is sent at a time: some PMUs (pyPMU among them) read one frame per
    /// `recv` and drop commands that arrive together in one segment.
    pub fn connected(&mut self, now: f64) -> Vec<Command> {
        if !self.commands_enabled {
            return Vec::new();
        }
        self.state = SessionState::AwaitingConfig;
        self.last_config_request = Some(now);
        vec![Command::SendCfg2]
    }

    /// Commands due at `now` without any frame arriving: a CFG-2 request that went unanswered.
    pub fn tick(&mut self, now: f64) -> Vec<Command> {
        if self.state == SessionState::AwaitingConfig && self.config_request_due(now) {
            self.last_config_request = Some(now);
            return vec![Command::SendCfg2];
        }
        Vec::new()
    }

    fn config_request_due(&self, now: f64) -> bool {
        self.commands_enabled
            && self
                .last_config_request
                .is_none_or(|last| now - last >= CONFIG_RETRY_SECONDS)
    }

    fn request_config(&mut self, now: f64, commands: &mut Vec<Command>) {
        if self.config_request_due(now) {
            self.last_config_request = Some(now);
            commands.push(Command::SendCfg2);
        }
    }

    /// Handles one framer event that arrived at `now` (seconds since the Unix epoch).
    pub fn handle(&mut self, event: FramerEvent<'_>, now: f64) -> SessionOutput {
        let mut output = SessionOutput::default();
        let bytes = match event {
            FramerEvent::Frame(bytes) => bytes,
            FramerEvent::Discarded { bytes, reason } => {
                self.statistics.record_discard(bytes, reason);
                output.event = Some(SessionEvent::Dropped(format!(
                    "dropped {bytes} bytes: {reason}"
                )));
                return output;
            }
        };
        let previous = self.config().cloned();
        match self.decoder.decode(bytes) {
            Ok(Decoded::Frame(Frame::Data(frame))) => {
                let Some(config) = self.decoder.config(frame.header.idcode).cloned() else {
                    // The decoder only returns data frames it had a configuration for.
                    return output;
                };
                self.statistics.record_data(&frame, &config, now);
                if frame.pmus.iter().any(|pmu| pmu.stat.config_change()) {
                    self.request_config(now, &mut output.commands);
                }
                output.event = Some(SessionEvent::Data { frame, config });
            }
            Ok(Decoded::Frame(Frame::Config(config))) => {
                let config = self
                    .decoder
                    .config(config.header.idcode)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(config));
                let changed = previous
                    .as_ref()
                    .is_some_and(|previous| !same_layout(previous, &config));
                self.statistics.record_config(changed);
                if self.state == SessionState::AwaitingConfig
                    && config.header.idcode == self.idcode
                    && self.decoder.config(self.idcode).is_some()
                {
                    self.state = SessionState::Streaming;
                    if self.commands_enabled {
                        output.commands.push(Command::DataOn);
                    }
                }
                output.event = Some(SessionEvent::Config { config, changed });
            }
            Ok(Decoded::Frame(Frame::Header(header))) => {
                self.statistics.record_other();
                output.event = Some(SessionEvent::Header(header.text_lossy()));
            }
            Ok(Decoded::Frame(_)) | Ok(Decoded::FragmentHeld { .. }) => {
                self.statistics.record_other();
            }
            Err(error) => {
                self.statistics.record_undecodable();
                // A data frame that no longer fits the configuration, or one before any, means
                // the configuration we have is not the PMU's: fetch it again.
                if matches!(
                    error,
                    DecodeError::NoConfiguration { .. } | DecodeError::DataSizeMismatch { .. }
                ) {
                    self.request_config(now, &mut output.commands);
                }
                output.event = Some(SessionEvent::Dropped(format!("undecodable frame: {error}")));
            }
        }
        output
    }
}

/// Whether two configurations describe the same data: a new CFGCNT, format, channel set or rate
/// counts as a change; a new timestamp on the same configuration does not.
fn same_layout(a: &ConfigFrame, b: &ConfigFrame) -> bool {
    a.pmus == b.pmus && a.data_rate == b.data_rate && a.time_base == b.time_base
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c37118::{
        CommonHeader, DataFormat, DataRate, FracSec, FrameType, Frequency, NominalFrequency,
        Phasor, PhasorChannel, PhasorQuantity, PhasorScale, PhasorUnit, PmuConfig, PmuData, Rocof,
        Stat, StreamFramer, TimeBase,
    };

    fn config(cfgcnt: u16) -> ConfigFrame {
        ConfigFrame {
            header: CommonHeader::new(FrameType::Cfg2, IdCode(9), 10, FracSec::from_raw(0)),
            time_base: TimeBase::new(1_000_000).expect("non-zero"),
            pmus: vec![PmuConfig {
                station: "BUS 1".into(),
                idcode: IdCode(9),
                format: DataFormat::new(false, false, false, false),
                phasors: vec![PhasorChannel {
                    name: "VA".into(),
                    scale: PhasorScale::Unit(PhasorUnit {
                        quantity: PhasorQuantity::Voltage,
                        factor: 915_527,
                    }),
                }],
                analogs: vec![],
                digitals: vec![],
                nominal_frequency: NominalFrequency::Hz50,
                cfgcnt,
                cfg3: None,
            }],
            data_rate: DataRate(50),
        }
    }

    fn data(stat: u16, micros: u32) -> Vec<u8> {
        DataFrame {
            header: CommonHeader::new(FrameType::Data, IdCode(9), 10, FracSec::from_raw(micros)),
            pmus: vec![PmuData {
                stat: Stat(stat),
                phasors: vec![Phasor::IntRectangular { re: 100, im: -5 }],
                frequency: Frequency::IntDeviation(12),
                rocof: Rocof::IntHundredths(0),
                analogs: vec![],
                digitals: vec![],
            }],
        }
        .encode()
        .expect("encodes")
    }

    fn feed(session: &mut Session, bytes: &[u8], now: f64) -> Vec<SessionOutput> {
        let mut framer = StreamFramer::new();
        framer.push(bytes);
        let mut outputs = Vec::new();
        while let Some(event) = framer.next_event() {
            outputs.push(session.handle(event, now));
        }
        outputs
    }

    #[test]
    fn asks_for_cfg2_then_turns_data_on() {
        let mut session = Session::commanded(IdCode(9));
        assert_eq!(session.connected(0.0), vec![Command::SendCfg2]);
        assert_eq!(session.tick(1.0), vec![]);
        assert_eq!(session.tick(2.5), vec![Command::SendCfg2]);
        let outputs = feed(&mut session, &config(1).encode().expect("encodes"), 7.0);
        assert_eq!(outputs[0].commands, vec![Command::DataOn]);
        assert_eq!(session.state(), SessionState::Streaming);
        let outputs = feed(&mut session, &data(0, 0), 10.01);
        assert!(matches!(outputs[0].event, Some(SessionEvent::Data { .. })));
        assert!(outputs[0].commands.is_empty());
    }

    #[test]
    fn refetches_the_configuration_when_stat_bit_10_is_set_or_cfgcnt_changes() {
        let mut session = Session::commanded(IdCode(9));
        session.connected(0.0);
        feed(&mut session, &config(1).encode().expect("encodes"), 0.1);
        let outputs = feed(&mut session, &data(1 << 10, 0), 10.0);
        assert_eq!(outputs[0].commands, vec![Command::SendCfg2]);
        // Not again within the retry interval, but again after it.
        assert!(feed(&mut session, &data(1 << 10, 20_000), 10.02)[0]
            .commands
            .is_empty());
        assert_eq!(
            feed(&mut session, &data(1 << 10, 40_000), 12.5)[0].commands,
            vec![Command::SendCfg2]
        );
        let outputs = feed(&mut session, &config(2).encode().expect("encodes"), 12.6);
        assert!(matches!(
            outputs[0].event,
            Some(SessionEvent::Config { changed: true, .. })
        ));
        assert_eq!(session.statistics().config_changes, 1);
    }

    #[test]
    fn counts_corrupt_and_undecodable_frames_without_stopping() {
        let mut session = Session::commanded(IdCode(9));
        session.connected(0.0);
        // Data before any configuration: undecodable, and the configuration is fetched again.
        let outputs = feed(&mut session, &data(0, 0), 6.0);
        assert_eq!(outputs[0].commands, vec![Command::SendCfg2]);
        feed(&mut session, &config(1).encode().expect("encodes"), 6.1);
        let mut corrupt = data(0, 20_000);
        corrupt[20] ^= 0xFF;
        let stream = [corrupt, data(0, 40_000)].concat();
        let outputs = feed(&mut session, &stream, 10.1);
        assert!(outputs
            .iter()
            .any(|output| matches!(output.event, Some(SessionEvent::Data { .. }))));
        let stats = session.statistics();
        assert_eq!(stats.crc_errors, 1);
        assert_eq!(stats.undecodable, 1);
        assert_eq!(stats.data_frames, 1);
    }

    #[test]
    fn spontaneous_streams_decode_with_an_imported_configuration_and_send_nothing() {
        let mut session = Session::spontaneous(IdCode(9), Some(config(1)));
        assert!(session.connected(0.0).is_empty());
        let outputs = feed(&mut session, &data(1 << 10, 0), 10.0);
        assert!(matches!(outputs[0].event, Some(SessionEvent::Data { .. })));
        assert!(outputs[0].commands.is_empty());
    }
}
