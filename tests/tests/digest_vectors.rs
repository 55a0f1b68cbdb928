//! Block digests equal the VILLASnode `digest` hook's, on the vectors SEGuRo gateways produce
//! (../shared/testdata/seguro/digest_vectors.json, from VILLASframework/node, Apache-2.0): the
//! integration test's ten float samples in blocks of two, and the Python test's mixed types.

use edgeward_measurement::block::BlockHasher;
use edgeward_measurement::sample::{Sample, Timestamp, Value};

fn value(json: &serde_json::Value) -> Value {
    let object = json.as_object().expect("a value object");
    let (kind, value) = object.iter().next().expect("one field");
    match kind.as_str() {
        "f" => Value::Float(value.as_f64().expect("float")),
        "i" => Value::Int(value.as_i64().expect("int")),
        "b" => Value::Bool(value.as_bool().expect("bool")),
        "z" => Value::Complex {
            re: value[0].as_f64().expect("re") as f32,
            im: value[1].as_f64().expect("im") as f32,
        },
        other => panic!("unknown value kind {other}"),
    }
}

#[test]
fn block_digests_equal_the_villas_digest_hook() {
    let Some(dir) = edgeward_tests::testdata("seguro") else {
        return;
    };
    let vectors: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("digest_vectors.json")).expect("readable"))
            .expect("JSON");
    let vectors = vectors["vectors"].as_array().expect("vectors");
    assert_eq!(vectors.len(), 2, "both vectors are tests");
    for vector in vectors {
        let samples: Vec<Sample> = vector["samples"]
            .as_array()
            .expect("samples")
            .iter()
            .map(|sample| Sample {
                ts_origin: Timestamp::new(
                    sample["sec"].as_u64().expect("sec"),
                    sample["nsec"].as_u64().expect("nsec") as u32,
                )
                .expect("valid time"),
                sequence: sample["sequence"].as_u64().expect("sequence"),
                values: sample["values"]
                    .as_array()
                    .expect("values")
                    .iter()
                    .map(value)
                    .collect(),
            })
            .collect();
        let lines: Vec<String> = vector["blocks"]
            .as_array()
            .expect("blocks")
            .iter()
            .map(|block| {
                let mut hasher = BlockHasher::new();
                for index in block.as_array().expect("indices") {
                    hasher.push(&samples[index.as_u64().expect("index") as usize]);
                }
                hasher.finish().expect("non-empty").line()
            })
            .collect();
        let expected: Vec<String> = vector["expected"]
            .as_array()
            .expect("expected")
            .iter()
            .map(|line| line.as_str().expect("line").to_owned())
            .collect();
        assert_eq!(lines, expected, "{}", vector["name"]);
    }
}
