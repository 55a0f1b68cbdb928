//! Attestation for Edgeward: the device side of TPM 2.0 evidence (`tpm`), and the verifier's
//! side without I/O: MakeCredential (`credential`), EK certificates, quote and certification
//! appraisal (`quote`), the decisions of registration, attestation and certification
//! (`verifier`) with their wire types (`api`), the device CA (`device_ca`), and AMD SEV-SNP
//! reports verified offline (`snp`).
//!
//! Appraisal fails closed: every check either passes, fails with a reason, or is skipped because
//! the policy says so explicitly, and the result lists each.
#![forbid(unsafe_code)]

pub mod agent_log;
pub mod api;
pub mod config_counter;
pub mod credential;
pub mod device_ca;
pub mod ek_certificate;
pub mod key_policy;
pub mod quote;
pub mod snp;
pub mod tpm;
pub mod verifier;
