//! The verifier's check of an EK certificate: it chains, by signature, through the intermediates
//! the device sent to one of the manufacturer roots the operator configured, is valid at the
//! given time, certifies the very EK the device uses (byte for byte, in its canonical form), and
//! has the shape the TCG EK Credential Profile gives an EK certificate: an end-entity certificate
//! whose key usage fits an EK (keyEncipherment for RSA, keyAgreement for ECC) and whose extended
//! key usage is `tcg-kp-EKCertificate` (2.23.133.8.1); every certificate above it a CA allowed to
//! sign certificates (basicConstraints cA, keyCertSign) within its path length. A TPM whose EK
//! certificate does not chain this way to a configured root is not a TPM the operator trusts.
//!
//! Some vendors ship EK certificates without the extended key usage; a root the operator lists
//! in [`EkRoots::without_eku`] is the documented exception, and the result says it was used.

use std::time::SystemTime;

use thiserror::Error;

use crate::credential::EkPublic;
use x509_parser::certificate::X509Certificate;
use x509_parser::oid_registry::Oid;
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EkCertificateError {
    #[error("{what} is not a DER X.509 certificate: {reason}")]
    Unreadable { what: &'static str, reason: String },
    #[error(
        "no configured manufacturer root or intermediate issued {subject:?} (issuer {issuer:?})"
    )]
    UnknownIssuer { subject: String, issuer: String },
    #[error("the signature on {subject:?} does not verify with {issuer:?}'s key")]
    BadSignature { subject: String, issuer: String },
    #[error("{subject:?} is not valid at the time of the check")]
    Expired { subject: String },
    #[error("the chain is longer than {0} certificates")]
    TooLong(usize),
    #[error("the EK certificate certifies another key than the device's EK")]
    KeyMismatch,
    #[error("{subject:?} issued a certificate but is not a CA: {reason}")]
    NotACa {
        subject: String,
        reason: &'static str,
    },
    #[error("{subject:?} allows {allowed} CA certificates below it, the chain has {below}")]
    PathLength {
        subject: String,
        allowed: u32,
        below: usize,
    },
    #[error(
        "the EK certificate's extended key usage {found} lacks tcg-kp-EKCertificate \
         (2.23.133.8.1), as the TCG EK Credential Profile requires"
    )]
    ExtendedKeyUsage { found: String },
    #[error(
        "the EK certificate's key usage does not allow {needed}, which an EK of its kind needs"
    )]
    KeyUsage { needed: &'static str },
    #[error("the EK certificate is a CA certificate (basicConstraints cA)")]
    EkIsCa,
}

/// The longest manufacturer chain accepted (EK, intermediates, root).
pub const MAX_CHAIN: usize = 6;

/// tcg-kp-EKCertificate.
const TCG_KP_EK_CERTIFICATE: &str = "2.23.133.8.1";

/// The manufacturer roots a verifier trusts, DER.
#[derive(Debug, Clone, Default)]
pub struct EkRoots {
    pub roots: Vec<Vec<u8>>,
    /// Roots (also in `roots`) whose EK certificates may omit the extended key usage: a
    /// documented exception for vendors that ship them so.
    pub without_eku: Vec<Vec<u8>>,
}

/// An EK certificate that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedEk {
    /// The subjects from the EK to the root.
    pub path: Vec<String>,
    /// The certificate has no extended key usage and was accepted because its root is listed
    /// in [`EkRoots::without_eku`].
    pub eku_exception: bool,
}

fn parse<'a>(der: &'a [u8], what: &'static str) -> Result<X509Certificate<'a>, EkCertificateError> {
    X509Certificate::from_der(der)
        .map(|(_, certificate)| certificate)
        .map_err(|error| EkCertificateError::Unreadable {
            what,
            reason: error.to_string(),
        })
}

fn valid_at(certificate: &X509Certificate<'_>, now: SystemTime) -> bool {
    let Ok(seconds) = now.duration_since(SystemTime::UNIX_EPOCH) else {
        return false;
    };
    let now = seconds.as_secs() as i64;
    let validity = certificate.validity();
    validity.not_before.timestamp() <= now && now <= validity.not_after.timestamp()
}

/// A certificate that signed the one below it must be a CA allowed to sign certificates, and its
/// path length must allow the CA certificates below it (`below`, the EK not counted).
fn check_issuer(issuer: &X509Certificate<'_>, below: usize) -> Result<(), EkCertificateError> {
    let subject = issuer.subject().to_string();
    let not_a_ca = |reason| EkCertificateError::NotACa {
        subject: subject.clone(),
        reason,
    };
    let constraints = issuer
        .basic_constraints()
        .map_err(|_| not_a_ca("its basicConstraints extension is malformed or repeated"))?
        .ok_or_else(|| not_a_ca("it has no basicConstraints extension"))?;
    if !constraints.value.ca {
        return Err(not_a_ca("its basicConstraints say cA false"));
    }
    let usage = issuer
        .key_usage()
        .map_err(|_| not_a_ca("its keyUsage extension is malformed or repeated"))?
        .ok_or_else(|| not_a_ca("it has no keyUsage extension"))?;
    if !usage.value.key_cert_sign() {
        return Err(not_a_ca("its keyUsage does not allow keyCertSign"));
    }
    if let Some(allowed) = constraints.value.path_len_constraint {
        if below > allowed as usize {
            return Err(EkCertificateError::PathLength {
                subject,
                allowed,
                below,
            });
        }
    }
    Ok(())
}

/// The EK certificate's own extensions: an end entity, key usage fit for the EK's kind, and the
/// EK extended key usage (unless `eku_optional` and it has none). Returns whether the
/// exception was needed.
fn check_leaf(
    leaf: &X509Certificate<'_>,
    ek: &EkPublic,
    eku_optional: bool,
) -> Result<bool, EkCertificateError> {
    let malformed = |reason: String| EkCertificateError::Unreadable {
        what: "the EK certificate",
        reason,
    };
    if let Some(constraints) = leaf
        .basic_constraints()
        .map_err(|error| malformed(error.to_string()))?
    {
        if constraints.value.ca {
            return Err(EkCertificateError::EkIsCa);
        }
    }
    if let Some(usage) = leaf
        .key_usage()
        .map_err(|error| malformed(error.to_string()))?
    {
        let (allowed, needed) = match ek {
            EkPublic::Rsa { .. } => (usage.value.key_encipherment(), "keyEncipherment"),
            EkPublic::Ecc { .. } => (usage.value.key_agreement(), "keyAgreement"),
        };
        if !allowed {
            return Err(EkCertificateError::KeyUsage { needed });
        }
    }
    let wanted: Oid<'static> = TCG_KP_EK_CERTIFICATE
        .parse()
        .map_err(|_| malformed("the EK certificate OID".into()))?;
    match leaf
        .extended_key_usage()
        .map_err(|error| malformed(error.to_string()))?
    {
        Some(eku) if eku.value.other.contains(&wanted) => Ok(false),
        Some(eku) => {
            let mut found: Vec<String> = eku.value.other.iter().map(Oid::to_id_string).collect();
            for (set, name) in [
                (eku.value.any, "anyExtendedKeyUsage"),
                (eku.value.server_auth, "serverAuth"),
                (eku.value.client_auth, "clientAuth"),
                (eku.value.code_signing, "codeSigning"),
                (eku.value.email_protection, "emailProtection"),
                (eku.value.time_stamping, "timeStamping"),
                (eku.value.ocsp_signing, "OCSPSigning"),
            ] {
                if set {
                    found.push(name.into());
                }
            }
            Err(EkCertificateError::ExtendedKeyUsage {
                found: format!("[{}]", found.join(", ")),
            })
        }
        None if eku_optional => Ok(true),
        None => Err(EkCertificateError::ExtendedKeyUsage {
            found: "(none)".into(),
        }),
    }
}

/// Whether the certificate's public key is exactly `ek`.
fn certifies(leaf: &X509Certificate<'_>, ek: &EkPublic) -> bool {
    match (leaf.public_key().parsed(), ek) {
        // DER integers carry a leading zero when the top bit is set; the EK's modulus is the
        // 256 bytes after it.
        (Ok(PublicKey::RSA(key)), EkPublic::Rsa { modulus }) => {
            let value = match key.modulus {
                [0, rest @ ..] => rest,
                all => all,
            };
            value == modulus.as_slice() && matches!(key.exponent, [0x01, 0x00, 0x01])
        }
        (Ok(PublicKey::EC(point)), EkPublic::Ecc { x, y }) => {
            let data = point.data();
            data.len() == 65 && data[0] == 0x04 && data[1..33] == x[..] && data[33..] == y[..]
        }
        _ => false,
    }
}

/// Verifies `ek_certificate` (DER) up to one of `roots` through `intermediates`, at `now`, and
/// that it certifies the EK `ek`.
pub fn verify_ek_certificate(
    ek_certificate: &[u8],
    intermediates: &[Vec<u8>],
    roots: &EkRoots,
    ek: &EkPublic,
    now: SystemTime,
) -> Result<VerifiedEk, EkCertificateError> {
    let leaf = parse(ek_certificate, "the EK certificate")?;
    let intermediates: Vec<X509Certificate<'_>> = intermediates
        .iter()
        .map(|der| parse(der, "an intermediate certificate"))
        .collect::<Result<_, _>>()?;
    let parsed_roots: Vec<(X509Certificate<'_>, bool)> = roots
        .roots
        .iter()
        .map(|der| {
            let exempt = roots.without_eku.iter().any(|other| other == der);
            parse(der, "a manufacturer root").map(|root| (root, exempt))
        })
        .collect::<Result<_, _>>()?;

    if !certifies(&leaf, ek) {
        return Err(EkCertificateError::KeyMismatch);
    }

    let mut path = vec![leaf.subject().to_string()];
    let mut current = &leaf;
    for below in 0..MAX_CHAIN {
        if !valid_at(current, now) {
            return Err(EkCertificateError::Expired {
                subject: current.subject().to_string(),
            });
        }
        let issuer_name = current.issuer();
        if let Some((root, exempt)) = parsed_roots
            .iter()
            .find(|(root, _)| root.subject() == issuer_name)
        {
            current
                .verify_signature(Some(root.public_key()))
                .map_err(|_| EkCertificateError::BadSignature {
                    subject: current.subject().to_string(),
                    issuer: root.subject().to_string(),
                })?;
            if !valid_at(root, now) {
                return Err(EkCertificateError::Expired {
                    subject: root.subject().to_string(),
                });
            }
            check_issuer(root, below)?;
            let eku_exception = check_leaf(&leaf, ek, *exempt)?;
            path.push(root.subject().to_string());
            return Ok(VerifiedEk {
                path,
                eku_exception,
            });
        }
        let Some(issuer) = intermediates
            .iter()
            .find(|candidate| candidate.subject() == issuer_name)
        else {
            return Err(EkCertificateError::UnknownIssuer {
                subject: current.subject().to_string(),
                issuer: issuer_name.to_string(),
            });
        };
        current
            .verify_signature(Some(issuer.public_key()))
            .map_err(|_| EkCertificateError::BadSignature {
                subject: current.subject().to_string(),
                issuer: issuer.subject().to_string(),
            })?;
        check_issuer(issuer, below)?;
        path.push(issuer.subject().to_string());
        current = issuer;
    }
    Err(EkCertificateError::TooLong(MAX_CHAIN))
}
