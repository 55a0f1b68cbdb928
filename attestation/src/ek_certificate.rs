//! The verifier's check of an EK certificate: it chains, by signature, through the intermediates
//! the device sent to one of the manufacturer roots the operator configured, is valid at the
//! given time, and certifies the very EK the device uses. A TPM whose EK certificate does not
//! chain to a configured root is not a TPM the operator trusts.

use std::time::SystemTime;

use thiserror::Error;

use crate::credential::EkPublic;
use x509_parser::certificate::X509Certificate;
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
}

/// The longest manufacturer chain accepted (EK, intermediates, root).
pub const MAX_CHAIN: usize = 6;

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

/// Verifies `ek_certificate` (DER) up to one of `roots` through `intermediates`, at `now`, and
/// that it certifies the EK `ek`. Returns the subjects from the EK to the root.
pub fn verify_ek_certificate(
    ek_certificate: &[u8],
    intermediates: &[Vec<u8>],
    roots: &[Vec<u8>],
    ek: &EkPublic,
    now: SystemTime,
) -> Result<Vec<String>, EkCertificateError> {
    let leaf = parse(ek_certificate, "the EK certificate")?;
    let intermediates: Vec<X509Certificate<'_>> = intermediates
        .iter()
        .map(|der| parse(der, "an intermediate certificate"))
        .collect::<Result<_, _>>()?;
    let roots: Vec<X509Certificate<'_>> = roots
        .iter()
        .map(|der| parse(der, "a manufacturer root"))
        .collect::<Result<_, _>>()?;

    let certified = match (leaf.public_key().parsed(), ek) {
        (Ok(PublicKey::RSA(key)), EkPublic::Rsa { modulus }) => {
            strip_zeros(key.modulus) == strip_zeros(modulus)
        }
        (Ok(PublicKey::EC(point)), EkPublic::Ecc { x, y }) => {
            let data = point.data();
            data.len() == 65
                && data[0] == 0x04
                && strip_zeros(&data[1..33]) == strip_zeros(x)
                && strip_zeros(&data[33..]) == strip_zeros(y)
        }
        _ => false,
    };
    if !certified {
        return Err(EkCertificateError::KeyMismatch);
    }

    let mut path = vec![leaf.subject().to_string()];
    let mut current = &leaf;
    for _ in 0..MAX_CHAIN {
        if !valid_at(current, now) {
            return Err(EkCertificateError::Expired {
                subject: current.subject().to_string(),
            });
        }
        let issuer_name = current.issuer();
        if let Some(root) = roots.iter().find(|root| root.subject() == issuer_name) {
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
            path.push(root.subject().to_string());
            return Ok(path);
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
        path.push(issuer.subject().to_string());
        current = issuer;
    }
    Err(EkCertificateError::TooLong(MAX_CHAIN))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|byte| *byte != 0)
        .unwrap_or(bytes.len());
    &bytes[start..]
}
