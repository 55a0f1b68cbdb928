//! A recorded block's proofs judged together: the TSA's token first (trusted time), then the
//! device's signature with its certificate chain judged at that time, and the signer named as
//! the device the block was recorded under. This is what `edgeward verify-data` decides per
//! block; a device whose certificate had expired cannot make a block verify by claiming an
//! earlier signing-time, because the token's time is not the device's to choose.

use crate::origin::{verify_block, ChainTime, VerifiedOrigin};
use crate::timestamp::{verify_response, VerifiedTimestamp};
use crate::trust::TrustAnchors;
use crate::ProofError;

/// Whom the verifier trusts for a block's proofs.
#[derive(Debug, Clone)]
pub struct ProofAnchors {
    /// The root the TSA certificate chains to.
    pub tsa: TrustAnchors,
    /// TSA certificates to use when a token does not carry its own (DER).
    pub tsa_certificates: Vec<Vec<u8>>,
    /// The device CA (or the platform CA above it).
    pub devices: TrustAnchors,
}

/// Both proofs of a block, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedBlock {
    pub timestamp: VerifiedTimestamp,
    pub origin: VerifiedOrigin,
}

/// Verifies a block's token (`tsr`, DER `TimeStampResp`) and signature (`p7s`, DER CMS) over
/// `digest`, for the block recorded under device `recorded_device`.
pub fn verify_proofs(
    digest: &[u8; 32],
    tsr: &[u8],
    p7s: &[u8],
    anchors: &ProofAnchors,
    recorded_device: &str,
) -> Result<VerifiedBlock, ProofError> {
    let timestamp = verify_response(tsr, digest, None, &anchors.tsa, &anchors.tsa_certificates)?;
    let origin = verify_block(
        p7s,
        digest,
        &anchors.devices,
        ChainTime::Token(timestamp.gen_time),
    )?;
    if origin.device != recorded_device {
        return Err(ProofError::OtherDevice {
            signer: origin.device,
            recorded: recorded_device.to_owned(),
        });
    }
    Ok(VerifiedBlock { timestamp, origin })
}
