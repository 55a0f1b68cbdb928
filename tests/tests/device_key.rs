//! The device key is made in the TPM and certified by the AK (TPM2_Certify), and the verifier's
//! appraisal accepts exactly that: the certified name of the key sent, with its nonce, by this
//! TPM's AK, and the attributes of a key that cannot leave the TPM.

use edgeward_attestation::quote::{appraise_certify, DeviceKeyError, QuoteError};
use edgeward_attestation::tpm::{
    certify, create_attestation_keys, create_device_key, open, EkKind, Nonce,
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

    let certified = appraise_certify(&key.public, &attest, &signature, &ak, nonce.as_bytes())
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
