//! The appliance's kernel: Debian's kernel source (`linux-source-6.1`, fetched with apt, so
//! Debian's signed archive vouches for it), configured from `make tinyconfig` plus the options in
//! `image/kernel/appliance.config`, built once and kept in the cache under a name that holds the
//! source version and the configuration's digest, so that a change of either builds anew.
//!
//! Everything the appliance uses is built in (no modules): the UKI is 3 MB smaller than with
//! Debian's kernel and its modules, the EFI stub decompresses zstd instead of XZ, and there is no
//! module loading for root on the device to abuse (decision 0030).
//!
//! The configuration's parsing, merging and checking are pure functions over text; the build
//! drives `make` in a scratch tree.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::tool::{apt_download, apt_version, io, run, run_logged, IoError, ToolError};

/// The options on top of tinyconfig, as shipped in this crate.
pub const APPLIANCE_CONFIG: &str = include_str!("../kernel/appliance.config");

/// Debian's kernel source package the appliance kernel is built from.
pub const SOURCE_PACKAGE: &str = "linux-source-6.1";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KernelError {
    #[error("kernel configuration line {line}: {text:?} is neither `CONFIG_NAME=value` nor `# CONFIG_NAME is not set`")]
    Line { line: usize, text: String },
    #[error("kernel configuration line {line}: CONFIG_{name} is given twice")]
    Twice { line: usize, name: String },
    #[error("the kernel configuration lost options the appliance needs (Kconfig drops an option whose dependencies are not met; add them): {0}")]
    Lost(String),
    #[error("the kernel build failed; the last lines of {log}:\n{tail}")]
    Make { log: PathBuf, tail: String },
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}")]
    Input(String),
}

/// What one option is set to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// `CONFIG_NAME=value` (`y`, a number, a quoted string).
    Value(String),
    /// `# CONFIG_NAME is not set`.
    Off,
}

/// A configuration fragment: option names (without `CONFIG_`) and what each must be.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fragment {
    options: BTreeMap<String, Setting>,
}

fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_')
}

/// The option a `.config` line sets, if it sets one.
fn option_of(line: &str) -> Option<(&str, Setting)> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# CONFIG_") {
        let name = rest.strip_suffix(" is not set")?;
        return is_name(name).then_some((name, Setting::Off));
    }
    let (name, value) = line.strip_prefix("CONFIG_")?.split_once('=')?;
    (is_name(name) && !value.is_empty()).then(|| (name, Setting::Value(value.to_owned())))
}

impl Fragment {
    /// Parses a fragment; other comments and blank lines are skipped, anything else is refused.
    pub fn parse(text: &str) -> Result<Self, KernelError> {
        let mut options = BTreeMap::new();
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            let option = option_of(trimmed);
            let Some((name, setting)) = option else {
                if trimmed.is_empty() || trimmed.starts_with('#') {
                    continue;
                }
                return Err(KernelError::Line {
                    line: index + 1,
                    text: line.to_owned(),
                });
            };
            if options.insert(name.to_owned(), setting).is_some() {
                return Err(KernelError::Twice {
                    line: index + 1,
                    name: name.to_owned(),
                });
            }
        }
        Ok(Self { options })
    }

    /// `config` (a `.config`) with this fragment's options replacing whatever it said of them.
    pub fn merge_into(&self, config: &str) -> String {
        let mut merged = String::with_capacity(config.len() + self.options.len() * 32);
        for line in config.lines() {
            if option_of(line).is_some_and(|(name, _)| self.options.contains_key(name)) {
                continue;
            }
            merged.push_str(line);
            merged.push('\n');
        }
        for (name, setting) in &self.options {
            merged.push_str(&Line(name, setting).to_string());
            merged.push('\n');
        }
        merged
    }

    /// SHA-256 of the options alone, one line each in name order: what names a built kernel in
    /// the cache, so that editing a comment builds nothing anew.
    pub fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for (name, setting) in &self.options {
            hasher.update(Line(name, setting).to_string().as_bytes());
            hasher.update(b"\n");
        }
        hasher.finalize().into()
    }

    /// The fragment's lines that `config` does not honour: an option it leaves out or sets
    /// otherwise, or one it sets that the fragment wants off.
    pub fn lost_in(&self, config: &str) -> Vec<String> {
        let set: BTreeMap<&str, Setting> = config.lines().filter_map(option_of).collect();
        self.options
            .iter()
            .filter(|(name, wanted)| {
                let actual = set.get(name.as_str());
                match wanted {
                    Setting::Value(_) => actual != Some(wanted),
                    Setting::Off => {
                        matches!(actual, Some(Setting::Value(value)) if value != "n")
                    }
                }
            })
            .map(|(name, setting)| Line(name, setting).to_string())
            .collect()
    }
}

struct Line<'a>(&'a str, &'a Setting);

impl fmt::Display for Line<'_> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Setting::Value(value) => write!(formatter, "CONFIG_{}={value}", self.0),
            Setting::Off => write!(formatter, "# CONFIG_{} is not set", self.0),
        }
    }
}

/// A built appliance kernel in the cache.
#[derive(Debug, Clone)]
pub struct ApplianceKernel {
    pub package: String,
    pub version: String,
    /// `make kernelrelease`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The final `.config`, kept beside the kernel for audit.
    pub config: PathBuf,
}

/// Fixed build identity, so that two builds of one source and configuration give one kernel
/// (and so one UKI and one set of PCRs).
const REPRODUCIBLE: [(&str, &str); 5] = [
    ("KBUILD_BUILD_TIMESTAMP", "Wed Jan  1 00:00:00 UTC 2025"),
    ("KBUILD_BUILD_USER", "edgeward"),
    ("KBUILD_BUILD_HOST", "edgeward"),
    ("KBUILD_BUILD_VERSION", "1"),
    ("LC_ALL", "C"),
];

const MAKE_HINT: &str =
    "the kernel build tools: build-essential flex bison bc libelf-dev libssl-dev zstd (scripts/setup)";

fn make(tree: &Path) -> Command {
    let mut command = Command::new("make");
    command.arg("-C").arg(tree);
    for (name, value) in REPRODUCIBLE {
        command.env(name, value);
    }
    command
}

fn cached(dir: &Path, package: &str, version: &str) -> Option<ApplianceKernel> {
    let release = std::fs::read_to_string(dir.join("release")).ok()?;
    let vmlinuz = dir.join("vmlinuz");
    vmlinuz.is_file().then(|| ApplianceKernel {
        package: package.to_owned(),
        version: version.to_owned(),
        release: release.trim().to_owned(),
        vmlinuz,
        config: dir.join("config"),
    })
}

/// The appliance kernel from `package` (Debian's kernel source) with `APPLIANCE_CONFIG`: from
/// `cache` when it was built before, else fetched and built there (about 12 minutes on two
/// cores). Concurrent builds wait for each other.
pub fn appliance_kernel(
    cache: &Path,
    package: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<ApplianceKernel, KernelError> {
    let fragment = Fragment::parse(APPLIANCE_CONFIG)?;
    let version = apt_version(package)?;
    let digest = hex::encode(fragment.digest());
    let kernels = cache.join("appliance-kernel");
    let dir = kernels.join(format!("{package}_{version}_{}", &digest[..16]));
    if let Some(kernel) = cached(&dir, package, &version) {
        return Ok(kernel);
    }
    io(
        "cannot create the kernel cache",
        std::fs::create_dir_all(&kernels),
    )?;
    let lock = io(
        "cannot open the kernel cache's lock",
        std::fs::File::create(kernels.join(".lock")),
    )?;
    io("cannot lock the kernel cache", lock.lock())?;
    // Another build may have finished it while this one waited.
    if let Some(kernel) = cached(&dir, package, &version) {
        return Ok(kernel);
    }
    progress(&format!(
        "kernel: building the appliance kernel from {package} {version} into {} (once; about 12 minutes on 2 cores)",
        dir.display()
    ));
    let scratch = kernels.join(format!("{package}_{version}_{}.build", &digest[..16]));
    let _ = std::fs::remove_dir_all(&scratch);
    let unpacked = scratch.join("deb");
    io(
        "cannot create the kernel build directory",
        std::fs::create_dir_all(&unpacked),
    )?;
    let deb = apt_download(package, &version, &cache.join("download"))?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
        "dpkg",
    )?;
    let _ = std::fs::remove_file(&deb);
    let tarball = io(
        "cannot read the unpacked source package",
        std::fs::read_dir(unpacked.join("usr/src")),
    )?
    .filter_map(Result::ok)
    .map(|entry| entry.path())
    .find(|path| path.to_string_lossy().ends_with(".tar.xz"))
    .ok_or_else(|| KernelError::Input(format!("{package} holds no usr/src/*.tar.xz")))?;
    let tree = scratch.join("linux");
    io(
        "cannot create the source tree",
        std::fs::create_dir_all(&tree),
    )?;
    progress("kernel: unpacking the source");
    run(
        Command::new("tar")
            .arg("-xf")
            .arg(&tarball)
            .arg("-C")
            .arg(&tree)
            .arg("--strip-components=1"),
        "tar and xz-utils",
    )?;
    let _ = std::fs::remove_dir_all(&unpacked);

    progress("kernel: configuring (tinyconfig + image/kernel/appliance.config)");
    run(make(&tree).arg("tinyconfig"), MAKE_HINT)?;
    let dot_config = tree.join(".config");
    let tiny = io("cannot read .config", std::fs::read_to_string(&dot_config))?;
    io(
        "cannot write .config",
        std::fs::write(&dot_config, fragment.merge_into(&tiny)),
    )?;
    run(make(&tree).arg("olddefconfig"), MAKE_HINT)?;
    let config = io("cannot read .config", std::fs::read_to_string(&dot_config))?;
    let lost = fragment.lost_in(&config);
    if !lost.is_empty() {
        return Err(KernelError::Lost(lost.join(", ")));
    }

    let jobs = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let log = kernels.join(format!("{package}_{version}_{}.log", &digest[..16]));
    progress(&format!(
        "kernel: make -j{jobs} bzImage (log: {})",
        log.display()
    ));
    if let Err(error) = run_logged(
        make(&tree).arg(format!("-j{jobs}")).arg("bzImage"),
        &log,
        MAKE_HINT,
    ) {
        return Err(match error {
            ToolError::Failed { .. } => KernelError::Make {
                tail: tail(&log, 20),
                log,
            },
            other => KernelError::Tool(other),
        });
    }
    let release =
        String::from_utf8_lossy(&run(make(&tree).args(["-s", "kernelrelease"]), MAKE_HINT)?)
            .trim()
            .to_owned();
    if release.is_empty() || release.contains(['/', '\n']) {
        return Err(KernelError::Input(format!(
            "make kernelrelease said {release:?}"
        )));
    }

    let partial = kernels.join(format!("{package}_{version}_{}.partial", &digest[..16]));
    let _ = std::fs::remove_dir_all(&partial);
    io(
        "cannot create the kernel's cache entry",
        std::fs::create_dir_all(&partial),
    )?;
    io(
        "cannot keep the kernel",
        std::fs::copy(tree.join("arch/x86/boot/bzImage"), partial.join("vmlinuz")),
    )?;
    io(
        "cannot keep the kernel's configuration",
        std::fs::write(partial.join("config"), &config),
    )?;
    io(
        "cannot keep the kernel's release",
        std::fs::write(partial.join("release"), format!("{release}\n")),
    )?;
    io(
        "cannot move the kernel into the cache",
        std::fs::rename(&partial, &dir),
    )?;
    let _ = std::fs::remove_dir_all(&scratch);
    cached(&dir, package, &version)
        .ok_or_else(|| KernelError::Input(format!("{} is incomplete", dir.display())))
}

/// The last `lines` lines of a log, for an error message.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_parses_and_keeps_modules_off() {
        let fragment = Fragment::parse(APPLIANCE_CONFIG).expect("parses");
        assert_eq!(fragment.options.get("MODULES"), Some(&Setting::Off));
        assert_eq!(
            fragment.options.get("KERNEL_ZSTD"),
            Some(&Setting::Value("y".into()))
        );
        // What the appliance cannot run without: redb's file lock, the ESP's code page, the TPM.
        for needed in [
            "FILE_LOCKING",
            "NLS_CODEPAGE_437",
            "TCG_TIS",
            "DM_VERITY",
            "IMA",
        ] {
            assert_eq!(
                fragment.options.get(needed),
                Some(&Setting::Value("y".into())),
                "{needed}"
            );
        }
    }

    #[test]
    fn a_line_that_sets_nothing_or_an_option_given_twice_is_refused() {
        let error = Fragment::parse("CONFIG_A=y\nCONFIG_B\n").expect_err("refused");
        assert!(
            matches!(error, KernelError::Line { line: 2, .. }),
            "{error}"
        );
        let error = Fragment::parse("CONFIG_A=y\n# CONFIG_A is not set\n").expect_err("refused");
        assert!(
            matches!(&error, KernelError::Twice { line: 2, name } if name == "A"),
            "{error}"
        );
        let error = Fragment::parse("CONFIG_A B=y\n").expect_err("refused");
        assert!(
            matches!(error, KernelError::Line { line: 1, .. }),
            "{error}"
        );
        // Other comments and blank lines are prose.
        let fragment = Fragment::parse("# why\n\nCONFIG_A=y\n").expect("parses");
        assert_eq!(fragment.options.len(), 1);
    }

    #[test]
    fn merging_replaces_what_the_base_said_of_the_fragments_options() {
        let fragment =
            Fragment::parse("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n").expect("parses");
        let base = "# comment\nCONFIG_A=n\nCONFIG_B=y\n# CONFIG_D is not set\nCONFIG_E=y\n";
        let merged = fragment.merge_into(base);
        assert_eq!(
            merged,
            "# comment\n# CONFIG_D is not set\nCONFIG_E=y\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\n"
        );
        assert!(fragment.lost_in(&merged).is_empty());
    }

    #[test]
    fn the_digest_covers_the_options_and_not_the_prose() {
        let one = Fragment::parse("# one\nCONFIG_A=y\n# CONFIG_B is not set\n").expect("parses");
        let two = Fragment::parse("# CONFIG_B is not set\n\n# two\nCONFIG_A=y\n").expect("parses");
        assert_eq!(one.digest(), two.digest());
        let other = Fragment::parse("CONFIG_A=y\nCONFIG_B=y\n").expect("parses");
        assert_ne!(one.digest(), other.digest());
    }

    #[test]
    fn an_option_kconfig_dropped_or_changed_is_reported_lost() {
        let fragment = Fragment::parse(
            "CONFIG_A=y\nCONFIG_B=y\n# CONFIG_C is not set\n# CONFIG_D is not set\n",
        )
        .expect("parses");
        // A dropped (dependencies unmet), B became a module, C turned on; D absent counts as off.
        let config = "CONFIG_B=m\nCONFIG_C=y\n";
        assert_eq!(
            fragment.lost_in(config),
            ["CONFIG_A=y", "CONFIG_B=y", "# CONFIG_C is not set"]
        );
        assert!(fragment
            .lost_in("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=n\n")
            .is_empty());
    }
}
