//! The seccomp filter every workload runs under: it refuses, with EPERM, what a workload has
//! no business doing even if something let it try. Its user has no capabilities, so most of
//! these fail anyway; the filter is the second wall, and the one that also closes IP sockets
//! to a workload whose manifest asks for no network (its network namespace has no interface,
//! but a socket could still be opened and used on loopback).

use std::collections::BTreeMap;

use nix::libc;
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::WorkloadError;

/// Refused for every workload: loading kernel code, replacing the kernel, changing mounts or
/// namespaces, looking into other processes, and the machine-wide levers (clock, reboot, swap,
/// accounting, kernel keyrings, BPF and performance counters).
pub const REFUSED: &[(&str, libc::c_long)] = &[
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("kcmp", libc::SYS_kcmp),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
    ("reboot", libc::SYS_reboot),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("acct", libc::SYS_acct),
    ("syslog", libc::SYS_syslog),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("iopl", libc::SYS_iopl),
    ("ioperm", libc::SYS_ioperm),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("io_uring_setup", libc::SYS_io_uring_setup),
];

/// The filter for a workload; `network` false also refuses every socket but a Unix one.
pub fn filter(network: bool) -> Result<BpfProgram, WorkloadError> {
    let error = |error: seccompiler::BackendError| WorkloadError::Seccomp(error.to_string());
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED
        .iter()
        .map(|(_, number)| (*number, Vec::new()))
        .collect();
    if !network {
        // socket(domain, …) and socketpair(domain, …) with any domain but AF_UNIX: the samples
        // channel is a Unix socket, and nothing else is given.
        for number in [libc::SYS_socket, libc::SYS_socketpair] {
            let not_unix = SeccompCondition::new(
                0,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )
            .map_err(error)?;
            rules.insert(
                number,
                vec![SeccompRule::new(vec![not_unix]).map_err(error)?],
            );
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        TargetArch::x86_64,
    )
    .map_err(error)?;
    BpfProgram::try_from(filter).map_err(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filters_compile_and_the_network_one_is_smaller() {
        let closed = filter(false).expect("compiles");
        let open = filter(true).expect("compiles");
        assert!(
            closed.len() > open.len(),
            "the socket rules add instructions"
        );
        let names: std::collections::BTreeSet<_> = REFUSED.iter().map(|(name, _)| *name).collect();
        assert_eq!(names.len(), REFUSED.len(), "no syscall listed twice");
        for wanted in [
            "init_module",
            "finit_module",
            "kexec_load",
            "mount",
            "ptrace",
        ] {
            assert!(names.contains(wanted), "{wanted} is refused");
        }
    }
}
