//! RFC 3161 both ways with OpenSSL: tokens from our TSA pass `openssl ts -verify`, tokens from
//! `openssl ts -reply` (ECDSA and RSA TSAs) pass our client's checks, and every check refuses
//! what it exists for: another digest, another nonce, an altered byte, a TSA certificate that is
//! not for time-stamping, an untrusted root, a refusal status.

use std::path::Path;

use edgeward_proof::timestamp::{request, response_imprint, verify_response, Tsa, TsaNonce};
use edgeward_proof::trust::TrustAnchors;
use edgeward_proof::ProofError;
use edgeward_tests::openssl::{
    der, leaf, openssl, root_ca, try_openssl, tsa_config, KeyKind, TSA_EXTENSIONS,
};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn anchors(path: &Path) -> TrustAnchors {
    TrustAnchors::from_pem(&std::fs::read_to_string(path).expect("PEM")).expect("anchor")
}

const DIGEST: [u8; 32] = [0xA5; 32];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[test]
fn our_tsa_tokens_pass_openssl_and_our_checks() {
    let dir = edgeward_tests::scratch("ts-ours");
    let root = root_ca(&dir, "root", "/CN=Platform TSA Root");
    leaf(
        &dir,
        "tsa",
        KeyKind::P256,
        "/CN=Platform TSA",
        "root",
        TSA_EXTENSIONS,
    );
    let tsa = Tsa::new(
        der(&dir.join("tsa.crt")),
        vec![der(&root)],
        &std::fs::read(dir.join("tsa.pk8")).expect("key"),
    )
    .expect("TSA");

    let nonce = TsaNonce::from_random(*b"\xF1nonce!\x07");
    let query = request(&DIGEST, nonce).expect("request");
    std::fs::write(dir.join("ours.tsq"), &query).expect("write");
    // openssl reads our request as the request it is.
    let text = openssl(&dir, &["ts", "-query", "-in", "ours.tsq", "-text"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("Certificate required: yes"), "{text}");
    assert!(text.contains("Nonce: 0x"), "{text}");

    let response = tsa.respond(&query, 42, now());
    std::fs::write(dir.join("ours.tsr"), &response).expect("write");
    let verified = verify_response(&response, &DIGEST, Some(nonce), &anchors(&root), &[])
        .expect("our client accepts our TSA's token");
    assert_eq!(verified.serial, "2A");
    assert_eq!(verified.policy, "1.3.6.1.4.1.57264.2");
    assert!(verified.tsa.contains("Platform TSA"));
    assert_eq!(response_imprint(&response).expect("imprint"), DIGEST);

    // openssl checks the token against the request (imprint, nonce) and the root.
    openssl(
        &dir,
        &[
            "ts",
            "-verify",
            "-queryfile",
            "ours.tsq",
            "-in",
            "ours.tsr",
            "-CAfile",
            "root.crt",
        ],
    );
    openssl(
        &dir,
        &[
            "ts",
            "-verify",
            "-digest",
            &hex(&DIGEST),
            "-in",
            "ours.tsr",
            "-CAfile",
            "root.crt",
        ],
    );
    // ... and refuses it for another digest.
    let other = try_openssl(
        &dir,
        &[
            "ts",
            "-verify",
            "-digest",
            &hex(&[0x5A; 32]),
            "-in",
            "ours.tsr",
            "-CAfile",
            "root.crt",
        ],
    );
    assert!(
        !other.status.success(),
        "openssl accepted a token for another digest"
    );

    // A request openssl made is answered, and openssl accepts the answer.
    openssl(
        &dir,
        &[
            "ts",
            "-query",
            "-digest",
            &hex(&DIGEST),
            "-sha256",
            "-cert",
            "-out",
            "theirs.tsq",
        ],
    );
    let answer = tsa.respond(
        &std::fs::read(dir.join("theirs.tsq")).expect("query"),
        43,
        now(),
    );
    std::fs::write(dir.join("theirs.tsr"), &answer).expect("write");
    openssl(
        &dir,
        &[
            "ts",
            "-verify",
            "-queryfile",
            "theirs.tsq",
            "-in",
            "theirs.tsr",
            "-CAfile",
            "root.crt",
        ],
    );

    // A policy we do not offer is refused with a reason, and the client says so.
    openssl(
        &dir,
        &[
            "ts",
            "-query",
            "-digest",
            &hex(&DIGEST),
            "-sha256",
            "-tspolicy",
            "1.2.3.4.99",
            "-out",
            "policy.tsq",
        ],
    );
    let refused = tsa.respond(
        &std::fs::read(dir.join("policy.tsq")).expect("query"),
        44,
        now(),
    );
    match verify_response(&refused, &DIGEST, None, &anchors(&root), &[]) {
        Err(ProofError::TsaRefused { status, reason }) => {
            assert_eq!(status, "Rejection");
            assert!(reason.expect("a reason").contains("1.2.3.4.99"));
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Garbage is a bad request, not a crash.
    assert!(matches!(
        verify_response(
            &tsa.respond(b"\x30\x03\x02\x01", 45, now()),
            &DIGEST,
            None,
            &anchors(&root),
            &[]
        ),
        Err(ProofError::TsaRefused { .. })
    ));
}

fn openssl_tsa(kind: KeyKind, name: &str) {
    let dir = edgeward_tests::scratch(name);
    let root = root_ca(&dir, "root", "/CN=OpenSSL TSA Root");
    leaf(&dir, "tsa", kind, "/CN=OpenSSL TSA", "root", TSA_EXTENSIONS);
    let config = tsa_config(&dir, "tsa");
    let nonce = TsaNonce::from_random(*b"\x11\x22\x33\x44\x55\x66\x77\x88");
    std::fs::write(
        dir.join("req.tsq"),
        request(&DIGEST, nonce).expect("request"),
    )
    .expect("write");
    openssl(
        &dir,
        &[
            "ts",
            "-reply",
            "-config",
            config.to_str().expect("utf-8"),
            "-queryfile",
            "req.tsq",
            "-out",
            "resp.tsr",
        ],
    );
    let response = std::fs::read(dir.join("resp.tsr")).expect("response");
    let trusted = anchors(&root);
    let verified = verify_response(&response, &DIGEST, Some(nonce), &trusted, &[])
        .expect("our client accepts openssl's token");
    assert!(verified.tsa.contains("OpenSSL TSA"));
    assert!((verified.gen_time - now() as i64).abs() < 60);

    // Another digest, another nonce.
    assert!(matches!(
        verify_response(&response, &[0x5A; 32], Some(nonce), &trusted, &[]),
        Err(ProofError::WrongImprint { .. })
    ));
    assert!(matches!(
        verify_response(
            &response,
            &DIGEST,
            Some(TsaNonce::from_random([9; 8])),
            &trusted,
            &[]
        ),
        Err(ProofError::WrongNonce { .. })
    ));
    // Every single flipped byte inside the signed part of the token is refused (or is not a
    // response at all); none is accepted.
    let signed_start = response.len() - 600;
    for index in (signed_start..response.len()).step_by(7) {
        let mut altered = response.clone();
        altered[index] ^= 0x01;
        assert!(
            verify_response(&altered, &DIGEST, Some(nonce), &trusted, &[]).is_err(),
            "a token altered at byte {index} was accepted"
        );
    }
    // A root we do not trust.
    let stranger = edgeward_tests::scratch(&format!("{name}-stranger"));
    let other_root = root_ca(&stranger, "root", "/CN=Someone Else");
    assert!(matches!(
        verify_response(&response, &DIGEST, Some(nonce), &anchors(&other_root), &[]),
        Err(ProofError::Untrusted { .. })
    ));
}

#[test]
fn openssl_ecdsa_tsa_tokens_pass_our_checks() {
    openssl_tsa(KeyKind::P256, "ts-openssl-ec");
}

#[test]
fn openssl_rsa_tsa_tokens_pass_our_checks() {
    openssl_tsa(KeyKind::Rsa2048, "ts-openssl-rsa");
}

#[test]
fn a_tsa_certificate_not_for_time_stamping_is_refused() {
    let dir = edgeward_tests::scratch("ts-not-tsa");
    let root = root_ca(&dir, "root", "/CN=Root");
    for (name, extensions, expected) in [
        (
            "client",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n",
            "lacks time-stamping",
        ),
        (
            "lax",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=timeStamping\n",
            "critical",
        ),
        (
            "none",
            "basicConstraints=CA:FALSE\n",
            "no extended key usage",
        ),
    ] {
        leaf(
            &dir,
            name,
            KeyKind::P256,
            "/CN=Not A TSA",
            "root",
            extensions,
        );
        let tsa = Tsa::new(
            der(&dir.join(format!("{name}.crt"))),
            vec![],
            &std::fs::read(dir.join(format!("{name}.pk8"))).expect("key"),
        )
        .expect("TSA");
        let nonce = TsaNonce::from_random([3; 8]);
        let response = tsa.respond(&request(&DIGEST, nonce).expect("request"), 1, now());
        match verify_response(&response, &DIGEST, Some(nonce), &anchors(&root), &[]) {
            Err(ProofError::NotTimestamping { reason, .. }) => {
                assert!(reason.contains(expected), "{name}: {reason}")
            }
            other => panic!("{name}: expected a refusal, got {other:?}"),
        }
    }
}
