//! Running a workload bundle on the appliance, after `edgeward-bundle` verified its signature:
//! its image mapped read-only through dm-verity ([`image`]), its limits in a cgroup of its own
//! ([`cgroup`]), and a sandbox ([`sandbox`]) of fresh mount, PID, IPC, UTS and (unless its
//! manifest asks for the network) network namespaces, the image as a read-only root with a
//! private tmpfs, an unprivileged user without capabilities, and a seccomp filter
//! ([`seccomp`]).
//!
//! The sandbox is entered in two stages, both the agent's own binary run anew (so that no
//! code runs between `fork` and `exec` in the agent, which Rust's `pre_exec` would need unsafe
//! code for): stage one joins the cgroup and makes the namespaces, stage two is PID 1 in the
//! new PID namespace, builds the root, drops to the workload's user and executes its command.
//! The agent measures the bundle before any of this (its role does, through the TPM owner).

pub mod cgroup;
pub mod channel;
pub mod image;
pub mod sandbox;
pub mod seccomp;

/// What went wrong, and with what.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    #[error(transparent)]
    Bundle(#[from] edgeward_bundle::BundleError),
    #[error(transparent)]
    Device(#[from] edgeward_blockdev::BlockdevError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {errno} ({})", errno.desc())]
    Sys {
        what: String,
        errno: nix::errno::Errno,
    },
    #[error("the seccomp filter: {0}")]
    Seccomp(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> WorkloadError {
    let what = what.into();
    move |source| WorkloadError::Io { what, source }
}

pub(crate) fn sys_error(
    what: impl Into<String>,
) -> impl FnOnce(nix::errno::Errno) -> WorkloadError {
    let what = what.into();
    move |errno| WorkloadError::Sys { what, errno }
}
