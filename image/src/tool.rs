//! Running an external build tool with a clear error when it is missing or fails.

use std::process::Command;

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ToolError {
    #[error("`{tool}` is not installed ({hint})")]
    Missing { tool: String, hint: &'static str },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// A file operation that failed, and what it was for.
#[derive(Debug, Error)]
#[error("{what}")]
pub struct IoError {
    pub what: String,
    #[source]
    pub source: std::io::Error,
}

/// `result`'s error, if any, said as what was being done.
pub(crate) fn io<T>(what: impl Into<String>, result: std::io::Result<T>) -> Result<T, IoError> {
    result.map_err(|source| IoError {
        what: what.into(),
        source,
    })
}

/// The program and its arguments, as a shell would show them.
fn command_line(command: &Command) -> (String, String) {
    let program = command.get_program().to_string_lossy().into_owned();
    let line = std::iter::once(program.clone())
        .chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
    (program, line)
}

/// Runs `command`; `hint` says which package provides it. Returns stdout.
pub(crate) fn run(command: &mut Command, hint: &'static str) -> Result<Vec<u8>, ToolError> {
    let (program, line) = command_line(command);
    tracing::debug!(command = %line, "running");
    let output = command.output().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ToolError::Missing {
                tool: program.clone(),
                hint,
            }
        } else {
            ToolError::Spawn {
                command: line.clone(),
                source,
            }
        }
    })?;
    if !output.status.success() {
        return Err(ToolError::Failed {
            command: line,
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(output.stdout)
}

/// Runs `command` with its output going to `log` (a long build says too much to keep in memory
/// or print).
pub(crate) fn run_logged(
    command: &mut Command,
    log: &std::path::Path,
    hint: &'static str,
) -> Result<(), ToolError> {
    let (program, line) = command_line(command);
    let spawn_error = |source| ToolError::Spawn {
        command: line.clone(),
        source,
    };
    let file = std::fs::File::create(log).map_err(spawn_error)?;
    let errors = file.try_clone().map_err(spawn_error)?;
    tracing::debug!(command = %line, log = %log.display(), "running");
    let status = command
        .stdout(file)
        .stderr(errors)
        .status()
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ToolError::Missing {
                    tool: program.clone(),
                    hint,
                }
            } else {
                spawn_error(source)
            }
        })?;
    if !status.success() {
        return Err(ToolError::Failed {
            command: line,
            status: status.to_string(),
            stderr: format!("see {}", log.display()),
        });
    }
    Ok(())
}

const APT_HINT: &str = "apt, on Debian";

/// The value of `field` (`Version:`) in apt's output.
pub(crate) fn apt_field(output: &[u8], field: &str) -> Option<String> {
    String::from_utf8_lossy(output).lines().find_map(|line| {
        line.trim()
            .strip_prefix(field)
            .map(|value| value.trim().to_owned())
    })
}

/// The version of `package` apt would install.
pub(crate) fn apt_version(package: &str) -> Result<String, ToolError> {
    let show = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", package]),
        APT_HINT,
    )?;
    apt_field(&show, "Version:").ok_or_else(|| ToolError::Failed {
        command: format!("apt-cache show {package}"),
        status: "no Version field".into(),
        stderr: format!("apt knows no version of {package} (run apt-get update)"),
    })
}

/// Downloads `package` at `version` into `dir` (apt checks it against Debian's signed archive)
/// and returns the .deb's path.
pub(crate) fn apt_download(
    package: &str,
    version: &str,
    dir: &std::path::Path,
) -> Result<std::path::PathBuf, ToolError> {
    std::fs::create_dir_all(dir).map_err(|source| ToolError::Spawn {
        command: format!("mkdir {}", dir.display()),
        source,
    })?;
    run(
        Command::new("apt-get")
            .args(["download", &format!("{package}={version}")])
            .current_dir(dir),
        APT_HINT,
    )?;
    let prefix = format!("{package}_");
    std::fs::read_dir(dir)
        .map_err(|source| ToolError::Spawn {
            command: format!("ls {}", dir.display()),
            source,
        })?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with(&prefix))
        })
        .ok_or_else(|| ToolError::Failed {
            command: format!("apt-get download {package}={version}"),
            status: "no package".into(),
            stderr: format!(
                "apt-get download left no {package} package in {}",
                dir.display()
            ),
        })
}
