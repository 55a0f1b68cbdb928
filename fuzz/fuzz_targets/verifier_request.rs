//! What a device sends the verifier, from untrusted bytes: every API request body as JSON, the
//! nonce it presents, and an attestation's quote, signature and event log through the whole
//! appraisal.
#![no_main]

use std::time::SystemTime;

use edgeward_attestation::api::{
    ActivateRequest, AttestRequest, CertifyRequest, Hex, NonceRequest, RegisterRequest,
};
use edgeward_attestation::credential::{EkKind, EkPublic};
use edgeward_attestation::ek_certificate::EkRoots;
use edgeward_attestation::quote::parse_attest;
use edgeward_attestation::verifier::{
    appraise_attestation, attest, identity_of, DeviceId, DeviceRecord, NonceBook, Policy,
};
use libfuzzer_sys::fuzz_target;

/// A well-formed AK public area (RSA-2048 restricted signing key) with a made-up modulus.
fn ak_public() -> Vec<u8> {
    let mut public = vec![0x00, 0x01, 0x00, 0x0B, 0x00, 0x05, 0x00, 0x72, 0x00, 0x00];
    public.extend_from_slice(&[0x00, 0x10, 0x00, 0x14, 0x00, 0x0B, 0x08, 0x00, 0, 0, 0, 0]);
    public.extend_from_slice(&[0x01, 0x00]);
    let mut modulus = vec![0xC5u8; 256];
    modulus[255] = 0x01;
    public.extend_from_slice(&modulus);
    public
}

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = serde_json::from_slice::<RegisterRequest>(data) {
        let _ = identity_of(&request);
    }
    let _ = serde_json::from_slice::<ActivateRequest>(data);
    let _ = serde_json::from_slice::<NonceRequest>(data);
    let _ = serde_json::from_slice::<CertifyRequest>(data);
    let _ = serde_json::from_slice::<AttestRequest>(data);

    let third = data.len() / 3;
    let request = AttestRequest {
        device: "bay-1".into(),
        nonce: Hex(vec![7; 32]),
        quote: Hex(data[..third].to_vec()),
        signature: Hex(data[third..2 * third].to_vec()),
        pcr_values: Default::default(),
        event_log: Hex(data[2 * third..].to_vec()),
        agent_log: Vec::new(),
    };
    let ek = EkPublic::rsa(&[0xC5; 256]).expect("a 2048-bit modulus");
    let mut record = DeviceRecord::new(DeviceId::new("bay-1").expect("valid"), &ek, Vec::new(), 0);
    record.ak_public = Some(Hex(ak_public()));
    let policy = Policy::new(EkKind::Rsa, EkRoots::default(), Vec::new());
    let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    // The nonce the request presents is checked before anything else.
    let mut nonces = NonceBook::new(&mut rand::rngs::OsRng);
    let refused = attest(&policy, record.clone(), &request, &mut nonces, now);
    assert!(refused.is_err(), "no random nonce is this verifier's");
    assert_eq!(nonces.used(), 0, "nothing unauthenticated is kept");
    // Past the signature (as if it verified), the rest of the appraisal on the random bytes.
    if let Ok(quote) = parse_attest(&request.quote.0) {
        let (_, verdict) = appraise_attestation(&policy, record, &request, &quote, now);
        assert!(!verdict.accepted, "nothing random is a valid attestation");
    }
});
