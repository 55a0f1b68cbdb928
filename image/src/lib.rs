//! The image build of Edgeward: Secure Boot and signing keys, the root holding the agent (an
//! erofs partition under dm-verity, or with Debian's kernel an initramfs), the signed unified
//! kernel image (UKI), the GPT disk, the OVMF variable store with the keys enrolled, and the
//! signed reference-value manifest.
//!
//! This crate runs on the operator's build machine, never on the device. It drives a few
//! standard tools where they are the reference implementation of a format (objcopy, sbsign,
//! mkfs.vfat and mtools, mkfs.erofs, sfdisk, virt-fw-vars, apt, the kernel's make) and says
//! which one failed and why.
#![forbid(unsafe_code)]

pub mod build;
pub mod configure;
pub mod cpio;
pub mod elf;
pub mod erofs;
pub mod kernel;
pub mod keys;
pub mod manifest;
pub mod rootfs;
mod tool;
pub mod workload;

pub use tool::{IoError, ToolError};
