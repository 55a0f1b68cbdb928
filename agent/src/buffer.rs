//! The durable outbox between the pipeline and the broker (redb): a message is on disk, fsynced,
//! before the pipeline counts it accepted, and leaves only when the broker acknowledged it
//! (PUBACK). Messages keep the id they were accepted with, so a message sent again after an
//! outage or a crash is the same message, in the same order.
//!
//! Bounded: when full, the oldest messages are dropped, counted (persistently) and reported, so
//! that live data keeps flowing and the loss is never silent.
//!
//! Besides the outbox, the same store keeps the pipeline's own state through a crash: the
//! samples of each topic's open block (so its digest covers every sample after a restart), and
//! the block digests still waiting for a timestamp.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use redb::{ReadableDatabase as _, ReadableTable as _};
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
///
/// Everything lives in one redb table under key prefixes, and each acceptance is one write
/// transaction: a sample is never in the outbox after a crash without also being in its open
/// block (the block's digest would then miss a sample the platform records). redb runs one write
/// transaction at a time, so ids are taken and made visible in order (the forwarder reads
/// "everything after the last id sent"; a gap filled later would be skipped until the next
/// connection). Decision record: docs/decisions/0018.
#[derive(Clone)]
pub struct Buffer {
    db: Arc<redb::Database>,
    bytes: Arc<AtomicU64>,
    messages: Arc<AtomicU64>,
    limits: Limits,
    /// Woken when messages are accepted.
    pub accepted: Arc<Notify>,
}

const TABLE: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("buffer");

/// The database file inside the buffer directory.
const FILE: &str = "buffer.redb";

/// Key prefixes: outbox messages by id, open-block samples, pending timestamps, counters.
const OUTBOX: u8 = b'o';
const BLOCK: u8 = b'b';
const PENDING: u8 = b't';
const DROPPED: &[u8] = b"m-dropped";
const NEXT_ID: &[u8] = b"m-next-id";

fn outbox_key(id: u64) -> [u8; 9] {
    let mut key = [OUTBOX; 9];
    key[1..].copy_from_slice(&id.to_be_bytes());
    key
}

fn prefixed(prefix: u8, key: &[u8]) -> Vec<u8> {
    let mut full = Vec::with_capacity(key.len() + 1);
    full.push(prefix);
    full.extend_from_slice(key);
    full
}

/// The first key after every key that starts with `prefix` (`None`: no such bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Every (key, value) under `prefix` in a table, keys with the prefix.
fn scan(
    table: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    prefix: &[u8],
) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let range = match prefix_end(prefix) {
        Some(end) => table.range::<&[u8]>(prefix..end.as_slice())?,
        None => table.range::<&[u8]>(prefix..)?,
    };
    range
        .map(|entry| {
            let (key, value) = entry?;
            Ok((key.value().to_vec(), value.value().to_vec()))
        })
        .collect()
}

fn counter(
    table: &impl redb::ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<u64>> {
    table
        .get(key)?
        .map(|value| id_of(value.value()))
        .transpose()
}

impl Buffer {
    /// Opens (or creates) the buffer in directory `path`.
    pub fn open(path: &Path, limits: Limits) -> Result<Self> {
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create the buffer directory {}", path.display()))?;
        // An agent before 0018 kept its buffer with sled in this directory; its messages would
        // be silently left behind, so refuse rather than start an empty buffer beside them.
        if path.join("conf").is_file() && path.join("db").is_file() {
            bail!(
                "{} holds a buffer of an earlier agent (sled): drain it with that version, or \
                 move it away to discard its messages",
                path.display()
            );
        }
        let file = path.join(FILE);
        let db = redb::Database::create(&file)
            .with_context(|| format!("cannot open the buffer at {}", file.display()))?;
        let (mut bytes, mut messages) = (0u64, 0u64);
        {
            let write = db.begin_write()?;
            // Creates the table on first use, so that readers always find it.
            write.open_table(TABLE)?;
            write.commit()?;
            let read = db.begin_read()?;
            let table = read.open_table(TABLE)?;
            for entry in table.range::<&[u8]>([OUTBOX].as_slice()..[OUTBOX + 1].as_slice())? {
                let (_, value) = entry?;
                bytes += value.value().len() as u64;
                messages += 1;
            }
        }
        Ok(Self {
            db: Arc::new(db),
            bytes: Arc::new(AtomicU64::new(bytes)),
            messages: Arc::new(AtomicU64::new(messages)),
            limits,
            accepted: Arc::new(Notify::new()),
        })
    }

    /// Accepts messages: they are written and fsynced before this returns, with the pipeline
    /// state changes in the same transaction. Returns the ids given, and how many old messages
    /// were dropped to make room.
    pub fn accept(&self, messages: &[Outgoing], state: &StateChanges) -> Result<(Vec<u64>, u64)> {
        let mut ids = Vec::with_capacity(messages.len());
        let mut write = self.db.begin_write()?;
        // No quick repair: it doubles the fsyncs of every commit (two-phase) and writes the
        // allocator state each time, to save a walk of the file after a crash that measured
        // 0.5 s for 512 MiB of backlog (decision 0029).
        write.set_quick_repair(false);
        let (added, dropped, freed) = {
            let mut table = write.open_table(TABLE)?;
            // A closed block's samples removed before the next block's are put.
            for key in &state.block_removes {
                table.remove(prefixed(BLOCK, key).as_slice())?;
            }
            for (key, value) in &state.block_puts {
                table.insert(prefixed(BLOCK, key).as_slice(), value.as_slice())?;
            }
            for (key, value) in &state.timestamps_add {
                table.insert(prefixed(PENDING, key).as_slice(), value.as_slice())?;
            }
            for key in &state.timestamps_done {
                table.remove(prefixed(PENDING, key).as_slice())?;
            }
            let mut next_id = match table
                .range::<&[u8]>([OUTBOX].as_slice()..[OUTBOX + 1].as_slice())?
                .next_back()
                .transpose()?
            {
                Some((key, _)) => id_of(&key.value()[1..])? + 1,
                None => 1,
            };
            next_id = next_id.max(counter(&table, NEXT_ID)?.unwrap_or(1));
            let mut added = 0u64;
            for message in messages {
                let encoded = message.encode();
                added += encoded.len() as u64;
                table.insert(outbox_key(next_id).as_slice(), encoded.as_slice())?;
                ids.push(next_id);
                next_id += 1;
            }
            table.insert(NEXT_ID, next_id.to_be_bytes().as_slice())?;
            // The oldest go first when the new ones do not fit.
            let held = self.bytes.load(Ordering::SeqCst) + added;
            let (mut dropped, mut freed) = (0u64, 0u64);
            if held > self.limits.max_bytes {
                let mut oldest = Vec::new();
                for entry in table.range::<&[u8]>([OUTBOX].as_slice()..[OUTBOX + 1].as_slice())? {
                    let (key, value) = entry?;
                    freed += value.value().len() as u64;
                    dropped += 1;
                    oldest.push(key.value().to_vec());
                    if held.saturating_sub(freed) <= self.limits.max_bytes {
                        break;
                    }
                }
                for key in &oldest {
                    table.remove(key.as_slice())?;
                }
                let before = counter(&table, DROPPED)?.unwrap_or(0);
                table.insert(DROPPED, (before + dropped).to_be_bytes().as_slice())?;
            }
            (added, dropped, freed)
        };
        write.commit().context("cannot commit to the buffer")?;
        self.bytes.fetch_add(added, Ordering::SeqCst);
        self.messages.fetch_add(ids.len() as u64, Ordering::SeqCst);
        saturating_sub(&self.bytes, freed);
        saturating_sub(&self.messages, dropped);
        self.accepted.notify_one();
        Ok((ids, dropped))
    }

    /// Messages after `after` (exclusive) in id order, at most `limit`.
    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<(u64, Outgoing)>> {
        let mut out = Vec::with_capacity(limit);
        let start = outbox_key(after.saturating_add(1));
        let read = self.db.begin_read()?;
        let table = read.open_table(TABLE)?;
        for entry in table.range::<&[u8]>(start.as_slice()..[OUTBOX + 1].as_slice())? {
            let (key, value) = entry?;
            out.push((id_of(&key.value()[1..])?, Outgoing::decode(value.value())?));
            if out.len() == limit {
                break;
            }
        }
        Ok(out)
    }

    /// The broker acknowledged these: they leave the buffer. Not fsynced on its own: a crash
    /// before the next acceptance sends them again, as the same messages.
    pub fn acknowledged(&self, ids: &[u64]) -> Result<()> {
        let mut write = self.db.begin_write()?;
        write
            .set_durability(redb::Durability::None)
            .context("buffer durability")?;
        let (mut freed, mut removed) = (0u64, 0u64);
        {
            let mut table = write.open_table(TABLE)?;
            for id in ids {
                if let Some(value) = table.remove(outbox_key(*id).as_slice())? {
                    freed += value.value().len() as u64;
                    removed += 1;
                }
            }
        }
        write.commit().context("cannot commit to the buffer")?;
        saturating_sub(&self.bytes, freed);
        saturating_sub(&self.messages, removed);
        Ok(())
    }

    pub fn fill(&self) -> Result<Fill> {
        let read = self.db.begin_read()?;
        let table = read.open_table(TABLE)?;
        Ok(Fill {
            messages: self.messages.load(Ordering::SeqCst),
            bytes: self.bytes.load(Ordering::SeqCst),
            dropped: counter(&table, DROPPED)?.unwrap_or(0),
            max_bytes: self.limits.max_bytes,
        })
    }

    fn entries(&self, prefix: u8) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let read = self.db.begin_read()?;
        let table = read.open_table(TABLE)?;
        Ok(scan(&table, &[prefix])?
            .into_iter()
            .map(|(key, value)| (key[1..].to_vec(), value))
            .collect())
    }

    /// The open blocks' samples, as stored by [`StateChanges::block_puts`].
    pub fn open_block_samples(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.entries(BLOCK)
    }

    pub fn pending_timestamps(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.entries(PENDING)
    }

    /// Makes every commit so far durable (the acknowledgements, which are not on their own).
    pub fn flush(&self) -> Result<()> {
        let write = self.db.begin_write()?;
        write.commit().context("cannot fsync the buffer")?;
        Ok(())
    }
}

/// Changes to the pipeline's durable state, written with the messages they belong to.
#[derive(Debug, Default)]
pub struct StateChanges {
    /// Keys of open-block samples to delete (their block closed).
    pub block_removes: Vec<Vec<u8>>,
    pub block_puts: Vec<(Vec<u8>, Vec<u8>)>,
    pub timestamps_add: Vec<(Vec<u8>, Vec<u8>)>,
    pub timestamps_done: Vec<Vec<u8>>,
}

/// Counters never wrap below zero: a message dropped for room and then acknowledged is
/// subtracted once only in effect.
fn saturating_sub(counter: &AtomicU64, amount: u64) {
    let _ = counter.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |value| {
        Some(value.saturating_sub(amount))
    });
}

fn id_of(bytes: &[u8]) -> Result<u64> {
    match <[u8; 8]>::try_from(bytes) {
        Ok(array) => Ok(u64::from_be_bytes(array)),
        Err(_) => bail!("buffer key of {} bytes, not 8", bytes.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("edgeward-buffer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn message(n: u8) -> Outgoing {
        Outgoing {
            topic: format!("data/measurements/l/d/p{n}"),
            payload: vec![n; 100],
            retain: n.is_multiple_of(2),
        }
    }

    #[test]
    fn messages_survive_a_reopen_in_order_and_leave_only_when_acknowledged() {
        let dir = scratch("reopen");
        let limits = Limits { max_bytes: 1 << 20 };
        let (ids, dropped) = {
            let buffer = Buffer::open(&dir, limits).expect("opens");
            buffer
                .accept(
                    &[message(1), message(2), message(3)],
                    &StateChanges::default(),
                )
                .expect("accepts")
        };
        assert_eq!((ids.len(), dropped), (3, 0));
        let buffer = Buffer::open(&dir, limits).expect("reopens");
        let pending = buffer.after(0, 10).expect("reads");
        assert_eq!(
            pending
                .iter()
                .map(|(id, message)| (*id, message.clone()))
                .collect::<Vec<_>>(),
            vec![
                (ids[0], message(1)),
                (ids[1], message(2)),
                (ids[2], message(3))
            ]
        );
        buffer.acknowledged(&[ids[0], ids[2]]).expect("acks");
        let left: Vec<u64> = buffer
            .after(0, 10)
            .expect("reads")
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(left, vec![ids[1]]);
        // New ids never repeat old ones, even after everything was acknowledged.
        buffer.acknowledged(&[ids[1]]).expect("acks");
        drop(buffer);
        let buffer = Buffer::open(&dir, limits).expect("reopens");
        let (again, _) = buffer
            .accept(&[message(4)], &StateChanges::default())
            .expect("accepts");
        assert!(again[0] > ids[2]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let dir = scratch("full");
        // Each record is 1 + 2 + topic + 100 bytes; room for about three.
        let buffer = Buffer::open(&dir, Limits { max_bytes: 400 }).expect("opens");
        let mut dropped = 0;
        for n in 1..=6 {
            dropped += buffer
                .accept(&[message(n)], &StateChanges::default())
                .expect("accepts")
                .1;
        }
        let fill = buffer.fill().expect("fill");
        assert_eq!(dropped, 3);
        assert_eq!(fill.dropped, 3, "the count is kept");
        assert_eq!(fill.messages, 3);
        assert!(fill.bytes <= 400);
        let topics: Vec<String> = buffer
            .after(0, 10)
            .expect("reads")
            .into_iter()
            .map(|(_, m)| m.topic)
            .collect();
        assert_eq!(
            topics,
            vec![
                "data/measurements/l/d/p4",
                "data/measurements/l/d/p5",
                "data/measurements/l/d/p6"
            ]
        );
        drop(buffer);
        assert_eq!(
            Buffer::open(&dir, Limits { max_bytes: 400 })
                .expect("reopens")
                .fill()
                .expect("fill")
                .dropped,
            3
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_block_samples_are_replaced_when_their_block_closes() {
        let dir = scratch("blocks");
        let buffer = Buffer::open(&dir, Limits { max_bytes: 1 << 20 }).expect("opens");
        let put = |key: &[u8]| (key.to_vec(), b"sample".to_vec());
        buffer
            .accept(
                &[],
                &StateChanges {
                    block_puts: vec![put(b"a\0\x01"), put(b"a\0\x02"), put(b"b\0\x01")],
                    ..Default::default()
                },
            )
            .expect("accepts");
        buffer
            .accept(
                &[],
                &StateChanges {
                    block_removes: vec![b"a\0\x01".to_vec(), b"a\0\x02".to_vec()],
                    block_puts: vec![put(b"a\0\x03")],
                    ..Default::default()
                },
            )
            .expect("accepts");
        let keys: Vec<Vec<u8>> = buffer
            .open_block_samples()
            .expect("reads")
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(keys, vec![b"a\0\x03".to_vec(), b"b\0\x01".to_vec()]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
