//! Boot-chain evidence for Edgeward: TCG PC Client event logs (parsing and replay) and, with the
//! image issue, the prediction of PCR values from image artifacts.
//!
//! Everything here works on bytes handed in by the caller; the crate reads no device and no
//! file itself, so the same code parses a log read in the VM, a log sent to the verifier, and
//! fuzzer input.
#![forbid(unsafe_code)]

pub mod eventlog;
