//! Command frames: what a PDC asks of a PMU (C37.118.2 §6.6, Table 15).

use super::frame::{finish_frame, CommonHeader};
use super::wire::{Reader, WriteBe};
use super::{DecodeError, MIN_FRAME_LEN};

/// The CMD word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    DataOff,
    DataOn,
    SendHeader,
    SendCfg1,
    SendCfg2,
    SendCfg3,
    /// CMD 8: an extended frame carrying 16-bit words of user data.
    Extended(Vec<u8>),
    /// 0x0100–0x0FFF.
    UserDefined(u16),
    /// Any other code; kept so that the receiver can count and ignore it.
    Reserved(u16),
}

impl Command {
    pub fn code(&self) -> u16 {
        match self {
            Self::DataOff => 1,
            Self::DataOn => 2,
            Self::SendHeader => 3,
            Self::SendCfg1 => 4,
            Self::SendCfg2 => 5,
            Self::SendCfg3 => 6,
            Self::Extended(_) => 8,
            Self::UserDefined(code) | Self::Reserved(code) => *code,
        }
    }

    /// A short name for reports (`data_off`, `send_cfg2`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::DataOff => "data_off",
            Self::DataOn => "data_on",
            Self::SendHeader => "send_header",
            Self::SendCfg1 => "send_cfg1",
            Self::SendCfg2 => "send_cfg2",
            Self::SendCfg3 => "send_cfg3",
            Self::Extended(_) => "extended_frame",
            Self::UserDefined(_) => "user_defined",
            Self::Reserved(_) => "reserved",
        }
    }
}

/// A command frame addressed to a stream's IDCODE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandFrame {
    pub header: CommonHeader,
    pub command: Command,
}

impl CommandFrame {
    pub(crate) fn decode(header: CommonHeader, payload: &[u8]) -> Result<Self, DecodeError> {
        let mut reader = Reader::new(payload);
        let code = reader.u16()?;
        let rest = reader.take(reader.remaining())?;
        let command = match code {
            8 => {
                if rest.len() % 2 != 0 {
                    return Err(DecodeError::OddExtendedFrame { length: rest.len() });
                }
                Command::Extended(rest.to_vec())
            }
            code => {
                if !rest.is_empty() {
                    return Err(DecodeError::CommandLength {
                        actual: MIN_FRAME_LEN + 2 + rest.len(),
                    });
                }
                match code {
                    1 => Command::DataOff,
                    2 => Command::DataOn,
                    3 => Command::SendHeader,
                    4 => Command::SendCfg1,
                    5 => Command::SendCfg2,
                    6 => Command::SendCfg3,
                    0x0100..=0x0FFF => Command::UserDefined(code),
                    code => Command::Reserved(code),
                }
            }
        };
        Ok(Self { header, command })
    }

    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let extra = match &self.command {
            Command::Extended(words) => {
                if words.len() % 2 != 0 {
                    return Err(DecodeError::OddExtendedFrame {
                        length: words.len(),
                    });
                }
                words.as_slice()
            }
            _ => &[],
        };
        let mut out = self.header.start_frame(MIN_FRAME_LEN + 2 + extra.len());
        out.put_u16(self.command.code());
        out.extend_from_slice(extra);
        finish_frame(out)
    }
}
