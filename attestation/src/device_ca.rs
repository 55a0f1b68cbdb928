//! The device CA: short-lived X.509 client certificates for device keys that the AK certified,
//! with the device identity as CN (the broker's username and ACL identity) and EKU clientAuth.
//! The CA may be a root of its own or an intermediate under the platform's existing CA; its
//! chain goes out with every certificate so that the broker can be configured with either.
//!
//! Also makes the CAs and the verifier's TLS certificate for `edgeward verifier init`.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SerialNumber, SignatureAlgorithm,
    PKCS_ECDSA_P256_SHA256,
};
use thiserror::Error;
use time::OffsetDateTime;

use crate::quote::CertifiedKey;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum CaError {
    #[error("the device CA key is not a PKCS#8 PEM key rcgen can sign with: {0}")]
    Key(String),
    #[error("the device CA certificate is not a PEM X.509 CA certificate: {0}")]
    Certificate(String),
    #[error("the device key is not a P-256 point ({0} and {1} bytes)")]
    DeviceKey(usize, usize),
    #[error("time {0} is outside what a certificate can carry")]
    Time(u64),
    #[error("cannot make the certificate: {0}")]
    Sign(String),
}

/// A device key's public point (uncompressed SEC1), which rcgen puts into the certificate.
struct DevicePublicKey(Vec<u8>);

impl PublicKeyData for DevicePublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

fn timestamp(seconds: u64) -> Result<OffsetDateTime, CaError> {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| OffsetDateTime::from_unix_timestamp(seconds).ok())
        .ok_or(CaError::Time(seconds))
}

/// The CA that signs device certificates.
pub struct DeviceCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's certificate and any certificates above it (PEM), sent with each device
    /// certificate.
    chain_pem: String,
}

impl std::fmt::Debug for DeviceCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceCa").finish_non_exhaustive()
    }
}

/// A certificate issued to a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCertificate {
    pub pem: String,
    pub serial: String,
    pub not_after: u64,
}

impl DeviceCa {
    /// The CA from its certificate and PKCS#8 key (PEM), and the certificates above it, if it is
    /// an intermediate (PEM, may be empty).
    pub fn from_pem(certificate: &str, key: &str, above: &str) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(key).map_err(|error| CaError::Key(error.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(certificate, key)
            .map_err(|error| CaError::Certificate(error.to_string()))?;
        let mut chain_pem = certificate.trim_end().to_owned();
        chain_pem.push('\n');
        if !above.trim().is_empty() {
            chain_pem.push_str(above.trim_end());
            chain_pem.push('\n');
        }
        Ok(Self { issuer, chain_pem })
    }

    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// Issues the client certificate of `device` for its certified key, valid from
    /// `not_before` to `not_after` (Unix seconds).
    pub fn issue(
        &self,
        device: &str,
        key: &CertifiedKey,
        not_before: u64,
        not_after: u64,
        serial: [u8; 16],
    ) -> Result<IssuedCertificate, CaError> {
        if key.x.len() != 32 || key.y.len() != 32 {
            return Err(CaError::DeviceKey(key.x.len(), key.y.len()));
        }
        let mut point = vec![0x04];
        point.extend_from_slice(&key.x);
        point.extend_from_slice(&key.y);
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, device);
        name.push(DnType::OrganizationalUnitName, "Edgeward devices");
        params.distinguished_name = name;
        params.not_before = timestamp(not_before)?;
        params.not_after = timestamp(not_after)?;
        // A positive serial: the top bit clear.
        let mut serial = serial;
        serial[0] &= 0x7F;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        let certificate = params
            .signed_by(&DevicePublicKey(point), &self.issuer)
            .map_err(|error| CaError::Sign(error.to_string()))?;
        Ok(IssuedCertificate {
            pem: certificate.pem(),
            serial: hex::encode(serial),
            not_after,
        })
    }
}

/// A new CA (P-256): a root when `parent` is `None`, else an intermediate signed by the parent's
/// certificate and key (PEM). Returns the certificate and the PKCS#8 key, PEM.
pub fn new_ca(
    common_name: &str,
    parent: Option<(&str, &str)>,
    not_before: u64,
    not_after: u64,
) -> Result<(String, String), CaError> {
    let (key, mut params) = new_key_and_params(common_name, not_before, not_after)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = match parent {
        None => params.self_signed(&key),
        Some((certificate, parent_key)) => {
            let parent_key =
                KeyPair::from_pem(parent_key).map_err(|error| CaError::Key(error.to_string()))?;
            let issuer = Issuer::from_ca_cert_pem(certificate, parent_key)
                .map_err(|error| CaError::Certificate(error.to_string()))?;
            params.use_authority_key_identifier_extension = true;
            params.signed_by(&key, &issuer)
        }
    }
    .map_err(|error| CaError::Sign(error.to_string()))?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// A TLS server certificate for `hostnames` (DNS names or IP addresses), signed by the CA.
pub fn new_server_certificate(
    hostnames: &[String],
    ca_certificate: &str,
    ca_key: &str,
    not_before: u64,
    not_after: u64,
) -> Result<(String, String), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|error| CaError::Key(error.to_string()))?;
    let mut params = CertificateParams::new(hostnames.to_vec())
        .map_err(|error| CaError::Sign(error.to_string()))?;
    let mut name = DistinguishedName::new();
    name.push(
        DnType::CommonName,
        hostnames
            .first()
            .map_or("edgeward verifier", String::as_str),
    );
    params.distinguished_name = name;
    params.not_before = timestamp(not_before)?;
    params.not_after = timestamp(not_after)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    sign_leaf(&params, key, ca_certificate, ca_key)
}

/// The kinds of certificate [`new_leaf`] makes for a demo or test platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeafKind {
    /// A TLS client (EKU clientAuth), such as the platform's recorder.
    Client,
    /// A time-stamping authority: EKU timeStamping alone and critical, as RFC 3161 §2.3 asks
    /// (rcgen writes EKU non-critical, so the extension is spelled out).
    TimeStamping,
}

/// A platform root CA (P-256) that may have intermediates below it, unlike [`new_ca`]'s issuing
/// CAs. Returns the certificate and PKCS#8 key, PEM.
pub fn new_root_ca(
    common_name: &str,
    not_before: u64,
    not_after: u64,
) -> Result<(String, String), CaError> {
    let (key, mut params) = new_key_and_params(common_name, not_before, not_after)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let certificate = params
        .self_signed(&key)
        .map_err(|error| CaError::Sign(error.to_string()))?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// Signs a leaf with the CA (certificate and PKCS#8 key, PEM); returns certificate and key, PEM.
fn sign_leaf(
    params: &CertificateParams,
    key: KeyPair,
    ca_certificate: &str,
    ca_key: &str,
) -> Result<(String, String), CaError> {
    let ca_key = KeyPair::from_pem(ca_key).map_err(|error| CaError::Key(error.to_string()))?;
    let issuer = Issuer::from_ca_cert_pem(ca_certificate, ca_key)
        .map_err(|error| CaError::Certificate(error.to_string()))?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|error| CaError::Sign(error.to_string()))?;
    Ok((certificate.pem(), key.serialize_pem()))
}

/// A new P-256 key, and certificate parameters naming `common_name` for the validity given.
fn new_key_and_params(
    common_name: &str,
    not_before: u64,
    not_after: u64,
) -> Result<(KeyPair, CertificateParams), CaError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|error| CaError::Key(error.to_string()))?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    params.not_before = timestamp(not_before)?;
    params.not_after = timestamp(not_after)?;
    Ok((key, params))
}

/// A certificate with a new P-256 key for `common_name`, signed by the CA. Returns the
/// certificate and PKCS#8 key, PEM.
pub fn new_leaf(
    common_name: &str,
    kind: LeafKind,
    ca_certificate: &str,
    ca_key: &str,
    not_before: u64,
    not_after: u64,
) -> Result<(String, String), CaError> {
    let (key, mut params) = new_key_and_params(common_name, not_before, not_after)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    match kind {
        LeafKind::Client => {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        LeafKind::TimeStamping => {
            // SEQUENCE { OID 1.3.6.1.5.5.7.3.8 }
            let value = vec![
                0x30, 0x0A, 0x06, 0x08, 0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08,
            ];
            let mut extension = rcgen::CustomExtension::from_oid_content(&[2, 5, 29, 37], value);
            extension.set_criticality(true);
            params.custom_extensions = vec![extension];
        }
    }
    sign_leaf(&params, key, ca_certificate, ca_key)
}
