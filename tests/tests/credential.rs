//! Credential activation against a real TPM (swtpm): the verifier's pure-Rust MakeCredential is
//! recovered by the TPM's ActivateCredential only when the AK and the EK are in the same TPM and
//! nothing was altered.

use edgeward_attestation::credential::make_credential;
use edgeward_attestation::tpm::{activate_credential, create_attestation_keys, open, EkKind};
use edgeward_tests::swtpm::Swtpm;

#[test]
fn activation_with_an_rsa_ek() {
    activation_recovers_the_secret_only_for_the_right_tpm_and_ak(EkKind::Rsa);
}

#[test]
fn activation_with_an_ecc_ek() {
    activation_recovers_the_secret_only_for_the_right_tpm_and_ak(EkKind::Ecc);
}

fn activation_recovers_the_secret_only_for_the_right_tpm_and_ak(kind: EkKind) {
    let Some(device) = Swtpm::start() else { return };
    let Some(other) = Swtpm::start() else { return };
    let mut context = open(&device.tcti()).expect("swtpm opens");
    let keys = create_attestation_keys(&mut context, kind).expect("EK and AK");
    let mut other_context = open(&other.tcti()).expect("swtpm opens");
    let other_keys = create_attestation_keys(&mut other_context, kind).expect("EK and AK");
    let mut rng = rand::rngs::OsRng;
    let secret = *b"0123456789abcdef0123456789abcdef";

    // The happy path: the secret comes back.
    let challenge =
        make_credential(&keys.ek_public, &keys.ak_name, &secret, &mut rng).expect("made");
    let recovered = activate_credential(
        &mut context,
        &keys,
        &challenge.id_object,
        &challenge.encrypted_secret,
    )
    .expect("activation succeeds");
    assert_eq!(recovered, secret);

    // Made for another AK's name (an AK that is not in this TPM): refused.
    let for_other_ak =
        make_credential(&keys.ek_public, &other_keys.ak_name, &secret, &mut rng).expect("made");
    assert!(activate_credential(
        &mut context,
        &keys,
        &for_other_ak.id_object,
        &for_other_ak.encrypted_secret
    )
    .is_err());

    // Made for another TPM's EK: this TPM cannot open it.
    let for_other_ek =
        make_credential(&other_keys.ek_public, &keys.ak_name, &secret, &mut rng).expect("made");
    assert!(activate_credential(
        &mut context,
        &keys,
        &for_other_ek.id_object,
        &for_other_ek.encrypted_secret
    )
    .is_err());

    // One altered byte of the blob: the integrity HMAC fails.
    let mut altered = challenge.id_object.clone();
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    assert!(
        activate_credential(&mut context, &keys, &altered, &challenge.encrypted_secret).is_err()
    );

    // The other TPM recovers its own credential (the keys are not special to one TPM).
    let own = make_credential(
        &other_keys.ek_public,
        &other_keys.ak_name,
        &secret,
        &mut rng,
    )
    .expect("made");
    assert_eq!(
        activate_credential(
            &mut other_context,
            &other_keys,
            &own.id_object,
            &own.encrypted_secret
        )
        .expect("activation succeeds"),
        secret
    );
    keys.flush(&mut context);
    other_keys.flush(&mut other_context);
}
