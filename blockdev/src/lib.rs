//! Loop devices and device-mapper verity devices, through the kernel's ioctls: how a signed
//! bundle's image and hash tree, lying in a file, become a block device whose every block the
//! kernel checks against the sealed root hash as it is read.
//!
//! This is the one crate of Edgeward with `unsafe` code, and only `sys.rs` has it: each ioctl
//! call, with the buffer it hands the kernel built and checked in safe code first. Written here
//! rather than taken from a crate: the `devicemapper` crate builds its bindings with bindgen
//! (libclang at build time) and leaves the target tables to the caller anyway, and no loop
//! device crate is maintained as the rest of our dependencies are; the two interfaces are four
//! ioctls, documented in `linux/dm-ioctl.h` and `linux/loop.h`.
//!
//! Nothing here decides what to trust: the caller passes the verity table (from
//! `edgeward_verity::VerityTarget`) built from a signed manifest.

pub mod dm;
pub mod loop_device;
mod sys;

/// What failed, with the device and the kernel's errno.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BlockdevError {
    #[error("cannot open {path}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("{operation} failed: {errno} ({})", errno.desc())]
    Ioctl {
        operation: &'static str,
        errno: nix::errno::Errno,
    },
    #[error("{0}")]
    Invalid(String),
}

/// A control device (`/dev/mapper/control`, `/dev/loop-control`), opened for its ioctls.
fn open_control(path: &str) -> Result<std::fs::File, BlockdevError> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| BlockdevError::Open {
            path: path.to_owned(),
            source,
        })
}
