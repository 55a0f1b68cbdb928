//! The contract with an unmodified SEGuRo-style central platform, in one place that the device,
//! the recorder, `verify-data`, the tests and the demos share: the topics, the VILLAS protobuf
//! samples, the block file (Parquet), the store's layout, heartbeats, notifications, the point
//! layout on the metadata topic, and the broker's ACL. Sans-I/O: bytes and text in, bytes and
//! text out. The facts behind it: `../shared/reference/seguro.md`.
#![forbid(unsafe_code)]

pub mod acl;
pub mod heartbeat;
pub mod identity;
pub mod layout;
pub mod notification;
#[cfg(feature = "parquet-block")]
pub mod parquet_block;
pub mod store;
pub mod topics;
pub mod villas;
