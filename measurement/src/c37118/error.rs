//! What can be wrong with a frame, in terms of what the peer sent.

use thiserror::Error;

/// Why a frame could not be decoded. Each variant names what was expected and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame truncated: needed {needed} bytes at offset {offset}, only {available} left")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("bad SYNC: expected first byte 0xAA, found {found:#04x}")]
    BadSync { found: u8 },
    #[error("SYNC frame-type bits {bits:#05b} name no C37.118.2 frame type")]
    UnknownFrameType { bits: u8 },
    #[error("SYNC version {version} is not supported (1 and 2 are)")]
    UnsupportedVersion { version: u8 },
    #[error("FRAMESIZE {declared} is below the 16-byte minimum")]
    FrameSizeTooSmall { declared: u16 },
    #[error("FRAMESIZE says {declared} bytes but {actual} were given")]
    FrameSizeMismatch { declared: u16, actual: usize },
    #[error("CRC mismatch: frame carries {carried:#06x}, bytes give {computed:#06x}")]
    CrcMismatch { carried: u16, computed: u16 },
    #[error("expected a {expected} frame, found a {found} frame")]
    UnexpectedFrameType {
        expected: &'static str,
        found: &'static str,
    },
    #[error(
        "data frame from stream {idcode} arrived before any configuration frame of that stream"
    )]
    NoConfiguration { idcode: u16 },
    #[error("data frame is {actual} bytes but the configuration of stream {idcode} (CFGCNT {cfgcnt}) describes {expected}")]
    DataSizeMismatch {
        idcode: u16,
        cfgcnt: u16,
        expected: usize,
        actual: usize,
    },
    #[error("{extra} unexpected bytes after the last field of a {frame} frame")]
    TrailingBytes { frame: &'static str, extra: usize },
    #[error("TIME_BASE is zero, so FRACSEC cannot be turned into time")]
    ZeroTimeBase,
    #[error("configuration declares zero PMUs")]
    NoPmus,
    #[error("command frame is {actual} bytes; a command other than an extended frame is 18")]
    CommandLength { actual: usize },
    #[error(
        "extended-frame command has an odd payload of {length} bytes (it must be 16-bit words)"
    )]
    OddExtendedFrame { length: usize },
    #[error("CFG-3 fragment {found} arrived where fragment {expected} was expected")]
    FragmentOutOfOrder { expected: u16, found: u16 },
    #[error("CFG-3 fragment {index} of stream {idcode} arrived without a first fragment")]
    FragmentWithoutStart { idcode: u16, index: u16 },
    #[error("CFG-3 fragments of stream {idcode} exceed {limit} bytes in total")]
    FragmentsTooLarge { idcode: u16, limit: usize },
    #[error("frame of {length} bytes does not fit FRAMESIZE (at most 65535)")]
    FrameTooLarge { length: usize },
    #[error("channel name of {length} bytes does not fit the {limit}-byte field")]
    NameTooLong { length: usize, limit: usize },
    #[error("PMU {pmu} channel counts disagree with its names or units: {detail}")]
    InconsistentPmu { pmu: usize, detail: &'static str },
}
