//! `edgeward verifier`: the central attestation service and its operator commands.

mod config;
mod service;
mod store;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edgeward_attestation::device_ca::{new_ca, new_server_certificate};
use edgeward_attestation::verifier::{self, DeviceId};

use config::VerifierConfig;
use store::Store;

#[derive(Subcommand)]
pub enum VerifierCommand {
    /// Create a verifier directory: TLS certificate, device CA, configuration. Never overwrites.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// Names (DNS or IP) devices reach the verifier by.
        #[arg(long = "hostname", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        hostnames: Vec<String>,
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
        /// Issue the device CA under the platform's existing CA (certificate and key, PEM).
        #[arg(long, value_name = "CERT", requires = "platform_ca_key")]
        platform_ca: Option<PathBuf>,
        #[arg(long, value_name = "KEY")]
        platform_ca_key: Option<PathBuf>,
        /// The one EK kind the fleet's devices register with (`edgeward-agent attest --ek`).
        #[arg(long, value_name = "rsa|ecc", default_value = "rsa")]
        ek: String,
        /// TPM manufacturer roots for EK certificates (PEM).
        #[arg(long = "ek-root", value_name = "FILE", required = true)]
        ek_roots: Vec<PathBuf>,
        #[arg(long = "ek-intermediate", value_name = "FILE")]
        ek_intermediates: Vec<PathBuf>,
        /// The release key (release.pub.raw of the image build).
        #[arg(long, value_name = "FILE")]
        release_key: PathBuf,
        /// Released image directories (manifest.json and its .sig).
        #[arg(long = "manifest", value_name = "DIR", required = true)]
        manifests: Vec<PathBuf>,
        /// An identity no device may register as: the broker's readers (the platform's
        /// recorder, an operator's admin), whose certificates the ACL lets read every topic.
        #[arg(long = "reserved-identity", value_name = "NAME", default_values_t = ["recorder".to_string(), "admin".to_string()])]
        reserved_identities: Vec<String>,
    },
    /// Serve the HTTPS API until SIGINT or SIGTERM.
    Serve {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Each device's state and last verdict.
    Devices {
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Deny a device: no attestation and no further certificates (takes effect at once).
    Deny {
        device: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        #[arg(long, default_value = "denied by the operator")]
        reason: String,
    },
    /// Lift a denial; the device must attest again before it gets a certificate.
    Allow {
        device: String,
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))
}

fn toml_path(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

pub fn run(command: VerifierCommand) -> Result<()> {
    match command {
        VerifierCommand::Init {
            dir,
            hostnames,
            listen,
            platform_ca,
            platform_ca_key,
            ek,
            ek_roots,
            ek_intermediates,
            release_key,
            manifests,
            reserved_identities,
        } => {
            if !matches!(ek.as_str(), "rsa" | "ecc") {
                bail!("--ek {ek:?}: the EK kind is rsa or ecc");
            }
            let config_path = dir.join("verifier.toml");
            if config_path.exists() {
                bail!("{} exists; init never overwrites", config_path.display());
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let now = now_seconds();
            let ten_years = now + 10 * 365 * 24 * 3600;
            let (tls_ca, tls_ca_key) =
                new_ca("Edgeward verifier TLS CA", None, now - 300, ten_years)?;
            let (tls, tls_key) =
                new_server_certificate(&hostnames, &tls_ca, &tls_ca_key, now - 300, ten_years)?;
            let (device_ca, device_ca_key, chain) = match (&platform_ca, &platform_ca_key) {
                (Some(cert), Some(key)) => {
                    let parent = std::fs::read_to_string(cert)
                        .with_context(|| format!("cannot read {}", cert.display()))?;
                    let parent_key = std::fs::read_to_string(key)
                        .with_context(|| format!("cannot read {}", key.display()))?;
                    let (ca, ca_key) = new_ca(
                        "Edgeward device CA",
                        Some((&parent, &parent_key)),
                        now - 300,
                        ten_years,
                    )?;
                    (ca, ca_key, Some(parent))
                }
                _ => {
                    let (ca, key) = new_ca("Edgeward device CA", None, now - 300, ten_years)?;
                    (ca, key, None)
                }
            };
            write_new(&dir.join("tls-ca.crt"), &tls_ca, 0o644)?;
            write_new(&dir.join("tls.crt"), &tls, 0o644)?;
            write_new(&dir.join("tls.key"), &tls_key, 0o600)?;
            write_new(&dir.join("device-ca.crt"), &device_ca, 0o644)?;
            write_new(&dir.join("device-ca.key"), &device_ca_key, 0o600)?;
            if let Some(chain) = &chain {
                write_new(&dir.join("device-ca-chain.crt"), chain, 0o644)?;
            }
            // The TLS CA's key signed one certificate and is not needed again.
            drop(tls_ca_key);
            let list = |paths: &[PathBuf]| -> Result<String> {
                let items: Vec<String> = paths
                    .iter()
                    .map(|path| absolute(path).map(|path| toml_path(&path)))
                    .collect::<Result<_>>()?;
                Ok(format!("[{}]", items.join(", ")))
            };
            let mut text = format!(
                "# The Edgeward verifier (edgeward verifier serve --config {}).\n\
                 listen = {}\nstate_dir = \"state\"\n\
                 tls_certificate = \"tls.crt\"\ntls_key = \"tls.key\"\n\
                 device_ca_certificate = \"device-ca.crt\"\ndevice_ca_key = \"device-ca.key\"\n",
                config_path.display(),
                toml::Value::String(listen),
            );
            if chain.is_some() {
                text.push_str("device_ca_chain = \"device-ca-chain.crt\"\n");
            }
            text.push_str(&format!(
                "# The EK kind every device registers with (one kind: one identity per TPM).\n\
                 ek_kind = \"{ek}\"\n\
                 ek_roots = {}\nek_intermediates = {}\n\
                 # Roots whose EK certificates may lack the TCG EK extended key usage:\n\
                 # ek_roots_without_eku = []\n\
                 release_key = {}\nmanifests = {}\n\
                 # The PCRs every quote covers. Each must be predicted by every manifest, or\n\
                 # have accepted values in [platform_pcrs], or be listed in log_only_pcrs.\n\
                 # PCR 15 holds the workloads the agent launched, replayed from its log.\n\
                 pcrs = [0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, 15]\n\
                 # The workloads devices may run (edgeward workload release); none without it.\n\
                 # released_workloads = \"released-workloads.json\"\n\
                 # Firmware PCRs the image cannot predict: checked only against the event log\n\
                 # (every verdict names them as skipped). Pin them with [platform_pcrs]\n\
                 # (e.g. 0 = [\"<hex>\"]) once the fleet's firmware values are known.\n\
                 log_only_pcrs = [0, 1, 2, 3, 5, 6]\n\
                 attestation_interval_seconds = 3600\ncertificate_validity_seconds = 86400\n\
                 # Identities no device may take: the broker's ACL lets these read every topic.\n\
                 reserved_identities = {}\n",
                list(&ek_roots)?,
                list(&ek_intermediates)?,
                toml_path(&absolute(&release_key)?),
                list(&manifests)?,
                toml::Value::Array(
                    reserved_identities
                        .iter()
                        .map(|name| toml::Value::String(name.clone()))
                        .collect()
                ),
            ));
            write_new(&config_path, &text, 0o644)?;
            // Fail now rather than at serve time if anything does not load.
            VerifierConfig::read(&config_path)?.load()?;
            println!("{}", config_path.display());
            Ok(())
        }
        VerifierCommand::Serve { config } => {
            let loaded = VerifierConfig::read(&config)?.load()?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?
                .block_on(service::serve(loaded))
        }
        VerifierCommand::Devices { config, json } => {
            let config = VerifierConfig::read(&config)?;
            let store = Store::open(&config.state_dir)?;
            let lock = store.lock()?;
            let records = store.list(&lock)?;
            let now = now_seconds();
            if json {
                for record in &records {
                    let mut value = serde_json::to_value(record)?;
                    value["state"] = record.state(now).into();
                    println!("{}", serde_json::to_string(&value)?);
                }
                return Ok(());
            }
            println!("{:<24} {:<16} {:<22} last verdict", "device", "state", "EK");
            for record in &records {
                let verdict = match &record.last_verdict {
                    None => "none".to_owned(),
                    Some(verdict) if verdict.accepted => format!(
                        "accepted {} s ago: {}",
                        now.saturating_sub(verdict.at),
                        verdict.manifest.as_deref().unwrap_or("")
                    ),
                    Some(verdict) => format!(
                        "refused {} s ago: {}",
                        now.saturating_sub(verdict.at),
                        verdict.reasons.join("; ")
                    ),
                };
                println!(
                    "{:<24} {:<16} {:<22} {verdict}",
                    record.id.as_str(),
                    record.state(now),
                    &record.ek_fingerprint[..20.min(record.ek_fingerprint.len())],
                );
            }
            Ok(())
        }
        VerifierCommand::Deny {
            device,
            config,
            reason,
        } => change(&config, &device, |record| {
            verifier::deny(record, &reason, SystemTime::now())
        }),
        VerifierCommand::Allow { device, config } => change(&config, &device, verifier::allow),
    }
}

fn change(
    config: &Path,
    device: &str,
    update: impl FnOnce(verifier::DeviceRecord) -> verifier::DeviceRecord,
) -> Result<()> {
    let config = VerifierConfig::read(config)?;
    let store = Store::open(&config.state_dir)?;
    let id = DeviceId::new(device)?;
    let lock = store.lock()?;
    let record = store
        .get(&lock, &id)?
        .with_context(|| format!("device {id} is not registered"))?;
    let record = update(record);
    store.put(&lock, &record)?;
    println!("{id}: {}", record.state(now_seconds()));
    Ok(())
}
