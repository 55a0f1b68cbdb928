//! CMS SignedData (RFC 5652) with one signer and signed attributes: built around a signing
//! callback (the key may be in a TPM), and verified with the signer's certificate.
//!
//! Only what timestamp tokens and block signatures need is built: ECDSA P-256 with SHA-256,
//! the signer named by issuer and serial number, content-type, message-digest, signing-time and
//! ESS signing-certificate-v2 attributes. Verification accepts what OpenSSL and other TSAs
//! produce: ECDSA P-256/P-384 and RSA PKCS#1 v1.5, with SHA-256/384/512.

use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::{Any, Decode, Encode, Sequence};
use sha2::Digest as _;
use x509_cert::attr::Attribute;
use x509_cert::spki::AlgorithmIdentifierOwned;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo,
};

use crate::oid;
use crate::ProofError;

/// What to sign.
pub(crate) struct ToSign<'a> {
    pub content_type: ObjectIdentifier,
    /// Encapsulated content; `None` for a detached signature.
    pub econtent: Option<&'a [u8]>,
    /// The content the message-digest attribute covers (the econtent, or the detached bytes).
    pub content: &'a [u8],
    /// Seconds since the epoch, for the signing-time attribute.
    pub signing_time: Option<u64>,
    pub signer_certificate: &'a [u8],
    /// Certificates to include (the signer's first, then its chain).
    pub certificates: &'a [Vec<u8>],
}

/// ESS SigningCertificateV2 (RFC 5035): binds the signature to the signer's certificate, which
/// `openssl ts -verify` requires of a timestamp token.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificateV2 {
    certs: Vec<EssCertIdV2>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertIdV2 {
    /// Absent means SHA-256, the DEFAULT (which DER omits).
    #[asn1(optional = "true")]
    hash_algorithm: Option<AlgorithmIdentifierOwned>,
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

/// ESS SigningCertificate (RFC 2634), the SHA-1 form older TSAs write.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct SigningCertificate {
    certs: Vec<EssCertId>,
    #[asn1(optional = "true")]
    policies: Option<Any>,
}

#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
struct EssCertId {
    cert_hash: OctetString,
    #[asn1(optional = "true")]
    issuer_serial: Option<Any>,
}

fn sha256_identifier() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: oid::SHA256,
        parameters: None,
    }
}

fn encoding(what: &'static str, error: der::Error) -> ProofError {
    ProofError::Encoding {
        what,
        reason: error.to_string(),
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, ProofError> {
    let values = SetOfVec::try_from(vec![value]).map_err(|error| encoding("attribute", error))?;
    Ok(Attribute { oid, values })
}

/// Builds the SignedData and returns the DER `ContentInfo`. `sign` receives the SHA-256 of the
/// DER signed attributes and returns a DER ECDSA P-256 signature over it.
pub(crate) fn sign<E: std::fmt::Display>(
    input: &ToSign<'_>,
    sign: impl FnOnce(&[u8; 32]) -> Result<Vec<u8>, E>,
) -> Result<Vec<u8>, ProofError> {
    let signer = x509_cert::Certificate::from_der(input.signer_certificate)
        .map_err(|error| encoding("signer certificate", error))?;
    let mut attributes = vec![
        attribute(
            oid::CONTENT_TYPE,
            Any::encode_from(&input.content_type).map_err(|e| encoding("content type", e))?,
        )?,
        attribute(
            oid::MESSAGE_DIGEST,
            Any::encode_from(
                &OctetString::new(sha2::Sha256::digest(input.content).to_vec())
                    .map_err(|e| encoding("message digest", e))?,
            )
            .map_err(|e| encoding("message digest", e))?,
        )?,
        attribute(
            oid::SIGNING_CERTIFICATE_V2,
            Any::encode_from(&SigningCertificateV2 {
                certs: vec![EssCertIdV2 {
                    hash_algorithm: None,
                    cert_hash: OctetString::new(
                        sha2::Sha256::digest(input.signer_certificate).to_vec(),
                    )
                    .map_err(|e| encoding("certificate hash", e))?,
                    issuer_serial: None,
                }],
                policies: None,
            })
            .map_err(|e| encoding("signing certificate", e))?,
        )?,
    ];
    if let Some(seconds) = input.signing_time {
        let time = x509_cert::time::Time::try_from(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds),
        )
        .map_err(|e| encoding("signing time", e))?;
        attributes.push(attribute(
            oid::SIGNING_TIME,
            Any::encode_from(&time).map_err(|e| encoding("signing time", e))?,
        )?);
    }
    let signed_attrs =
        SetOfVec::try_from(attributes).map_err(|error| encoding("signed attributes", error))?;
    let to_be_signed = signed_attrs
        .to_der()
        .map_err(|error| encoding("signed attributes", error))?;
    let digest: [u8; 32] = sha2::Sha256::digest(&to_be_signed).into();
    let signature = sign(&digest).map_err(|error| ProofError::Signing(error.to_string()))?;

    let signer_info = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: signer.tbs_certificate.issuer.clone(),
            serial_number: signer.tbs_certificate.serial_number.clone(),
        }),
        digest_alg: sha256_identifier(),
        signed_attrs: Some(signed_attrs),
        signature_algorithm: AlgorithmIdentifierOwned {
            oid: oid::ECDSA_SHA256,
            parameters: None,
        },
        signature: OctetString::new(signature).map_err(|e| encoding("signature", e))?,
        unsigned_attrs: None,
    };
    let certificates = input
        .certificates
        .iter()
        .map(|der| {
            x509_cert::Certificate::from_der(der)
                .map(CertificateChoices::Certificate)
                .map_err(|error| encoding("certificate", error))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let signed_data = SignedData {
        version: if input.content_type == oid::DATA {
            CmsVersion::V1
        } else {
            CmsVersion::V3
        },
        digest_algorithms: SetOfVec::try_from(vec![sha256_identifier()])
            .map_err(|e| encoding("digest algorithms", e))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: input.content_type,
            econtent: input
                .econtent
                .map(|bytes| {
                    OctetString::new(bytes.to_vec()).and_then(|octets| Any::encode_from(&octets))
                })
                .transpose()
                .map_err(|e| encoding("content", e))?,
        },
        certificates: if certificates.is_empty() {
            None
        } else {
            Some(CertificateSet(
                SetOfVec::try_from(certificates).map_err(|e| encoding("certificates", e))?,
            ))
        },
        crls: None,
        signer_infos: cms::signed_data::SignerInfos(
            SetOfVec::try_from(vec![signer_info]).map_err(|e| encoding("signer infos", e))?,
        ),
    };
    ContentInfo {
        content_type: oid::SIGNED_DATA,
        content: Any::encode_from(&signed_data).map_err(|e| encoding("signed data", e))?,
    }
    .to_der()
    .map_err(|error| encoding("content info", error))
}

/// A SignedData whose signature verified with the certificate it names.
#[derive(Debug, Clone)]
pub(crate) struct Verified {
    pub content_type: ObjectIdentifier,
    /// The encapsulated content, when not detached.
    pub econtent: Option<Vec<u8>>,
    /// The signer's certificate, DER.
    pub signer: Vec<u8>,
    /// Every certificate the SignedData carried, DER.
    pub certificates: Vec<Vec<u8>>,
    /// The signing-time attribute, seconds since the epoch.
    pub signing_time: Option<i64>,
}

fn malformed(reason: impl Into<String>) -> ProofError {
    ProofError::Malformed(reason.into())
}

/// Verifies a DER `ContentInfo` holding SignedData: one signer, signed attributes whose
/// content type and message digest match the content (encapsulated, or `detached`), the
/// signature by the certificate the signer identifier names (carried, or among `extra`), and
/// the ESS signing-certificate binding when present. Trust in the certificate is the caller's.
pub(crate) fn verify(
    content_info: &[u8],
    detached: Option<&[u8]>,
    extra: &[Vec<u8>],
) -> Result<Verified, ProofError> {
    let info = ContentInfo::from_der(content_info)
        .map_err(|error| malformed(format!("not a CMS ContentInfo: {error}")))?;
    if info.content_type != oid::SIGNED_DATA {
        return Err(malformed(format!(
            "content type {} is not signed-data",
            info.content_type
        )));
    }
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|error| malformed(format!("not a SignedData: {error}")))?;
    let econtent = signed
        .encap_content_info
        .econtent
        .as_ref()
        .map(|any| {
            any.decode_as::<OctetString>()
                .map(OctetString::into_bytes)
                .map_err(|error| malformed(format!("encapsulated content: {error}")))
        })
        .transpose()?;
    let content: &[u8] = match (&econtent, detached) {
        (Some(content), None) => content,
        (None, Some(content)) => content,
        (Some(_), Some(_)) => {
            return Err(malformed(
                "the content is encapsulated, but a detached signature was expected",
            ))
        }
        (None, None) => {
            return Err(malformed(
                "the signature is detached and no content was given",
            ))
        }
    };
    let mut signers = signed.signer_infos.0.iter();
    let (Some(signer_info), None) = (signers.next(), signers.next()) else {
        return Err(malformed("exactly one signer is expected"));
    };
    let certificates: Vec<Vec<u8>> = signed
        .certificates
        .iter()
        .flat_map(|set| set.0.iter())
        .filter_map(|choice| match choice {
            CertificateChoices::Certificate(certificate) => certificate.to_der().ok(),
            CertificateChoices::Other(_) => None,
        })
        .collect();
    let signer = certificates
        .iter()
        .chain(extra)
        .find(|der| names(der, &signer_info.sid))
        .cloned()
        .ok_or(ProofError::SignerUnknown)?;

    let attributes = signer_info
        .signed_attrs
        .as_ref()
        .ok_or_else(|| malformed("the signer has no signed attributes"))?;
    let single = |oid: ObjectIdentifier| -> Result<Option<&Any>, ProofError> {
        let mut found = attributes.iter().filter(|attribute| attribute.oid == oid);
        match (found.next(), found.next()) {
            (None, _) => Ok(None),
            (Some(attribute), None) if attribute.values.len() == 1 => Ok(attribute.values.get(0)),
            _ => Err(malformed(format!(
                "attribute {oid} must appear once with one value"
            ))),
        }
    };
    let content_type: ObjectIdentifier = single(oid::CONTENT_TYPE)?
        .ok_or_else(|| malformed("no content-type attribute"))?
        .decode_as()
        .map_err(|error| malformed(format!("content-type attribute: {error}")))?;
    if content_type != signed.encap_content_info.econtent_type {
        return Err(malformed(
            "the content-type attribute differs from the content's type",
        ));
    }
    let digest_algorithm = Hash::from_oid(signer_info.digest_alg.oid)?;
    let message_digest: OctetString = single(oid::MESSAGE_DIGEST)?
        .ok_or_else(|| malformed("no message-digest attribute"))?
        .decode_as()
        .map_err(|error| malformed(format!("message-digest attribute: {error}")))?;
    if message_digest.as_bytes() != digest_algorithm.digest(content).as_slice() {
        return Err(ProofError::ContentAltered);
    }
    if let Some(binding) = single(oid::SIGNING_CERTIFICATE_V2)? {
        let binding: SigningCertificateV2 = binding
            .decode_as()
            .map_err(|error| malformed(format!("signing-certificate-v2 attribute: {error}")))?;
        let first = binding
            .certs
            .first()
            .ok_or_else(|| malformed("signing-certificate-v2 names no certificate"))?;
        let hash = match &first.hash_algorithm {
            Some(algorithm) => Hash::from_oid(algorithm.oid)?,
            None => Hash::Sha256,
        };
        if first.cert_hash.as_bytes() != hash.digest(&signer).as_slice() {
            return Err(ProofError::CertificateBinding);
        }
    } else if let Some(binding) = single(oid::SIGNING_CERTIFICATE)? {
        use sha1::Digest as _;
        let binding: SigningCertificate = binding
            .decode_as()
            .map_err(|error| malformed(format!("signing-certificate attribute: {error}")))?;
        let first = binding
            .certs
            .first()
            .ok_or_else(|| malformed("signing-certificate names no certificate"))?;
        if first.cert_hash.as_bytes() != sha1::Sha1::digest(&signer).as_slice() {
            return Err(ProofError::CertificateBinding);
        }
    }
    let signing_time = single(oid::SIGNING_TIME)?
        .map(|any| {
            any.to_der()
                .and_then(|der| x509_cert::time::Time::from_der(&der))
                .map(|time| time.to_unix_duration().as_secs() as i64)
                .map_err(|error| malformed(format!("signing-time attribute: {error}")))
        })
        .transpose()?;

    let to_be_signed = attributes
        .to_der()
        .map_err(|error| malformed(format!("signed attributes: {error}")))?;
    verify_signature(
        &signer,
        signer_info.signature_algorithm.oid,
        digest_algorithm,
        &to_be_signed,
        signer_info.signature.as_bytes(),
    )?;
    Ok(Verified {
        content_type,
        econtent,
        signer,
        certificates,
        signing_time,
    })
}

/// Whether the certificate is the one the signer identifier names.
fn names(der: &[u8], sid: &SignerIdentifier) -> bool {
    let Ok(certificate) = x509_cert::Certificate::from_der(der) else {
        return false;
    };
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(id) => {
            certificate.tbs_certificate.issuer == id.issuer
                && certificate.tbs_certificate.serial_number == id.serial_number
        }
        SignerIdentifier::SubjectKeyIdentifier(ski) => crate::trust::parse(der, "certificate")
            .ok()
            .and_then(|parsed| {
                parsed.extensions().iter().find_map(|extension| {
                    match extension.parsed_extension() {
                        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                            Some(id.0 == ski.0.as_bytes())
                        }
                        _ => None,
                    }
                })
            })
            .unwrap_or(false),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub(crate) fn from_oid(oid: ObjectIdentifier) -> Result<Self, ProofError> {
        match oid {
            oid::SHA256 => Ok(Self::Sha256),
            oid::SHA384 => Ok(Self::Sha384),
            oid::SHA512 => Ok(Self::Sha512),
            other => Err(ProofError::Algorithm(format!("digest {other}"))),
        }
    }

    pub(crate) fn digest(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha256 => sha2::Sha256::digest(bytes).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(bytes).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(bytes).to_vec(),
        }
    }
}

fn verify_signature(
    signer: &[u8],
    signature_algorithm: ObjectIdentifier,
    digest: Hash,
    message: &[u8],
    signature: &[u8],
) -> Result<(), ProofError> {
    use ring::signature as ring_sig;
    let certificate = crate::trust::parse(signer, "signer certificate")?;
    let key = certificate.public_key();
    let key_bytes: &[u8] = &key.subject_public_key.data;
    let key_algorithm = key.algorithm.algorithm.to_id_string();
    let curve = key
        .algorithm
        .parameters
        .as_ref()
        .and_then(|parameters| parameters.as_oid().ok())
        .map(|oid| oid.to_id_string());
    let algorithm: &dyn ring_sig::VerificationAlgorithm = match (
        key_algorithm.as_str(),
        curve.as_deref(),
        signature_algorithm,
    ) {
        (oid::EC_KEY, Some(oid::P256), oid::ECDSA_SHA256) => &ring_sig::ECDSA_P256_SHA256_ASN1,
        (oid::EC_KEY, Some(oid::P256), oid::ECDSA_SHA384) => &ring_sig::ECDSA_P256_SHA384_ASN1,
        (oid::EC_KEY, Some(oid::P384), oid::ECDSA_SHA256) => &ring_sig::ECDSA_P384_SHA256_ASN1,
        (oid::EC_KEY, Some(oid::P384), oid::ECDSA_SHA384) => &ring_sig::ECDSA_P384_SHA384_ASN1,
        (oid::RSA_KEY, _, algorithm) => match (algorithm, digest) {
            (oid::RSA_ENCRYPTION, Hash::Sha256) | (oid::RSA_SHA256, _) => {
                &ring_sig::RSA_PKCS1_2048_8192_SHA256
            }
            (oid::RSA_ENCRYPTION, Hash::Sha384) | (oid::RSA_SHA384, _) => {
                &ring_sig::RSA_PKCS1_2048_8192_SHA384
            }
            (oid::RSA_ENCRYPTION, Hash::Sha512) | (oid::RSA_SHA512, _) => {
                &ring_sig::RSA_PKCS1_2048_8192_SHA512
            }
            (other, _) => return Err(ProofError::Algorithm(format!("RSA signature {other}"))),
        },
        (key, curve, algorithm) => {
            return Err(ProofError::Algorithm(format!(
                "key {key} (curve {curve:?}) with signature {algorithm}"
            )))
        }
    };
    ring_sig::UnparsedPublicKey::new(algorithm, key_bytes)
        .verify(message, signature)
        .map_err(|_| ProofError::BadSignature)
}

/// The message-digest attribute of the (only) signer, unverified.
pub(crate) fn message_digest(content_info: &[u8]) -> Result<[u8; 32], ProofError> {
    let info = ContentInfo::from_der(content_info)
        .map_err(|error| malformed(format!("not a CMS ContentInfo: {error}")))?;
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|error| malformed(format!("not a SignedData: {error}")))?;
    let signer = signed
        .signer_infos
        .0
        .get(0)
        .ok_or_else(|| malformed("no signer"))?;
    let attribute = signer
        .signed_attrs
        .as_ref()
        .and_then(|attributes| attributes.iter().find(|a| a.oid == oid::MESSAGE_DIGEST))
        .and_then(|attribute| attribute.values.get(0))
        .ok_or_else(|| malformed("no message-digest attribute"))?;
    let digest: OctetString = attribute
        .decode_as()
        .map_err(|error| malformed(format!("message-digest attribute: {error}")))?;
    digest
        .as_bytes()
        .try_into()
        .map_err(|_| malformed("the message digest is not SHA-256"))
}
