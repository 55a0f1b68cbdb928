//! The verifier's configuration file and what it loads: TLS and device-CA keys, EK roots, the
//! release key and the released manifests (each verified; a manifest that does not verify stops
//! the verifier from starting, since serving without it would refuse that image's devices for a
//! reason nobody sees). A configuration under which anything would pass by omission (a PCR a
//! manifest predicts but the quote does not cover, a quoted PCR nobody gives a reference for)
//! does not start either, and says every such PCR. Relative paths are relative to the file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use edgeward_attestation::agent_log::ReleasedWorkloads;
use edgeward_attestation::credential::EkKind;
use edgeward_attestation::device_ca::DeviceCa;
use edgeward_attestation::ek_certificate::EkRoots;
use edgeward_attestation::verifier::Policy;
use edgeward_bootchain::manifest::{verify, ReleaseKey};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifierConfig {
    /// Where the HTTPS API listens.
    pub listen: SocketAddr,
    /// Registrations, verdicts and issued certificates.
    pub state_dir: PathBuf,
    pub tls_certificate: PathBuf,
    pub tls_key: PathBuf,
    pub device_ca_certificate: PathBuf,
    pub device_ca_key: PathBuf,
    /// The CAs above the device CA when it is an intermediate (PEM), sent with certificates.
    #[serde(default)]
    pub device_ca_chain: Option<PathBuf>,
    /// The one EK kind this fleet registers, `rsa` or `ecc` (a TPM may carry both; two kinds
    /// would let it hold two identities).
    pub ek_kind: EkKind,
    /// Manufacturer roots that EK certificates must chain to (PEM, one or more per file).
    pub ek_roots: Vec<PathBuf>,
    /// Roots among `ek_roots` whose EK certificates lack the TCG EK extended key usage and are
    /// accepted anyway (a documented vendor exception; every other root requires it).
    #[serde(default)]
    pub ek_roots_without_eku: Vec<PathBuf>,
    #[serde(default)]
    pub ek_intermediates: Vec<PathBuf>,
    /// The release key's `release.pub.raw`.
    pub release_key: PathBuf,
    /// Released image directories (each with manifest.json and manifest.json.sig). Several at
    /// once during a rollout.
    pub manifests: Vec<PathBuf>,
    /// The released workloads (`edgeward workload release`), with its signature in the same
    /// path plus `.sig`. Absent: no workload is released, and a device that launched one is
    /// refused.
    #[serde(default)]
    pub released_workloads: Option<PathBuf>,
    /// The SHA-256 PCRs every quote covers.
    #[serde(default)]
    pub pcrs: Option<Vec<u8>>,
    /// Accepted values (hex) of platform PCRs the image cannot predict, e.g. `0 = ["…"]`.
    #[serde(default)]
    pub platform_pcrs: BTreeMap<String, Vec<String>>,
    /// Quoted PCRs checked only for matching the event log (named as skipped in every verdict).
    #[serde(default)]
    pub log_only_pcrs: Vec<u8>,
    #[serde(default = "default_attestation_interval")]
    pub attestation_interval_seconds: u64,
    #[serde(default = "default_certificate_validity")]
    pub certificate_validity_seconds: u64,
    /// Identities no device may register as (the broker's readers). Required: an empty list
    /// says there are none, a missing one is refused rather than taken as none.
    #[serde(default)]
    pub reserved_identities: Option<Vec<String>>,
}

fn default_attestation_interval() -> u64 {
    3600
}

fn default_certificate_validity() -> u64 {
    24 * 3600
}

/// Everything the service needs, loaded and checked.
pub struct Loaded {
    pub config: VerifierConfig,
    pub policy: Policy,
    pub ca: DeviceCa,
    pub tls_certificate: String,
    pub tls_key: String,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Every certificate in a PEM file, DER.
pub fn pem_certificates(path: &Path) -> Result<Vec<Vec<u8>>> {
    let text = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let blocks = pem::parse_many(text).with_context(|| format!("{} is not PEM", path.display()))?;
    let certificates: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| block.contents().to_vec())
        .collect();
    if certificates.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(certificates)
}

impl VerifierConfig {
    pub fn read(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let mut config: Self = toml::from_str(&text)
            .with_context(|| format!("{} is not a verifier configuration", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut config.state_dir);
        resolve(&mut config.tls_certificate);
        resolve(&mut config.tls_key);
        resolve(&mut config.device_ca_certificate);
        resolve(&mut config.device_ca_key);
        if let Some(chain) = &mut config.device_ca_chain {
            resolve(chain);
        }
        config.ek_roots.iter_mut().for_each(resolve);
        config.ek_roots_without_eku.iter_mut().for_each(resolve);
        config.ek_intermediates.iter_mut().for_each(resolve);
        resolve(&mut config.release_key);
        config.manifests.iter_mut().for_each(resolve);
        config.released_workloads.iter_mut().for_each(resolve);
        Ok(config)
    }

    /// Loads the keys, roots and manifests the service needs.
    pub fn load(self) -> Result<Loaded> {
        let mut ek_roots = EkRoots::default();
        for path in &self.ek_roots {
            ek_roots.roots.extend(pem_certificates(path)?);
        }
        for path in &self.ek_roots_without_eku {
            for root in pem_certificates(path)? {
                if !ek_roots.roots.contains(&root) {
                    bail!(
                        "ek_roots_without_eku: {} holds a certificate that is not in ek_roots",
                        path.display()
                    );
                }
                ek_roots.without_eku.push(root);
            }
        }
        let mut ek_intermediates = Vec::new();
        for path in &self.ek_intermediates {
            ek_intermediates.extend(pem_certificates(path)?);
        }
        let release_key = ReleaseKey::from_hex(&read_text(&self.release_key)?)
            .with_context(|| format!("{}", self.release_key.display()))?;
        let mut manifests = Vec::new();
        for dir in &self.manifests {
            let text = std::fs::read(dir.join("manifest.json"))
                .with_context(|| format!("cannot read {}/manifest.json", dir.display()))?;
            let signature = std::fs::read(dir.join("manifest.json.sig"))
                .with_context(|| format!("cannot read {}/manifest.json.sig", dir.display()))?;
            let values = verify(&text, &signature, &release_key)
                .with_context(|| format!("the manifest in {} is not released", dir.display()))?;
            tracing::info!(manifest = %values.label(), dir = %dir.display(), "manifest released");
            manifests.push(values);
        }
        let mut policy = Policy::new(self.ek_kind, ek_roots, manifests);
        policy.ek_intermediates = ek_intermediates;
        if let Some(path) = &self.released_workloads {
            let text =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let signature_path = PathBuf::from(format!("{}.sig", path.display()));
            let signature = std::fs::read(&signature_path)
                .with_context(|| format!("cannot read {}", signature_path.display()))?;
            policy.workloads = ReleasedWorkloads::verify(&text, &signature, release_key.as_bytes())
                .with_context(|| format!("the released workloads in {}", path.display()))?;
            tracing::info!(
                workloads = policy.workloads.len(),
                file = %path.display(),
                "workloads released"
            );
        }
        if let Some(pcrs) = &self.pcrs {
            if pcrs.is_empty() || pcrs.iter().any(|pcr| *pcr > 23) {
                bail!("pcrs must list PCRs 0-23");
            }
            let mut pcrs = pcrs.clone();
            pcrs.sort_unstable();
            pcrs.dedup();
            policy.pcrs = pcrs;
        }
        for (pcr, values) in &self.platform_pcrs {
            let index: u32 = pcr
                .parse()
                .ok()
                .filter(|index| *index <= 23)
                .with_context(|| format!("platform_pcrs: {pcr:?} is not a PCR"))?;
            if !policy.pcrs.contains(&(index as u8)) {
                bail!("platform_pcrs lists PCR {index}, which pcrs does not quote");
            }
            let values = values
                .iter()
                .map(|value| {
                    hex::decode(value)
                        .ok()
                        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                        .with_context(|| {
                            format!("platform_pcrs.{pcr}: {value:?} is not 32 bytes of hex")
                        })
                })
                .collect::<Result<_>>()?;
            policy.platform_pcrs.insert(index, values);
        }
        for pcr in &self.log_only_pcrs {
            if *pcr > 23 {
                bail!("log_only_pcrs: {pcr} is not a PCR");
            }
            policy.log_only_pcrs.insert(*pcr);
        }
        let reserved = self.reserved_identities.as_ref().context(
            "reserved_identities is not set: list the broker's reader identities (the \
             recorder, an operator's admin), which no device may take, or [] if there are none",
        )?;
        for name in reserved {
            let id = edgeward_platform::identity::DeviceId::new(name)
                .with_context(|| format!("reserved_identities: {name:?}"))?;
            policy.reserved_identities.insert(id);
        }
        if let Err(problems) = policy.check() {
            bail!(
                "the verifier would let checks pass by omission; fix the configuration:\n  {}",
                problems.join("\n  ")
            );
        }
        policy.attestation_validity = Duration::from_secs(self.attestation_interval_seconds);
        policy.certificate_validity = Duration::from_secs(self.certificate_validity_seconds);
        let chain = match &self.device_ca_chain {
            Some(path) => read_text(path)?,
            None => String::new(),
        };
        let ca = DeviceCa::from_pem(
            &read_text(&self.device_ca_certificate)?,
            &read_text(&self.device_ca_key)?,
            &chain,
        )?;
        Ok(Loaded {
            tls_certificate: read_text(&self.tls_certificate)?,
            tls_key: read_text(&self.tls_key)?,
            config: self,
            policy,
            ca,
        })
    }
}
