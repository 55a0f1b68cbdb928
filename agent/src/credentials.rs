//! The device certificate and its chain. In the appliance the attestation role holds them in
//! memory, shared with the roles that use them ([`DeviceCredentials::shared`]), and keeps the
//! files only so that a restart has them; run as separate commands (`edgeward-agent attest
//! --daemon` beside `stream`), the files are read again for every broker connection and every
//! block signature ([`DeviceCredentials::files`]), so that a renewed certificate is used
//! without a restart.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use tokio::sync::Notify;

/// Where the certificate is, and, shared between roles, what it is now.
#[derive(Debug, Clone)]
pub struct DeviceCredentials {
    pki: PathBuf,
    current: Option<Arc<RwLock<Option<Loaded>>>>,
    /// Woken at each [`DeviceCredentials::reload`]: a role waiting for its first certificate
    /// goes on at once rather than at its next look.
    reloaded: Arc<Notify>,
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
    /// Read from the files in `pki` at every use.
    pub fn files(pki: &Path) -> Self {
        Self {
            pki: pki.to_owned(),
            current: None,
            reloaded: Arc::new(Notify::new()),
        }
    }

    /// Held in memory and shared by the clones, set by [`DeviceCredentials::reload`] when the
    /// attestation role has written a certificate in this boot. A certificate left from an
    /// earlier boot is not used: it may be for a key that no longer signs.
    pub fn shared(pki: &Path) -> Self {
        Self {
            pki: pki.to_owned(),
            current: Some(Arc::new(RwLock::new(None))),
            reloaded: Arc::new(Notify::new()),
        }
    }

    /// What [`DeviceCredentials::reload`] wakes (nothing does when the files are written by
    /// another process: then only a later look finds them).
    pub fn reloaded(&self) -> Arc<Notify> {
        self.reloaded.clone()
    }

    /// The certificate as it is now.
    pub fn load(&self) -> Result<Loaded> {
        let Some(current) = &self.current else {
            return self.read();
        };
        current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .context("no device certificate yet in this boot (the attestation role has none)")
    }

    /// The attestation role wrote a new certificate: every holder uses it from now on.
    pub fn reload(&self) -> Result<Loaded> {
        let loaded = self.read()?;
        if let Some(current) = &self.current {
            *current
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(loaded.clone());
        }
        self.reloaded.notify_waiters();
        Ok(loaded)
    }

    fn read(&self) -> Result<Loaded> {
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
