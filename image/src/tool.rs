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
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
}

/// Runs `command`; `hint` says which package provides it. Returns stdout.
pub(crate) fn run(command: &mut Command, hint: &'static str) -> Result<Vec<u8>, ToolError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let line = std::iter::once(program.clone())
        .chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ");
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
