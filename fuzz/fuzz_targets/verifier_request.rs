//! What a device sends the verifier, from untrusted bytes: every API request body as JSON, and
//! an attestation's quote, signature and event log through the whole appraisal.
#![no_main]

use std::time::SystemTime;

use edgeward_attestation::api::{
    ActivateRequest, AttestRequest, CertifyRequest, EkKey, Hex, NonceRequest, RegisterRequest,
};
use edgeward_attestation::verifier::{attest, DeviceId, DeviceRecord, Policy, VerifierNonce};
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
    let _ = serde_json::from_slice::<RegisterRequest>(data);
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
    };
    let record = DeviceRecord {
        id: DeviceId::new("bay-1").expect("valid"),
        ek: EkKey::Rsa {
            modulus: Hex(vec![1; 256]),
        },
        ek_fingerprint: "00".into(),
        ek_chain: Vec::new(),
        registered: 0,
        ak_public: Some(Hex(ak_public())),
        pending: None,
        denied: None,
        counters: None,
        last_verdict: None,
        attested_until: None,
        certificates: Vec::new(),
    };
    let policy = Policy::new(Vec::new(), Vec::new());
    let nonce = VerifierNonce::from_bytes(&[7; 32]).expect("32 bytes");
    let (_, verdict) = attest(&policy, record, &request, &nonce, SystemTime::UNIX_EPOCH);
    assert!(!verdict.accepted, "nothing random is a valid attestation");
});
