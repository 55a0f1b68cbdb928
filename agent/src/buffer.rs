//! The durable outbox between the pipeline and the broker (sled): a message is on disk, fsynced,
//! before the pipeline counts it accepted, and leaves only when the broker acknowledged it
//! (PUBACK). Messages keep the id they were accepted with, so a message sent again after an
//! outage or a crash is the same message, in the same order.
//!
//! Bounded: when full, the oldest messages are dropped, counted (persistently) and reported, so
//! that live data keeps flowing and the loss is never silent.
//!
//! Besides the outbox, two small trees make the pipeline's own state survive a crash: the
//! samples of each topic's open block (so its digest covers every sample after a restart), and
//! the block digests still waiting for a timestamp.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use tokio::sync::Notify;

/// One message for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Vec<u8>,
    pub retain: bool,
}

impl Outgoing {
    fn encode(&self) -> Vec<u8> {
        let topic = self.topic.as_bytes();
        let mut bytes = Vec::with_capacity(3 + topic.len() + self.payload.len());
        bytes.push(u8::from(self.retain));
        bytes.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        bytes.extend_from_slice(topic);
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let (&retain, rest) = bytes.split_first().context("empty outbox record")?;
        let length = rest
            .get(..2)
            .map(|length| usize::from(u16::from_be_bytes([length[0], length[1]])))
            .context("outbox record without topic length")?;
        let topic = rest
            .get(2..2 + length)
            .context("outbox record topic cut short")?;
        Ok(Self {
            retain: retain == 1,
            topic: String::from_utf8(topic.to_vec()).context("outbox topic is not UTF-8")?,
            payload: rest[2 + length..].to_vec(),
        })
    }
}

/// The buffer's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most payload bytes kept; the oldest go first beyond it.
    pub max_bytes: u64,
}

/// What the buffer holds and has lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fill {
    pub messages: u64,
    pub bytes: u64,
    pub dropped: u64,
    pub max_bytes: u64,
}

impl Fill {
    pub fn percent(&self) -> f64 {
        if self.max_bytes == 0 {
            0.0
        } else {
            self.bytes as f64 * 100.0 / self.max_bytes as f64
        }
    }
}

/// The durable outbox. Cheap to clone; all clones share the database.
#[derive(Clone)]
pub struct Buffer {
    db: sled::Db,
    outbox: sled::Tree,
    meta: sled::Tree,
    open_blocks: sled::Tree,
    pending_timestamps: sled::Tree,
    next_id: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    limits: Limits,
    /// Woken when messages are accepted.
    pub accepted: Arc<Notify>,
}

const DROPPED: &[u8] = b"dropped";

impl Buffer {
    pub fn open(path: &Path, limits: Limits) -> Result<Self> {
        let db = sled::Config::new()
            .path(path)
            .mode(sled::Mode::HighThroughput)
            .open()
            .with_context(|| format!("cannot open the buffer at {}", path.display()))?;
        let outbox = db.open_tree("outbox")?;
        let meta = db.open_tree("meta")?;
        let open_blocks = db.open_tree("open-blocks")?;
        let pending_timestamps = db.open_tree("pending-timestamps")?;
        let next_id = match outbox.last()? {
            Some((key, _)) => id_of(&key)? + 1,
            None => meta
                .get(b"next-id")?
                .map(|value| id_of(&value))
                .transpose()?
                .unwrap_or(1),
        };
        let mut bytes = 0u64;
        for entry in outbox.iter() {
            let (_, value) = entry?;
            bytes += value.len() as u64;
        }
        Ok(Self {
            db,
            outbox,
            meta,
            open_blocks,
            pending_timestamps,
            next_id: Arc::new(AtomicU64::new(next_id)),
            bytes: Arc::new(AtomicU64::new(bytes)),
            limits,
            accepted: Arc::new(Notify::new()),
        })
    }

    /// Accepts messages: they are written and fsynced before this returns, with the open-block
    /// samples (`block_puts`, `block_clears`) and pending timestamps changed in the same flush.
    /// Returns the ids given, and how many old messages were dropped to make room.
    pub fn accept(&self, messages: &[Outgoing], state: &StateChanges) -> Result<(Vec<u64>, u64)> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut batch = sled::Batch::default();
        let mut added = 0u64;
        for message in messages {
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let encoded = message.encode();
            added += encoded.len() as u64;
            batch.insert(&id.to_be_bytes(), encoded);
            ids.push(id);
        }
        self.outbox.apply_batch(batch)?;
        let mut blocks = sled::Batch::default();
        for key in &state.block_clears {
            for entry in self.open_blocks.scan_prefix(key) {
                let (key, _) = entry?;
                blocks.remove(key);
            }
        }
        for (key, value) in &state.block_puts {
            blocks.insert(key.as_slice(), value.as_slice());
        }
        self.open_blocks.apply_batch(blocks)?;
        for (key, value) in &state.timestamps_add {
            self.pending_timestamps
                .insert(key.as_slice(), value.as_slice())?;
        }
        for key in &state.timestamps_done {
            self.pending_timestamps.remove(key.as_slice())?;
        }
        self.bytes.fetch_add(added, Ordering::SeqCst);
        let dropped = self.enforce_limit()?;
        self.db.flush().context("cannot fsync the buffer")?;
        self.accepted.notify_one();
        Ok((ids, dropped))
    }

    fn enforce_limit(&self) -> Result<u64> {
        let mut dropped = 0u64;
        while self.bytes.load(Ordering::SeqCst) > self.limits.max_bytes {
            let Some((key, value)) = self.outbox.pop_min()? else {
                break;
            };
            let _ = key;
            self.bytes.fetch_sub(value.len() as u64, Ordering::SeqCst);
            dropped += 1;
        }
        if dropped > 0 {
            let before = self
                .meta
                .get(DROPPED)?
                .map(|value| id_of(&value))
                .transpose()?
                .unwrap_or(0);
            self.meta
                .insert(DROPPED, &(before + dropped).to_be_bytes())?;
        }
        Ok(dropped)
    }

    /// Messages after `after` (exclusive) in id order, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Outgoing)>> {
        let mut out = Vec::with_capacity(limit);
        for entry in self.outbox.range((after + 1).to_be_bytes()..) {
            let (key, value) = entry?;
            out.push((id_of(&key)?, Outgoing::decode(&value)?));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The broker acknowledged these: they leave the buffer.
    pub fn acknowledged(&self, ids: &[u64]) -> Result<()> {
        let mut batch = sled::Batch::default();
        let mut freed = 0u64;
        for id in ids {
            if let Some(value) = self.outbox.get(id.to_be_bytes())? {
                freed += value.len() as u64;
                batch.remove(&id.to_be_bytes());
            }
        }
        self.outbox.apply_batch(batch)?;
        // Remember where ids stand, so an empty buffer after a restart never reuses one.
        self.meta.insert(
            b"next-id",
            &self.next_id.load(Ordering::SeqCst).to_be_bytes(),
        )?;
        self.bytes.fetch_sub(
            freed.min(self.bytes.load(Ordering::SeqCst)),
            Ordering::SeqCst,
        );
        Ok(())
    }

    pub fn fill(&self) -> Result<Fill> {
        Ok(Fill {
            messages: self.outbox.len() as u64,
            bytes: self.bytes.load(Ordering::SeqCst),
            dropped: self
                .meta
                .get(DROPPED)?
                .map(|value| id_of(&value))
                .transpose()?
                .unwrap_or(0),
            max_bytes: self.limits.max_bytes,
        })
    }

    /// The open blocks' samples, as stored by [`StateChanges::block_puts`].
    pub fn open_block_samples(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.open_blocks
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    pub fn pending_timestamps(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.pending_timestamps
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key.to_vec(), value.to_vec()))
            })
            .collect()
    }

    pub fn flush(&self) -> Result<()> {
        self.db.flush().context("cannot fsync the buffer")?;
        Ok(())
    }
}

/// Changes to the pipeline's durable state, written with the messages they belong to.
#[derive(Debug, Default)]
pub struct StateChanges {
    /// Prefixes of open-block samples to delete (a block closed).
    pub block_clears: Vec<Vec<u8>>,
    pub block_puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub timestamps_add: Vec<(Vec<u8>, Vec<u8>)>,
    pub timestamps_done: Vec<Vec<u8>>,
}

fn id_of(bytes: &[u8]) -> Result<u64> {
    match <[u8; 8]>::try_from(bytes) {
        Ok(array) => Ok(u64::from_be_bytes(array)),
        Err(_) => bail!("buffer key of {} bytes, not 8", bytes.len()),
    }
}
