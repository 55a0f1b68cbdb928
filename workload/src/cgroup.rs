//! Cgroup v2 limits from a workload's size: `cpu.max`, `memory.max` (no swap, the whole group
//! killed together at the limit), `pids.max`. The appliance's workloads live under
//! `/sys/fs/cgroup/workloads/<name>`; the agent itself stays in the root group, outside them.

use std::path::{Path, PathBuf};

use edgeward_bundle::workload::{Limits, WorkloadName};

use crate::{io_error, sys_error, WorkloadError};

/// The controllers a workload's limits need.
const CONTROLLERS: &str = "+cpu +memory +pids";
/// `cpu.max`'s period: the quota is a share of it.
const CPU_PERIOD_US: u64 = 100_000;

/// The files and values that set `limits`, in the order they are written.
pub fn settings(limits: &Limits) -> Vec<(&'static str, String)> {
    vec![
        (
            "cpu.max",
            format!(
                "{} {CPU_PERIOD_US}",
                CPU_PERIOD_US * u64::from(limits.cpu_percent) / 100
            ),
        ),
        ("memory.max", limits.memory_bytes.to_string()),
        ("memory.swap.max", "0".to_owned()),
        // At the limit the kernel kills the whole group, not one process of it.
        ("memory.oom.group", "1".to_owned()),
        ("pids.max", limits.tasks.to_string()),
    ]
}

fn write(path: &Path, value: &str) -> Result<(), WorkloadError> {
    std::fs::write(path, value).map_err(io_error(format!(
        "cannot write {value:?} to {}",
        path.display()
    )))
}

/// The cgroup v2 hierarchy with the workloads' parent group made.
#[derive(Debug, Clone)]
pub struct Cgroups {
    workloads: PathBuf,
}

impl Cgroups {
    /// Mounts cgroup2 at `root` unless it is there, and makes `workloads` with the CPU, memory
    /// and task controllers on: a kernel without one of them is refused, since a workload would
    /// run without that limit.
    pub fn prepare(root: &Path) -> Result<Self, WorkloadError> {
        if !root.join("cgroup.controllers").exists() {
            std::fs::create_dir_all(root)
                .map_err(io_error(format!("cannot create {}", root.display())))?;
            nix::mount::mount(
                Some("cgroup2"),
                root,
                Some("cgroup2"),
                nix::mount::MsFlags::MS_NOSUID
                    | nix::mount::MsFlags::MS_NODEV
                    | nix::mount::MsFlags::MS_NOEXEC,
                None::<&str>,
            )
            .map_err(sys_error(format!(
                "cannot mount cgroup2 on {}",
                root.display()
            )))?;
        }
        let available = std::fs::read_to_string(root.join("cgroup.controllers"))
            .map_err(io_error("cannot read the cgroup controllers"))?;
        for wanted in ["cpu", "memory", "pids"] {
            if !available
                .split_whitespace()
                .any(|controller| controller == wanted)
            {
                return Err(WorkloadError::Invalid(format!(
                    "the kernel's cgroup v2 has no {wanted} controller (it has: {}): a workload \
                     would run without that limit",
                    available.trim()
                )));
            }
        }
        write(&root.join("cgroup.subtree_control"), CONTROLLERS)?;
        let workloads = root.join("workloads");
        std::fs::create_dir_all(&workloads)
            .map_err(io_error(format!("cannot create {}", workloads.display())))?;
        write(&workloads.join("cgroup.subtree_control"), CONTROLLERS)?;
        Ok(Self { workloads })
    }

    /// A fresh group for `name` with `limits` set. A group left by an earlier run of the same
    /// workload is emptied and removed first.
    pub fn create(
        &self,
        name: &WorkloadName,
        limits: &Limits,
    ) -> Result<WorkloadCgroup, WorkloadError> {
        let path = self.workloads.join(name.as_str());
        if path.exists() {
            let stale = WorkloadCgroup { path: path.clone() };
            stale.kill()?;
            stale.remove()?;
        }
        std::fs::create_dir(&path)
            .map_err(io_error(format!("cannot create {}", path.display())))?;
        for (file, value) in settings(limits) {
            write(&path.join(file), &value)?;
        }
        Ok(WorkloadCgroup { path })
    }
}

/// One workload's group.
#[derive(Debug, Clone)]
pub struct WorkloadCgroup {
    path: PathBuf,
}

impl WorkloadCgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The processes in it.
    pub fn procs(&self) -> Result<Vec<i32>, WorkloadError> {
        let text = std::fs::read_to_string(self.path.join("cgroup.procs"))
            .map_err(io_error("cannot read the workload's processes"))?;
        Ok(text
            .lines()
            .filter_map(|line| line.trim().parse().ok())
            .collect())
    }

    /// How often the kernel killed it at its memory limit (`memory.events`'s `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.path.join("memory.events"))
            .ok()
            .and_then(|events| {
                events.lines().find_map(|line| {
                    line.strip_prefix("oom_kill ")
                        .and_then(|count| count.trim().parse().ok())
                })
            })
            .unwrap_or(0)
    }

    /// Kills every process in it (`cgroup.kill`), and waits until it is empty.
    pub fn kill(&self) -> Result<(), WorkloadError> {
        write(&self.path.join("cgroup.kill"), "1")?;
        for _ in 0..200 {
            if self.procs()?.is_empty() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Err(WorkloadError::Invalid(format!(
            "{} still has processes two seconds after cgroup.kill",
            self.path.display()
        )))
    }

    /// Removes the (empty) group.
    pub fn remove(&self) -> Result<(), WorkloadError> {
        match std::fs::remove_dir(&self.path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(WorkloadError::Io {
                what: format!("cannot remove {}", self.path.display()),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use edgeward_bundle::workload::Size;

    use super::*;

    #[test]
    fn sizes_become_cgroup_settings() {
        let small = settings(&Size::S.limits());
        assert_eq!(small[0], ("cpu.max", "10000 100000".to_owned()));
        assert_eq!(small[1], ("memory.max", (64u64 << 20).to_string()));
        assert_eq!(small[2], ("memory.swap.max", "0".to_owned()));
        assert_eq!(small[3], ("memory.oom.group", "1".to_owned()));
        assert_eq!(small[4], ("pids.max", "32".to_owned()));
        let large = settings(&Size::L.limits());
        assert_eq!(large[0].1, "50000 100000");
    }
}
