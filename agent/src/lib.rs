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
pub mod estimated;
pub mod forwarder;
pub mod logging;
pub mod mtls;
pub mod pipeline;
pub mod tpm;
pub mod verifier_client;
pub mod workload_role;

/// The agent's async runtime: one thread. The appliance has one vCPU, and each frame costs
/// microseconds of work; a multi-threaded runtime only added wake-ups between its threads (a
/// sixth of the agent's time with ten streams, docs/benchmarks.md). What blocks runs elsewhere:
/// the TPM on its own thread ([`tpm::Tpm`]), file system work in `spawn_blocking`.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    use anyhow::Context as _;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
