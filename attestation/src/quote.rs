//! The verifier's appraisal of a TPM quote: `TPMS_ATTEST` and `TPMT_SIGNATURE` parsed from the
//! bytes the device sent (sans-I/O, typed errors), the AK's signature, the TPM_GENERATED magic
//! and attestation type, the nonce, and the PCR digest against the PCR values the verifier
//! expects (from the replayed event log). The clock, reset and restart counters are returned so
//! that the caller can refuse them going back.

use rsa::RsaPublicKey;
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// TPM_GENERATED_VALUE: the TPM made this structure itself.
pub const TPM_GENERATED: u32 = 0xFF54_4347;
const ST_ATTEST_QUOTE: u16 = 0x8018;
const ST_ATTEST_CERTIFY: u16 = 0x8017;
const ALG_RSASSA: u16 = 0x0014;
const ALG_SHA256: u16 = 0x000B;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum QuoteError {
    #[error("the attestation structure is truncated at byte {0}")]
    Truncated(usize),
    #[error("{0} unexpected bytes after the attestation structure")]
    TrailingBytes(usize),
    #[error("magic {found:#010x} is not TPM_GENERATED: the TPM did not make this structure")]
    NotTpmGenerated { found: u32 },
    #[error("attestation type {found:#06x} where {expected:#06x} was expected")]
    WrongType { expected: u16, found: u16 },
    #[error("signature algorithm {algorithm:#06x} with hash {hash:#06x} is not RSASSA-SHA256")]
    UnsupportedSignature { algorithm: u16, hash: u16 },
    #[error("the AK's signature does not verify")]
    BadSignature,
    #[error("the quote carries nonce {found}, the verifier issued {expected}")]
    NonceMismatch { expected: String, found: String },
    #[error(
        "the quote covers bank {bank:#06x} PCRs {quoted:?}, the verifier asked for {expected:?}"
    )]
    SelectionMismatch {
        bank: u16,
        quoted: Vec<u8>,
        expected: Vec<u8>,
    },
    #[error("the quoted PCR digest {quoted} differs from the expected PCR values' {expected}")]
    PcrDigestMismatch { quoted: String, expected: String },
}

/// TPMS_CLOCK_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockInfo {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
}

/// What the attestation structure attests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attested {
    Quote {
        /// (bank, selected PCRs ascending) per selection.
        selection: Vec<(u16, Vec<u8>)>,
        pcr_digest: Vec<u8>,
    },
    Certify {
        name: Vec<u8>,
        qualified_name: Vec<u8>,
    },
    Other(u16),
}

/// A parsed `TPMS_ATTEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attest {
    pub attest_type: u16,
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock: ClockInfo,
    pub firmware_version: u64,
    pub attested: Attested,
}

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], QuoteError> {
        let end = self
            .position
            .checked_add(count)
            .filter(|end| *end <= self.bytes.len())
            .ok_or(QuoteError::Truncated(self.position))?;
        let slice = &self.bytes[self.position..end];
        self.position = end;
        Ok(slice)
    }
    fn u8(&mut self) -> Result<u8, QuoteError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, QuoteError> {
        let bytes = self.take(2)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }
    fn u32(&mut self) -> Result<u32, QuoteError> {
        let bytes = self.take(4)?;
        Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
    fn u64(&mut self) -> Result<u64, QuoteError> {
        Ok((u64::from(self.u32()?) << 32) | u64::from(self.u32()?))
    }
    fn sized(&mut self) -> Result<Vec<u8>, QuoteError> {
        let size = usize::from(self.u16()?);
        Ok(self.take(size)?.to_vec())
    }
}

/// The common head of a marshalled `TPMT_PUBLIC`: type, name algorithm, object attributes and
/// the authorisation policy digest.
fn public_head(reader: &mut Reader<'_>) -> Result<(u16, u16, u32, Vec<u8>), QuoteError> {
    let key_type = reader.u16()?;
    let name_alg = reader.u16()?;
    let attributes = reader.u32()?;
    let policy = reader.sized()?;
    Ok((key_type, name_alg, attributes, policy))
}

/// Parses a marshalled `TPMS_ATTEST` (tpm2-tools' `quote.msg`).
pub fn parse_attest(bytes: &[u8]) -> Result<Attest, QuoteError> {
    let mut reader = Reader { bytes, position: 0 };
    let magic = reader.u32()?;
    if magic != TPM_GENERATED {
        return Err(QuoteError::NotTpmGenerated { found: magic });
    }
    let attest_type = reader.u16()?;
    let qualified_signer = reader.sized()?;
    let extra_data = reader.sized()?;
    let clock = ClockInfo {
        clock: reader.u64()?,
        reset_count: reader.u32()?,
        restart_count: reader.u32()?,
        safe: reader.u8()? != 0,
    };
    let firmware_version = reader.u64()?;
    let attested = match attest_type {
        ST_ATTEST_QUOTE => {
            let count = reader.u32()?;
            // A TPM has at most a handful of banks; a huge count is a lie about the length.
            if count as usize > bytes.len() / 3 {
                return Err(QuoteError::Truncated(reader.position));
            }
            let mut selection = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let bank = reader.u16()?;
                let size = usize::from(reader.u8()?);
                let bitmap = reader.take(size)?;
                let pcrs = (0..size * 8)
                    .filter(|pcr| bitmap[pcr / 8] & (1 << (pcr % 8)) != 0)
                    .map(|pcr| pcr as u8)
                    .collect();
                selection.push((bank, pcrs));
            }
            Attested::Quote {
                selection,
                pcr_digest: reader.sized()?,
            }
        }
        ST_ATTEST_CERTIFY => Attested::Certify {
            name: reader.sized()?,
            qualified_name: reader.sized()?,
        },
        other => {
            // Other structures are not parsed further; their bytes are still signed.
            reader.position = bytes.len();
            Attested::Other(other)
        }
    };
    if reader.position != bytes.len() {
        return Err(QuoteError::TrailingBytes(bytes.len() - reader.position));
    }
    Ok(Attest {
        attest_type,
        qualified_signer,
        extra_data,
        clock,
        firmware_version,
        attested,
    })
}

/// Checks a marshalled `TPMT_SIGNATURE` (RSASSA-SHA256) by the AK over the attest bytes.
pub fn verify_signature(
    attest: &[u8],
    signature: &[u8],
    ak: &RsaPublicKey,
) -> Result<(), QuoteError> {
    let mut reader = Reader {
        bytes: signature,
        position: 0,
    };
    let algorithm = reader.u16()?;
    let hash = reader.u16()?;
    if algorithm != ALG_RSASSA || hash != ALG_SHA256 {
        return Err(QuoteError::UnsupportedSignature { algorithm, hash });
    }
    let value = reader.sized()?;
    if reader.position != signature.len() {
        return Err(QuoteError::TrailingBytes(signature.len() - reader.position));
    }
    // ring's RSA verification is about five times faster than the rsa crate's, and the
    // verifier checks every quote of every device (docs/benchmarks.md).
    use rsa::traits::PublicKeyParts;
    let (modulus, exponent) = (ak.n().to_bytes_be(), ak.e().to_bytes_be());
    ring::signature::RsaPublicKeyComponents {
        n: &modulus,
        e: &exponent,
    }
    .verify(&ring::signature::RSA_PKCS1_2048_8192_SHA256, attest, &value)
    .map_err(|_| QuoteError::BadSignature)
}

/// Checks that `attest_bytes` were signed by `ak` and carry `nonce`: the structure is the TPM's
/// own and fresh. Nothing else about it is judged yet; a verifier changes what it knows of a
/// device only after this passed.
pub fn authenticate(
    attest_bytes: &[u8],
    signature: &[u8],
    ak: &RsaPublicKey,
    nonce: &[u8],
) -> Result<Attest, QuoteError> {
    verify_signature(attest_bytes, signature, ak)?;
    let attest = parse_attest(attest_bytes)?;
    if attest.extra_data != nonce {
        return Err(QuoteError::NonceMismatch {
            expected: hex::encode(nonce),
            found: hex::encode(&attest.extra_data),
        });
    }
    Ok(attest)
}

/// Checks an authenticated structure is a quote of `expected_pcrs` (SHA-256 bank, PCR index and
/// value, ascending): the selection and the digest of their values.
pub fn check_quote(attest: &Attest, expected_pcrs: &[(u8, [u8; 32])]) -> Result<(), QuoteError> {
    let Attested::Quote {
        selection,
        pcr_digest,
    } = &attest.attested
    else {
        return Err(QuoteError::WrongType {
            expected: ST_ATTEST_QUOTE,
            found: attest.attest_type,
        });
    };
    let expected: Vec<u8> = expected_pcrs.iter().map(|(pcr, _)| *pcr).collect();
    match &selection[..] {
        [(ALG_SHA256, quoted)] if *quoted == expected => {}
        _ => {
            let (bank, quoted) = selection.first().cloned().unwrap_or((0, Vec::new()));
            return Err(QuoteError::SelectionMismatch {
                bank,
                quoted,
                expected,
            });
        }
    }
    let digest = pcr_digest_of(expected_pcrs.iter().map(|(_, value)| value.as_slice()));
    if digest.as_slice() != pcr_digest.as_slice() {
        return Err(QuoteError::PcrDigestMismatch {
            quoted: hex::encode(pcr_digest),
            expected: hex::encode(digest),
        });
    }
    Ok(())
}

/// Appraises a quote: signature by `ak`, TPM_GENERATED, type quote, `nonce`, the selection of
/// `expected_pcrs` and the digest of their values ([`authenticate`], then [`check_quote`]).
/// Returns the parsed structure (for the clock checks).
pub fn appraise_quote(
    attest_bytes: &[u8],
    signature: &[u8],
    ak: &RsaPublicKey,
    nonce: &[u8],
    expected_pcrs: &[(u8, [u8; 32])],
) -> Result<Attest, QuoteError> {
    let attest = authenticate(attest_bytes, signature, ak, nonce)?;
    check_quote(&attest, expected_pcrs)?;
    Ok(attest)
}

/// Object attributes (TPMA_OBJECT) a device key must have and must not have.
mod attribute {
    pub const FIXED_TPM: u32 = 1 << 1;
    pub const FIXED_PARENT: u32 = 1 << 4;
    pub const SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
    pub const USER_WITH_AUTH: u32 = 1 << 6;
    pub const RESTRICTED: u32 = 1 << 16;
    pub const DECRYPT: u32 = 1 << 17;
    pub const SIGN: u32 = 1 << 18;

    /// A signing key that cannot leave the TPM: fixedTPM, fixedParent, made in the TPM, sign,
    /// not decrypt, and restricted exactly when `restricted` (an AK) or not (a device key).
    /// Returns what is missing.
    pub fn require(attributes: u32, restricted: bool) -> Result<(), &'static str> {
        let restriction = if restricted {
            "restricted"
        } else {
            "the absence of restricted"
        };
        for (bit, set, what) in [
            (FIXED_TPM, true, "fixedTPM"),
            (FIXED_PARENT, true, "fixedParent"),
            (
                SENSITIVE_DATA_ORIGIN,
                true,
                "sensitiveDataOrigin (made in the TPM)",
            ),
            (SIGN, true, "sign"),
            (DECRYPT, false, "the absence of decrypt"),
            (RESTRICTED, restricted, restriction),
        ] {
            if (attributes & bit != 0) != set {
                return Err(what);
            }
        }
        Ok(())
    }
}

/// Why a device key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DeviceKeyError {
    #[error(transparent)]
    Attestation(#[from] QuoteError),
    #[error("the device key's public area is malformed at byte {0}")]
    Malformed(usize),
    #[error("the device key is not an ECC P-256 ECDSA-SHA256 key")]
    WrongKeyType,
    #[error("the device key's attributes {attributes:#010x} lack {missing}")]
    Attributes {
        attributes: u32,
        missing: &'static str,
    },
    #[error("the certified name is not the name of the device key sent")]
    NameMismatch,
}

/// The device key, once certified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifiedKey {
    pub x: Vec<u8>,
    pub y: Vec<u8>,
    /// The key's authorisation policy digest: what the TPM requires before it signs with it.
    pub auth_policy: Vec<u8>,
}

/// Checks a device key against an authenticated TPM2_Certify: its public area (`TPMT_PUBLIC`)
/// says ECC P-256 ECDSA-SHA256, fixedTPM, fixedParent, TPM-generated, sign only, usable only
/// through its policy (userWithAuth clear: no password opens it); and the AK certified exactly
/// this key (its name). What the policy must be is the caller's to judge.
pub fn check_certify(public: &[u8], attest: &Attest) -> Result<CertifiedKey, DeviceKeyError> {
    let Attested::Certify { name, .. } = &attest.attested else {
        return Err(QuoteError::WrongType {
            expected: ST_ATTEST_CERTIFY,
            found: attest.attest_type,
        }
        .into());
    };
    let mut expected_name = vec![0x00, 0x0B];
    expected_name.extend_from_slice(&Sha256::digest(public));
    if *name != expected_name {
        return Err(DeviceKeyError::NameMismatch);
    }
    let mut reader = Reader {
        bytes: public,
        position: 0,
    };
    let malformed = |reader: &Reader<'_>| DeviceKeyError::Malformed(reader.position);
    let (key_type, name_alg, attributes, auth_policy) =
        public_head(&mut reader).map_err(|_| malformed(&reader))?;
    // TPM_ALG_ECC, then symmetric NULL, scheme ECDSA with SHA-256, curve NIST P-256, KDF NULL.
    let symmetric = reader.u16().map_err(|_| malformed(&reader))?;
    let scheme = reader.u16().map_err(|_| malformed(&reader))?;
    let scheme_hash = reader.u16().map_err(|_| malformed(&reader))?;
    let curve = reader.u16().map_err(|_| malformed(&reader))?;
    let kdf = reader.u16().map_err(|_| malformed(&reader))?;
    if (
        key_type,
        name_alg,
        symmetric,
        scheme,
        scheme_hash,
        curve,
        kdf,
    ) != (
        0x0023, ALG_SHA256, 0x0010, 0x0018, ALG_SHA256, 0x0003, 0x0010,
    ) {
        return Err(DeviceKeyError::WrongKeyType);
    }
    let x = reader.sized().map_err(|_| malformed(&reader))?;
    let y = reader.sized().map_err(|_| malformed(&reader))?;
    if reader.position != public.len() {
        return Err(DeviceKeyError::Malformed(reader.position));
    }
    attribute::require(attributes, false).map_err(|missing| DeviceKeyError::Attributes {
        attributes,
        missing,
    })?;
    if attributes & attribute::USER_WITH_AUTH != 0 {
        return Err(DeviceKeyError::Attributes {
            attributes,
            missing: "the absence of userWithAuth (the key would sign for anyone with its \
                      empty password, in any boot)",
        });
    }
    Ok(CertifiedKey { x, y, auth_policy })
}

/// Checks a device key: the AK's signature over TPM2_Certify with `nonce` ([`authenticate`]),
/// then [`check_certify`]. Returns the key and the certification's structure (its clock).
pub fn appraise_certify(
    public: &[u8],
    attest_bytes: &[u8],
    signature: &[u8],
    ak: &RsaPublicKey,
    nonce: &[u8],
) -> Result<(CertifiedKey, Attest), DeviceKeyError> {
    let attest = authenticate(attest_bytes, signature, ak, nonce)?;
    let key = check_certify(public, &attest)?;
    Ok((key, attest))
}

/// Why an AK's public area was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AkError {
    #[error("the AK's public area is malformed at byte {0}")]
    Malformed(usize),
    #[error("the AK is not an RSA-2048 RSASSA-SHA256 signing key with a SHA-256 name")]
    WrongKeyType,
    #[error("the AK's attributes {attributes:#010x} lack {missing}")]
    Attributes {
        attributes: u32,
        missing: &'static str,
    },
    #[error("the AK's RSA key is unusable: {0}")]
    Key(String),
}

/// A parsed AK: its RSA key and its name. Credential activation is made for the name, which
/// covers the attributes, so once activated the TPM itself vouches that the key is restricted
/// and never leaves it.
#[derive(Debug, Clone)]
pub struct AkPublic {
    pub key: RsaPublicKey,
    pub name: Vec<u8>,
}

/// Parses an AK's marshalled `TPMT_PUBLIC` and checks it is what a quote key must be: RSA-2048,
/// RSASSA-SHA256, restricted, sign only, fixedTPM, fixedParent, made in the TPM.
pub fn parse_ak_public(public: &[u8]) -> Result<AkPublic, AkError> {
    let mut reader = Reader {
        bytes: public,
        position: 0,
    };
    let malformed = |reader: &Reader<'_>| AkError::Malformed(reader.position);
    let (key_type, name_alg, attributes, _policy) =
        public_head(&mut reader).map_err(|_| malformed(&reader))?;
    // TPMS_RSA_PARMS: symmetric NULL, scheme RSASSA with SHA-256, 2048 bits, exponent.
    let symmetric = reader.u16().map_err(|_| malformed(&reader))?;
    let scheme = reader.u16().map_err(|_| malformed(&reader))?;
    let scheme_hash = reader.u16().map_err(|_| malformed(&reader))?;
    let bits = reader.u16().map_err(|_| malformed(&reader))?;
    let exponent = reader.u32().map_err(|_| malformed(&reader))?;
    let modulus = reader.sized().map_err(|_| malformed(&reader))?;
    if reader.position != public.len() {
        return Err(AkError::Malformed(reader.position));
    }
    if (key_type, name_alg, symmetric, scheme, scheme_hash, bits)
        != (0x0001, ALG_SHA256, 0x0010, ALG_RSASSA, ALG_SHA256, 2048)
        || modulus.len() != 256
    {
        return Err(AkError::WrongKeyType);
    }
    attribute::require(attributes, true).map_err(|missing| AkError::Attributes {
        attributes,
        missing,
    })?;
    let exponent = if exponent == 0 { 65_537 } else { exponent };
    let key = RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(&modulus),
        rsa::BigUint::from(exponent),
    )
    .map_err(|error| AkError::Key(error.to_string()))?;
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(public));
    Ok(AkPublic { key, name })
}

/// The SHA-256 digest of PCR values in selection order: what a quote's `pcrDigest` holds.
pub fn pcr_digest<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    pcr_digest_of(values)
}

fn pcr_digest_of<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for value in values {
        hasher.update(value);
    }
    hasher.finalize().into()
}
