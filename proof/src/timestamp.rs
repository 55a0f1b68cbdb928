//! RFC 3161 time-stamping of block digests: the request, the checks on the response, and a
//! small TSA (`edgeward tsa serve`) answering like the platform's.
//!
//! The imprint is the block digest itself with algorithm SHA-256: the platform files a token
//! under `<imprint hex>.sha256.tsr`, so the imprint is what links it to its Parquet block.

use cmpv2::status::{PkiStatus, PkiStatusInfo};
use der::asn1::{GeneralizedTime, Int, OctetString, Utf8StringRef};
use der::{Decode, Encode};
use x509_tsp::{Accuracy, MessageImprint, TimeStampReq, TimeStampResp, TspVersion, TstInfo};

use crate::signed_data::{self, Hash, ToSign};
use crate::trust::TrustAnchors;
use crate::{oid, ProofError};

/// A request nonce: 63 random bits, positive as an ASN.1 INTEGER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TsaNonce(u64);

impl TsaNonce {
    pub fn from_random(bytes: [u8; 8]) -> Self {
        Self(u64::from_be_bytes(bytes) >> 1)
    }

    pub fn value(self) -> u64 {
        self.0
    }

    fn to_int(self) -> Result<Int, ProofError> {
        integer(self.0)
    }
}

fn integer(value: u64) -> Result<Int, ProofError> {
    // The DER of the unsigned value, decoded back: the minimal two's-complement form.
    let der = der::asn1::Uint::new(&value.to_be_bytes())
        .and_then(|uint| uint.to_der())
        .and_then(|der| Int::from_der(&der))
        .map_err(|error| ProofError::Encoding {
            what: "integer",
            reason: error.to_string(),
        })?;
    Ok(der)
}

fn sha256_imprint(digest: &[u8; 32]) -> Result<MessageImprint, ProofError> {
    Ok(MessageImprint {
        hash_algorithm: x509_cert::spki::AlgorithmIdentifier {
            oid: oid::SHA256,
            parameters: None,
        },
        hashed_message: OctetString::new(digest.to_vec()).map_err(|error| {
            ProofError::Encoding {
                what: "imprint",
                reason: error.to_string(),
            }
        })?,
    })
}

/// The DER `TimeStampReq` for a block digest, with the nonce and certReq set (so that the
/// TSA's certificate comes back in the token and the token can be checked here).
pub fn request(digest: &[u8; 32], nonce: TsaNonce) -> Result<Vec<u8>, ProofError> {
    TimeStampReq {
        version: TspVersion::V1,
        message_imprint: sha256_imprint(digest)?,
        req_policy: None,
        nonce: Some(nonce.to_int()?),
        cert_req: true,
        extensions: None,
    }
    .to_der()
    .map_err(|error| ProofError::Encoding {
        what: "timestamp request",
        reason: error.to_string(),
    })
}

/// A response that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedTimestamp {
    /// The TSA's time, seconds since the epoch.
    pub gen_time: i64,
    /// Serial number, hex.
    pub serial: String,
    pub policy: String,
    /// The TSA certificate's subject.
    pub tsa: String,
    /// The trust anchor the TSA certificate chains to.
    pub anchor: String,
}

/// Checks a DER `TimeStampResp` for `digest`: granted status; a token whose TSTInfo has the
/// SHA-256 imprint of the digest and (when given) the request's nonce; the token's signature by
/// a certificate that is for time-stamping only (critical EKU, as RFC 3161 §2.3 demands), bound
/// by the ESS attribute, valid at the token's time and chaining to `anchors`. `untrusted` are
/// certificates the TSA publishes beside its tokens (the platform's TSA includes its own only
/// when asked).
pub fn verify_response(
    response: &[u8],
    digest: &[u8; 32],
    nonce: Option<TsaNonce>,
    anchors: &TrustAnchors,
    untrusted: &[Vec<u8>],
) -> Result<VerifiedTimestamp, ProofError> {
    let response = TimeStampResp::from_der(response)
        .map_err(|error| ProofError::Malformed(format!("not a TimeStampResp: {error}")))?;
    if !matches!(
        response.status.status,
        PkiStatus::Accepted | PkiStatus::GrantedWithMods
    ) {
        return Err(ProofError::TsaRefused {
            status: format!("{:?}", response.status.status),
            reason: response.status.status_string.as_ref().map(|texts| {
                texts
                    .iter()
                    .map(|text| text.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join("; ")
            }),
        });
    }
    let token = response
        .time_stamp_token
        .ok_or_else(|| ProofError::Malformed("granted, but no token".into()))?;
    let token = token.to_der().map_err(|error| ProofError::Encoding {
        what: "token",
        reason: error.to_string(),
    })?;
    verify_token(&token, digest, nonce, anchors, untrusted)
}

/// The checks of [`verify_response`] on a DER `TimeStampToken` (a CMS ContentInfo).
pub fn verify_token(
    token: &[u8],
    digest: &[u8; 32],
    nonce: Option<TsaNonce>,
    anchors: &TrustAnchors,
    untrusted: &[Vec<u8>],
) -> Result<VerifiedTimestamp, ProofError> {
    let verified = signed_data::verify(token, None, untrusted)?;
    if verified.content_type != oid::TST_INFO {
        return Err(ProofError::Malformed(format!(
            "the token's content is {}, not TSTInfo",
            verified.content_type
        )));
    }
    let econtent = verified
        .econtent
        .as_deref()
        .ok_or_else(|| ProofError::Malformed("the token carries no TSTInfo".into()))?;
    let info = TstInfo::from_der(econtent)
        .map_err(|error| ProofError::Malformed(format!("TSTInfo: {error}")))?;
    let imprint = &info.message_imprint;
    if imprint.hash_algorithm.oid != oid::SHA256
        || imprint.hashed_message.as_bytes() != digest.as_slice()
    {
        return Err(ProofError::WrongImprint {
            expected: format!("sha256:{}", hex::encode_upper(digest)),
            found: format!(
                "{}:{}",
                if imprint.hash_algorithm.oid == oid::SHA256 {
                    "sha256".to_owned()
                } else {
                    imprint.hash_algorithm.oid.to_string()
                },
                hex::encode_upper(imprint.hashed_message.as_bytes())
            ),
        });
    }
    if let Some(nonce) = nonce {
        let expected = nonce.to_int()?;
        if info.nonce.as_ref() != Some(&expected) {
            return Err(ProofError::WrongNonce {
                expected: hex::encode_upper(expected.as_bytes()),
                found: info
                    .nonce
                    .as_ref()
                    .map_or("none".into(), |found| hex::encode_upper(found.as_bytes())),
            });
        }
    }
    let certificate = crate::trust::parse(&verified.signer, "TSA certificate")?;
    let subject = certificate.subject().to_string();
    match certificate.extended_key_usage() {
        Ok(Some(eku))
            if eku.critical
                && eku.value.time_stamping
                && !eku.value.any
                && !eku.value.server_auth
                && !eku.value.client_auth
                && !eku.value.code_signing
                && !eku.value.email_protection
                && !eku.value.ocsp_signing
                && eku.value.other.is_empty() => {}
        Ok(Some(eku)) => {
            return Err(ProofError::NotTimestamping {
                subject,
                reason: if eku.value.time_stamping {
                    "its extended key usage must be time-stamping alone, and critical".into()
                } else {
                    "its extended key usage lacks time-stamping".into()
                },
            })
        }
        Ok(None) => {
            return Err(ProofError::NotTimestamping {
                subject,
                reason: "it has no extended key usage".into(),
            })
        }
        Err(error) => {
            return Err(ProofError::NotTimestamping {
                subject,
                reason: error.to_string(),
            })
        }
    }
    let gen_time = info.gen_time.to_unix_duration().as_secs() as i64;
    let mut pool = verified.certificates.clone();
    pool.extend(untrusted.iter().cloned());
    let anchor = anchors.verify_chain(&verified.signer, &pool, gen_time)?;
    Ok(VerifiedTimestamp {
        gen_time,
        serial: hex::encode_upper(info.serial_number.as_bytes()),
        policy: info.policy.to_string(),
        tsa: subject,
        anchor,
    })
}

/// The imprint of a DER `TimeStampResp` without checking anything: how the platform's
/// signature recorder names the file it stores the response under.
pub fn response_imprint(response: &[u8]) -> Result<[u8; 32], ProofError> {
    let response = TimeStampResp::from_der(response)
        .map_err(|error| ProofError::Malformed(format!("not a TimeStampResp: {error}")))?;
    let token = response
        .time_stamp_token
        .ok_or_else(|| ProofError::Malformed("no token".into()))?;
    let signed: cms::signed_data::SignedData = token
        .content
        .decode_as()
        .map_err(|error| ProofError::Malformed(format!("not a SignedData: {error}")))?;
    let econtent = signed
        .encap_content_info
        .econtent
        .ok_or_else(|| ProofError::Malformed("no TSTInfo".into()))?
        .decode_as::<OctetString>()
        .map_err(|error| ProofError::Malformed(format!("TSTInfo: {error}")))?;
    let info = TstInfo::from_der(econtent.as_bytes())
        .map_err(|error| ProofError::Malformed(format!("TSTInfo: {error}")))?;
    if info.message_imprint.hash_algorithm.oid != oid::SHA256 {
        return Err(ProofError::Algorithm(format!(
            "imprint {}",
            info.message_imprint.hash_algorithm.oid
        )));
    }
    info.message_imprint
        .hashed_message
        .as_bytes()
        .try_into()
        .map_err(|_| ProofError::Malformed("a SHA-256 imprint is 32 bytes".into()))
}

/// A time-stamping authority: its certificate (EKU time-stamping), the chain above it, and an
/// ECDSA P-256 key. For tests and demos; the platform runs its own.
pub struct Tsa {
    certificate: Vec<u8>,
    chain: Vec<Vec<u8>>,
    key: p256::ecdsa::SigningKey,
}

impl std::fmt::Debug for Tsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsa").finish_non_exhaustive()
    }
}

impl Tsa {
    /// From the certificate (DER), its chain (DER, the root last) and the key (PKCS#8 DER).
    pub fn new(
        certificate: Vec<u8>,
        chain: Vec<Vec<u8>>,
        key_pkcs8: &[u8],
    ) -> Result<Self, ProofError> {
        use p256::pkcs8::DecodePrivateKey;
        crate::trust::parse(&certificate, "TSA certificate")?;
        let key = p256::ecdsa::SigningKey::from_pkcs8_der(key_pkcs8).map_err(|error| {
            ProofError::Certificate {
                what: "TSA key",
                reason: format!("not a P-256 PKCS#8 key: {error}"),
            }
        })?;
        Ok(Self {
            certificate,
            chain,
            key,
        })
    }

    /// Answers a DER `TimeStampReq` with a DER `TimeStampResp`: a token for a well-formed
    /// request with a SHA-2 imprint and no other policy than ours, else a rejection saying why.
    /// `serial` must be unique per token; `now` is seconds since the epoch.
    pub fn respond(&self, request: &[u8], serial: u64, now: u64) -> Vec<u8> {
        match self.token(request, serial, now) {
            Ok(token) => token,
            Err(reason) => rejection(&reason),
        }
    }

    fn token(&self, request: &[u8], serial: u64, now: u64) -> Result<Vec<u8>, String> {
        let request =
            TimeStampReq::from_der(request).map_err(|error| format!("bad request: {error}"))?;
        let imprint = &request.message_imprint;
        let hash = Hash::from_oid(imprint.hash_algorithm.oid).map_err(|_| {
            format!(
                "unsupported imprint algorithm {}",
                imprint.hash_algorithm.oid
            )
        })?;
        if imprint.hashed_message.as_bytes().len() != hash.digest(&[]).len() {
            return Err("the imprint's length does not match its algorithm".into());
        }
        if let Some(policy) = request.req_policy {
            if policy != oid::SIGSTORE_TSA_POLICY {
                return Err(format!("policy {policy} is not offered"));
            }
        }
        let gen_time = GeneralizedTime::from_unix_duration(std::time::Duration::from_secs(now))
            .map_err(|error| format!("time: {error}"))?;
        let info = TstInfo {
            version: TspVersion::V1,
            policy: oid::SIGSTORE_TSA_POLICY,
            message_imprint: request.message_imprint.clone(),
            serial_number: integer(serial).map_err(|error| error.to_string())?,
            gen_time,
            accuracy: Some(Accuracy {
                seconds: Some(1),
                millis: None,
                micros: None,
            }),
            ordering: false,
            nonce: request.nonce.clone(),
            tsa: None,
            extensions: None,
        }
        .to_der()
        .map_err(|error| format!("TSTInfo: {error}"))?;
        let mut certificates = Vec::new();
        if request.cert_req {
            certificates.push(self.certificate.clone());
            certificates.extend(self.chain.iter().cloned());
        }
        let token = signed_data::sign(
            &ToSign {
                content_type: oid::TST_INFO,
                econtent: Some(&info),
                content: &info,
                signing_time: Some(now),
                signer_certificate: &self.certificate,
                certificates: &certificates,
            },
            |digest| {
                use p256::ecdsa::signature::hazmat::PrehashSigner;
                PrehashSigner::<p256::ecdsa::Signature>::sign_prehash(&self.key, digest)
                    .map(|signature| signature.to_der().as_bytes().to_vec())
            },
        )
        .map_err(|error| error.to_string())?;
        let token =
            x509_tsp::TimeStampToken::from_der(&token).map_err(|error| error.to_string())?;
        TimeStampResp {
            status: PkiStatusInfo {
                status: PkiStatus::Accepted,
                status_string: None,
                fail_info: None,
            },
            time_stamp_token: Some(token),
        }
        .to_der()
        .map_err(|error| error.to_string())
    }
}

fn rejection(reason: &str) -> Vec<u8> {
    let text = Utf8StringRef::new(reason).ok();
    let response = TimeStampResp {
        status: PkiStatusInfo {
            status: PkiStatus::Rejection,
            status_string: text.map(|text| vec![text]),
            fail_info: None,
        },
        time_stamp_token: None,
    };
    // A status alone always encodes; the empty fallback is a malformed answer clients refuse.
    response.to_der().unwrap_or_default()
}
