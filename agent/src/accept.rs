//! The accepting step, without I/O: what the PMU tasks deliver becomes the messages and the
//! buffer changes of one batch. Per topic it refuses samples that are not after the previous
//! one, frames blocks (a closed block's digest becomes a pending proof and its stored samples
//! are cleared), groups the samples of one topic that arrived together into messages of at most
//! [`MAX_MESSAGE`] bytes, and keeps the open block's samples so that a restart can finish its
//! digest. [`crate::pipeline::Accepter`] commits each batch to the buffer.

use std::collections::BTreeMap;
use std::sync::Arc;

use edgeward_measurement::block::{BlockFramer, BlockInterval, ClosedBlock};
use edgeward_measurement::sample::Sample;
use edgeward_platform::notification::Notification;
use edgeward_platform::topics::{PointTopic, TopicSegment, NOTIFICATION_TOPIC};
use edgeward_platform::villas::{self, VillasError, WireSample};
use tracing::{info, warn};

use crate::buffer::{Outgoing, StateChanges};

/// What the PMU tasks hand to the accepting step.
pub enum Input {
    Sample {
        topic: Arc<PointTopic>,
        sample: Sample,
    },
    Metadata {
        topic: Arc<PointTopic>,
        json: String,
    },
    Notice(Notification),
}

/// Whether `batch` holds a sample from each of `streams` different points: then nothing more
/// of this instant is to come, and the batch can be committed without waiting out the window.
pub fn every_stream_in(batch: &[Input], streams: usize) -> bool {
    let mut seen: Vec<&PointTopic> = Vec::with_capacity(streams);
    for input in batch {
        if let Input::Sample { topic, .. } = input {
            if !seen.contains(&topic.as_ref()) {
                seen.push(topic);
                if seen.len() >= streams {
                    return true;
                }
            }
        }
    }
    streams == 0
}

/// Payload bytes per sample message at most: VILLASnode caps its MQTT messages at 1500 B.
pub const MAX_MESSAGE: usize = 1400;

#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("cannot encode a sample: {0}")]
    Encode(VillasError),
    #[error("a stored open-block sample does not decode: {0}")]
    Stored(VillasError),
    #[error("a stored open-block sample has a key of neither layout: {0}")]
    StoredKey(String),
}

/// A notification of this device, as a buffer message.
pub fn notice(notification: &Notification, device: &TopicSegment) -> Outgoing {
    Outgoing {
        topic: NOTIFICATION_TOPIC.into(),
        payload: notification.payload(device),
        retain: false,
    }
}

/// Where a message's samples are kept while their block is open:
/// `\0<first sequence, big-endian><topic>\0`. Sequence first, so that the instants of every
/// stream append at one end of the buffer's B-tree and a commit rewrites a few pages, not one
/// leaf per topic (topic first, as an agent before decision 0029 kept them, `<topic>\0<first
/// sequence>`, is still read: no topic starts with a NUL).
fn block_key(topic: &str, sequence: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + topic.len());
    key.push(0);
    key.extend_from_slice(&sequence.to_be_bytes());
    key.extend_from_slice(topic.as_bytes());
    key.push(0);
    key
}

/// The topic and first sequence a stored open-block key names, in either layout.
fn parse_block_key(key: &[u8]) -> Option<(&[u8], u64)> {
    match key.split_first() {
        Some((0, rest)) => {
            let (sequence, rest) = rest.split_first_chunk::<8>()?;
            let topic = rest.strip_suffix(&[0])?;
            Some((topic, u64::from_be_bytes(*sequence)))
        }
        _ => {
            let end = key.iter().position(|byte| *byte == 0)?;
            let sequence: [u8; 8] = key[end + 1..].try_into().ok()?;
            Some((&key[..end], u64::from_be_bytes(sequence)))
        }
    }
}

/// A closed block waiting for its proofs: digest → topic and span, for logs.
fn pending_value(topic: &PointTopic, closed: &ClosedBlock) -> Vec<u8> {
    format!("{} {}", topic.samples(), closed.line()).into_bytes()
}

/// Samples of one topic on their way into one message.
struct Group {
    first: u64,
    payload: Vec<u8>,
}

impl Group {
    fn message(self, topic: String) -> Outgoing {
        Outgoing {
            topic,
            payload: self.payload,
            retain: false,
        }
    }

    /// The message, and its samples kept with the open block (whose keys `stored` lists).
    fn flush(
        self,
        name: String,
        stored: &mut Vec<Vec<u8>>,
        messages: &mut Vec<Outgoing>,
        state: &mut StateChanges,
    ) {
        let key = block_key(&name, self.first);
        stored.push(key.clone());
        state.block_puts.push((key, self.payload.clone()));
        messages.push(self.message(name));
    }
}

/// One batch, decided: to be committed together.
#[derive(Debug, Default)]
pub struct Taken {
    /// In input order, except that a topic's samples travel grouped.
    pub messages: Vec<Outgoing>,
    pub state: StateChanges,
    /// Whether a block closed (its proofs are due).
    pub closed_block: bool,
    /// The sequences of the samples taken, for the log.
    pub sequences: Vec<u64>,
}

/// What a restart found of the open blocks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub samples: usize,
    pub blocks: usize,
}

/// The accepting step's state: per topic, the block framing and the last sequence.
pub struct Acceptance {
    interval: BlockInterval,
    device: TopicSegment,
    framers: BTreeMap<String, BlockFramer>,
    /// Per topic, the buffer keys of its open block's samples: removed when the block closes.
    stored: BTreeMap<String, Vec<Vec<u8>>>,
    /// The last sequence accepted per topic: a sample at or before it (a PMU repeating a frame
    /// or stepping its clock back) is not new data, and the recorder would drop it anyway.
    last: BTreeMap<String, u64>,
    /// Samples taken by this process, and refused as not after the previous one.
    pub samples: u64,
    pub stale: u64,
}

impl Acceptance {
    pub fn new(interval: BlockInterval, device: TopicSegment) -> Self {
        Self {
            interval,
            device,
            framers: BTreeMap::new(),
            stored: BTreeMap::new(),
            last: BTreeMap::new(),
            samples: 0,
            stale: 0,
        }
    }

    /// Takes back the open blocks' samples a previous run kept (`(key, message)` as stored):
    /// they were accepted, so the blocks' digests must cover them.
    pub fn restore(
        &mut self,
        stored: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<Restored, AcceptError> {
        let mut entries = Vec::new();
        for (key, value) in stored {
            let (topic, sequence) =
                parse_block_key(&key).ok_or_else(|| AcceptError::StoredKey(hex::encode(&key)))?;
            let topic = String::from_utf8_lossy(topic).into_owned();
            entries.push((topic, sequence, key, value));
        }
        // In each topic's order: the buffer sorts the layouts apart, and a block kept across an
        // update and a second restart holds keys of both.
        entries.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        let mut samples = 0;
        for (topic, _, key, value) in entries {
            self.stored.entry(topic.clone()).or_default().push(key);
            for wire in villas::decode(&value).map_err(AcceptError::Stored)? {
                let interval = self.interval;
                self.framers
                    .entry(topic.clone())
                    .or_insert_with(|| BlockFramer::new(interval))
                    .push(&wire.sample);
                let newest = self
                    .last
                    .entry(topic.clone())
                    .or_insert(wire.sample.sequence);
                *newest = (*newest).max(wire.sample.sequence);
                samples += 1;
            }
        }
        Ok(Restored {
            samples,
            blocks: self.framers.len(),
        })
    }

    /// Decides one batch.
    pub fn take(&mut self, batch: Vec<Input>) -> Result<Taken, AcceptError> {
        let mut taken = Taken {
            messages: Vec::with_capacity(batch.len()),
            ..Taken::default()
        };
        // Samples of one topic that arrived together travel in one message, up to VILLASnode's
        // own message size; a protobuf `Message` is the concatenation of its samples' records,
        // so each sample is encoded once.
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for input in batch {
            match input {
                Input::Sample { topic, sample } => {
                    let name = topic.samples();
                    if self
                        .last
                        .get(&name)
                        .is_some_and(|last| sample.sequence <= *last)
                    {
                        self.stale += 1;
                        warn!(topic = %name, sequence = sample.sequence, "a sample not after the previous one; not forwarded");
                        continue;
                    }
                    self.last.insert(name.clone(), sample.sequence);
                    let interval = self.interval;
                    let framer = self
                        .framers
                        .entry(name.clone())
                        .or_insert_with(|| BlockFramer::new(interval));
                    let framed = framer.push(&sample);
                    if let Some(closed) = framed.closed {
                        // What is grouped belongs to the closed block: it goes out, and the
                        // block's samples are no longer needed to redo its digest.
                        if let Some(group) = groups.remove(&name) {
                            taken.messages.push(group.message(name.clone()));
                        }
                        let keys = self.stored.remove(&name).unwrap_or_default();
                        taken
                            .state
                            .block_puts
                            .retain(|(key, _)| !keys.contains(key));
                        taken.state.block_removes.extend(keys);
                        taken
                            .state
                            .timestamps_add
                            .push((closed.digest.0.to_vec(), pending_value(&topic, &closed)));
                        info!(topic = %name, samples = closed.samples, digest = %closed.digest.hex_upper(), "block closed");
                        taken.closed_block = true;
                    }
                    taken.sequences.push(sample.sequence);
                    let sequence = sample.sequence;
                    let record = villas::encode(&[WireSample {
                        sample,
                        new_frame: framed.new_frame,
                    }])
                    .map_err(AcceptError::Encode)?;
                    let full = groups
                        .get(&name)
                        .is_some_and(|group| group.payload.len() + record.len() > MAX_MESSAGE);
                    if full {
                        if let Some(group) = groups.remove(&name) {
                            group.flush(
                                name.clone(),
                                self.stored.entry(name.clone()).or_default(),
                                &mut taken.messages,
                                &mut taken.state,
                            );
                        }
                    }
                    let group = groups.entry(name).or_insert_with(|| Group {
                        first: sequence,
                        payload: Vec::new(),
                    });
                    group.payload.extend_from_slice(&record);
                    self.samples += 1;
                }
                Input::Metadata { topic, json } => taken.messages.push(Outgoing {
                    topic: topic.metadata(),
                    payload: json.into_bytes(),
                    retain: true,
                }),
                Input::Notice(notification) => {
                    taken.messages.push(notice(&notification, &self.device))
                }
            }
        }
        for (name, group) in groups {
            let stored = self.stored.entry(name.clone()).or_default();
            group.flush(name, stored, &mut taken.messages, &mut taken.state);
        }
        Ok(taken)
    }

    /// The notice that the buffer dropped `dropped` old messages for room.
    pub fn buffer_full(&self, dropped: u64) -> Outgoing {
        notice(
            &Notification::buffer_full(&self.device, dropped),
            &self.device,
        )
    }
}

#[cfg(test)]
mod tests {
    use edgeward_measurement::block::BlockHasher;
    use edgeward_measurement::sample::{Timestamp, Value};

    use super::*;

    fn segment(name: &str) -> TopicSegment {
        TopicSegment::new(name).expect("segment")
    }

    fn topic(point: &str) -> Arc<PointTopic> {
        Arc::new(PointTopic {
            location: segment("sub1"),
            device: segment("bay-50"),
            point: segment(point),
        })
    }

    /// Sample `k` of a 50 frames/s stream: 20 ms apart, from a whole second.
    fn sample(k: u64) -> Sample {
        let nanos = 1_796_000_000_000_000_000u128 + u128::from(k) * 20_000_000;
        Sample {
            ts_origin: Timestamp {
                sec: (nanos / 1_000_000_000) as u64,
                nsec: (nanos % 1_000_000_000) as u32,
            },
            sequence: 1_000 + k,
            values: vec![
                Value::Complex {
                    re: 230.0,
                    im: k as f32,
                },
                Value::Float(50.0),
            ],
        }
    }

    fn input(point: &str, k: u64) -> Input {
        Input::Sample {
            topic: topic(point),
            sample: sample(k),
        }
    }

    fn one_second() -> Acceptance {
        Acceptance::new(
            BlockInterval::from_secs(1).expect("interval"),
            segment("bay-50"),
        )
    }

    fn decoded(message: &Outgoing) -> Vec<u64> {
        villas::decode(&message.payload)
            .expect("VILLAS")
            .iter()
            .map(|wire| wire.sample.sequence)
            .collect()
    }

    #[test]
    fn a_batch_is_complete_once_every_stream_has_a_sample_in_it() {
        let one = [input("bay-1", 0)];
        assert!(every_stream_in(&one, 1), "one stream: no waiting");
        assert!(!every_stream_in(&one, 2));
        let twice = [input("bay-1", 0), input("bay-1", 1)];
        assert!(
            !every_stream_in(&twice, 2),
            "two samples of one stream are not two streams"
        );
        let notices = [
            input("bay-1", 0),
            Input::Notice(Notification::tsa_reachable(&segment("bay-50"))),
        ];
        assert!(
            !every_stream_in(&notices, 2),
            "a notice is no stream's sample"
        );
        let both = [input("bay-1", 0), input("bay-1", 1), input("bay-2", 0)];
        assert!(every_stream_in(&both, 2));
    }

    #[test]
    fn samples_that_arrive_together_travel_in_one_message_per_topic_and_are_kept_for_the_open_block(
    ) {
        let mut acceptance = one_second();
        let taken = acceptance
            .take(vec![input("a", 0), input("b", 0), input("a", 1)])
            .expect("taken");
        let topics: Vec<&str> = taken.messages.iter().map(|m| m.topic.as_str()).collect();
        assert_eq!(
            topics,
            [
                "data/measurements/sub1/bay-50/a",
                "data/measurements/sub1/bay-50/b"
            ]
        );
        assert_eq!(decoded(&taken.messages[0]), [1000, 1001]);
        assert_eq!(
            taken.state.block_puts.len(),
            2,
            "each topic's open block keeps its samples"
        );
        assert_eq!(taken.state.block_puts[0].1, taken.messages[0].payload);
        assert!(!taken.closed_block && taken.state.timestamps_add.is_empty());
        assert_eq!(acceptance.samples, 3);
    }

    #[test]
    fn a_sample_not_after_the_previous_one_is_refused_and_counted() {
        let mut acceptance = one_second();
        acceptance.take(vec![input("a", 5)]).expect("taken");
        let taken = acceptance
            .take(vec![input("a", 5), input("a", 3), input("a", 6)])
            .expect("taken");
        assert_eq!(decoded(&taken.messages[0]), [1006]);
        assert_eq!(acceptance.stale, 2);
        assert_eq!(acceptance.samples, 2);
    }

    #[test]
    fn a_block_closes_at_the_second_with_its_digest_pending_and_its_samples_cleared() {
        let mut acceptance = one_second();
        let first: Vec<Input> = (0..50).map(|k| input("a", k)).collect();
        let taken = acceptance.take(first).expect("taken");
        assert!(
            !taken.closed_block,
            "50 samples fill the second, none starts the next"
        );
        let kept: Vec<Vec<u8>> = taken
            .state
            .block_puts
            .iter()
            .map(|(key, _)| key.clone())
            .collect();
        let taken = acceptance.take(vec![input("a", 50)]).expect("taken");
        assert!(taken.closed_block);
        let mut hasher = BlockHasher::new();
        for k in 0..50 {
            hasher.push(&sample(k));
        }
        let digest = hasher.finish().expect("block").digest;
        assert_eq!(taken.state.timestamps_add.len(), 1);
        assert_eq!(taken.state.timestamps_add[0].0, digest.0.to_vec());
        assert!(String::from_utf8_lossy(&taken.state.timestamps_add[0].1)
            .starts_with("data/measurements/sub1/bay-50/a "));
        assert_eq!(
            taken.state.block_removes, kept,
            "the closed block's stored samples, all of them, are removed"
        );
        // The new block's first sample is kept again, after the removal.
        assert_eq!(taken.state.block_puts.len(), 1);
        let wire = villas::decode(&taken.messages[0].payload).expect("VILLAS");
        assert!(wire[0].new_frame, "the first sample of a block says so");
    }

    #[test]
    fn a_block_split_across_a_restart_has_the_same_digest() {
        let mut straight = one_second();
        straight
            .take((0..30).map(|k| input("a", k)).collect())
            .expect("taken");
        straight
            .take((30..50).map(|k| input("a", k)).collect())
            .expect("taken");
        let whole = straight.take(vec![input("a", 50)]).expect("taken");

        let mut before = one_second();
        let kept = before
            .take((0..30).map(|k| input("a", k)).collect())
            .expect("taken");
        let mut after = one_second();
        let restored = after.restore(kept.state.block_puts).expect("restored");
        assert_eq!(
            restored,
            Restored {
                samples: 30,
                blocks: 1
            }
        );
        // What the last run took is not taken again.
        let again = after.take(vec![input("a", 29)]).expect("taken");
        assert!(again.messages.is_empty());
        after
            .take((30..50).map(|k| input("a", k)).collect())
            .expect("taken");
        let resumed = after.take(vec![input("a", 50)]).expect("taken");
        assert_eq!(
            resumed.state.timestamps_add[0].0, whole.state.timestamps_add[0].0,
            "the digest covers the samples from before the restart"
        );
    }

    #[test]
    fn messages_stay_within_the_villas_size() {
        let mut acceptance = one_second();
        let taken = acceptance
            .take((0..40).map(|k| input("a", k)).collect())
            .expect("taken");
        assert!(
            taken.messages.len() > 1,
            "40 samples do not fit one message"
        );
        assert!(taken
            .messages
            .iter()
            .all(|message| message.payload.len() <= MAX_MESSAGE));
        let all: Vec<u64> = taken.messages.iter().flat_map(decoded).collect();
        assert_eq!(all, (1000..1040).collect::<Vec<_>>(), "in order, none lost");
        assert_eq!(taken.state.block_puts.len(), taken.messages.len());
    }

    #[test]
    fn later_instants_are_kept_after_every_stream_of_earlier_ones() {
        // One commit's keys append at one end of the B-tree, whatever the topics.
        let mut acceptance = one_second();
        let first = acceptance
            .take(vec![input("z", 0), input("a", 0)])
            .expect("taken");
        let second = acceptance
            .take(vec![input("z", 1), input("a", 1)])
            .expect("taken");
        let newest_first = first.state.block_puts.iter().map(|(key, _)| key).max();
        let oldest_second = second.state.block_puts.iter().map(|(key, _)| key).min();
        assert!(newest_first < oldest_second);
    }

    #[test]
    fn open_blocks_kept_by_an_earlier_agent_are_finished_and_removed() {
        // Before decision 0029 the key was `<topic>\0<first sequence>`.
        let old_layout = old_layout_of(&first_thirty());
        let old_keys: Vec<Vec<u8>> = old_layout.iter().map(|(key, _)| key.clone()).collect();
        let mut after = one_second();
        let restored = after.restore(old_layout).expect("restored");
        assert_eq!(restored.samples, 30);
        after
            .take((30..50).map(|k| input("a", k)).collect())
            .expect("taken");
        let closing = after.take(vec![input("a", 50)]).expect("taken");
        assert_eq!(closing.state.timestamps_add[0].0, digest_of_the_second());
        assert!(
            old_keys
                .iter()
                .all(|key| closing.state.block_removes.contains(key)),
            "the old-layout keys go with their block"
        );

        // Updated, restarted, and restarted again within the block: its first samples under old
        // keys, the later ones under new keys, which the buffer returns first.
        let mut updated = one_second();
        updated
            .restore(old_layout_of(&first_thirty()))
            .expect("restored");
        let later = updated
            .take((30..40).map(|k| input("a", k)).collect())
            .expect("taken");
        let mut stored = later.state.block_puts;
        stored.extend(old_layout_of(&first_thirty()));
        stored.sort();
        let mut twice = one_second();
        assert_eq!(twice.restore(stored).expect("restored").samples, 40);
        twice
            .take((40..50).map(|k| input("a", k)).collect())
            .expect("taken");
        let closing = twice.take(vec![input("a", 50)]).expect("taken");
        assert_eq!(
            closing.state.timestamps_add[0].0,
            digest_of_the_second(),
            "the samples were framed in their order, whatever the keys' layout"
        );
    }

    /// The digest of topic `a`'s block of samples 0..50.
    fn digest_of_the_second() -> Vec<u8> {
        let mut hasher = BlockHasher::new();
        for k in 0..50 {
            hasher.push(&sample(k));
        }
        hasher.finish().expect("block").digest.0.to_vec()
    }

    /// What an agent kept of samples 0..30 of topic `a`.
    fn first_thirty() -> Vec<(Vec<u8>, Vec<u8>)> {
        one_second()
            .take((0..30).map(|k| input("a", k)).collect())
            .expect("taken")
            .state
            .block_puts
    }

    /// The same, under the keys of an agent before decision 0029: `<topic>\0<first sequence>`.
    fn old_layout_of(kept: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        kept.iter()
            .map(|(_, payload)| {
                let first = decoded(&Outgoing {
                    topic: String::new(),
                    payload: payload.clone(),
                    retain: false,
                })[0];
                let mut key = b"data/measurements/sub1/bay-50/a\0".to_vec();
                key.extend_from_slice(&first.to_be_bytes());
                (key, payload.clone())
            })
            .collect()
    }

    #[test]
    fn a_damaged_stored_sample_is_refused_not_skipped() {
        let mut acceptance = one_second();
        let error = acceptance
            .restore(vec![(
                block_key("data/measurements/sub1/bay-50/a", 1000),
                vec![0xff; 7],
            )])
            .expect_err("refused");
        assert!(matches!(error, AcceptError::Stored(_)), "{error}");
        let error = acceptance
            .restore(vec![(
                b"data/measurements/sub1/bay-50/a\0x".to_vec(),
                b"sample".to_vec(),
            )])
            .expect_err("refused");
        assert!(matches!(error, AcceptError::StoredKey(_)), "{error}");
    }
}
