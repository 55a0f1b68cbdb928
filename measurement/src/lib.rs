//! Synchrophasor measurement for Edgeward: the IEEE C37.118.2-2011 codec, a reader for packet
//! captures of C37.118 traffic, and the PMU client that keeps a stream alive.
//!
//! The codec ([`c37118`]) is sans-I/O: it turns bytes into typed frames and back, and never
//! touches a socket, so every state is testable and fuzzable with byte slices. The client
//! ([`client`]) drives it over tokio sockets; [`capture`] feeds it from libpcap files. This crate
//! does not touch the TPM or any network stack beyond its own PMU sockets.
#![forbid(unsafe_code)]

pub mod block;
pub mod c37118;
pub mod capture;
pub mod client;
pub mod estimator;
pub mod replay;
pub mod report;
pub mod sample;
pub mod server;
pub mod source;
pub mod stats;
