//! Blocks of samples and their digest, exactly as the VILLASnode `digest` hook computes them
//! for SEGuRo gateways: SHA-256 over, per sample, `u64le(sec) ‖ u64le(nsec) ‖ u64le(sequence)`
//! and each value (f64le, i64le, one byte for a bool, f32le re ‖ f32le im for a complex).
//!
//! [`BlockFramer`] cuts a stream into blocks aligned to an interval on the epoch, closing a block
//! when the first sample of the next one arrives, as the `frame` and `digest` hooks do.

use sha2::{Digest as _, Sha256};

use crate::sample::{Sample, Timestamp, Value};

/// A block digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockDigest(pub [u8; 32]);

impl BlockDigest {
    /// Upper-case hex, as the platform names its files (`<DIGEST>.sha256.tsr`).
    pub fn hex_upper(&self) -> String {
        hex_upper(&self.0)
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02X}")).collect()
}

/// The canonical NaN VILLASnode's C++ hook hashes for every NaN, so that a NaN's payload bits
/// (which differ between sources) do not change the digest.
const CANONICAL_NAN: u64 = 0x7FF8_0000_0000_0000;

/// Incremental digest of one block.
#[derive(Debug, Clone, Default)]
pub struct BlockHasher {
    hasher: Sha256,
    first: Option<(Timestamp, u64)>,
    last: Option<(Timestamp, u64)>,
    samples: usize,
}

impl BlockHasher {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, sample: &Sample) {
        let hasher = &mut self.hasher;
        hasher.update(sample.ts_origin.sec.to_le_bytes());
        hasher.update(u64::from(sample.ts_origin.nsec).to_le_bytes());
        hasher.update(sample.sequence.to_le_bytes());
        for value in &sample.values {
            match *value {
                Value::Float(value) if value.is_nan() => hasher.update(CANONICAL_NAN.to_le_bytes()),
                Value::Float(value) => hasher.update(value.to_le_bytes()),
                Value::Int(value) => hasher.update(value.to_le_bytes()),
                Value::Bool(value) => hasher.update([u8::from(value)]),
                Value::Complex { re, im } => {
                    hasher.update(re.to_le_bytes());
                    hasher.update(im.to_le_bytes());
                }
            }
        }
        let position = (sample.ts_origin, sample.sequence);
        self.first.get_or_insert(position);
        self.last = Some(position);
        self.samples += 1;
    }

    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The digest and its VILLAS line; `None` for a block without samples.
    pub fn finish(self) -> Option<ClosedBlock> {
        let (first, last) = (self.first?, self.last?);
        Some(ClosedBlock {
            digest: BlockDigest(self.hasher.finalize().into()),
            first,
            last,
            samples: self.samples,
        })
    }
}

/// A finished block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedBlock {
    pub digest: BlockDigest,
    pub first: (Timestamp, u64),
    pub last: (Timestamp, u64),
    pub samples: usize,
}

impl ClosedBlock {
    /// The digest hook's line: `<sec>.<nsec, 9 digits>-<seq> <sec>.<nsec>-<seq> sha256 <HEX>`.
    pub fn line(&self) -> String {
        let (first, first_seq) = self.first;
        let (last, last_seq) = self.last;
        format!(
            "{}.{:09}-{} {}.{:09}-{} sha256 {}",
            first.sec,
            first.nsec,
            first_seq,
            last.sec,
            last.nsec,
            last_seq,
            self.digest.hex_upper()
        )
    }
}

/// A block interval: at least one second, since the platform's recorder writes a file per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockInterval {
    nanos: u128,
}

impl BlockInterval {
    pub const DEFAULT_SECONDS: u64 = 10;

    /// `None` below one second.
    pub fn from_secs(seconds: u64) -> Option<Self> {
        (seconds >= 1).then(|| Self {
            nanos: u128::from(seconds) * 1_000_000_000,
        })
    }
}

impl Default for BlockInterval {
    fn default() -> Self {
        Self {
            nanos: u128::from(Self::DEFAULT_SECONDS) * 1_000_000_000,
        }
    }
}

/// Cuts samples into blocks aligned to the interval on the epoch. A sample whose time falls in
/// a later interval than the block's starts a new block (and is flagged `new_frame`); the block
/// before it closes then.
#[derive(Debug, Default)]
pub struct BlockFramer {
    interval: BlockInterval,
    current: Option<(u128, BlockHasher)>,
}

/// What pushing a sample did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    /// Whether the sample is the first of a block (VILLAS `new_frame`).
    pub new_frame: bool,
    /// The block the sample closed, if it started a new one.
    pub closed: Option<ClosedBlock>,
}

impl BlockFramer {
    pub fn new(interval: BlockInterval) -> Self {
        Self {
            interval,
            current: None,
        }
    }

    pub fn push(&mut self, sample: &Sample) -> Framed {
        let slot = sample.ts_origin.as_nanos() / self.interval.nanos;
        let (new_frame, closed) = match self.current.take() {
            Some((current, hasher)) if current == slot => {
                self.current = Some((current, hasher));
                (false, None)
            }
            Some((_, hasher)) => (true, hasher.finish()),
            None => (true, None),
        };
        let (_, hasher) = self
            .current
            .get_or_insert_with(|| (slot, BlockHasher::new()));
        hasher.push(sample);
        Framed { new_frame, closed }
    }

    /// Closes the open block (at shutdown). VILLASnode drops it; Edgeward keeps every sample it
    /// accepted, so the caller decides.
    pub fn flush(&mut self) -> Option<ClosedBlock> {
        self.current.take().and_then(|(_, hasher)| hasher.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sec: u64, nsec: u32, sequence: u64) -> Sample {
        Sample {
            ts_origin: Timestamp::new(sec, nsec).expect("valid"),
            sequence,
            values: vec![Value::Float(f64::from(sequence as u32))],
        }
    }

    #[test]
    fn blocks_align_to_the_interval_and_close_when_the_next_starts() {
        let mut framer = BlockFramer::new(BlockInterval::from_secs(10).expect("valid"));
        let first = framer.push(&sample(1_700_000_005, 0, 0));
        assert!(first.new_frame && first.closed.is_none());
        assert!(
            !framer
                .push(&sample(1_700_000_009, 999_999_999, 1))
                .new_frame
        );
        let next = framer.push(&sample(1_700_000_010, 0, 2));
        assert!(next.new_frame);
        let closed = next.closed.expect("the first block closed");
        assert_eq!(closed.samples, 2);
        assert_eq!(closed.first.1, 0);
        assert_eq!(closed.last.1, 1);
        let open = framer.flush().expect("the open block");
        assert_eq!(open.samples, 1);
        assert!(BlockInterval::from_secs(0).is_none());
    }

    #[test]
    fn every_nan_hashes_alike() {
        let mut a = BlockHasher::new();
        let mut b = BlockHasher::new();
        let base = sample(1, 0, 0);
        a.push(&Sample {
            values: vec![Value::Float(f64::NAN)],
            ..base.clone()
        });
        b.push(&Sample {
            values: vec![Value::Float(f64::from_bits(0x7FF0_0000_0000_0001))],
            ..base
        });
        assert_eq!(
            a.finish().expect("block").digest,
            b.finish().expect("block").digest
        );
    }
}
