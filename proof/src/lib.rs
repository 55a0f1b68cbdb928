//! Proof of time and proof of origin for Edgeward's data blocks, without I/O:
//!
//! - [`timestamp`]: RFC 3161 requests for a block digest, the checks a response must pass
//!   before it is published (status, imprint, nonce, signature, a TSA certificate for
//!   time-stamping that chains to the configured root), and a small TSA that answers requests.
//! - [`origin`]: a CMS SignedData over a block digest, detached, signed by a key that may live in
//!   a TPM (the signature comes from a callback), and its verification.
//!
//! Both rest on [`trust`], which decides whether a signer's certificate chains to an anchor, and
//! [`block`] judges a recorded block's two proofs together, at the token's time.

mod oid;
mod signed_data;

pub mod block;
pub mod origin;
pub mod timestamp;
pub mod trust;

/// Why a proof was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofError {
    #[error("malformed: {0}")]
    Malformed(String),
    #[error("cannot encode {what}: {reason}")]
    Encoding { what: &'static str, reason: String },
    #[error("{what}: {reason}")]
    Certificate { what: &'static str, reason: String },
    #[error("unsupported algorithm: {0}")]
    Algorithm(String),
    #[error("the signature does not verify with the signer's certificate")]
    BadSignature,
    #[error("the content does not match the signed message digest (altered)")]
    ContentAltered,
    #[error("the signing-certificate attribute names another certificate than the signer's")]
    CertificateBinding,
    #[error("the signer's certificate is neither carried nor supplied")]
    SignerUnknown,
    #[error("{subject} (issued by {issuer}) does not chain to a trusted certificate")]
    Untrusted { subject: String, issuer: String },
    #[error("{what} {subject} is not valid at {at} (valid {not_before}..{not_after})")]
    Expired {
        what: &'static str,
        subject: String,
        at: i64,
        not_before: i64,
        not_after: i64,
    },
    #[error("the signing callback failed: {0}")]
    Signing(String),
    #[error("the TSA refused: status {status}{}", reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())]
    TsaRefused {
        status: String,
        reason: Option<String>,
    },
    #[error("the token is for digest {found}, not {expected}")]
    WrongImprint { expected: String, found: String },
    #[error("the token's nonce {found} is not the request's {expected}")]
    WrongNonce { expected: String, found: String },
    #[error("the TSA certificate {subject} is not for time-stamping: {reason}")]
    NotTimestamping { subject: String, reason: String },
    #[error(
        "the device says it signed at {signing_time}, after the token's time {gen_time} (more \
         than the {tolerance} s allowed): a block is signed before it is time-stamped"
    )]
    SignedAfterToken {
        signing_time: i64,
        gen_time: i64,
        tolerance: i64,
    },
    #[error("{subject} is not a device certificate: {reason}")]
    NotADeviceCertificate { subject: String, reason: String },
    #[error("the block was signed by device {signer}, but recorded under device {recorded}")]
    OtherDevice { signer: String, recorded: String },
}
