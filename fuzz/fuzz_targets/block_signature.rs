//! A block signature (`.p7s`) and token (`.tsr`) from the broker or the store, paired by the
//! recorder and judged together by `verify-data` (the signature at the token's time).
#![no_main]

use edgeward_proof::block::{verify_proofs, ProofAnchors};
use edgeward_proof::origin::{signed_message_digest, verify_block, ChainTime};
use edgeward_proof::trust::TrustAnchors;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = signed_message_digest(data);
    let _ = verify_block(data, &[0; 32], &TrustAnchors::default(), ChainTime::SignerClaim);
    let _ = verify_block(data, &[0; 32], &TrustAnchors::default(), ChainTime::Token(1 << 40));
    let half = data.len() / 2;
    let anchors = ProofAnchors {
        tsa: TrustAnchors::default(),
        tsa_certificates: vec![data.to_vec()],
        devices: TrustAnchors::default(),
    };
    let _ = verify_proofs(&[0; 32], &data[..half], &data[half..], &anchors, "bay-1");
});
