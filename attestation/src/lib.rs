//! Attestation evidence and its appraisal for Edgeward. Today: AMD SEV-SNP attestation reports,
//! verified offline against AMD's bundled roots, and TPM quotes in tpm2-tools' formats.
//! Registration, credential activation, device keys and the verifier service come with the rest
//! of the attestation issue.
//!
//! Appraisal fails closed: every check either passes, fails with a reason, or is skipped because
//! the policy says so explicitly, and the result lists each.
#![forbid(unsafe_code)]

pub mod credential;
pub mod ek_certificate;
pub mod quote;
pub mod snp;
pub mod tpm;
