//! The VILLASnode protobuf format the SEGuRo platform's recorder decodes
//! (`platform/proto/villas.proto`, proto2): what is published on a sample topic.
//!
//! The messages are prost derives written from the `.proto` rather than generated at build
//! time: generation needs `protoc` (or a protobuf compiler crate) in every build for five small
//! messages that the platform will not change. The platform's own Python decoder
//! (`villas-node` 0.11.1) is the peer that proves them in `tests/tests/villas_wire.rs`.

use prost::Message as _;

use edgeward_measurement::sample::{Sample, Timestamp, Value};

mod wire {
    //! The messages of `villas.proto`, field for field.

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Message {
        #[prost(message, repeated, tag = "1")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum Type {
        Data = 1,
        Start = 2,
        Stop = 3,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(enumeration = "Type", required, tag = "1", default = "Data")]
        pub r#type: i32,
        #[prost(uint64, optional, tag = "2")]
        pub sequence: Option<u64>,
        #[prost(message, optional, tag = "3")]
        pub ts_origin: Option<Timestamp>,
        #[prost(message, optional, tag = "4")]
        pub ts_received: Option<Timestamp>,
        #[prost(bool, optional, tag = "5")]
        pub new_frame: Option<bool>,
        #[prost(message, repeated, tag = "100")]
        pub values: Vec<Value>,
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(uint32, required, tag = "1")]
        pub sec: u32,
        #[prost(uint32, required, tag = "2")]
        pub nsec: u32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        #[prost(oneof = "value::Value", tags = "1, 2, 3, 4")]
        pub value: Option<value::Value>,
    }

    pub mod value {
        #[derive(Clone, Copy, PartialEq, prost::Oneof)]
        pub enum Value {
            #[prost(double, tag = "1")]
            F(f64),
            #[prost(int64, tag = "2")]
            I(i64),
            #[prost(bool, tag = "3")]
            B(bool),
            #[prost(message, tag = "4")]
            Z(super::Complex),
        }
    }

    #[derive(Clone, Copy, PartialEq, prost::Message)]
    pub struct Complex {
        #[prost(float, required, tag = "1")]
        pub real: f32,
        #[prost(float, required, tag = "2")]
        pub imag: f32,
    }
}

/// Why a payload is not a VILLAS message this platform can record.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VillasError {
    #[error("not a VILLAS protobuf message: {0}")]
    Protobuf(String),
    #[error("sample {index} has type {kind}, not DATA")]
    NotData { index: usize, kind: i32 },
    #[error("sample {index} has no ts_origin")]
    NoOrigin { index: usize },
    #[error("sample {index} has no sequence")]
    NoSequence { index: usize },
    #[error("sample {index} has nsec {nsec}, not below one second")]
    Nanoseconds { index: usize, nsec: u32 },
    #[error("sample {index}, value {value}, holds no value")]
    EmptyValue { index: usize, value: usize },
    #[error("sample time {sec} s does not fit VILLAS' 32-bit seconds")]
    TimeRange { sec: u64 },
}

/// A sample as it is on the wire: the sample and whether it opens a block.
#[derive(Debug, Clone, PartialEq)]
pub struct WireSample {
    pub sample: Sample,
    /// VILLAS `new_frame`: the first sample of a block.
    pub new_frame: bool,
}

/// Encodes samples as one VILLAS `Message`, with `type`, `sequence`, `ts_origin` and
/// `new_frame` always set (the platform's Python encoder drops a zero sequence; the recorder and
/// the digest need it).
pub fn encode(samples: &[WireSample]) -> Result<Vec<u8>, VillasError> {
    let samples = samples
        .iter()
        .map(|wire| {
            let Sample {
                ts_origin,
                sequence,
                values,
            } = &wire.sample;
            let sec = u32::try_from(ts_origin.sec)
                .map_err(|_| VillasError::TimeRange { sec: ts_origin.sec })?;
            Ok(wire::Sample {
                r#type: wire::Type::Data as i32,
                sequence: Some(*sequence),
                ts_origin: Some(wire::Timestamp {
                    sec,
                    nsec: ts_origin.nsec,
                }),
                ts_received: None,
                new_frame: Some(wire.new_frame),
                values: values.iter().map(encode_value).collect(),
            })
        })
        .collect::<Result<Vec<_>, VillasError>>()?;
    Ok(wire::Message { samples }.encode_to_vec())
}

fn encode_value(value: &Value) -> wire::Value {
    use wire::value::Value as V;
    wire::Value {
        value: Some(match *value {
            Value::Float(value) => V::F(value),
            Value::Int(value) => V::I(value),
            Value::Bool(value) => V::B(value),
            Value::Complex { re, im } => V::Z(wire::Complex { real: re, imag: im }),
        }),
    }
}

/// Decodes a VILLAS `Message`, refusing what the platform's recorder could not file: samples
/// without origin time or sequence, other types than DATA, and empty values.
pub fn decode(payload: &[u8]) -> Result<Vec<WireSample>, VillasError> {
    let message =
        wire::Message::decode(payload).map_err(|error| VillasError::Protobuf(error.to_string()))?;
    message
        .samples
        .into_iter()
        .enumerate()
        .map(|(index, sample)| {
            if sample.r#type != wire::Type::Data as i32 {
                return Err(VillasError::NotData {
                    index,
                    kind: sample.r#type,
                });
            }
            let origin = sample.ts_origin.ok_or(VillasError::NoOrigin { index })?;
            let ts_origin = Timestamp::new(u64::from(origin.sec), origin.nsec).ok_or(
                VillasError::Nanoseconds {
                    index,
                    nsec: origin.nsec,
                },
            )?;
            let sequence = sample.sequence.ok_or(VillasError::NoSequence { index })?;
            let values = sample
                .values
                .iter()
                .enumerate()
                .map(|(position, value)| {
                    use wire::value::Value as V;
                    match value.value {
                        Some(V::F(value)) => Ok(Value::Float(value)),
                        Some(V::I(value)) => Ok(Value::Int(value)),
                        Some(V::B(value)) => Ok(Value::Bool(value)),
                        Some(V::Z(z)) => Ok(Value::Complex {
                            re: z.real,
                            im: z.imag,
                        }),
                        None => Err(VillasError::EmptyValue {
                            index,
                            value: position,
                        }),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(WireSample {
                sample: Sample {
                    ts_origin,
                    sequence,
                    values,
                },
                new_frame: sample.new_frame.unwrap_or(false),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(sequence: u64) -> WireSample {
        WireSample {
            sample: Sample {
                ts_origin: Timestamp::new(1_700_000_000, 20_000_000).expect("valid"),
                sequence,
                values: vec![
                    Value::Complex { re: 1.5, im: -2.0 },
                    Value::Float(50.01),
                    Value::Int(-7),
                    Value::Bool(true),
                ],
            },
            new_frame: sequence == 0,
        }
    }

    #[test]
    fn round_trips_and_keeps_a_zero_sequence() {
        let samples = vec![sample(0), sample(1)];
        let bytes = encode(&samples).expect("encodes");
        assert_eq!(decode(&bytes).expect("decodes"), samples);
        // Field 2 (sequence) with value 0 is on the wire: tag 0x10, value 0x00.
        assert!(bytes.windows(2).any(|pair| pair == [0x10, 0x00]));
    }

    #[test]
    fn refuses_what_the_recorder_cannot_file() {
        let mut message = wire::Message {
            samples: vec![wire::Sample {
                r#type: 1,
                sequence: Some(1),
                ts_origin: None,
                ts_received: None,
                new_frame: None,
                values: vec![],
            }],
        };
        assert_eq!(
            decode(&message.encode_to_vec()),
            Err(VillasError::NoOrigin { index: 0 })
        );
        message.samples[0].ts_origin = Some(wire::Timestamp {
            sec: 1,
            nsec: 1_000_000_000,
        });
        assert!(matches!(
            decode(&message.encode_to_vec()),
            Err(VillasError::Nanoseconds { .. })
        ));
        message.samples[0].ts_origin = Some(wire::Timestamp { sec: 1, nsec: 0 });
        message.samples[0].values.push(wire::Value { value: None });
        assert_eq!(
            decode(&message.encode_to_vec()),
            Err(VillasError::EmptyValue { index: 0, value: 0 })
        );
        message.samples[0].r#type = 3;
        assert!(matches!(
            decode(&message.encode_to_vec()),
            Err(VillasError::NotData { kind: 3, .. })
        ));
        assert!(matches!(decode(&[0xFF]), Err(VillasError::Protobuf(_))));
    }
}
