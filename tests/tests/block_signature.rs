//! Proof of origin: a block digest signed inside the TPM (swtpm) by the device key, as CMS
//! SignedData with the device certificate, which `openssl cms -verify` accepts with the device
//! CA; an altered digest, another CA and another TPM's signature are refused by both. And a
//! block's two proofs judged together at the token's time: an expired device certificate with
//! a backdated signing-time, a signing-time after the token, a signer certificate the device CA
//! would not issue, and a signer named by a crafted subject, each refused with its reason.

use edgeward_attestation::device_ca::{new_ca, DeviceCa};
use edgeward_attestation::quote::appraise_certify;
use edgeward_attestation::tpm::{
    certify, create_attestation_keys, create_device_key, open, sign_digest, EkKind, Nonce,
};
use edgeward_proof::block::{verify_proofs, ProofAnchors};
use edgeward_proof::origin::{sign_block, verify_block, ChainTime, SIGNING_TIME_TOLERANCE};
use edgeward_proof::timestamp::{request, Tsa, TsaNonce};
use edgeward_proof::trust::TrustAnchors;
use edgeward_proof::ProofError;
use edgeward_tests::openssl::{leaf, openssl, root_ca, try_openssl, KeyKind, TSA_EXTENSIONS};

use edgeward_tests::swtpm::Swtpm;
use rsa::pkcs8::DecodePublicKey;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn der(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text).expect("PEM").into_contents()
}

/// A device key made in the TPM and certified by its AK, as the verifier checks it.
fn certified_device_key(
    context: &mut tss_esapi::Context,
) -> (
    edgeward_attestation::tpm::DeviceKey,
    edgeward_attestation::quote::CertifiedKey,
) {
    let key = create_device_key(context).expect("device key");
    let keys = create_attestation_keys(context, EkKind::Rsa).expect("AK");
    let nonce = Nonce::new(b"issue the device cert".to_vec()).expect("nonce");
    let (attest, signature) = certify(context, &keys, &key, &nonce).expect("certify");
    let ak = rsa::RsaPublicKey::from_public_key_pem(&keys.ak_public_pem).expect("AK");
    let (certified, _) = appraise_certify(&key.public, &attest, &signature, &ak, nonce.as_bytes())
        .expect("certified");
    keys.flush(context);
    (key, certified)
}

#[test]
fn a_block_signed_in_the_tpm_verifies_with_openssl_and_ours() {
    let Some(tpm) = Swtpm::start() else { return };
    let Some(other_tpm) = Swtpm::start() else {
        return;
    };
    let dir = edgeward_tests::scratch("block-signature");
    let mut context = open(&tpm.tcti()).expect("swtpm");
    let (key, certified) = certified_device_key(&mut context);

    // The platform's CA is plain OpenSSL (its setup-pki.sh); the verifier's device CA is an
    // intermediate under it.
    let platform_ca = std::fs::read_to_string(edgeward_tests::openssl::root_ca(
        &dir,
        "platform",
        "/CN=SEGuRo Certificate Authority",
    ))
    .expect("platform CA");
    let platform_key = std::fs::read_to_string(dir.join("platform.key")).expect("key");
    let (device_ca_pem, device_ca_key) = new_ca(
        "Edgeward device CA",
        Some((&platform_ca, &platform_key)),
        now() - 60,
        now() + 86_400,
    )
    .expect("device CA");
    let ca = DeviceCa::from_pem(&device_ca_pem, &device_ca_key, &platform_ca).expect("CA");
    let issued = ca
        .issue("loc1-pmu1", &certified, now() - 60, now() + 3600, [7; 16])
        .expect("device certificate");
    std::fs::write(dir.join("ca.crt"), &platform_ca).expect("write");
    std::fs::write(dir.join("device-ca.crt"), &device_ca_pem).expect("write");

    let digest: [u8; 32] = *b"block digest: 32 raw bytes here!";
    let chain = vec![der(&device_ca_pem)];
    let p7s = sign_block(&digest, &der(&issued.pem), &chain, now(), |to_sign| {
        sign_digest(&mut context, &key, to_sign)
    })
    .expect("signed in the TPM");
    std::fs::write(dir.join("block.p7s"), &p7s).expect("write");
    std::fs::write(dir.join("digest.bin"), digest).expect("write");

    // openssl: with the platform root (the device CA travels in the signature) and with the
    // device CA alone.
    let verify = |ca_args: &[&str], content: &str| {
        let mut args = vec![
            "cms",
            "-verify",
            "-binary",
            "-inform",
            "DER",
            "-in",
            "block.p7s",
            "-content",
            content,
            "-purpose",
            "any",
            "-out",
            "/dev/null",
        ];
        args.extend_from_slice(ca_args);
        try_openssl(&dir, &args)
    };
    for ca_args in [
        &["-CAfile", "ca.crt"][..],
        &["-CAfile", "device-ca.crt", "-partial_chain"][..],
    ] {
        let output = verify(ca_args, "digest.bin");
        assert!(
            output.status.success(),
            "openssl cms -verify {ca_args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let printed = openssl(
        &dir,
        &[
            "cms",
            "-cmsout",
            "-print",
            "-inform",
            "DER",
            "-in",
            "block.p7s",
        ],
    );
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("ecdsa-with-SHA256"), "{printed}");
    assert!(printed.contains("loc1-pmu1"), "{printed}");

    let device_anchor = TrustAnchors::from_pem(&device_ca_pem).expect("anchor");
    let platform_anchor = TrustAnchors::from_pem(&platform_ca).expect("anchor");
    for anchors in [&device_anchor, &platform_anchor] {
        let verified =
            verify_block(&p7s, &digest, anchors, ChainTime::Token(now() as i64)).expect("ours");
        assert_eq!(verified.device, "loc1-pmu1");
    }

    // An altered digest: refused by both.
    let mut altered = digest;
    altered[0] ^= 1;
    std::fs::write(dir.join("altered.bin"), altered).expect("write");
    assert!(!verify(&["-CAfile", "ca.crt"], "altered.bin")
        .status
        .success());
    assert!(matches!(
        verify_block(&p7s, &altered, &device_anchor, ChainTime::SignerClaim),
        Err(ProofError::ContentAltered)
    ));

    // Another CA.
    let (stranger, _) = new_ca("Someone else", None, now() - 60, now() + 86_400).expect("CA");
    std::fs::write(dir.join("stranger.crt"), &stranger).expect("write");
    assert!(!verify(&["-CAfile", "stranger.crt"], "digest.bin")
        .status
        .success());
    assert!(matches!(
        verify_block(
            &p7s,
            &digest,
            &TrustAnchors::from_pem(&stranger).expect("anchor"),
            ChainTime::SignerClaim
        ),
        Err(ProofError::Untrusted { .. })
    ));

    // Another TPM's device key signing under this device's certificate.
    let mut other = open(&other_tpm.tcti()).expect("swtpm");
    let other_key = create_device_key(&mut other).expect("device key");
    let forged = sign_block(&digest, &der(&issued.pem), &chain, now(), |to_sign| {
        sign_digest(&mut other, &other_key, to_sign)
    })
    .expect("signed");
    std::fs::write(dir.join("block.p7s"), &forged).expect("write");
    assert!(!verify(&["-CAfile", "ca.crt"], "digest.bin")
        .status
        .success());
    assert!(matches!(
        verify_block(&forged, &digest, &device_anchor, ChainTime::SignerClaim),
        Err(ProofError::BadSignature)
    ));
}

#[test]
fn a_block_is_proven_at_the_tokens_time_by_a_certificate_the_device_ca_issues() {
    let Some(tpm) = Swtpm::start() else { return };
    let dir = edgeward_tests::scratch("block-proofs");
    let mut context = open(&tpm.tcti()).expect("swtpm");
    let (key, certified) = certified_device_key(&mut context);

    let (device_ca_pem, device_ca_key) =
        new_ca("Edgeward device CA", None, now() - 86_400, now() + 86_400).expect("device CA");
    std::fs::write(dir.join("device-ca.crt"), &device_ca_pem).expect("write");
    std::fs::write(dir.join("device-ca.key"), &device_ca_key).expect("write");
    let ca = DeviceCa::from_pem(&device_ca_pem, &device_ca_key, "").expect("CA");
    // The platform TSA. Its token's genTime is a minute ahead: the certificates openssl crafts
    // below are valid from the second openssl runs, which may be after a token dated "now".
    let tsa_root = root_ca(&dir, "tsa-root", "/CN=Platform TSA Root");
    leaf(
        &dir,
        "tsa",
        KeyKind::P256,
        "/CN=Platform TSA",
        "tsa-root",
        TSA_EXTENSIONS,
    );
    let tsa = Tsa::new(
        der(&std::fs::read_to_string(dir.join("tsa.crt")).expect("TSA")),
        vec![der(&std::fs::read_to_string(&tsa_root).expect("root"))],
        &std::fs::read(dir.join("tsa.pk8")).expect("key"),
    )
    .expect("TSA");
    let anchors = ProofAnchors {
        tsa: TrustAnchors::from_pem(&std::fs::read_to_string(&tsa_root).expect("root"))
            .expect("anchor"),
        tsa_certificates: Vec::new(),
        devices: TrustAnchors::from_pem(&device_ca_pem).expect("anchor"),
    };
    let digest: [u8; 32] = *b"another block, another digest..!";
    let token_time = now() + 60;
    let token = tsa.respond(
        &request(&digest, TsaNonce::from_random(*b"12345678")).expect("request"),
        1,
        token_time,
    );
    let mut sign_with = |certificate: &[u8], signing_time: u64| {
        sign_block(&digest, certificate, &[], signing_time, |to_sign| {
            sign_digest(&mut context, &key, to_sign)
        })
        .expect("signed in the TPM")
    };

    // A current certificate, signed just before the token: proven.
    let current = ca
        .issue("loc1-pmu1", &certified, now() - 60, now() + 3600, [1; 16])
        .expect("certificate");
    let p7s = sign_with(&der(&current.pem), now() - 2);
    let proven = verify_proofs(&digest, &token, &p7s, &anchors, "loc1-pmu1").expect("proven");
    assert_eq!(proven.origin.device, "loc1-pmu1");

    // A certificate that expired an hour ago, and a signing-time inside its validity: the
    // signer's clock says it was valid, the token says when the block existed.
    let expired = ca
        .issue("loc1-pmu1", &certified, now() - 7200, now() - 3600, [2; 16])
        .expect("certificate");
    let backdated = sign_with(&der(&expired.pem), now() - 5400);
    assert!(
        verify_block(
            &backdated,
            &digest,
            &anchors.devices,
            ChainTime::SignerClaim
        )
        .is_ok(),
        "judged at the signing-time (what verify-data did), the backdated block passes"
    );
    let refused = verify_proofs(&digest, &token, &backdated, &anchors, "loc1-pmu1");
    match &refused {
        Err(ProofError::Expired { what, .. }) => assert_eq!(*what, "signer certificate"),
        other => panic!("a backdated block of an expired device: {other:?}"),
    }
    eprintln!("refused as expected: {}", refused.expect_err("refused"));

    // A signing-time later than the token (beyond the tolerance): not how a block is proven.
    let late = now() + SIGNING_TIME_TOLERANCE as u64 + 600;
    let future = ca
        .issue("loc1-pmu1", &certified, now() - 60, late + 3600, [3; 16])
        .expect("certificate");
    let after = sign_with(&der(&future.pem), late);
    let refused = verify_proofs(&digest, &token, &after, &anchors, "loc1-pmu1");
    assert!(
        matches!(refused, Err(ProofError::SignedAfterToken { tolerance, .. }) if tolerance == SIGNING_TIME_TOLERANCE),
        "{refused:?}"
    );
    eprintln!("refused as expected: {}", refused.expect_err("refused"));

    // Certificates the device CA does not issue, for the same TPM key (openssl as the CA).
    let sec1 = [&[0x04u8][..], &certified.x, &certified.y].concat();
    let public = p256::PublicKey::from_sec1_bytes(&sec1).expect("the device key's point");
    use p256::pkcs8::EncodePublicKey as _;
    std::fs::write(
        dir.join("device.pub.pem"),
        public
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .expect("PEM"),
    )
    .expect("write");
    let crafted = |name: &str, subject: &str, extensions: &str| -> Vec<u8> {
        std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("write");
        openssl(
            &dir,
            &[
                "x509",
                "-new",
                "-days",
                "1",
                "-subj",
                subject,
                "-force_pubkey",
                "device.pub.pem",
                "-CA",
                "device-ca.crt",
                "-CAkey",
                "device-ca.key",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.crt"),
            ],
        );
        der(&std::fs::read_to_string(dir.join(format!("{name}.crt"))).expect("certificate"))
    };
    let client = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                  extendedKeyUsage=clientAuth\n";
    let no_client_auth = crafted(
        "no-client-auth",
        "/CN=loc1-pmu1",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n",
    );
    let refused = verify_proofs(
        &digest,
        &token,
        &sign_with(&no_client_auth, now() - 2),
        &anchors,
        "loc1-pmu1",
    );
    assert!(
        matches!(&refused, Err(ProofError::NotADeviceCertificate { reason, .. }) if reason.contains("no extended key usage")),
        "{refused:?}"
    );
    eprintln!("refused as expected: {}", refused.expect_err("refused"));
    // A subject whose organisation reads ", CN=loc1-pmu1" when printed: the signer is "evil".
    let disguised = crafted("disguised", "/O=x, CN=loc1-pmu1/CN=evil", client);
    let p7s = sign_with(&disguised, now() - 2);
    let printed = verify_block(
        &p7s,
        &digest,
        &anchors.devices,
        ChainTime::Token(token_time as i64),
    )
    .expect("a valid signature by evil")
    .subject;
    // Splitting the printed subject at commas (what verify-data did) finds "CN=loc1-pmu1".
    assert!(
        printed.split(',').any(|part| part.trim() == "CN=loc1-pmu1"),
        "{printed}"
    );
    let refused = verify_proofs(&digest, &token, &p7s, &anchors, "loc1-pmu1");
    match &refused {
        Err(ProofError::OtherDevice { signer, recorded }) => {
            assert_eq!((signer.as_str(), recorded.as_str()), ("evil", "loc1-pmu1"));
        }
        other => panic!("a disguised signer: {other:?}"),
    }
    eprintln!("refused as expected: {}", refused.expect_err("refused"));
    let two_names = crafted("two-names", "/CN=loc1-pmu1/CN=evil", client);
    let refused = verify_proofs(
        &digest,
        &token,
        &sign_with(&two_names, now() - 2),
        &anchors,
        "loc1-pmu1",
    );
    assert!(
        matches!(&refused, Err(ProofError::NotADeviceCertificate { reason, .. }) if reason.contains("2 common names")),
        "{refused:?}"
    );
    key.flush(&mut context);
    let _ = std::fs::remove_dir_all(&dir);
}
