//! The common frame envelope (SYNC, FRAMESIZE, IDCODE, SOC, FRACSEC, CHK) and the [`Frame`] sum
//! type over every frame kind.

use super::command::CommandFrame;
use super::config::{Cfg3Fragment, ConfigFrame};
use super::crc::crc_ccitt;
use super::data::DataFrame;
use super::time::FracSec;
use super::wire::{Reader, WriteBe};
use super::{DecodeError, CHK_LEN, HEADER_LEN, MIN_FRAME_LEN, SYNC_BYTE};

/// A stream or data-source identifier (IDCODE). 0 and 65535 are reserved by the standard but
/// still decoded, since a receiver must report what it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdCode(pub u16);

impl std::fmt::Display for IdCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The frame type in bits 6–4 of the SYNC word's second byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    Data,
    Header,
    Cfg1,
    Cfg2,
    Cfg3,
    Command,
}

impl FrameType {
    fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        Ok(match bits {
            0 => Self::Data,
            1 => Self::Header,
            2 => Self::Cfg1,
            3 => Self::Cfg2,
            4 => Self::Command,
            5 => Self::Cfg3,
            bits => return Err(DecodeError::UnknownFrameType { bits }),
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::Header => 1,
            Self::Cfg1 => 2,
            Self::Cfg2 => 3,
            Self::Command => 4,
            Self::Cfg3 => 5,
        }
    }

    /// The short name used in reports: `data`, `header`, `cfg1`, `cfg2`, `cfg3`, `command`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Header => "header",
            Self::Cfg1 => "cfg1",
            Self::Cfg2 => "cfg2",
            Self::Cfg3 => "cfg3",
            Self::Command => "command",
        }
    }
}

/// The SYNC version. The 2005 standard is version 1 and the 2011 one version 2; devices mix them
/// (version 1 for every frame but CFG-3 is common), so both are accepted for every frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    fn from_bits(bits: u8) -> Result<Self, DecodeError> {
        match bits {
            1 => Ok(Self::V1),
            2 => Ok(Self::V2),
            version => Err(DecodeError::UnsupportedVersion { version }),
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::V1 => 1,
            Self::V2 => 2,
        }
    }

    /// The version a frame of this type is sent with: 2 for CFG-3, which only exists since 2011,
    /// and 1 for the rest, which every PDC reads.
    pub fn default_for(frame_type: FrameType) -> Self {
        if frame_type == FrameType::Cfg3 {
            Self::V2
        } else {
            Self::V1
        }
    }
}

/// The fields every frame starts with, minus FRAMESIZE (which follows from the content).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub frame_type: FrameType,
    pub version: Version,
    /// The stream's IDCODE (for a command frame: the destination).
    pub idcode: IdCode,
    /// Seconds since 1970-01-01 UTC, leap seconds not counted.
    pub soc: u32,
    pub fracsec: FracSec,
}

impl CommonHeader {
    pub fn new(frame_type: FrameType, idcode: IdCode, soc: u32, fracsec: FracSec) -> Self {
        Self {
            frame_type,
            version: Version::default_for(frame_type),
            idcode,
            soc,
            fracsec,
        }
    }

    pub(crate) fn read(reader: &mut Reader<'_>) -> Result<(Self, u16), DecodeError> {
        let sync = reader.u8()?;
        if sync != SYNC_BYTE {
            return Err(DecodeError::BadSync { found: sync });
        }
        let kind = reader.u8()?;
        if kind & 0x80 != 0 {
            return Err(DecodeError::UnknownFrameType { bits: kind >> 4 });
        }
        let frame_type = FrameType::from_bits((kind >> 4) & 0x07)?;
        let version = Version::from_bits(kind & 0x0F)?;
        let frame_size = reader.u16()?;
        let idcode = IdCode(reader.u16()?);
        let soc = reader.u32()?;
        let fracsec = FracSec::from_raw(reader.u32()?);
        Ok((
            Self {
                frame_type,
                version,
                idcode,
                soc,
                fracsec,
            },
            frame_size,
        ))
    }

    /// Starts a frame: writes the header with a FRAMESIZE placeholder that [`finish_frame`] fills.
    pub(crate) fn start_frame(&self, capacity: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(capacity.max(MIN_FRAME_LEN));
        out.put_u8(SYNC_BYTE);
        out.put_u8((self.frame_type.bits() << 4) | self.version.bits());
        out.put_u16(0);
        out.put_u16(self.idcode.0);
        out.put_u32(self.soc);
        out.put_u32(self.fracsec.raw());
        out
    }
}

/// Fills FRAMESIZE and appends CHK to a frame begun with [`CommonHeader::start_frame`].
pub(crate) fn finish_frame(mut out: Vec<u8>) -> Result<Vec<u8>, DecodeError> {
    let length = out.len() + CHK_LEN;
    let size = u16::try_from(length).map_err(|_| DecodeError::FrameTooLarge { length })?;
    out[2..4].copy_from_slice(&size.to_be_bytes());
    let chk = crc_ccitt(&out);
    out.put_u16(chk);
    Ok(out)
}

/// Checks one frame's envelope: SYNC, a FRAMESIZE equal to the length of `bytes`, and the CHK.
/// Returns the header and the payload between FRACSEC and CHK.
pub fn split_frame(bytes: &[u8]) -> Result<(CommonHeader, &[u8]), DecodeError> {
    let mut reader = Reader::new(bytes);
    let (header, declared) = CommonHeader::read(&mut reader)?;
    if usize::from(declared) < MIN_FRAME_LEN {
        return Err(DecodeError::FrameSizeTooSmall { declared });
    }
    if usize::from(declared) != bytes.len() {
        return Err(DecodeError::FrameSizeMismatch {
            declared,
            actual: bytes.len(),
        });
    }
    let body_end = bytes.len() - CHK_LEN;
    let carried = u16::from_be_bytes([bytes[body_end], bytes[body_end + 1]]);
    let computed = crc_ccitt(&bytes[..body_end]);
    if carried != computed {
        return Err(DecodeError::CrcMismatch { carried, computed });
    }
    Ok((header, &bytes[HEADER_LEN..body_end]))
}

/// A header frame: free human-readable text about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderFrame {
    pub header: CommonHeader,
    /// The payload as sent; the standard says ASCII, devices send Latin-1 or UTF-8 too.
    pub text: Vec<u8>,
}

impl HeaderFrame {
    pub fn text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.text).into_owned()
    }

    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let mut out = self.header.start_frame(MIN_FRAME_LEN + self.text.len());
        out.extend_from_slice(&self.text);
        finish_frame(out)
    }
}

/// Any decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Data(DataFrame),
    Header(HeaderFrame),
    /// CFG-1, CFG-2, or a complete CFG-3.
    Config(ConfigFrame),
    /// One piece of a CFG-3 sent in several frames; see [`super::Cfg3Assembler`].
    Cfg3Fragment(Cfg3Fragment),
    Command(CommandFrame),
}

impl Frame {
    /// Decodes one whole frame. A data frame needs the configuration of its stream; for other
    /// frames `config` is ignored.
    pub fn decode(bytes: &[u8], config: Option<&ConfigFrame>) -> Result<Self, DecodeError> {
        let (header, payload) = split_frame(bytes)?;
        Self::decode_payload(header, payload, config)
    }

    /// Decodes a payload whose envelope [`split_frame`] already checked.
    pub fn decode_payload(
        header: CommonHeader,
        payload: &[u8],
        config: Option<&ConfigFrame>,
    ) -> Result<Self, DecodeError> {
        match header.frame_type {
            FrameType::Data => {
                let config = config.ok_or(DecodeError::NoConfiguration {
                    idcode: header.idcode.0,
                })?;
                DataFrame::decode(header, payload, config).map(Frame::Data)
            }
            FrameType::Header => Ok(Frame::Header(HeaderFrame {
                header,
                text: payload.to_vec(),
            })),
            FrameType::Cfg1 | FrameType::Cfg2 => {
                ConfigFrame::decode_cfg12(header, payload).map(Frame::Config)
            }
            FrameType::Cfg3 => Cfg3Fragment::decode(header, payload).and_then(|fragment| {
                if fragment.is_whole() {
                    ConfigFrame::decode_cfg3(header, &fragment.payload).map(Frame::Config)
                } else {
                    Ok(Frame::Cfg3Fragment(fragment))
                }
            }),
            FrameType::Command => CommandFrame::decode(header, payload).map(Frame::Command),
        }
    }

    pub fn header(&self) -> &CommonHeader {
        match self {
            Frame::Data(frame) => &frame.header,
            Frame::Header(frame) => &frame.header,
            Frame::Config(frame) => &frame.header,
            Frame::Cfg3Fragment(frame) => &frame.header,
            Frame::Command(frame) => &frame.header,
        }
    }

    /// Encodes the frame; a CFG-3 is written as one unfragmented frame.
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        match self {
            Frame::Data(frame) => frame.encode(),
            Frame::Header(frame) => frame.encode(),
            Frame::Config(frame) => frame.encode(),
            Frame::Cfg3Fragment(frame) => frame.encode(),
            Frame::Command(frame) => frame.encode(),
        }
    }
}
