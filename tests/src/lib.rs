//! Shared helpers of Edgeward's end-to-end tests: where the shared test data lives, and guards
//! that start real peers and stop them on drop.

pub mod appliance;
pub mod demo;
pub mod device_keys;
pub mod openssl;
pub mod platform;
pub mod pmu_sim;
pub mod pypmu;
pub mod qemu;
pub mod sntp;
pub mod swtpm;
pub mod verifier;
pub mod workloads;

use std::path::PathBuf;

/// The shared test data directory: `$EDGEWARD_TESTDATA`, else `../shared/testdata` beside the
/// checkout. Returns `None` (after saying why) when it is missing outside CI; under CI
/// (`CI=true`) a missing directory fails the test, since CI always has it.
pub fn testdata(subdir: &str) -> Option<PathBuf> {
    let root = std::env::var_os("EDGEWARD_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata"));
    let dir = root.join(subdir);
    if dir.is_dir() {
        return Some(dir);
    }
    required_peer_missing(&format!(
        "shared test data {} is missing (set EDGEWARD_TESTDATA or put ../shared beside the checkout)",
        dir.display()
    ));
    None
}

/// Reports that something a test needs is missing: under CI (`CI=true`) that fails the test,
/// since CI installs everything; elsewhere the test is skipped with the reason printed.
pub fn required_peer_missing(message: &str) {
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
}

/// The `edgeward` binary of this build (`cargo build --bins` puts it beside the test binaries).
pub fn edgeward_binary() -> PathBuf {
    binary("edgeward")
}

/// The `edgeward-demo` binary of this build (the demos on this rig).
pub fn demo_binary() -> PathBuf {
    binary("edgeward-demo")
}

/// The `edgeward-agent` binary of this build.
pub fn agent_binary() -> PathBuf {
    binary("edgeward-agent")
}

/// The agent as it ships in the image (`cargo build --profile image -p edgeward-agent`, which
/// `scripts/test` runs): what the tests that boot the appliance and stream from it put in the
/// image. The debug agent, unoptimised under TCG, spends most of the guest's one vCPU on one
/// stream and proves blocks barely faster than they close, so a backlog after an outage would
/// drain at the speed of the build, not the product.
pub fn shipped_agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/<test> -> target/image/edgeward-agent
    let path = exe
        .ancestors()
        .nth(3)
        .map(|target| target.join("image/edgeward-agent"))
        .expect("the test binary lives in target/<profile>/deps");
    assert!(
        path.is_file(),
        "{} is missing: build the agent as it ships first (cargo build --profile image -p \
         edgeward-agent; scripts/test does)",
        path.display()
    );
    path
}

fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("this binary has a path");
    // target/<profile>/deps/<test> (a test) or target/<profile>/edgeward-demo (the demo) ->
    // target/<profile>/<name>
    let path = exe
        .parent()
        .map(|dir| match dir.file_name() {
            Some(deps) if deps == "deps" => dir.parent().unwrap_or(dir),
            _ => dir,
        })
        .map(|profile| profile.join(name))
        .expect("this binary lives in target/<profile>");
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `edgeward` CLI with the repository's venv (virt-fw-vars) on PATH; panics with its
/// stderr when it fails. Returns stdout.
pub fn run_edgeward(args: &[&str]) -> String {
    let path = format!(
        "{}:{}",
        workspace_root().join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = std::process::Command::new(edgeward_binary())
        .args(args)
        .env("PATH", path)
        .output()
        .expect("edgeward runs");
    assert!(
        output.status.success(),
        "edgeward {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// A fresh scratch directory `target/<name>-<pid>` for one test run.
pub fn scratch(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// A fresh scratch directory `target/<name>-<pid>` shared by the tests of one test binary and
/// left behind when it ends: earlier runs' `target/<name>-*` are removed first.
pub fn scratch_shared(name: &str) -> PathBuf {
    let target = workspace_root().join("target");
    if let Ok(entries) = std::fs::read_dir(&target) {
        for entry in entries.flatten() {
            let stale = entry
                .file_name()
                .to_str()
                .and_then(|file| file.strip_prefix(name))
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|pid| pid.bytes().all(|byte| byte.is_ascii_digit()));
            if stale {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    scratch(name)
}

/// Copies `from` to `to` keeping its holes: an image's disk is mostly an empty data partition,
/// and a plain copy writes its gigabytes out in full (a CI run once filled its disk that way).
pub fn copy_sparse(from: &std::path::Path, to: &std::path::Path) {
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "cp {} {} failed",
        from.display(),
        to.display()
    );
}

/// `edgeward image build` of the image with `agent` as /init, signed with `keys`, into `out`.
pub fn build_image(keys: &std::path::Path, out: &std::path::Path, agent: &std::path::Path) {
    build_image_with(keys, out, agent, &[]);
}

/// [`build_image`] with more `image build` arguments (`--kernel debian`, `--cmdline …`).
pub fn build_image_with(
    keys: &std::path::Path,
    out: &std::path::Path,
    agent: &std::path::Path,
    more: &[&str],
) {
    let mut args = vec![
        "image".to_owned(),
        "build".to_owned(),
        "--keys".to_owned(),
        keys.to_string_lossy().into_owned(),
        "--out".to_owned(),
        out.to_string_lossy().into_owned(),
        "--agent".to_owned(),
        agent.to_string_lossy().into_owned(),
    ];
    args.extend(more.iter().map(|arg| (*arg).to_owned()));
    run_edgeward(&args.iter().map(String::as_str).collect::<Vec<_>>());
}
