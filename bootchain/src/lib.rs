//! Boot-chain evidence for Edgeward: TCG PC Client event logs (parsing and replay), the
//! kernel's IMA measurement list (PCR 10), and the
//! prediction of PCR values from image artifacts, and the signed reference-value manifests a
//! replayed log is matched against.
//!
//! Everything here works on bytes handed in by the caller; the crate opens no device and no
//! socket, so the same code parses a log read in the VM, a log sent to the verifier, and fuzzer
//! input.
#![forbid(unsafe_code)]

pub mod eventlog;
pub mod ima;
pub mod manifest;
pub mod pe;
pub mod predict;
