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
    /// Write the list of released workloads (their manifests' digests) that the verifier's
    /// `released_workloads` names, signed with the release key (OUT and OUT.sig). Each bundle
    /// is checked against the workload key first: only what an appliance would run is released.
    Release {
        /// Signed bundles to release.
        #[arg(required = true)]
        bundles: Vec<PathBuf>,
        /// The keys directory (`edgeward keys init`): workload.pub checks, release.key signs.
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
        #[arg(long)]
        out: PathBuf,
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
        WorkloadCommand::Release { bundles, keys, out } => {
            use edgeward_attestation::agent_log::{ReleasedWorkload, ReleasedWorkloads};
            let keys = edgeward_image::keys::KeyDir::new(&keys);
            let trusted = std::fs::read_to_string(keys.public_key("workload"))
                .context("cannot read the workload key's public half")?;
            let trusted = edgeward_bundle::signature::TrustedKey::from_pem(&trusted)?;
            let mut released = Vec::new();
            for path in &bundles {
                let bytes = std::fs::read(path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let len = bytes.len() as u64;
                let header = edgeward_bundle::Header::parse(&bytes, len)
                    .with_context(|| format!("{} is not released", path.display()))?;
                let superblock = bytes
                    .get(header.layout().hash.start as usize..)
                    .unwrap_or_default();
                let verified = edgeward_bundle::workload::open(&bytes, superblock, len, &trusted)
                    .and_then(|verified| {
                        edgeward_bundle::workload::verify_image(&bytes, &verified)
                            .map(|()| verified)
                    })
                    .with_context(|| format!("{} is not released", path.display()))?;
                println!(
                    "{}: {} {} manifest {}",
                    path.display(),
                    verified.manifest.name.as_str(),
                    verified.manifest.version,
                    hex::encode(verified.manifest_digest)
                );
                released.push(ReleasedWorkload {
                    name: verified.manifest.name.as_str().to_owned(),
                    version: verified.manifest.version.clone(),
                    manifest_sha256: edgeward_attestation::api::Hex(
                        verified.manifest_digest.to_vec(),
                    ),
                });
            }
            let text = ReleasedWorkloads::to_text(&released);
            let signature = ReleasedWorkloads::sign(text.as_bytes(), &keys.release_key()?);
            std::fs::write(&out, &text)
                .with_context(|| format!("cannot write {}", out.display()))?;
            let signature_path = PathBuf::from(format!("{}.sig", out.display()));
            std::fs::write(&signature_path, signature)
                .with_context(|| format!("cannot write {}", signature_path.display()))?;
            println!(
                "{}: {} workloads released (signature in {})",
                out.display(),
                released.len(),
                signature_path.display()
            );
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
