//! The data path against real peers: pyPMU → `edgeward-agent stream` (device key in swtpm) →
//! Mosquitto 2 (mTLS, ACL) → `edgeward recorder` → a platform-layout store that
//! `edgeward verify-data`, openssl and pandas check. Also: the broker refuses clients without a
//! certificate and a device publishing under another device's topic; an altered block fails
//! verification; a broker outage loses nothing; another device publishing proofs for a block
//! that is not its own (a second token, its own signature, a forged token) replaces nothing:
//! the recorder keeps them aside, named and with the reason.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use edgeward_tests::openssl::try_openssl;
use edgeward_tests::platform::{
    block_files, recorded_sequences, software_client, software_device, subscribe, Platform,
};
use edgeward_tests::pypmu::PyPmu;

#[test]
fn pmu_samples_reach_the_store_signed_and_time_stamped() {
    let dir = edgeward_tests::scratch("data-path");
    let Some(platform) = Platform::start(&dir) else {
        return;
    };
    let Some(device) = platform.device("pmu-a") else {
        return;
    };
    let Some(pmu) = PyPmu::start(7, 50, "float-polar") else {
        return;
    };
    let store = dir.join("store");
    let recorder = platform.recorder(&store);
    let heartbeats = subscribe(&platform, "heartbeats", 8);
    let notifications = subscribe(&platform, "metadata/measurements/#", 8);

    let status = platform
        .agent(&device, pmu.port, 7, &dir.join("buffer"))
        .args(["--duration", "6"])
        .env("EDGEWARD_LOG", "info")
        .stderr(std::fs::File::create(dir.join("agent.log")).expect("log"))
        .status()
        .expect("agent runs");
    assert!(
        status.success(),
        "agent failed: see {}/agent.log",
        dir.display()
    );
    std::thread::sleep(Duration::from_secs(1));
    another_device_replaces_no_proof(&platform, &store);
    drop(recorder);

    let (ok, report) = platform.verify_data(&store);
    assert!(ok, "verify-data:\n{report}");
    let files = block_files(&store);
    assert!(files.len() >= 3, "at least three 1 s blocks: {report}");
    assert_eq!(
        report.lines().filter(|line| line.contains(": ok ")).count(),
        files.len()
    );
    // In order and never twice (pyPMU stamps frames with its clock, not on the 50/s grid, so
    // an occasional second holds 49 frames: the grid index skips one then, nothing is lost, as
    // each block's digest over the agent's samples proves).
    let recorded = recorded_sequences(&store);
    assert!(
        recorded.windows(2).all(|pair| pair[1] > pair[0]),
        "{recorded:?}"
    );

    // The platform's tools read what was stored.
    let python = edgeward_tests::pypmu::python_with("pandas").expect("pandas");
    let output = Command::new(&python)
        .args([
            "-c",
            "import sys, pandas; f = pandas.read_parquet(sys.argv[1]); \
             print(f.index.dtype, f['sequence'].dtype, f['signal0.real'].dtype, len(f))",
        ])
        .arg(&files[1])
        .output()
        .expect("python");
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows =
        edgeward_platform::parquet_block::decode_block(std::fs::read(&files[1]).expect("read"))
            .expect("block")
            .len();
    assert_eq!(
        printed.trim(),
        format!("datetime64[ns] int64 float64 {rows}")
    );
    // A block as pandas writes it (the platform's recorder, zstd: optional columns, its own
    // metadata) is read by the contract's strict schema check, to the same samples.
    let rewritten = dir.join("pandas-block.parquet");
    let output = Command::new(&python)
        .args([
            "-c",
            "import sys, pandas; pandas.read_parquet(sys.argv[1]).to_parquet(sys.argv[2], compression=\"zstd\")",
        ])
        .arg(&files[1])
        .arg(&rewritten)
        .output()
        .expect("python");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        edgeward_platform::parquet_block::decode_block(std::fs::read(&rewritten).expect("read"))
            .expect("pandas' block is the contract's"),
        edgeward_platform::parquet_block::decode_block(std::fs::read(&files[1]).expect("read"))
            .expect("block")
    );

    // openssl checks one block's token and signature on its own.
    let digest = report
        .lines()
        .nth(1)
        .and_then(|line| line.split("digest=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a digest in the report")
        .to_owned();
    let signatures = store.join("data/signatures");
    let ts = try_openssl(
        &signatures,
        &[
            "ts",
            "-verify",
            "-digest",
            &digest,
            "-in",
            &format!("tsr/{digest}.sha256.tsr"),
            "-CAfile",
            platform.pki("tsa-root.crt").to_str().expect("utf-8"),
        ],
    );
    assert!(
        ts.status.success(),
        "openssl ts -verify: {}",
        String::from_utf8_lossy(&ts.stderr)
    );
    let raw: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&digest[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    std::fs::write(dir.join("digest.bin"), raw).expect("write");
    let cms = try_openssl(
        &signatures,
        &[
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            &format!("sig/{digest}.sha256.p7s"),
            "-content",
            dir.join("digest.bin").to_str().expect("utf-8"),
            "-CAfile",
            platform.pki("ca.crt").to_str().expect("utf-8"),
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ],
    );
    assert!(
        cms.status.success(),
        "openssl cms -verify: {}",
        String::from_utf8_lossy(&cms.stderr)
    );

    // Heartbeats in the platform's shape, and the retained layout outside data/measurements.
    let heartbeats = heartbeats.wait_with_output().expect("mosquitto_sub");
    let heartbeats = String::from_utf8_lossy(&heartbeats.stdout);
    let beat = heartbeats
        .lines()
        .find_map(|line| line.strip_prefix("heartbeats "))
        .expect("a heartbeat");
    let beat: serde_json::Value = serde_json::from_str(beat).expect("JSON");
    assert_eq!(beat["host"], "pmu-a");
    assert!(beat["memory"]["percent"].as_f64().is_some());
    assert!(beat["disks"]["/"]["usage"]["percent"].as_f64().is_some());
    assert!(beat["uptime"]["system"].as_f64().is_some());
    assert!(beat["sensors"]["temp"].is_object());
    let layout = notifications.wait_with_output().expect("mosquitto_sub");
    let layout = String::from_utf8_lossy(&layout.stdout);
    let layout = layout
        .lines()
        .find_map(|line| line.strip_prefix("metadata/measurements/sub1/pmu-a/bay-1 "))
        .expect("the retained layout");
    let layout: serde_json::Value = serde_json::from_str(layout).expect("JSON");
    assert_eq!(layout["signals"][0]["type"], "complex");

    // One altered value in one block: that block, and only that block, fails.
    let victim = &files[1];
    let mut samples =
        edgeward_platform::parquet_block::decode_block(std::fs::read(victim).expect("read"))
            .expect("block");
    // The frequency: the first float after the phasors.
    let frequency = samples[10]
        .values
        .iter_mut()
        .find_map(|value| match value {
            edgeward_measurement::sample::Value::Float(value) => Some(value),
            _ => None,
        })
        .expect("a frequency");
    *frequency += 0.001;
    std::fs::write(
        victim,
        edgeward_platform::parquet_block::encode_block(&samples).expect("encode"),
    )
    .expect("write");
    let (ok, report) = platform.verify_data(&store);
    assert!(!ok, "an altered block verified:\n{report}");
    let failed: Vec<&str> = report
        .lines()
        .filter(|line| line.contains("FAIL"))
        .collect();
    assert_eq!(failed.len(), 1, "{report}");
    assert!(
        failed[0].contains("no time-stamp token for digest"),
        "{report}"
    );
}

#[test]
fn the_broker_refuses_strangers_and_other_devices_topics() {
    let dir = edgeward_tests::scratch("data-path-acl");
    let Some(platform) = Platform::start(&dir) else {
        return;
    };
    let publish = |args: &[&str]| {
        Command::new("mosquitto_pub")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &platform.mqtt_port.to_string(),
                "-q",
                "1",
            ])
            .arg("--cafile")
            .arg(platform.pki("ca.crt"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("mosquitto_pub runs")
    };
    // No client certificate: the TLS handshake fails.
    let stranger = publish(&["-t", "heartbeats", "-m", "{}"]);
    assert!(
        !stranger.status.success(),
        "a client without a certificate connected"
    );

    let (b_cert, b_key) = software_client(&platform, "pmu-b");
    let listen = subscribe(&platform, "data/measurements/#", 3);
    std::thread::sleep(Duration::from_millis(500));
    let as_b = |topic: &str, message: &str| {
        let output = publish(&[
            "--cert",
            b_cert.to_str().expect("utf-8"),
            "--key",
            b_key.to_str().expect("utf-8"),
            "-t",
            topic,
            "-m",
            message,
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    as_b("data/measurements/sub1/pmu-a/bay-1", "forged");
    as_b("data/measurements/sub1/pmu-b/bay-1", "own");
    let seen = listen.wait_with_output().expect("mosquitto_sub");
    let seen = String::from_utf8_lossy(&seen.stdout);
    let by_topic: BTreeMap<&str, &str> = seen
        .lines()
        .filter_map(|line| line.split_once(' '))
        .collect();
    assert_eq!(
        by_topic.get("data/measurements/sub1/pmu-b/bay-1"),
        Some(&"own"),
        "{seen}"
    );
    assert!(
        !by_topic.contains_key("data/measurements/sub1/pmu-a/bay-1"),
        "pmu-b published under pmu-a: {seen}"
    );
}

/// Device pmu-b, compromised but with a genuine certificate, publishes proofs for one of
/// pmu-a's recorded blocks: a second genuine token for its digest (from the platform TSA), its
/// own signature over the digest, and pmu-a's token with a byte altered; and pmu-a's token
/// once more. The filed proofs stay byte for byte; the three others are kept aside with why.
fn another_device_replaces_no_proof(platform: &Platform, store: &std::path::Path) {
    use edgeward_measurement::block::BlockHasher;
    use edgeward_platform::store::{signature_path, token_path, ASIDE};
    let first = block_files(store)
        .into_iter()
        .next()
        .expect("a recorded block");
    let mut hasher = BlockHasher::new();
    for sample in
        edgeward_platform::parquet_block::decode_block(std::fs::read(&first).expect("read"))
            .expect("block")
    {
        hasher.push(&sample);
    }
    let digest = hasher.finish().expect("samples").digest.0;
    let filed_token = std::fs::read(store.join(token_path(&digest))).expect("a filed token");
    let filed_signature =
        std::fs::read(store.join(signature_path(&digest))).expect("a filed signature");

    let work = platform.dir.join("attack");
    std::fs::create_dir_all(&work).expect("dir");
    let (certificate, key, pk8) = software_device(platform, "pmu-b");
    // A second genuine token for pmu-a's digest, asked of the platform TSA now.
    let query = edgeward_proof::timestamp::request(
        &digest,
        edgeward_proof::timestamp::TsaNonce::from_random(*b"attacker"),
    )
    .expect("request");
    std::fs::write(work.join("query.tsq"), &query).expect("write");
    let second_token = Command::new("curl")
        .args(["-sS", "-H", "content-type: application/timestamp-query"])
        .arg("--data-binary")
        .arg(format!("@{}", work.join("query.tsq").display()))
        .arg(format!(
            "http://127.0.0.1:{}/api/v1/timestamp",
            platform.tsa_port
        ))
        .output()
        .expect("curl")
        .stdout;
    assert_ne!(second_token, filed_token);
    // pmu-b's own signature over the digest, with its genuine certificate.
    let signing_key = <p256::ecdsa::SigningKey as p256::pkcs8::DecodePrivateKey>::from_pkcs8_der(
        &std::fs::read(&pk8).expect("key"),
    )
    .expect("a P-256 key");
    let chain = vec![
        pem::parse(std::fs::read(platform.pki("device-ca.crt")).expect("CA"))
            .expect("PEM")
            .into_contents(),
    ];
    let own = pem::parse(std::fs::read(&certificate).expect("certificate"))
        .expect("PEM")
        .into_contents();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let foreign_signature =
        edgeward_proof::origin::sign_block(&digest, &own, &chain, now, |to_sign| {
            use p256::ecdsa::signature::hazmat::PrehashSigner as _;
            signing_key
                .sign_prehash(to_sign)
                .map(|signature: p256::ecdsa::Signature| signature.to_der().as_bytes().to_vec())
        })
        .expect("signed");
    let mut forged_token = filed_token.clone();
    let last = forged_token.len() - 8;
    forged_token[last] ^= 0x01;
    let publish = |topic: &str, payload: &[u8], name: &str| {
        let file = work.join(name);
        std::fs::write(&file, payload).expect("write");
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &platform.mqtt_port.to_string()])
            .arg("--cafile")
            .arg(platform.pki("ca.crt"))
            .arg("--cert")
            .arg(&certificate)
            .arg("--key")
            .arg(&key)
            .args(["-t", topic, "-q", "1", "-f"])
            .arg(&file)
            .status()
            .expect("mosquitto_pub");
        assert!(status.success(), "pmu-b publishes on {topic}");
    };
    publish("signatures/tsr", &second_token, "second.tsr");
    publish("signatures/sig", &foreign_signature, "foreign.p7s");
    publish("signatures/tsr", &forged_token, "forged.tsr");
    publish("signatures/tsr", &filed_token, "again.tsr");
    std::thread::sleep(Duration::from_secs(2));

    assert_eq!(
        std::fs::read(store.join(token_path(&digest))).expect("token"),
        filed_token,
        "the filed token stays"
    );
    assert_eq!(
        std::fs::read(store.join(signature_path(&digest))).expect("signature"),
        filed_signature,
        "the filed signature stays"
    );
    let mut reasons = Vec::new();
    let mut kept = 0;
    for dir in ["data/signatures/tsr", "data/signatures/sig"] {
        let Ok(entries) = std::fs::read_dir(store.join(ASIDE).join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path
                .extension()
                .is_some_and(|extension| extension == "reason")
            {
                reasons.push(std::fs::read_to_string(&path).expect("reason"));
            } else {
                kept += 1;
            }
        }
    }
    reasons.sort();
    assert_eq!(kept, 3, "three proofs kept aside: {reasons:?}");
    let joined = reasons.join("");
    for expected in [
        "another valid token is already filed for this digest",
        "signed by pmu-b, but the block is pmu-a's",
        "the token does not verify",
    ] {
        assert!(joined.contains(expected), "{expected:?} in {reasons:?}");
    }
    eprintln!("kept aside as expected: {reasons:?}");
}
