//! `edgeward keys …`, `edgeward image …` and `edgeward bootchain …`: the operator's image tools.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edgeward_bootchain::predict::{predict, SecureBootKeys};
use edgeward_image::build::{build, BuildOptions};
use edgeward_image::keys::{init, parse_guid, pem_body};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Create Secure Boot PK/KEK/db, the workload-signing, release and configuration keys in
    /// DIR; in a directory that has some, only the missing ones. Never overwrites.
    Init { dir: PathBuf },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kernel {
    Appliance,
    Debian,
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build the signed UKI, disk, OVMF variable store and signed manifest.
    Build {
        #[arg(long)]
        keys: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The edgeward-agent binary to run as /init (default: beside this binary).
        #[arg(long)]
        agent: Option<PathBuf>,
        /// Where downloaded packages are kept (default: ~/.cache/edgeward).
        #[arg(long)]
        cache: Option<PathBuf>,
        /// The kernel command line baked into the UKI; with the appliance kernel the build appends
        /// the parameters that boot its verity root (decision 0035).
        #[arg(long)]
        cmdline: Option<String>,
        /// The image version recorded in os-release and the manifest.
        #[arg(long = "image-version")]
        image_version: Option<String>,
        /// virt-firmware's virt-fw-vars (default: on PATH, else the repository's .venv).
        #[arg(long, value_name = "FILE")]
        virt_fw_vars: Option<PathBuf>,
        /// `appliance`: the appliance's kernel, built from Debian's kernel source with
        /// everything built in (once, about 12 minutes on 2 cores, then cached). `debian`:
        /// Debian's signed kernel, its drivers loaded as modules at boot.
        #[arg(long, value_enum, default_value_t = Kernel::Appliance)]
        kernel: Kernel,
        /// The ESP's size in MiB (at least): room for the workload bundles beside the UKI.
        #[arg(long, value_name = "MIB", default_value_t = 64)]
        esp_mib: u64,
    },
    /// Build the appliance kernel into the cache if it is not there, and print its path.
    Kernel {
        /// Where downloaded packages and built kernels are kept (default: ~/.cache/edgeward).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
    /// Put one device's signed configuration on the ESP of a built image's disk, after
    /// checking it against the image's configuration key. The UKI and the PCRs stay as built.
    Configure {
        /// The image directory (`image build --out`), for its config.pub.raw.
        #[arg(long)]
        image: PathBuf,
        /// The disk to write (default: IMAGE/disk.img).
        #[arg(long)]
        disk: Option<PathBuf>,
        /// The device configuration; CONFIG.sig must be beside it (`edgeward config sign`).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// A signed workload bundle the configuration lists (`[[workload]] bundle`), put on
        /// the ESP beside it; once per bundle.
        #[arg(long = "workload", value_name = "FILE")]
        workloads: Vec<PathBuf>,
    },
}

/// virt-fw-vars on PATH, or in the .venv that scripts/setup makes beside the target directory
/// this binary runs from.
fn find_virt_fw_vars() -> PathBuf {
    let on_path = std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| dir.join("virt-fw-vars").is_file())
    });
    if !on_path {
        if let Some(venv) = std::env::current_exe().ok().and_then(|exe| {
            exe.ancestors()
                .skip(1)
                .map(|dir| dir.join(".venv/bin/virt-fw-vars"))
                .find(|candidate| candidate.is_file())
        }) {
            return venv;
        }
    }
    PathBuf::from("virt-fw-vars")
}

#[derive(Subcommand)]
pub enum BootchainCommand {
    /// Predict the PCRs a device booting IMAGE will quote.
    Predict {
        #[arg(long)]
        image: PathBuf,
        /// Print the manifest's shape: {"pcrs": {"sha256": {"4": "hex", …}}}.
        #[arg(long)]
        json: bool,
    },
}

pub fn keys(command: KeysCommand) -> Result<()> {
    match command {
        KeysCommand::Init { dir } => {
            let written = init(&dir)?;
            for path in written {
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

fn default_cache() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("edgeward")
}

pub fn image(command: ImageCommand) -> Result<()> {
    match command {
        ImageCommand::Build {
            keys,
            out,
            agent,
            cache,
            cmdline,
            image_version,
            virt_fw_vars,
            kernel,
            esp_mib,
        } => {
            let agent = match agent {
                Some(agent) => agent,
                None => std::env::current_exe()
                    .context("cannot find this binary")?
                    .with_file_name("edgeward-agent"),
            };
            if !agent.is_file() {
                bail!("{} is missing: build it (cargo build --release -p edgeward-agent) or pass --agent", agent.display());
            }
            let mut options =
                BuildOptions::defaults(keys, out, agent, cache.unwrap_or_else(default_cache));
            if let Some(cmdline) = cmdline {
                options.cmdline = cmdline;
            }
            if let Some(version) = image_version {
                options.image_version = version;
            }
            options.esp_mib = esp_mib;
            options.virt_fw_vars = virt_fw_vars.unwrap_or_else(find_virt_fw_vars);
            if let Kernel::Debian = kernel {
                options = options.with_debian_kernel();
            }
            let started = std::time::Instant::now();
            let report = build(&options, |stage| {
                eprintln!("[{:>5.1}s] {stage}", started.elapsed().as_secs_f64());
            })?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report.manifest["pcrs"])?
            );
            Ok(())
        }
        ImageCommand::Kernel { cache } => {
            let cache = cache.unwrap_or_else(default_cache);
            let started = std::time::Instant::now();
            let kernel = edgeward_image::kernel::appliance_kernel(
                &cache,
                edgeward_image::kernel::SOURCE_PACKAGE,
                &mut |stage| eprintln!("[{:>5.1}s] {stage}", started.elapsed().as_secs_f64()),
            )?;
            eprintln!(
                "appliance kernel {} ({} {}), configuration {}",
                kernel.release,
                kernel.package,
                kernel.version,
                kernel.config.display()
            );
            println!("{}", kernel.vmlinuz.display());
            Ok(())
        }
        ImageCommand::Configure {
            image,
            disk,
            config,
            workloads,
        } => {
            let disk = disk.unwrap_or_else(|| image.join("disk.img"));
            let identity =
                edgeward_image::configure::configure(&image, &disk, &config, &workloads)?;
            eprintln!(
                "{}: configured as {identity} ({} on the ESP)",
                disk.display(),
                edgeward_image::configure::CONFIG_DIR
            );
            Ok(())
        }
    }
}

fn read_certificate(path: &Path) -> Result<Vec<u8>> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    pem_body(&pem, "CERTIFICATE")
        .with_context(|| format!("{} holds no PEM certificate", path.display()))
}

pub fn bootchain(command: BootchainCommand) -> Result<()> {
    match command {
        BootchainCommand::Predict { image, json } => {
            let uki = std::fs::read(image.join("uki.efi"))
                .with_context(|| format!("cannot read {}/uki.efi", image.display()))?;
            let secureboot = image.join("secureboot");
            let owner = std::fs::read_to_string(secureboot.join("owner.guid"))
                .with_context(|| format!("cannot read {}/owner.guid", secureboot.display()))?;
            let keys = SecureBootKeys {
                owner: parse_guid(owner.trim()).context("owner.guid holds no GUID")?,
                pk: read_certificate(&secureboot.join("PK.crt"))?,
                kek: read_certificate(&secureboot.join("KEK.crt"))?,
                db: read_certificate(&secureboot.join("db.crt"))?,
            };
            let pcrs = predict(&uki, &keys)?;
            if json {
                let map: serde_json::Map<String, serde_json::Value> = pcrs
                    .iter()
                    .map(|(index, value)| {
                        (
                            index.to_string(),
                            serde_json::Value::String(hex::encode(value)),
                        )
                    })
                    .collect();
                println!("{}", serde_json::json!({"pcrs": {"sha256": map}}));
            } else {
                for (index, value) in &pcrs {
                    println!("sha256 PCR {index:>2}: {}", hex::encode(value));
                }
            }
            Ok(())
        }
    }
}
