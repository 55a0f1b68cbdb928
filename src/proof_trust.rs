//! Whom a reader of block proofs trusts, as `edgeward recorder` and `edgeward verify-data` take
//! it on the command line: the TSA root, the device CA, and the TSA certificate when tokens do
//! not carry it. One set of flags, read one way, for both.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use edgeward_proof::block::ProofAnchors;
use edgeward_proof::trust::TrustAnchors;

#[derive(Args, Clone, Debug)]
pub struct ProofTrustArgs {
    /// The root the TSA certificate must chain to (PEM).
    #[arg(long, value_name = "FILE")]
    pub tsa_root: PathBuf,
    /// The device CA (or the platform CA above it), PEM.
    #[arg(long, value_name = "FILE")]
    pub device_ca: PathBuf,
    /// The TSA certificate, when its tokens do not carry it (PEM).
    #[arg(long, value_name = "FILE")]
    pub tsa_cert: Option<PathBuf>,
}

impl ProofTrustArgs {
    pub fn load(&self) -> Result<ProofAnchors> {
        load_anchors(&self.tsa_root, &self.device_ca, self.tsa_cert.as_deref())
    }
}

/// Reads the anchors from PEM files.
pub fn load_anchors(
    tsa_root: &Path,
    device_ca: &Path,
    tsa_cert: Option<&Path>,
) -> Result<ProofAnchors> {
    let read = |path: &Path| {
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
    };
    Ok(ProofAnchors {
        tsa: TrustAnchors::from_pem(&read(tsa_root)?).context("--tsa-root")?,
        devices: TrustAnchors::from_pem(&read(device_ca)?).context("--device-ca")?,
        tsa_certificates: match tsa_cert {
            Some(path) => pem::parse_many(read(path)?)
                .context("--tsa-cert is not PEM")?
                .into_iter()
                .map(pem::Pem::into_contents)
                .collect(),
            None => Vec::new(),
        },
    })
}
