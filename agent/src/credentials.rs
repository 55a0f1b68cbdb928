//! The device certificate and its chain, read from the files `edgeward-agent attest` keeps
//! renewing: read again for every broker connection and every block signature, so that a
//! renewed certificate is used without a restart.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Where the certificate files are.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pki: PathBuf,
}

/// What the files hold now.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The device certificate, then its CA chain, DER.
    pub chain: Vec<Vec<u8>>,
    /// The same, PEM.
    pub pem: String,
    /// The certificate's CN: the device identity.
    pub identity: String,
    /// Validity, seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl DeviceCredentials {
    pub fn new(pki: &Path) -> Self {
        Self {
            pki: pki.to_owned(),
        }
    }

    pub fn load(&self) -> Result<Loaded> {
        let read = |name: &str| {
            let path = self.pki.join(name);
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        };
        let pem = format!(
            "{}\n{}",
            read("device.crt")?.trim_end(),
            read("device-ca-chain.crt")?.trim_end()
        );
        let chain: Vec<Vec<u8>> = pem::parse_many(&pem)
            .context("the device certificate chain is not PEM")?
            .into_iter()
            .filter(|block| block.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect();
        let first = chain.first().context("no device certificate")?;
        let (_, certificate) = x509_parser::parse_x509_certificate(first)
            .map_err(|error| anyhow::anyhow!("the device certificate does not parse: {error}"))?;
        let identity = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .context("the device certificate has no CN")?
            .to_owned();
        let validity = certificate.validity();
        let (not_before, not_after) = (
            validity.not_before.timestamp(),
            validity.not_after.timestamp(),
        );
        Ok(Loaded {
            chain,
            pem,
            identity,
            not_before,
            not_after,
        })
    }
}

impl Loaded {
    /// Whether renewal is overdue: `attest --daemon` renews at two thirds of the lifetime, so a
    /// certificate in its last third was not renewed when it should have been.
    pub fn renewal_overdue(&self, now: i64) -> bool {
        let lifetime = self.not_after - self.not_before;
        now > self.not_after - lifetime / 3
    }
}
