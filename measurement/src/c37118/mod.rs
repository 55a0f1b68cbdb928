//! IEEE C37.118.2-2011 synchrophasor frames: parse and build data, header, CFG-1, CFG-2, CFG-3
//! (with fragments) and command frames.
//!
//! The codec does no I/O. [`split_frame`] validates one frame's envelope (SYNC, FRAMESIZE, CHK);
//! [`Frame::decode`] turns it into a typed frame, given the configuration a data frame needs;
//! [`Decoder`] keeps that configuration per stream and reassembles CFG-3 fragments; and
//! [`StreamFramer`] cuts a TCP byte stream into frames. Anything the codec cannot read is a
//! [`DecodeError`]: no input makes it panic.

mod command;
mod config;
mod crc;
mod data;
mod decoder;
mod error;
mod frame;
mod framer;
mod time;
mod wire;

pub use command::{Command, CommandFrame};
pub use config::{
    AnalogChannel, AnalogKind, AnalogScale, AnalogUnit, Cfg3Assembler, Cfg3Fragment, Cfg3Pmu,
    ConfigFrame, ConfigKind, DataFormat, DataRate, DigitalUnit, DigitalWord, NominalFrequency,
    PhasorChannel, PhasorQuantity, PhasorScale, PhasorUnit, PmuConfig, ServiceClass, TimeBase,
};
pub use crc::crc_ccitt;
pub use data::{
    Analog, DataError, DataFrame, Frequency, Phasor, PmuData, PmuTimeQuality, Rocof, Stat,
    TriggerReason, UnlockedTime,
};
pub use decoder::{Decoded, Decoder};
pub use error::DecodeError;
pub use frame::{split_frame, CommonHeader, Frame, FrameType, HeaderFrame, IdCode, Version};
pub use framer::{DiscardReason, FramerEvent, StreamFramer};
pub use time::{ClockState, FracSec, LeapDirection, TimeQuality};

/// The first byte of every frame.
pub const SYNC_BYTE: u8 = 0xAA;
/// SYNC through FRACSEC.
pub const HEADER_LEN: usize = 14;
/// The CHK field.
pub const CHK_LEN: usize = 2;
/// The smallest frame there can be: a header and a CHK.
pub const MIN_FRAME_LEN: usize = HEADER_LEN + CHK_LEN;
