//! Workload bundles for the tests: the example workloads as `scripts/build-workloads` builds
//! them (static), packed and signed with the real CLI.

use std::path::{Path, PathBuf};

use crate::{run_edgeward, workspace_root};

/// A static example workload (`freq-alarm`, `workload-probe`).
pub fn example_workload(name: &str) -> PathBuf {
    let path = workspace_root()
        .join("target/x86_64-unknown-linux-gnu/release")
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the example workloads first (scripts/build-workloads; \
         scripts/test does)",
        path.display()
    );
    path
}

/// Packs `binary` as `/bin/<its name>` into `out` with `edgeward workload pack`, the command
/// line `command` and the extra pack flags `extra`, and signs it with `key` unless `None`.
pub fn bundle(
    binary: &Path,
    name: &str,
    command: &str,
    extra: &[&str],
    key: Option<&Path>,
    out: &Path,
) -> PathBuf {
    let content = out.with_extension("content");
    let _ = std::fs::remove_dir_all(&content);
    std::fs::create_dir_all(content.join("bin")).expect("content directory");
    let file_name = binary.file_name().expect("a file name");
    std::fs::copy(binary, content.join("bin").join(file_name)).expect("the binary copies");
    let mut args = vec![
        "workload",
        "pack",
        content.to_str().expect("UTF-8 path"),
        "--name",
        name,
        "--version",
        "1.0.0",
        "--command",
        command,
        "--out",
        out.to_str().expect("UTF-8 path"),
    ];
    args.extend_from_slice(extra);
    run_edgeward(&args);
    if let Some(key) = key {
        run_edgeward(&[
            "workload",
            "sign",
            out.to_str().expect("UTF-8 path"),
            "--key",
            key.to_str().expect("UTF-8 path"),
        ]);
    }
    out.to_owned()
}

/// What the probe checks from inside any sandbox (`workload-probe`): alone as PID 1, its own
/// unprivileged user, no capabilities, no-new-privs, seccomp, a read-only root, a private
/// `/tmp`, nothing of the appliance's in sight, a minimal `/dev`.
pub const PROBE_SANDBOX_CHECKS: [&str; 11] = [
    "pid-1",
    "no-other-processes",
    "unprivileged-user",
    "no-capabilities-CapEff",
    "no-capabilities-CapBnd",
    "seccomp-filter",
    "cannot-write-/probe-was-here",
    "writes-tmp",
    "sees-no-appliance-files",
    "minimal-dev",
    "no-new-privs",
];

/// Asserts that the probe's output `text` says `ok` for each of [`PROBE_SANDBOX_CHECKS`] and
/// `extra`, and that it found nothing wrong.
pub fn assert_probe_passed(text: &str, extra: &[&str]) {
    for check in PROBE_SANDBOX_CHECKS.iter().chain(extra) {
        assert!(
            text.contains(&format!("probe: {check} ok")),
            "{check} not ok:\n{text}"
        );
    }
    assert!(text.contains("probe: done, 0 failed"), "{text}");
}
