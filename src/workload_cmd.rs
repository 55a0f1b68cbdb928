//! `edgeward workload`: pack a directory into a bundle, sign it, show what one holds.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use edgeward_bundle::workload::{Restart, Size, WorkloadDraft};

#[derive(Clone, Copy, ValueEnum)]
pub enum SizeArg {
    S,
    M,
    L,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RestartArg {
    Never,
    OnFailure,
    Always,
}

#[derive(Subcommand)]
pub enum WorkloadCommand {
    /// Pack DIR into an unsigned bundle: an erofs image of DIR, its dm-verity tree and the
    /// manifest (docs/bundle-format.md).
    Pack {
        dir: PathBuf,
        #[arg(long)]
        name: String,
        #[arg(long)]
        version: String,
        /// The program and its arguments, split at spaces ("/bin/freq-alarm --band-mhz 200");
        /// --arg adds one that holds a space.
        #[arg(long)]
        command: String,
        #[arg(long = "arg", value_name = "ARG")]
        args: Vec<String>,
        #[arg(long, value_enum, default_value = "s")]
        size: SizeArg,
        /// Let it use the appliance's network (without: no network namespace of the
        /// appliance's and no IP sockets).
        #[arg(long)]
        network: bool,
        /// A PMU stream (as the device configuration names it) whose samples it may read.
        #[arg(long = "stream", value_name = "NAME")]
        streams: Vec<String>,
        /// NAME=VALUE in its environment.
        #[arg(long = "env", value_name = "NAME=VALUE")]
        environment: Vec<String>,
        #[arg(long, value_enum, default_value = "on-failure")]
        restart: RestartArg,
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign a bundle in place with the workload key (KEYS/workload.key of `edgeward keys init`).
    Sign {
        file: PathBuf,
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
    },
}

pub fn run(command: WorkloadCommand) -> Result<()> {
    match command {
        WorkloadCommand::Pack {
            dir,
            name,
            version,
            command,
            args,
            size,
            network,
            streams,
            environment,
            restart,
            out,
        } => {
            let mut words = command.split_whitespace().map(str::to_owned);
            let Some(program) = words.next() else {
                bail!("--command is empty");
            };
            let mut arguments: Vec<String> = words.collect();
            arguments.extend(args);
            let mut env = BTreeMap::new();
            for pair in environment {
                let (key, value) = pair
                    .split_once('=')
                    .with_context(|| format!("--env {pair:?} is not NAME=VALUE"))?;
                env.insert(key.to_owned(), value.to_owned());
            }
            let draft = WorkloadDraft {
                name,
                version,
                command: program,
                arguments,
                environment: env,
                size: match size {
                    SizeArg::S => Size::S,
                    SizeArg::M => Size::M,
                    SizeArg::L => Size::L,
                },
                network,
                streams,
                restart: match restart {
                    RestartArg::Never => Restart::Never,
                    RestartArg::OnFailure => Restart::OnFailure,
                    RestartArg::Always => Restart::Always,
                },
            };
            let work = tempdir(&out)?;
            let result = edgeward_image::workload::pack(&dir, &draft, &out, &work);
            let _ = std::fs::remove_dir_all(&work);
            let bytes = result.with_context(|| format!("{} is not packed", dir.display()))?;
            println!("{}: {bytes} bytes, unsigned", out.display());
            Ok(())
        }
        WorkloadCommand::Sign { file, key } => {
            edgeward_image::workload::sign(&file, &key)
                .with_context(|| format!("{} is not signed", file.display()))?;
            println!("{}: signed", file.display());
            Ok(())
        }
    }
}

/// A scratch directory beside the output (so it is on the same file system, and removable).
fn tempdir(out: &std::path::Path) -> Result<PathBuf> {
    let parent = out
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let dir = parent.join(format!(
        ".{}.pack-{}",
        out.file_name()
            .and_then(|name| name.to_str())
            .unwrap_or("bundle"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
