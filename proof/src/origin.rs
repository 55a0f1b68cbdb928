//! Proof of origin: a CMS SignedData over a block digest, detached (the content is the 32 raw
//! bytes of the digest), signed by the device key, with the device certificate included. Anyone
//! can check it with `openssl cms -verify -binary -content <digest file>`.

use crate::signed_data::{self, ToSign};
use crate::trust::TrustAnchors;
use crate::{oid, ProofError};

/// Signs a block digest. `sign` gets the SHA-256 to sign (of the signed attributes) and returns
/// a DER ECDSA P-256 signature: the device key signs it inside the TPM. `chain` is the device
/// CA chain to include after the device certificate. `now` is seconds since the epoch.
pub fn sign_block<E: std::fmt::Display>(
    digest: &[u8; 32],
    device_certificate: &[u8],
    chain: &[Vec<u8>],
    now: u64,
    sign: impl FnOnce(&[u8; 32]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, ProofError> {
    let mut certificates = vec![device_certificate.to_vec()];
    certificates.extend(chain.iter().cloned());
    signed_data::sign(
        &ToSign {
            content_type: oid::DATA,
            econtent: None,
            content: digest,
            signing_time: Some(now),
            signer_certificate: device_certificate,
            certificates: &certificates,
        },
        sign,
    )
}

/// A block signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedOrigin {
    /// The device certificate's subject (its CN is the device identity).
    pub device: String,
    /// When the device signed, seconds since the epoch.
    pub signing_time: i64,
    pub anchor: String,
}

/// Checks a DER block signature over `digest`: the signature by the certificate it carries,
/// that certificate valid when it signed and chaining to `anchors` (the device CA).
pub fn verify_block(
    signature: &[u8],
    digest: &[u8; 32],
    anchors: &TrustAnchors,
) -> Result<VerifiedOrigin, ProofError> {
    let verified = signed_data::verify(signature, Some(digest), &[])?;
    if verified.content_type != oid::DATA {
        return Err(ProofError::Malformed(format!(
            "content type {} is not id-data",
            verified.content_type
        )));
    }
    let signing_time = verified
        .signing_time
        .ok_or_else(|| ProofError::Malformed("no signing-time attribute".into()))?;
    let anchor = anchors.verify_chain(&verified.signer, &verified.certificates, signing_time)?;
    let device = crate::trust::parse(&verified.signer, "device certificate")?
        .subject()
        .to_string();
    Ok(VerifiedOrigin {
        device,
        signing_time,
        anchor,
    })
}

/// The message digest a block signature signed (the SHA-256 of the block digest), read without
/// checking anything: how the recorder pairs a signature with its block before verifying.
pub fn signed_message_digest(signature: &[u8]) -> Result<[u8; 32], ProofError> {
    signed_data::message_digest(signature)
}
