//! The sandbox a workload runs in, entered in two stages by the agent's own binary run anew
//! (`edgeward-agent workload-sandbox SPEC` and `workload-sandbox-init SPEC`):
//!
//! 1. [`stage_one`], still in the agent's namespaces: joins the workload's cgroup (so that
//!    everything after is limited and can be killed as one), asks to die with its parent, makes
//!    new mount, PID, IPC and UTS namespaces (and a network namespace with no interface unless
//!    the manifest asks for the network), makes its mounts private, and runs stage two, which
//!    the new PID namespace gets as its PID 1.
//! 2. [`stage_two`]: names the host after the workload; over the verity image (the agent
//!    mounted it read-only, nosuid, nodev) mounts a private tmpfs at `/tmp` (noexec: a workload
//!    runs only the code its operator signed), `/proc` of its own PID namespace, a `/dev` with
//!    `null`, `zero`, `random` and `urandom` only, and the agent's I/O directory at `/run`
//!    (the samples socket); makes that tree the root (`pivot_root`, the old root detached);
//!    drops every capability from every set including the bounding set, sets no-new-privs,
//!    becomes the workload's own user and group; installs the seccomp filter; executes the
//!    command. The command is then PID 1 of its namespace: it sees only its own processes.
//!
//! Exit codes of a sandbox that did not get as far as the command: 125 (a step failed; the
//! reason is one line on stderr), 126 (the command cannot be executed), 127 (it is not there).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::{io_error, sys_error, WorkloadError};

/// The argument that makes the agent's binary stage one, and stage two.
pub const STAGE_ONE: &str = "workload-sandbox";
pub const STAGE_TWO: &str = "workload-sandbox-init";

/// The exit code of a sandbox that failed before the command ran.
pub const SANDBOX_FAILED: i32 = 125;

/// Where the agent's I/O directory appears inside, and the samples socket in it.
pub const RUN_DIR: &str = "/run";
pub const SAMPLES_SOCKET: &str = "/run/samples.sock";

/// Everything both stages need, passed on the command line as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSpec {
    pub name: String,
    /// The workload's own user and group (not root, not the agent's).
    pub uid: u32,
    /// The image, mounted read-only by the agent: becomes `/`.
    pub image_root: PathBuf,
    /// The agent's directory with the samples socket: becomes `/run`.
    pub io_dir: PathBuf,
    /// The workload's cgroup directory. The agent always gives one; only a test on a host
    /// without cgroup v2 controllers runs a sandbox without (and then without limits).
    pub cgroup: Option<PathBuf>,
    pub command: String,
    pub arguments: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub network: bool,
    /// The size of the private `/tmp`.
    pub tmp_bytes: u64,
}

impl SandboxSpec {
    /// Refuses what would not be a sandbox: root or a system user as the workload's user, a
    /// relative command, paths that are not absolute.
    pub fn check(&self) -> Result<(), WorkloadError> {
        if self.uid < 1000 {
            return Err(WorkloadError::Invalid(format!(
                "uid {} is root or a system user: a workload runs as a user of its own",
                self.uid
            )));
        }
        let mut paths = vec![
            ("image root", &self.image_root),
            ("I/O directory", &self.io_dir),
        ];
        if let Some(cgroup) = &self.cgroup {
            paths.push(("cgroup", cgroup));
        }
        for (what, path) in paths {
            if !path.is_absolute() {
                return Err(WorkloadError::Invalid(format!(
                    "the {what} {} is not an absolute path",
                    path.display()
                )));
            }
        }
        if !self.command.starts_with('/') {
            return Err(WorkloadError::Invalid(format!(
                "the command {:?} is not absolute",
                self.command
            )));
        }
        Ok(())
    }

    /// The command's environment: the manifest's, then what the appliance sets (which the
    /// manifest cannot override).
    pub fn environment(&self) -> Vec<(String, String)> {
        let mut environment = self.environment.clone();
        environment
            .entry("PATH".into())
            .or_insert_with(|| "/bin:/usr/bin".into());
        environment.insert("HOME".into(), "/tmp".into());
        environment.insert("EDGEWARD_WORKLOAD".into(), self.name.clone());
        environment.insert("EDGEWARD_SAMPLES".into(), SAMPLES_SOCKET.into());
        environment.into_iter().collect()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<Self, WorkloadError> {
        let spec: Self = serde_json::from_str(text)
            .map_err(|error| WorkloadError::Invalid(format!("the sandbox spec: {error}")))?;
        spec.check()?;
        Ok(spec)
    }
}

fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), WorkloadError> {
    nix::mount::mount(source, target, fstype, flags, data).map_err(sys_error(format!(
        "cannot mount {} on {}",
        fstype
            .map(str::to_owned)
            .or_else(|| source.map(|source| source.display().to_string()))
            .unwrap_or_default(),
        target.display()
    )))
}

/// Stage one; returns the exit code the agent sees (stage two's, or 128 + its signal).
pub fn stage_one(spec: &SandboxSpec, own_binary: &Path) -> Result<i32, WorkloadError> {
    spec.check()?;
    if let Some(cgroup) = &spec.cgroup {
        std::fs::write(cgroup.join("cgroup.procs"), "0")
            .map_err(io_error("cannot join the workload's cgroup"))?;
    }
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
        .map_err(sys_error("cannot ask to die with the agent"))?;
    let mut flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    if !spec.network {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    nix::sched::unshare(flags).map_err(sys_error("cannot make the workload's namespaces"))?;
    // Nothing mounted from here on reaches the agent's namespace.
    mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    let status = std::process::Command::new(own_binary)
        .arg(STAGE_TWO)
        .arg(spec.to_json())
        .env_clear()
        .status()
        .map_err(io_error("cannot start the sandbox's second stage"))?;
    Ok(exit_code(status))
}

/// The code a shell would give: the exit code, or 128 plus the signal that ended it.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|signal| 128 + signal))
        .unwrap_or(SANDBOX_FAILED)
}

/// Stage two: builds the root, drops every privilege and executes the command; returns only
/// if something failed (the caller says why on stderr and exits with the code given).
pub fn stage_two(spec: &SandboxSpec) -> (i32, WorkloadError) {
    match prepare(spec) {
        Ok(()) => {}
        Err(error) => return (SANDBOX_FAILED, error),
    }
    let error = execute(spec);
    let code = match &error {
        WorkloadError::Sys { errno, .. } if *errno == nix::errno::Errno::ENOENT => 127,
        WorkloadError::Sys { errno, .. } if *errno == nix::errno::Errno::EACCES => 126,
        _ => SANDBOX_FAILED,
    };
    (code, error)
}

fn prepare(spec: &SandboxSpec) -> Result<(), WorkloadError> {
    spec.check()?;
    nix::unistd::sethostname(&spec.name).map_err(sys_error("cannot set the host name"))?;
    let root = &spec.image_root;
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some(Path::new("tmpfs")),
        &root.join("tmp"),
        Some("tmpfs"),
        hidden,
        Some(&format!("size={},mode=1777", spec.tmp_bytes)),
    )?;
    mount(
        Some(Path::new("proc")),
        &root.join("proc"),
        Some("proc"),
        hidden,
        None,
    )?;
    let dev = root.join("dev");
    mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=755"),
    )?;
    for node in ["null", "zero", "random", "urandom"] {
        let target = dev.join(node);
        std::fs::File::create(&target)
            .map_err(io_error(format!("cannot make {}", target.display())))?;
        mount(
            Some(&Path::new("/dev").join(node)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    std::os::unix::fs::symlink("/proc/self/fd", dev.join("fd"))
        .map_err(io_error("cannot make /dev/fd"))?;
    let run = root.join(RUN_DIR.trim_start_matches('/'));
    mount(Some(&spec.io_dir), &run, None, MsFlags::MS_BIND, None)?;
    mount(
        None,
        &run,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | hidden,
        None,
    )?;
    // The image becomes the root; the old root is detached, so nothing of the appliance's
    // file system is reachable any more.
    nix::unistd::chdir(root.as_path()).map_err(sys_error("cannot enter the image"))?;
    nix::unistd::pivot_root(".", ".").map_err(sys_error("cannot make the image the root"))?;
    nix::mount::umount2(".", MntFlags::MNT_DETACH)
        .map_err(sys_error("cannot detach the appliance's root"))?;
    nix::unistd::chdir("/").map_err(sys_error("cannot enter the new root"))?;
    drop_privileges(spec.uid)?;
    let filter = crate::seccomp::filter(spec.network)?;
    seccompiler::apply_filter(&filter).map_err(|error| WorkloadError::Seccomp(error.to_string()))
}

/// Every capability out of every set, no new privileges ever, then the workload's own user.
fn drop_privileges(uid: u32) -> Result<(), WorkloadError> {
    let caps_error = |what: &str| {
        let what = what.to_owned();
        move |error: caps::errors::CapsError| WorkloadError::Invalid(format!("{what}: {error}"))
    };
    caps::clear(None, caps::CapSet::Inheritable).map_err(caps_error("inheritable capabilities"))?;
    caps::clear(None, caps::CapSet::Ambient).map_err(caps_error("ambient capabilities"))?;
    for capability in caps::all() {
        caps::drop(None, caps::CapSet::Bounding, capability)
            .map_err(caps_error("the capability bounding set"))?;
    }
    nix::sys::prctl::set_no_new_privs().map_err(sys_error("cannot set no-new-privs"))?;
    let (user, group) = (Uid::from_raw(uid), Gid::from_raw(uid));
    nix::unistd::setgroups(&[]).map_err(sys_error("cannot drop supplementary groups"))?;
    nix::unistd::setresgid(group, group, group)
        .map_err(sys_error("cannot become the workload's group"))?;
    nix::unistd::setresuid(user, user, user)
        .map_err(sys_error("cannot become the workload's user"))?;
    // Leaving root clears the permitted and effective sets; make sure of it.
    let left =
        caps::read(None, caps::CapSet::Permitted).map_err(caps_error("reading capabilities"))?;
    if !left.is_empty() {
        return Err(WorkloadError::Invalid(format!(
            "capabilities left after becoming user {uid}: {left:?}"
        )));
    }
    Ok(())
}

/// Executes the command; returns only its failure.
fn execute(spec: &SandboxSpec) -> WorkloadError {
    let cstring = |text: &str| {
        CString::new(text).map_err(|_| WorkloadError::Invalid(format!("{text:?} holds a NUL byte")))
    };
    let prepared = (|| -> Result<(CString, Vec<CString>, Vec<CString>), WorkloadError> {
        let command = cstring(&spec.command)?;
        let mut argv = vec![command.clone()];
        for argument in &spec.arguments {
            argv.push(cstring(argument)?);
        }
        let env = spec
            .environment()
            .iter()
            .map(|(key, value)| cstring(&format!("{key}={value}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((command, argv, env))
    })();
    let (command, argv, env) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return error,
    };
    match nix::unistd::execve(&command, &argv, &env) {
        Ok(never) => match never {},
        Err(errno) => WorkloadError::Sys {
            what: format!("cannot execute {}", spec.command),
            errno,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SandboxSpec {
        SandboxSpec {
            name: "freq-alarm".into(),
            uid: 61001,
            image_root: "/run/edgeward/workloads/freq-alarm/root".into(),
            io_dir: "/run/edgeward/workloads/freq-alarm/io".into(),
            cgroup: Some("/sys/fs/cgroup/workloads/freq-alarm".into()),
            command: "/bin/freq-alarm".into(),
            arguments: vec!["--band-mhz".into(), "200".into()],
            environment: BTreeMap::from([("HOME".into(), "/root".into())]),
            network: false,
            tmp_bytes: 16 << 20,
        }
    }

    #[test]
    fn a_spec_round_trips_and_root_is_refused() {
        assert_eq!(
            SandboxSpec::from_json(&spec().to_json()).expect("reads"),
            spec()
        );
        let mut root = spec();
        root.uid = 0;
        assert!(SandboxSpec::from_json(&root.to_json()).is_err());
        let mut relative = spec();
        relative.image_root = "root".into();
        assert!(relative.check().is_err());
    }

    #[test]
    fn the_appliance_sets_what_the_manifest_cannot_override() {
        let environment: BTreeMap<_, _> = spec().environment().into_iter().collect();
        assert_eq!(environment["HOME"], "/tmp");
        assert_eq!(environment["EDGEWARD_SAMPLES"], SAMPLES_SOCKET);
        assert_eq!(environment["EDGEWARD_WORKLOAD"], "freq-alarm");
        assert_eq!(environment["PATH"], "/bin:/usr/bin");
    }
}
