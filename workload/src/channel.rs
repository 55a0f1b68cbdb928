//! The channel between the agent and a running workload: one Unix socket, `/run/samples.sock`
//! inside the sandbox, that the workload connects to. Both ways it carries JSON, one object per
//! line. Without I/O here: lines in, messages out, and the other way.
//!
//! Agent to workload, for each stream its manifest names and nothing else:
//! `{"type":"layout","stream":"bay-1","layout":{…}}` when the stream's configuration is known
//! or changes (the platform's layout: station, IDCODE, rate, each signal's name, unit and
//! type), then for each accepted sample
//! `{"type":"sample","stream":"bay-1","sec":…,"nsec":…,"sequence":…,"values":[…]}` with the
//! values in the layout's order: phasors as `[re, im]`, frequency, ROCOF, analogs, digitals
//! (a value the PMU did not give is `null`). A workload that reads too slowly misses samples
//! rather than hold the data path up; the agent says how many.
//!
//! Workload to agent: `{"type":"alert","title":…,"body":…,"level":"warning","tag":"band"}`,
//! published on `notifications` under the workload's name (level `info`, `warning` or
//! `failure`; tag optional). At most [`ALERT_BURST`] at once and one per
//! [`ALERT_REFILL`] after that; more are dropped and counted. Anything else is refused, and a
//! workload that keeps sending what is not an alert is disconnected.

use std::time::{Duration, Instant};

use edgeward_measurement::sample::{Sample, Value};
use serde::{Deserialize, Serialize};

/// The longest line a workload may send.
pub const MAX_LINE: usize = 4096;
pub const MAX_TITLE: usize = 120;
pub const MAX_BODY: usize = 1000;
pub const ALERT_BURST: u32 = 5;
pub const ALERT_REFILL: Duration = Duration::from_secs(10);

/// A value as the workload reads it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ChannelValue {
    Complex([f32; 2]),
    Float(Option<f64>),
    Int(i64),
    Bool(bool),
}

impl From<&Value> for ChannelValue {
    fn from(value: &Value) -> Self {
        match *value {
            Value::Complex { re, im } => ChannelValue::Complex([re, im]),
            // JSON has no NaN: a value the PMU did not give is null.
            Value::Float(number) => ChannelValue::Float(number.is_finite().then_some(number)),
            Value::Int(number) => ChannelValue::Int(number),
            Value::Bool(flag) => ChannelValue::Bool(flag),
        }
    }
}

/// What the agent sends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ToWorkload {
    Layout {
        stream: String,
        layout: serde_json::Value,
    },
    Sample {
        stream: String,
        sec: u64,
        nsec: u32,
        sequence: u64,
        values: Vec<ChannelValue>,
    },
}

impl ToWorkload {
    pub fn sample(stream: &str, sample: &Sample) -> Self {
        Self::Sample {
            stream: stream.to_owned(),
            sec: sample.ts_origin.sec,
            nsec: sample.ts_origin.nsec,
            sequence: sample.sequence,
            values: sample.values.iter().map(ChannelValue::from).collect(),
        }
    }

    /// The message as one line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// An alert's weight, as the platform's notifier takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Info,
    #[default]
    Warning,
    Failure,
}

/// What a workload may send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FromWorkload {
    Alert {
        title: String,
        body: String,
        #[serde(default)]
        level: Level,
        #[serde(default)]
        tag: String,
    },
}

/// Why a workload's line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    #[error("a line of {len} bytes, longer than {MAX_LINE}")]
    TooLong { len: usize },
    #[error("not an alert: {0}")]
    Malformed(String),
    #[error("the alert's {field} is {len} characters, at most {max}")]
    FieldTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("the alert's tag {0:?} is not a-z, 0-9, '-', '_' and '/' (at most 64)")]
    Tag(String),
}

/// Reads one line a workload sent (without its newline).
pub fn read_line(line: &[u8]) -> Result<FromWorkload, ChannelError> {
    if line.len() > MAX_LINE {
        return Err(ChannelError::TooLong { len: line.len() });
    }
    let message: FromWorkload =
        serde_json::from_slice(line).map_err(|error| ChannelError::Malformed(error.to_string()))?;
    let FromWorkload::Alert {
        title, body, tag, ..
    } = &message;
    for (field, text, max) in [("title", title, MAX_TITLE), ("body", body, MAX_BODY)] {
        let len = text.chars().count();
        if len > max {
            return Err(ChannelError::FieldTooLong { field, len, max });
        }
    }
    let tag_ok = tag.len() <= 64
        && tag.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || matches!(byte, b'-' | b'_' | b'/')
        });
    if !tag_ok {
        return Err(ChannelError::Tag(tag.clone()));
    }
    Ok(message)
}

/// How many alerts a workload may raise: a burst, then one per refill period.
#[derive(Debug)]
pub struct AlertLimiter {
    tokens: u32,
    last: Instant,
    dropped: u64,
}

impl AlertLimiter {
    pub fn new(now: Instant) -> Self {
        Self {
            tokens: ALERT_BURST,
            last: now,
            dropped: 0,
        }
    }

    /// Whether an alert arriving `now` goes out; one that does not is counted.
    pub fn admit(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs() / ALERT_REFILL.as_secs();
        if earned > 0 {
            self.tokens = (self.tokens as u64 + earned).min(ALERT_BURST as u64) as u32;
            self.last += ALERT_REFILL * earned as u32;
        }
        if self.tokens == 0 {
            self.dropped += 1;
            return false;
        }
        self.tokens -= 1;
        true
    }

    /// Alerts dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use edgeward_measurement::sample::Timestamp;

    use super::*;

    #[test]
    fn a_sample_goes_out_as_one_line_in_layout_order() {
        let sample = Sample {
            ts_origin: Timestamp::new(1_796_609_223, 20_000_000).expect("time"),
            sequence: 89_830_461_151,
            values: vec![
                Value::Complex {
                    re: 230.5,
                    im: -1.25,
                },
                Value::Float(50.012),
                Value::Float(f64::NAN),
                Value::Int(3),
            ],
        };
        let line = ToWorkload::sample("bay-1", &sample).to_line();
        assert_eq!(
            String::from_utf8(line).expect("UTF-8"),
            "{\"type\":\"sample\",\"stream\":\"bay-1\",\"sec\":1796609223,\"nsec\":20000000,\
             \"sequence\":89830461151,\"values\":[[230.5,-1.25],50.012,null,3]}\n"
        );
    }

    #[test]
    fn alerts_are_read_and_everything_else_refused() {
        assert_eq!(
            read_line(br#"{"type":"alert","title":"Frequency out of band","body":"50.31 Hz","tag":"band"}"#),
            Ok(FromWorkload::Alert {
                title: "Frequency out of band".into(),
                body: "50.31 Hz".into(),
                level: Level::Warning,
                tag: "band".into(),
            })
        );
        assert!(matches!(
            read_line(br#"{"type":"sample","stream":"x"}"#),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(
            read_line(br#"{"type":"alert","title":"t","body":"b","extra":1}"#),
            Err(ChannelError::Malformed(_))
        ));
        assert!(matches!(
            read_line(br#"{"type":"alert","title":"t","body":"b","tag":"../../buffer"}"#),
            Err(ChannelError::Tag(_))
        ));
        let long = format!(
            r#"{{"type":"alert","title":"{}","body":"b"}}"#,
            "x".repeat(200)
        );
        assert!(matches!(
            read_line(long.as_bytes()),
            Err(ChannelError::FieldTooLong { field: "title", .. })
        ));
        assert!(matches!(
            read_line(&vec![b' '; MAX_LINE + 1]),
            Err(ChannelError::TooLong { .. })
        ));
    }

    #[test]
    fn alerts_beyond_the_burst_wait_for_the_refill() {
        let start = Instant::now();
        let mut limiter = AlertLimiter::new(start);
        for _ in 0..ALERT_BURST {
            assert!(limiter.admit(start));
        }
        assert!(!limiter.admit(start + Duration::from_secs(9)));
        assert!(limiter.admit(start + Duration::from_secs(10)));
        assert!(!limiter.admit(start + Duration::from_secs(11)));
        assert_eq!(limiter.dropped(), 2);
        // A long quiet spell refills to the burst, not beyond.
        let later = start + Duration::from_secs(3600);
        for _ in 0..ALERT_BURST {
            assert!(limiter.admit(later));
        }
        assert!(!limiter.admit(later));
    }
}
