//! Proof of origin: a block digest signed inside the TPM (swtpm) by the device key, as CMS
//! SignedData with the device certificate, which `openssl cms -verify` accepts with the device
//! CA; an altered digest, another CA and another TPM's signature are refused by both.

use edgeward_attestation::device_ca::{new_ca, DeviceCa};
use edgeward_attestation::quote::appraise_certify;
use edgeward_attestation::tpm::{
    certify, create_attestation_keys, create_device_key, open, sign_digest, EkKind, Nonce,
};
use edgeward_proof::origin::{sign_block, verify_block};
use edgeward_proof::trust::TrustAnchors;
use edgeward_proof::ProofError;
use edgeward_tests::openssl::{openssl, try_openssl};

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

#[test]
fn a_block_signed_in_the_tpm_verifies_with_openssl_and_ours() {
    let Some(tpm) = Swtpm::start() else { return };
    let Some(other_tpm) = Swtpm::start() else {
        return;
    };
    let dir = edgeward_tests::scratch("block-signature");
    let mut context = open(&tpm.tcti()).expect("swtpm");
    let key = create_device_key(&mut context).expect("device key");
    let keys = create_attestation_keys(&mut context, EkKind::Rsa).expect("AK");
    let nonce = Nonce::new(b"issue the device cert".to_vec()).expect("nonce");
    let (attest, signature) = certify(&mut context, &keys, &key, &nonce).expect("certify");
    let ak = rsa::RsaPublicKey::from_public_key_pem(&keys.ak_public_pem).expect("AK");
    let certified = appraise_certify(&key.public, &attest, &signature, &ak, nonce.as_bytes())
        .expect("certified");
    keys.flush(&mut context);

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
        let verified = verify_block(&p7s, &digest, anchors).expect("ours accepts it");
        assert!(
            verified.device.contains("CN=loc1-pmu1"),
            "{}",
            verified.device
        );
    }

    // An altered digest: refused by both.
    let mut altered = digest;
    altered[0] ^= 1;
    std::fs::write(dir.join("altered.bin"), altered).expect("write");
    assert!(!verify(&["-CAfile", "ca.crt"], "altered.bin")
        .status
        .success());
    assert!(matches!(
        verify_block(&p7s, &altered, &device_anchor),
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
            &TrustAnchors::from_pem(&stranger).expect("anchor")
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
        verify_block(&forged, &digest, &device_anchor),
        Err(ProofError::BadSignature)
    ));
}
