//! The device key is made in the TPM and certified by the AK (TPM2_Certify), and the verifier's
//! appraisal accepts exactly that: the certified name of the key sent, with its nonce, by this
//! TPM's AK, and the attributes of a key that cannot leave the TPM nor be used outside the boot
//! it was made in. The key signs only while its PCRs hold the values it was bound to.

use edgeward_attestation::key_policy::{pcr_policy_digest, DEVICE_KEY_PCRS};
use edgeward_attestation::quote::{appraise_certify, DeviceKeyError, QuoteError};
use edgeward_attestation::tpm::{
    certify, create_attestation_keys, create_device_key, current_device_key_policy,
    device_key_pcr_values, flush_leftover_objects, load_device_key, open, sign_digest, EkKind,
    Nonce, TpmError,
};
use edgeward_tests::swtpm::Swtpm;
use rsa::pkcs8::DecodePublicKey;

#[test]
fn the_ak_certifies_a_device_key_that_never_leaves_the_tpm() {
    let Some(device) = Swtpm::start() else { return };
    let Some(other) = Swtpm::start() else { return };
    let mut context = open(&device.tcti()).expect("swtpm opens");
    // swtpm over TCP has no resource manager and three object slots: the device key first.
    let key = create_device_key(&mut context).expect("device key");
    let keys = create_attestation_keys(&mut context, EkKind::Rsa).expect("EK and AK");
    let ak = rsa::RsaPublicKey::from_public_key_pem(&keys.ak_public_pem).expect("AK PEM");
    let nonce = Nonce::new(b"certify nonce 01".to_vec()).expect("valid");
    let (attest, signature) = certify(&mut context, &keys, &key, &nonce).expect("certify");

    let (certified, _) = appraise_certify(&key.public, &attest, &signature, &ak, nonce.as_bytes())
        .expect("the device key is accepted");
    assert_eq!(
        (certified.x.len(), certified.y.len()),
        (32, 32),
        "a P-256 point"
    );

    // Another nonce: a replayed certification.
    assert!(matches!(
        appraise_certify(&key.public, &attest, &signature, &ak, b"certify nonce 02"),
        Err(DeviceKeyError::Attestation(
            QuoteError::NonceMismatch { .. }
        ))
    ));

    // A different key than the one certified (here: another TPM's device key).
    let mut other_context = open(&other.tcti()).expect("swtpm opens");
    let other_key = create_device_key(&mut other_context).expect("device key");
    assert_eq!(
        appraise_certify(
            &other_key.public,
            &attest,
            &signature,
            &ak,
            nonce.as_bytes()
        ),
        Err(DeviceKeyError::NameMismatch)
    );

    // Another TPM's AK did not certify it.
    let other_keys = create_attestation_keys(&mut other_context, EkKind::Rsa).expect("EK and AK");
    let other_ak = rsa::RsaPublicKey::from_public_key_pem(&other_keys.ak_public_pem).expect("PEM");
    assert_eq!(
        appraise_certify(
            &key.public,
            &attest,
            &signature,
            &other_ak,
            nonce.as_bytes()
        ),
        Err(DeviceKeyError::Attestation(QuoteError::BadSignature))
    );

    // A public area whose attributes were changed (fixedTPM cleared) is not the certified key,
    // and would not be accepted as a device key even if it were.
    let mut exportable = key.public.clone();
    exportable[7] &= !0x02;
    assert!(appraise_certify(&exportable, &attest, &signature, &ak, nonce.as_bytes()).is_err());

    key.flush(&mut context);
    keys.flush(&mut context);
    other_key.flush(&mut other_context);
    other_keys.flush(&mut other_context);
}

/// What a boot measures: each of the device key's PCRs extended once, with `tag` in the digest.
fn boot(tpm: &Swtpm, tag: u8) {
    for pcr in DEVICE_KEY_PCRS {
        tpm.extend(u32::from(pcr), [tag ^ pcr; 32]);
    }
}

fn verifies(key: &edgeward_attestation::tpm::DeviceKey, digest: &[u8; 32], der: &[u8]) -> bool {
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    // The point is the last 2 × (2 + 32) bytes of the ECC public area.
    let public = &key.public;
    let y = &public[public.len() - 32..];
    let x = &public[public.len() - 66..public.len() - 34];
    let point = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
    let verifying = p256::ecdsa::VerifyingKey::from_encoded_point(&point).expect("a P-256 point");
    let signature = p256::ecdsa::Signature::from_der(der).expect("DER ECDSA");
    verifying.verify_prehash(digest, &signature).is_ok()
}

#[test]
fn the_device_key_signs_only_in_the_boot_it_was_made_in() {
    let Some(device) = Swtpm::start() else { return };
    boot(&device, 0x5A);
    let mut context = open(&device.tcti()).expect("swtpm opens");
    let key = create_device_key(&mut context).expect("device key");

    // Its policy is PolicyPCR over the values of this boot, as computed without a TPM (the
    // verifier's computation): the TPM enforces it below, so the two agree.
    let values = device_key_pcr_values(&mut context).expect("PCRs");
    assert_eq!(key.policy, pcr_policy_digest(&values).to_vec());
    assert_eq!(
        current_device_key_policy(&mut context)
            .expect("policy")
            .to_vec(),
        key.policy
    );
    let digest = [0x42u8; 32];
    let signature = sign_digest(&mut context, &key, &digest).expect("signs in its own boot");
    assert!(verifies(&key, &digest, &signature));
    // Many signatures, each in its own policy session: none is left behind.
    for _ in 0..20 {
        sign_digest(&mut context, &key, &digest).expect("signs again");
    }

    // Another boot (here: one PCR of the list differs): the TPM refuses to sign.
    device.extend(11, [0x99; 32]);
    let refused = sign_digest(&mut context, &key, &digest);
    match &refused {
        Err(TpmError::Tpm { operation, source }) => {
            assert_eq!(*operation, "sign", "{refused:?}");
            eprintln!("refused as expected (another boot): {source}");
        }
        other => panic!("a signature outside the key's boot: {other:?}"),
    }
    assert_ne!(
        current_device_key_policy(&mut context)
            .expect("policy")
            .to_vec(),
        key.policy,
        "the agent sees that the saved key belongs to another boot"
    );
    // Loading it again does not help: it loads, and still does not sign.
    let blob = key.blob();
    key.flush(&mut context);
    let reloaded = load_device_key(&mut context, &blob).expect("loads");
    assert!(sign_digest(&mut context, &reloaded, &digest).is_err());
    reloaded.flush(&mut context);
}

#[test]
fn a_device_key_usable_without_its_policy_is_refused() {
    let Some(device) = Swtpm::start() else { return };
    let mut context = open(&device.tcti()).expect("swtpm opens");
    // The device key as agents before made it: the empty password opens it in any boot.
    let old = edgeward_tests::device_keys::signing_key(&mut context, None);
    let keys = create_attestation_keys(&mut context, EkKind::Rsa).expect("EK and AK");
    let ak = rsa::RsaPublicKey::from_public_key_pem(&keys.ak_public_pem).expect("AK PEM");
    let nonce = Nonce::new(b"certify nonce 03".to_vec()).expect("valid");
    let (attest, signature) = certify(&mut context, &keys, &old, &nonce).expect("certify");
    match appraise_certify(&old.public, &attest, &signature, &ak, nonce.as_bytes()) {
        Err(DeviceKeyError::Attributes { missing, .. }) => {
            assert!(missing.contains("userWithAuth"), "{missing}");
            eprintln!("refused as expected: lacks {missing}");
        }
        other => panic!("an unbound device key was accepted: {other:?}"),
    }
    keys.flush(&mut context);
    old.flush(&mut context);
}

#[test]
fn sessions_a_killed_agent_left_in_the_tpm_are_flushed_at_start() {
    use tss_esapi::constants::SessionType;
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::structures::SymmetricDefinition;
    let Some(device) = Swtpm::start() else { return };
    let start = |context: &mut tss_esapi::Context| {
        context.start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::Null,
            HashingAlgorithm::Sha256,
        )
    };
    // Three agents killed while they held a policy session: swtpm has three session slots.
    for _ in 0..3 {
        let mut context = open(&device.tcti()).expect("swtpm opens");
        start(&mut context).expect("a session");
        // What kill -9 does: nothing is flushed.
        std::mem::forget(context);
    }
    let mut context = open(&device.tcti()).expect("swtpm opens");
    assert!(start(&mut context).is_err(), "the TPM is out of sessions");
    assert_eq!(flush_leftover_objects(&mut context).expect("flush"), 3);
    let key = create_device_key(&mut context).expect("device key");
    sign_digest(&mut context, &key, &[1; 32]).expect("signs after the cleanup");
    key.flush(&mut context);
}
