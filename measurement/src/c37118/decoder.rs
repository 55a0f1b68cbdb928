//! Per-stream decoding state: the configuration each stream's data frames are read with, and the
//! CFG-3 fragments not yet complete.

use std::collections::HashMap;
use std::sync::Arc;

use super::config::{Cfg3Assembler, ConfigFrame, ConfigKind};
use super::frame::{split_frame, Frame, FrameType, IdCode};
use super::DecodeError;

/// What one frame fed to a [`Decoder`] gave.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Frame(Frame),
    /// A CFG-3 fragment was kept until the rest of its configuration arrives.
    FragmentHeld {
        idcode: IdCode,
        cont_idx: u16,
    },
}

/// Decodes the frames of any number of streams, keyed by the stream IDCODE.
///
/// Data frames are read with the stream's latest CFG-2 or CFG-3, which say what the PMU is
/// sending now. A CFG-1 only says what the PMU could send, so it is remembered but never used to
/// read data: a data frame of a stream with only a CFG-1 is an error, not a guess.
#[derive(Debug, Default)]
pub struct Decoder {
    current: HashMap<IdCode, Arc<ConfigFrame>>,
    capabilities: HashMap<IdCode, Arc<ConfigFrame>>,
    fragments: HashMap<IdCode, Cfg3Assembler>,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs a configuration obtained out of band (a cached or imported CFG-2, as for
    /// spontaneous UDP streams that send one only now and then).
    pub fn install_config(&mut self, config: ConfigFrame) {
        let idcode = config.header.idcode;
        let config = Arc::new(config);
        match config.kind() {
            ConfigKind::Cfg1 => self.capabilities.insert(idcode, config),
            ConfigKind::Cfg2 | ConfigKind::Cfg3 => self.current.insert(idcode, config),
        };
    }

    /// The configuration data frames of `idcode` are decoded with.
    pub fn config(&self, idcode: IdCode) -> Option<&Arc<ConfigFrame>> {
        self.current.get(&idcode)
    }

    /// The last CFG-1 of `idcode`.
    pub fn capabilities(&self, idcode: IdCode) -> Option<&Arc<ConfigFrame>> {
        self.capabilities.get(&idcode)
    }

    /// Decodes one whole frame; a configuration frame replaces the stream's configuration.
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Decoded, DecodeError> {
        let (header, payload) = split_frame(bytes)?;
        let config = match header.frame_type {
            FrameType::Data => self.current.get(&header.idcode).map(Arc::as_ref),
            _ => None,
        };
        let frame = Frame::decode_payload(header, payload, config)?;
        let frame = match frame {
            Frame::Cfg3Fragment(fragment) => {
                let idcode = fragment.header.idcode;
                let cont_idx = fragment.cont_idx;
                match self.fragments.entry(idcode).or_default().push(fragment)? {
                    Some(config) => Frame::Config(config),
                    None => return Ok(Decoded::FragmentHeld { idcode, cont_idx }),
                }
            }
            frame => frame,
        };
        if let Frame::Config(config) = &frame {
            self.install_config(config.clone());
        }
        Ok(Decoded::Frame(frame))
    }
}
