//! Shared helpers of Edgeward's end-to-end tests: where the shared test data lives, and guards
//! that start real peers and stop them on drop.

pub mod pypmu;

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
    let message = format!(
        "shared test data {} is missing (set EDGEWARD_TESTDATA or put ../shared beside the checkout)",
        dir.display()
    );
    if std::env::var("CI").is_ok_and(|value| value == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
