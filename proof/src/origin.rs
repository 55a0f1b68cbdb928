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
    /// The device identity: the one common name of the signer's certificate.
    pub device: String,
    /// The device certificate's whole subject, for people reading.
    pub subject: String,
    /// When the device says it signed, seconds since the epoch (its claim, not trusted time).
    pub signing_time: i64,
    pub anchor: String,
}

/// How far a signing-time may lie after the token's genTime: the device signs, then asks the
/// TSA, so the signing-time comes first; what is allowed beyond is the clock difference
/// between a device kept by SNTP and the TSA.
pub const SIGNING_TIME_TOLERANCE: i64 = 300;

/// The time at which the device's certificate chain is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainTime {
    /// The TSA's genTime of the block's token: trusted time. The signing-time must not be
    /// later than it (beyond [`SIGNING_TIME_TOLERANCE`]).
    Token(i64),
    /// The signing-time the signer claims. Only for filing a signature before its token is
    /// known (the recorder); a block is proven only at [`ChainTime::Token`].
    SignerClaim,
}

/// Checks a DER block signature over `digest`: the signature by the certificate it carries; a
/// certificate as the device CA issues it (digitalSignature, clientAuth, one common name);
/// valid at `at` and chaining to `anchors` (the device CA) with every certificate above it.
pub fn verify_block(
    signature: &[u8],
    digest: &[u8; 32],
    anchors: &TrustAnchors,
    at: ChainTime,
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
    let judged_at = match at {
        ChainTime::Token(gen_time) => {
            if signing_time > gen_time.saturating_add(SIGNING_TIME_TOLERANCE) {
                return Err(ProofError::SignedAfterToken {
                    signing_time,
                    gen_time,
                    tolerance: SIGNING_TIME_TOLERANCE,
                });
            }
            gen_time
        }
        ChainTime::SignerClaim => signing_time,
    };
    let anchor = anchors.verify_chain(&verified.signer, &verified.certificates, judged_at)?;
    let certificate = crate::trust::parse(&verified.signer, "device certificate")?;
    let device = device_name(&certificate)?;
    Ok(VerifiedOrigin {
        device,
        subject: certificate.subject().to_string(),
        signing_time,
        anchor,
    })
}

/// The device identity of a signer certificate, checked to be one the device CA issues: key
/// usage digitalSignature, extended key usage clientAuth, exactly one common name (parsed, not
/// found in the printed subject).
fn device_name(
    certificate: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<String, ProofError> {
    let refuse = |reason: String| ProofError::NotADeviceCertificate {
        subject: certificate.subject().to_string(),
        reason,
    };
    match certificate.key_usage() {
        Ok(Some(usage)) if usage.value.digital_signature() => {}
        Ok(Some(_)) => {
            return Err(refuse(
                "its key usage does not allow digitalSignature".into(),
            ))
        }
        Ok(None) => return Err(refuse("it has no key usage".into())),
        Err(error) => return Err(refuse(format!("its key usage is malformed: {error}"))),
    }
    match certificate.extended_key_usage() {
        Ok(Some(usage)) if usage.value.client_auth => {}
        Ok(Some(_)) => return Err(refuse("its extended key usage lacks clientAuth".into())),
        Ok(None) => return Err(refuse("it has no extended key usage".into())),
        Err(error) => {
            return Err(refuse(format!(
                "its extended key usage is malformed: {error}"
            )))
        }
    }
    let names: Vec<_> = certificate.subject().iter_common_name().collect();
    let [name] = names.as_slice() else {
        return Err(refuse(format!(
            "it has {} common names; a device certificate has one",
            names.len()
        )));
    };
    name.as_str()
        .map(str::to_owned)
        .map_err(|_| refuse("its common name is not a string".into()))
}

/// The message digest a block signature signed (the SHA-256 of the block digest), read without
/// checking anything: how the recorder pairs a signature with its block before verifying.
pub fn signed_message_digest(signature: &[u8]) -> Result<[u8; 32], ProofError> {
    signed_data::message_digest(signature)
}
