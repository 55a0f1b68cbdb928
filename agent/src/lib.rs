//! The data path of `edgeward-agent`, as a library so that its benchmark drives the same code
//! the daemon runs: the configuration, the durable buffer, the broker forwarder with its TPM-held
//! TLS key, the TPM signing thread and the pipeline that wires them.
//!
//! This is the device daemon's own code, not a library for others: it uses `anyhow` like the
//! binary it belongs to; the protocols it carries live in the library crates.

pub mod buffer;
pub mod config;
pub mod credentials;
pub mod forwarder;
pub mod mtls;
pub mod pipeline;
pub mod tpm_worker;
