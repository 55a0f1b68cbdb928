//! The broker connection's TLS: the platform CA verifies the broker, and the client
//! certificate's key is the device key in the TPM, which signs the handshake through
//! [`TpmSigner`]. rustls has no notion of a hardware key, so the signing key is ours.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::CertificateDer;
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};
use sha2::Digest as _;

use crate::tpm::TpmSigner;

#[derive(Debug)]
struct TpmKey(TpmSigner);

impl SigningKey for TpmKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ECDSA_NISTP256_SHA256)
            .then(|| Box::new(TpmHandshakeSigner(self.0.clone())) as Box<dyn Signer>)
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

#[derive(Debug)]
struct TpmHandshakeSigner(TpmSigner);

impl Signer for TpmHandshakeSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let digest: [u8; 32] = sha2::Sha256::digest(message).into();
        self.0
            .sign(&digest)
            .map_err(|error| rustls::Error::General(format!("TPM signing failed: {error}")))
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ECDSA_NISTP256_SHA256
    }
}

fn certificates(pem_text: &str, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certificates: Vec<CertificateDer<'static>> = pem::parse_many(pem_text)
        .with_context(|| format!("{what} is not PEM"))?
        .into_iter()
        .filter(|block| block.tag() == "CERTIFICATE")
        .map(|block| CertificateDer::from(block.into_contents()))
        .collect();
    if certificates.is_empty() {
        bail!("{what} holds no certificate");
    }
    Ok(certificates)
}

/// The client configuration: `broker_ca` (PEM) trusted for the broker, `chain` (PEM: the
/// device certificate, then its CA chain) presented with the TPM key.
pub fn client_config(
    broker_ca: &str,
    chain: &str,
    signer: TpmSigner,
) -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates(broker_ca, "the broker CA")? {
        roots
            .add(certificate)
            .context("the broker CA is not a usable certificate")?;
    }
    let key = CertifiedKey::new(
        certificates(chain, "the device certificate chain")?,
        Arc::new(TpmKey(signer)),
    );
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    Ok(Arc::new(config))
}
