//! Which certificates a verifier trusts, and whether a signer's certificate chains to one.
//!
//! An anchor need not be self-signed: an operator may trust the device CA alone even when it is
//! an intermediate under the platform CA (OpenSSL's `-partial_chain`).

use x509_parser::prelude::{FromDer, X509Certificate};

use crate::ProofError;

/// Certificates trusted as the top of a chain, as DER.
#[derive(Debug, Clone, Default)]
pub struct TrustAnchors {
    anchors: Vec<Vec<u8>>,
}

/// The longest chain accepted, anchor included: leaf, two intermediates, anchor.
const MAX_DEPTH: usize = 4;

impl TrustAnchors {
    /// Anchors from PEM text holding one or more certificates.
    pub fn from_pem(text: &str) -> Result<Self, ProofError> {
        let blocks = pem::parse_many(text).map_err(|error| ProofError::Certificate {
            what: "trust anchor PEM",
            reason: error.to_string(),
        })?;
        let anchors: Vec<Vec<u8>> = blocks
            .into_iter()
            .filter(|block| block.tag() == "CERTIFICATE")
            .map(|block| block.into_contents())
            .collect();
        if anchors.is_empty() {
            return Err(ProofError::Certificate {
                what: "trust anchor PEM",
                reason: "holds no CERTIFICATE".into(),
            });
        }
        for anchor in &anchors {
            parse(anchor, "trust anchor")?;
        }
        Ok(Self { anchors })
    }

    pub fn from_der(anchors: Vec<Vec<u8>>) -> Result<Self, ProofError> {
        for anchor in &anchors {
            parse(anchor, "trust anchor")?;
        }
        Ok(Self { anchors })
    }

    /// Checks that `leaf` chains to an anchor through `pool` (certificates the signed object
    /// carried), every certificate valid at `at` (seconds since the epoch). Returns the
    /// anchor's subject.
    pub fn verify_chain(
        &self,
        leaf: &[u8],
        pool: &[Vec<u8>],
        at: i64,
    ) -> Result<String, ProofError> {
        let mut current = parse(leaf, "signer certificate")?;
        check_validity(&current, at, "signer certificate")?;
        for intermediates in 0..MAX_DEPTH {
            // The current certificate is itself an anchor (trusted directly).
            if self
                .anchors
                .iter()
                .any(|anchor| anchor.as_slice() == current_der(&current))
            {
                return Ok(current.subject().to_string());
            }
            if let Some(anchor) = self
                .anchors
                .iter()
                .filter_map(|der| parse(der, "trust anchor").ok())
                .find(|anchor| issued(&current, anchor))
            {
                check_validity(&anchor, at, "trust anchor")?;
                check_path_length(&anchor, intermediates)?;
                return Ok(anchor.subject().to_string());
            }
            let Some(issuer) = pool
                .iter()
                .filter_map(|der| parse(der, "certificate").ok())
                .find(|candidate| {
                    candidate.is_ca()
                        && current_der(candidate) != current_der(&current)
                        && issued(&current, candidate)
                })
            else {
                return Err(ProofError::Untrusted {
                    subject: current.subject().to_string(),
                    issuer: current.issuer().to_string(),
                });
            };
            check_validity(&issuer, at, "intermediate certificate")?;
            check_path_length(&issuer, intermediates)?;
            current = issuer;
        }
        Err(ProofError::Untrusted {
            subject: current.subject().to_string(),
            issuer: format!("{} (chain longer than {MAX_DEPTH})", current.issuer()),
        })
    }
}

fn current_der<'a>(certificate: &X509Certificate<'a>) -> &'a [u8] {
    certificate.as_raw()
}

fn issued(child: &X509Certificate<'_>, issuer: &X509Certificate<'_>) -> bool {
    child.issuer() == issuer.subject() && child.verify_signature(Some(issuer.public_key())).is_ok()
}

pub(crate) fn parse<'a>(
    der: &'a [u8],
    what: &'static str,
) -> Result<X509Certificate<'a>, ProofError> {
    match X509Certificate::from_der(der) {
        Ok(([], certificate)) => Ok(certificate),
        Ok(_) => Err(ProofError::Certificate {
            what,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(error) => Err(ProofError::Certificate {
            what,
            reason: error.to_string(),
        }),
    }
}

/// A CA's pathLenConstraint bounds the CA certificates below it (the leaf not counted).
fn check_path_length(issuer: &X509Certificate<'_>, below: usize) -> Result<(), ProofError> {
    if let Ok(Some(constraints)) = issuer.basic_constraints() {
        if let Some(limit) = constraints.value.path_len_constraint {
            if below > limit as usize {
                return Err(ProofError::Untrusted {
                    subject: issuer.subject().to_string(),
                    issuer: format!(
                        "{} (path length {limit} allows fewer CAs below it than {below})",
                        issuer.issuer()
                    ),
                });
            }
        }
    }
    Ok(())
}

fn check_validity(
    certificate: &X509Certificate<'_>,
    at: i64,
    what: &'static str,
) -> Result<(), ProofError> {
    let validity = certificate.validity();
    let (from, to) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    if at < from || at > to {
        return Err(ProofError::Expired {
            what,
            subject: certificate.subject().to_string(),
            at,
            not_before: from,
            not_after: to,
        });
    }
    Ok(())
}
