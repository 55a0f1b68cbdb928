//! Cuts a byte stream (TCP, or a file of concatenated frames) into C37.118 frames by FRAMESIZE.
//!
//! Several frames may arrive in one read and one frame may span several; the framer keeps what
//! it has not yet returned. When the stream is damaged it resynchronises on the next SYNC byte
//! whose header is plausible and whose CHK matches, and reports every byte it throws away.

use super::crc::crc_ccitt;
use super::{CHK_LEN, MIN_FRAME_LEN, SYNC_BYTE};

/// Why bytes were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscardReason {
    /// Bytes before the next SYNC byte.
    NoSync,
    /// A SYNC byte followed by an impossible frame type, version or FRAMESIZE.
    BadHeader,
    /// A frame-sized run of bytes whose CHK does not match: counted as a CRC error. Only its
    /// SYNC byte is dropped, since a corrupt FRAMESIZE may hide the next frame inside it.
    CrcMismatch,
    /// The stream ended inside a frame.
    Truncated,
}

impl std::fmt::Display for DiscardReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NoSync => "no SYNC byte",
            Self::BadHeader => "impossible frame header",
            Self::CrcMismatch => "CRC mismatch",
            Self::Truncated => "stream ended inside a frame",
        })
    }
}

/// What the framer found next.
#[derive(Debug, PartialEq, Eq)]
pub enum FramerEvent<'a> {
    /// One whole frame whose CHK is correct.
    Frame(&'a [u8]),
    Discarded {
        bytes: usize,
        reason: DiscardReason,
    },
}

/// Incremental framer: [`push`](Self::push) bytes as they arrive, then take events with
/// [`next_event`](Self::next_event) until it returns `None`.
#[derive(Debug)]
pub struct StreamFramer {
    buffer: Vec<u8>,
    start: usize,
    max_frame_len: usize,
}

impl Default for StreamFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamFramer {
    pub fn new() -> Self {
        Self::with_max_frame_len(usize::from(u16::MAX))
    }

    /// A framer that treats any FRAMESIZE above `max_frame_len` as a bad header, so that a
    /// corrupt size cannot make it wait for up to 64 KiB before resynchronising.
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            buffer: Vec::with_capacity(4096),
            start: 0,
            max_frame_len: max_frame_len.clamp(MIN_FRAME_LEN, usize::from(u16::MAX)),
        }
    }

    /// Bytes received but not yet returned.
    pub fn pending(&self) -> usize {
        self.buffer.len() - self.start
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buffer.len() / 2 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        self.buffer.extend_from_slice(bytes);
    }

    /// The next frame or discard, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<FramerEvent<'_>> {
        let pending = &self.buffer[self.start..];
        if pending.is_empty() {
            return None;
        }
        if pending[0] != SYNC_BYTE {
            let bytes = pending
                .iter()
                .position(|byte| *byte == SYNC_BYTE)
                .unwrap_or(pending.len());
            self.start += bytes;
            return Some(FramerEvent::Discarded {
                bytes,
                reason: DiscardReason::NoSync,
            });
        }
        if pending.len() < 4 {
            return None;
        }
        let kind = pending[1];
        let frame_type = (kind >> 4) & 0x0F;
        let version = kind & 0x0F;
        let size = usize::from(u16::from_be_bytes([pending[2], pending[3]]));
        let plausible = frame_type <= 5
            && (1..=2).contains(&version)
            && (MIN_FRAME_LEN..=self.max_frame_len).contains(&size);
        if !plausible {
            self.start += 1;
            return Some(FramerEvent::Discarded {
                bytes: 1,
                reason: DiscardReason::BadHeader,
            });
        }
        if pending.len() < size {
            return None;
        }
        let body_end = size - CHK_LEN;
        let carried = u16::from_be_bytes([pending[body_end], pending[body_end + 1]]);
        if crc_ccitt(&pending[..body_end]) != carried {
            self.start += 1;
            return Some(FramerEvent::Discarded {
                bytes: 1,
                reason: DiscardReason::CrcMismatch,
            });
        }
        let begin = self.start;
        self.start += size;
        Some(FramerEvent::Frame(&self.buffer[begin..begin + size]))
    }

    /// Ends the stream: whatever is left is a truncated frame.
    pub fn finish(&mut self) -> Option<FramerEvent<'static>> {
        let bytes = self.pending();
        self.buffer.clear();
        self.start = 0;
        (bytes > 0).then_some(FramerEvent::Discarded {
            bytes,
            reason: DiscardReason::Truncated,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::c37118::{Command, CommandFrame, CommonHeader, FracSec, FrameType, IdCode};

    fn command(idcode: u16) -> Vec<u8> {
        CommandFrame {
            header: CommonHeader::new(FrameType::Command, IdCode(idcode), 1, FracSec::from_raw(0)),
            command: Command::DataOn,
        }
        .encode()
        .expect("a command frame encodes")
    }

    fn frames(framer: &mut StreamFramer) -> (Vec<Vec<u8>>, Vec<(usize, DiscardReason)>) {
        let mut frames = Vec::new();
        let mut discards = Vec::new();
        while let Some(event) = framer.next_event() {
            match event {
                FramerEvent::Frame(bytes) => frames.push(bytes.to_vec()),
                FramerEvent::Discarded { bytes, reason } => discards.push((bytes, reason)),
            }
        }
        (frames, discards)
    }

    #[test]
    fn splits_several_frames_in_one_read_and_one_frame_over_many() {
        let stream: Vec<u8> = [command(1), command(2), command(3)].concat();
        let mut framer = StreamFramer::new();
        framer.push(&stream[..20]);
        let (first, _) = frames(&mut framer);
        assert_eq!(first, vec![command(1)]);
        for byte in &stream[20..] {
            framer.push(std::slice::from_ref(byte));
        }
        let (rest, discards) = frames(&mut framer);
        assert_eq!(rest, vec![command(2), command(3)]);
        assert!(discards.is_empty());
        assert_eq!(framer.finish(), None);
    }

    #[test]
    fn resynchronises_after_garbage_and_a_corrupt_frame() {
        let mut corrupt = command(2);
        corrupt[8] ^= 0x01;
        let stream = [vec![0x00, 0xAA, 0xFF, 0x13], corrupt, command(3)].concat();
        let mut framer = StreamFramer::new();
        framer.push(&stream);
        let (good, discards) = frames(&mut framer);
        assert_eq!(good, vec![command(3)]);
        assert!(discards.contains(&(1, DiscardReason::BadHeader)));
        assert!(discards.contains(&(1, DiscardReason::CrcMismatch)));
        let dropped: usize = discards.iter().map(|(bytes, _)| bytes).sum();
        assert_eq!(dropped + command(3).len(), stream.len());
    }

    #[test]
    fn reports_a_truncated_tail() {
        let mut framer = StreamFramer::new();
        framer.push(&command(1)[..10]);
        assert_eq!(framer.next_event(), None);
        assert_eq!(
            framer.finish(),
            Some(FramerEvent::Discarded {
                bytes: 10,
                reason: DiscardReason::Truncated
            })
        );
    }
}
