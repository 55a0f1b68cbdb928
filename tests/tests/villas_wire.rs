//! The platform decodes what we publish: samples from a real PDC capture, encoded as VILLAS
//! protobuf and cut into blocks, are read back by the platform's own decoder (villas-node
//! 0.11.1, the version its pyproject pins), which groups them into the same blocks by
//! `new_frame` and computes the same digests.

use std::collections::BTreeMap;
use std::process::Command;

use edgeward_measurement::block::{BlockFramer, BlockInterval};
use edgeward_measurement::c37118::Frame;
use edgeward_measurement::replay::{replay, ReplayItem};
use edgeward_measurement::sample::samples_from_data_frame;
use edgeward_platform::villas::{decode, encode, WireSample};

#[test]
fn the_platforms_decoder_reads_our_samples_and_agrees_on_every_block_digest() {
    let Some(dir) = edgeward_tests::testdata("c37118") else {
        return;
    };
    let Some(python) = edgeward_tests::pypmu::python_with("villas.node.formats") else {
        return;
    };
    let bytes = std::fs::read(dir.join("C37.118_4in1PMU_TCP.pcap")).expect("capture");
    // One topic per PMU: a framer and a payload directory each.
    let mut framers: BTreeMap<u16, BlockFramer> = BTreeMap::new();
    let mut pending: BTreeMap<u16, Vec<WireSample>> = BTreeMap::new();
    let mut ours: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let scratch = edgeward_tests::scratch("villas-wire");
    let mut payloads = 0;
    for item in replay(&bytes).expect("capture") {
        let ReplayItem::Frame {
            frame: Frame::Data(frame),
            config: Some(config),
            ..
        } = item
        else {
            continue;
        };
        for (idcode, sample) in samples_from_data_frame(&frame, &config) {
            let framer = framers
                .entry(idcode.0)
                .or_insert_with(|| BlockFramer::new(BlockInterval::from_secs(1).expect("1 s")));
            let framed = framer.push(&sample);
            if let Some(closed) = framed.closed {
                ours.entry(idcode.0).or_default().push(format!(
                    "{} {} {} {}",
                    closed.first.1,
                    closed.last.1,
                    closed.samples,
                    closed.digest.hex_upper()
                ));
            }
            let batch = pending.entry(idcode.0).or_default();
            batch.push(WireSample {
                sample,
                new_frame: framed.new_frame,
            });
            // Several samples per message, as VILLASnode sends them.
            if batch.len() == 7 {
                let payload = encode(batch).expect("encodes");
                assert_eq!(&decode(&payload).expect("decodes"), batch);
                let topic_dir = scratch.join(idcode.0.to_string());
                std::fs::create_dir_all(&topic_dir).expect("dir");
                std::fs::write(topic_dir.join(format!("{payloads:08}.pb")), payload)
                    .expect("write");
                payloads += 1;
                batch.clear();
            }
        }
    }
    // Send what is left and close the open blocks: the platform then sees every block whole.
    for (idcode, batch) in &pending {
        if !batch.is_empty() {
            let topic_dir = scratch.join(idcode.to_string());
            std::fs::create_dir_all(&topic_dir).expect("dir");
            std::fs::write(
                topic_dir.join(format!("{payloads:08}.pb")),
                encode(batch).expect("encodes"),
            )
            .expect("write");
            payloads += 1;
        }
    }
    for (idcode, framer) in &mut framers {
        let open = framer.flush().expect("an open block");
        ours.entry(*idcode).or_default().push(format!(
            "{} {} {} {}",
            open.first.1,
            open.last.1,
            open.samples,
            open.digest.hex_upper()
        ));
    }
    assert_eq!(framers.len(), 4, "four PMUs in the PDC stream");
    for (idcode, lines) in &ours {
        assert!(
            lines.len() >= 10,
            "PMU {idcode}: at least ten 1 s blocks in the capture"
        );
        let output = Command::new(&python)
            .arg(edgeward_tests::workspace_root().join("tests/py/villas_digest.py"))
            .arg(scratch.join(idcode.to_string()))
            .output()
            .expect("python runs");
        assert!(
            output.status.success(),
            "villas-node refused our payloads: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let theirs: Vec<String> = String::from_utf8(output.stdout)
            .expect("text")
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(&theirs, lines, "PMU {idcode}: blocks and digests");
    }
}
