//! `edgeward config`: sign a device configuration with the operator's configuration key, and
//! check one as an appliance would before it starts.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edgeward_config::{ConfigKey, DeviceConfig};
use edgeward_image::keys::KeyDir;

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Check a device configuration and sign it with KEYS/config.key: writes FILE.sig beside it.
    /// A configuration an appliance would refuse is not signed.
    Sign {
        file: PathBuf,
        /// The operator's key directory (`edgeward keys init`).
        #[arg(long, value_name = "DIR")]
        keys: PathBuf,
    },
    /// Check a signed configuration as the appliance does: the signature over the exact bytes
    /// with the image's configuration key, then the settings. Prints a summary.
    Check {
        file: PathBuf,
        /// The image's `config.pub.raw` (or the key directory's public key with --keys).
        #[arg(long, value_name = "FILE", conflicts_with = "keys")]
        key: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        keys: Option<PathBuf>,
    },
}

fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

pub fn run(command: ConfigCommand) -> Result<()> {
    match command {
        ConfigCommand::Sign { file, keys } => {
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let key = KeyDir::new(&keys).config_key()?;
            let signature = edgeward_config::sign(&text, &key)
                .with_context(|| format!("{} is not signed", file.display()))?;
            let out = signature_path(&file);
            std::fs::write(&out, signature)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("{}", out.display());
            Ok(())
        }
        ConfigCommand::Check { file, key, keys } => {
            let key = match (key, keys) {
                (Some(path), None) => ConfigKey::from_hex(
                    &std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?,
                )?,
                (None, Some(dir)) => edgeward_config::public_key(&KeyDir::new(&dir).config_key()?),
                _ => bail!("give the image's --key config.pub.raw, or --keys DIR"),
            };
            let text =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let signature_file = signature_path(&file);
            let signature = std::fs::read(&signature_file).with_context(|| {
                format!(
                    "{} is not signed: {} is missing (edgeward config sign)",
                    file.display(),
                    signature_file.display()
                )
            })?;
            let config = edgeward_config::verify(&text, &signature, &key)?;
            print_summary(&config);
            Ok(())
        }
    }
}

fn print_summary(config: &DeviceConfig) {
    println!(
        "serial     {} (an appliance that has run a higher one refuses it)",
        config.serial
    );
    println!("identity   {}", config.identity);
    println!("location   {}", config.location);
    println!("network    {:?}", config.network);
    let list = |items: Vec<String>| items.join(", ");
    println!(
        "time       {}",
        list(config.sntp.iter().map(ToString::to_string).collect())
    );
    println!(
        "verifier   https://{}{} (EK {})",
        config.verifier.address,
        config.verifier.path,
        config.ek.as_str()
    );
    println!(
        "broker     {}",
        list(config.brokers.iter().map(ToString::to_string).collect())
    );
    println!(
        "tsa        http://{}{}",
        config.tsa.address, config.tsa.path
    );
    println!(
        "data       {} s blocks, {} bytes of buffer, heartbeat every {} s",
        config.block_seconds, config.buffer_bytes, config.heartbeat_seconds
    );
    for pmu in &config.pmus {
        let kind = match &pmu.source {
            edgeward_config::pmu::StreamSource::Remote(_) => "read over C37.118.2",
            edgeward_config::pmu::StreamSource::Estimated(_) => "estimated by the appliance",
        };
        println!("pmu        {} (IDCODE {}, {kind})", pmu.name, pmu.idcode.0);
    }
}
