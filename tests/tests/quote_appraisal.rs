//! The verifier's quote appraisal on quotes made by a real TPM (swtpm): accepted with the
//! verifier's nonce and the PCR values it expects; refused for a wrong nonce, a replayed quote,
//! another TPM's AK, an altered byte, a different PCR selection, and a PCR extended after the
//! quote.

use edgeward_attestation::quote::{appraise_quote, parse_attest, QuoteError};
use edgeward_attestation::tpm::{open, quote, read_pcrs, Nonce, PcrSelection};
use edgeward_tests::swtpm::Swtpm;
use rsa::pkcs8::DecodePublicKey;

fn expected(values: &[Vec<u8>], selection: &PcrSelection) -> Vec<(u8, [u8; 32])> {
    selection
        .pcrs
        .iter()
        .zip(values)
        .map(|(pcr, value)| (*pcr, value.as_slice().try_into().expect("SHA-256 values")))
        .collect()
}

#[test]
fn quotes_are_appraised_and_every_refusal_has_its_reason() {
    let Some(device) = Swtpm::start() else { return };
    let Some(other) = Swtpm::start() else { return };
    let mut context = open(&device.tcti()).expect("swtpm opens");
    let selection: PcrSelection = "sha256:0,1,2,3,4,5,6,7".parse().expect("valid");
    let nonce = Nonce::new(b"verifier nonce 0001".to_vec()).expect("valid");
    let made = quote(&mut context, &nonce, &selection).expect("quote");
    let ak = rsa::RsaPublicKey::from_public_key_pem(&made.ak_public_pem).expect("AK PEM");
    let values = read_pcrs(&mut context, &selection).expect("PCRs");
    let pcrs = expected(&values, &selection);

    let attest = appraise_quote(&made.attest, &made.signature, &ak, nonce.as_bytes(), &pcrs)
        .expect("the quote is accepted");
    assert!(attest.clock.safe);

    // A quote replayed against a new nonce.
    assert!(matches!(
        appraise_quote(
            &made.attest,
            &made.signature,
            &ak,
            b"verifier nonce 0002",
            &pcrs
        ),
        Err(QuoteError::NonceMismatch { .. })
    ));

    // Another TPM's AK did not sign it.
    let mut other_context = open(&other.tcti()).expect("swtpm opens");
    let other_quote = quote(&mut other_context, &nonce, &selection).expect("quote");
    let other_ak = rsa::RsaPublicKey::from_public_key_pem(&other_quote.ak_public_pem).expect("PEM");
    assert_eq!(
        appraise_quote(
            &made.attest,
            &made.signature,
            &other_ak,
            nonce.as_bytes(),
            &pcrs
        ),
        Err(QuoteError::BadSignature)
    );

    // Any altered byte breaks the signature.
    for index in [0, 10, made.attest.len() / 2, made.attest.len() - 1] {
        let mut altered = made.attest.clone();
        altered[index] ^= 0x01;
        assert_eq!(
            appraise_quote(&altered, &made.signature, &ak, nonce.as_bytes(), &pcrs),
            Err(QuoteError::BadSignature),
            "byte {index}"
        );
    }

    // The verifier expected other PCRs than were quoted.
    assert!(matches!(
        appraise_quote(
            &made.attest,
            &made.signature,
            &ak,
            nonce.as_bytes(),
            &pcrs[..7]
        ),
        Err(QuoteError::SelectionMismatch { .. })
    ));

    // A PCR extended after boot: the verifier's expectation (here: the value the log would
    // replay to) no longer matches what the TPM quotes.
    let status = std::process::Command::new("tpm2_pcrextend")
        .arg("7:sha256=0000000000000000000000000000000000000000000000000000000000000001")
        .env("TPM2TOOLS_TCTI", device.tcti())
        .status();
    match status {
        Ok(status) if status.success() => {
            let later = quote(&mut context, &nonce, &selection).expect("quote");
            assert!(matches!(
                appraise_quote(
                    &later.attest,
                    &later.signature,
                    &rsa::RsaPublicKey::from_public_key_pem(&later.ak_public_pem).expect("PEM"),
                    nonce.as_bytes(),
                    &pcrs
                ),
                Err(QuoteError::PcrDigestMismatch { .. })
            ));
        }
        _ => edgeward_tests::required_peer_missing(
            "tpm2_pcrextend (tpm2-tools) could not extend PCR 7",
        ),
    }

    // What the device sends is parsed, never trusted: garbage is a typed error.
    assert!(matches!(
        parse_attest(b"\xff\x54\x43"),
        Err(QuoteError::Truncated(_))
    ));
    assert!(matches!(
        parse_attest(&[0u8; 64]),
        Err(QuoteError::NotTpmGenerated { found: 0 })
    ));
}
