//! `edgeward-agent` as a library, so that its tests and benchmarks drive the code the device
//! runs: the one TPM owner, the attestation role and its verifier client, the configuration,
//! the durable buffer, the broker forwarder with its TPM-held TLS key and the data path that
//! wires them.
//!
//! This is the device daemon's own code, not a library for others: it uses `anyhow` like the
//! binary it belongs to; the protocols it carries live in the library crates.

pub mod accept;
pub mod appliance;
pub mod attest_role;
pub mod bringup;
pub mod buffer;
pub mod config;
pub mod credentials;
pub mod forwarder;
pub mod mtls;
pub mod pipeline;
pub mod tpm;
pub mod verifier_client;
