//! TPM2_MakeCredential in pure Rust, for the verifier, which has no TPM: a secret only the TPM
//! holding a given EK can recover, and only for an AK whose name it was made for
//! (TPM 2.0 Part 1 §24; KDFa from Part 1 §11.4.10.2). The device recovers it with
//! ActivateCredential ([`crate::tpm::activate_credential`]), which proves the AK lives in the
//! same TPM as the EK.

use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use hmac::{Hmac, Mac};
use rand::RngCore;
use rsa::{BigUint, Oaep, RsaPublicKey};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

/// Which endorsement key: the TCG default templates, RSA-2048 (L-1) or ECC NIST P-256 (L-2). A
/// verifier registers one kind only, so that a TPM carrying certificates for both cannot hold
/// two identities (docs/decisions/0019).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EkKind {
    Rsa,
    Ecc,
}

impl EkKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Rsa => "rsa",
            Self::Ecc => "ecc",
        }
    }

    /// What the kind means, for people reading a refusal.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Rsa => "an RSA-2048 EK",
            Self::Ecc => "an ECC P-256 EK",
        }
    }
}

impl std::fmt::Display for EkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an EK public key sent by a device is refused before anything is computed over it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EkKeyError {
    #[error(
        "the RSA EK modulus is {length} bytes; an RSA-2048 EK has exactly 256, as the TPM \
         reports it (no leading zeros, no padding)"
    )]
    ModulusLength { length: usize },
    #[error("the RSA EK modulus is not 2048 bits (its first byte is {first:#04x})")]
    ModulusBits { first: u8 },
    #[error(
        "the ECC EK's {coordinate} coordinate is {length} bytes; a TPM sends P-256 coordinates \
         as exactly 32 bytes (TPM 2.0 Part 1, ECC point padding)"
    )]
    CoordinateLength {
        coordinate: &'static str,
        length: usize,
    },
    #[error("the ECC EK is not a point on P-256")]
    NotOnCurve,
}

/// The EK's public key in its one canonical form: the RSA-2048 modulus as exactly 256 bytes, or
/// the P-256 point as two 32-byte coordinates. Everything the verifier does with an EK (the
/// identity fingerprint, the certificate match, MakeCredential) works on these bytes, so one
/// EK cannot be presented in two encodings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EkPublic {
    /// The RSA-2048 modulus, big-endian (exponent 65537, the template's).
    Rsa { modulus: Box<[u8; 256]> },
    /// The P-256 point, big-endian coordinates.
    Ecc { x: [u8; 32], y: [u8; 32] },
}

impl EkPublic {
    /// An RSA-2048 EK from its modulus as the TPM reports it.
    pub fn rsa(modulus: &[u8]) -> Result<Self, EkKeyError> {
        let modulus: [u8; 256] = modulus.try_into().map_err(|_| EkKeyError::ModulusLength {
            length: modulus.len(),
        })?;
        if modulus[0] & 0x80 == 0 {
            return Err(EkKeyError::ModulusBits { first: modulus[0] });
        }
        Ok(Self::Rsa {
            modulus: Box::new(modulus),
        })
    }

    /// A P-256 EK from its coordinates as the TPM reports them; the point must be on the curve.
    pub fn ecc(x: &[u8], y: &[u8]) -> Result<Self, EkKeyError> {
        let fixed = |coordinate: &'static str, bytes: &[u8]| -> Result<[u8; 32], EkKeyError> {
            bytes.try_into().map_err(|_| EkKeyError::CoordinateLength {
                coordinate,
                length: bytes.len(),
            })
        };
        let (x, y) = (fixed("x", x)?, fixed("y", y)?);
        let mut sec1 = [0u8; 65];
        sec1[0] = 0x04;
        sec1[1..33].copy_from_slice(&x);
        sec1[33..].copy_from_slice(&y);
        p256::PublicKey::from_sec1_bytes(&sec1).map_err(|_| EkKeyError::NotOnCurve)?;
        Ok(Self::Ecc { x, y })
    }

    pub fn kind(&self) -> EkKind {
        match self {
            Self::Rsa { .. } => EkKind::Rsa,
            Self::Ecc { .. } => EkKind::Ecc,
        }
    }

    /// A stable fingerprint of the key: SHA-256 over its kind and canonical big-endian values.
    /// One device identity is bound to each.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        match self {
            Self::Rsa { modulus } => {
                hasher.update(b"rsa");
                hasher.update(modulus.as_slice());
            }
            Self::Ecc { x, y } => {
                hasher.update(b"ecc");
                hasher.update(x);
                hasher.update(y);
            }
        }
        hasher.finalize().into()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("the EK public key is not a usable RSA-2048 key: {0}")]
    EkKey(String),
    #[error("the AK name must be a SHA-256 name (0x000B and 32 bytes), got {0} bytes")]
    AkName(usize),
    #[error("the credential must be 1 to 32 bytes, got {0}")]
    Credential(usize),
    #[error("RSA-OAEP encryption of the seed failed: {0}")]
    Encrypt(String),
}

/// What the verifier sends the device: `TPM2B_ID_OBJECT` and `TPM2B_ENCRYPTED_SECRET` buffers
/// (without their size prefixes), in the shapes ActivateCredential takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialChallenge {
    pub id_object: Vec<u8>,
    pub encrypted_secret: Vec<u8>,
}

type HmacSha256 = Hmac<Sha256>;

/// KDFa with SHA-256: counter-mode HMAC over `i ‖ label ‖ 0 ‖ context_u ‖ context_v ‖ bits`.
fn kdfa(key: &[u8], label: &str, context_u: &[u8], context_v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(bytes + 32);
    let mut counter = 1u32;
    while out.len() < bytes {
        let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
            // HMAC takes keys of any length.
            return out;
        };
        mac.update(&counter.to_be_bytes());
        mac.update(label.as_bytes());
        mac.update(&[0]);
        mac.update(context_u);
        mac.update(context_v);
        mac.update(&bits.to_be_bytes());
        out.extend_from_slice(&mac.finalize().into_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    out
}

/// KDFe with SHA-256 (Part 1 §11.4.10.3): `H(counter ‖ Z ‖ label ‖ NUL ‖ u ‖ v)`, 256 bits.
fn kdfe(z: &[u8], label: &str, party_u: &[u8], party_v: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(1u32.to_be_bytes());
    hasher.update(z);
    hasher.update(label.as_bytes());
    hasher.update([0]);
    hasher.update(party_u);
    hasher.update(party_v);
    hasher.finalize().into()
}

/// The seed and its encryption to the EK: RSA-OAEP with label "IDENTITY", or for an ECC EK an
/// ephemeral ECDH whose public point is the "encrypted" secret (Part 1 Annex B.10.3 / C.6.4).
fn seed_for(
    ek: &EkPublic,
    rng: &mut (impl RngCore + rand::CryptoRng),
) -> Result<([u8; 32], Vec<u8>), CredentialError> {
    match ek {
        EkPublic::Rsa { modulus } => {
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(modulus.as_slice()),
                BigUint::from(65_537u32),
            )
            .map_err(|error| CredentialError::EkKey(error.to_string()))?;
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let encrypted = key
                .encrypt(rng, Oaep::new_with_label::<Sha256, _>("IDENTITY\0"), &seed)
                .map_err(|error| CredentialError::Encrypt(error.to_string()))?;
            Ok((seed, encrypted))
        }
        EkPublic::Ecc { x, y } => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let (ek_x, ek_y) = (x, y);
            let mut sec1 = vec![0x04];
            sec1.extend_from_slice(ek_x);
            sec1.extend_from_slice(ek_y);
            let ek_point = p256::PublicKey::from_sec1_bytes(&sec1)
                .map_err(|_| CredentialError::EkKey("not a point on P-256".into()))?;
            let ephemeral = p256::ecdh::EphemeralSecret::random(rng);
            let shared = ephemeral.diffie_hellman(&ek_point);
            let point = ephemeral.public_key().to_encoded_point(false);
            let (Some(u_x), Some(u_y)) = (point.x(), point.y()) else {
                return Err(CredentialError::Encrypt(
                    "ephemeral point at infinity".into(),
                ));
            };
            let seed = kdfe(shared.raw_secret_bytes(), "IDENTITY", u_x, ek_x);
            // TPMS_ECC_POINT: two TPM2B_ECC_PARAMETERs.
            let mut encrypted = Vec::with_capacity(68);
            for part in [u_x.as_slice(), u_y.as_slice()] {
                encrypted.extend_from_slice(&(part.len() as u16).to_be_bytes());
                encrypted.extend_from_slice(part);
            }
            Ok((seed, encrypted))
        }
    }
}

/// Makes a credential for the AK named `ak_name`, protected by the EK `ek` (RSA-2048 or
/// P-256 with the TCG default templates: AES-128-CFB and SHA-256), using `rng` for the seed.
pub fn make_credential(
    ek: &EkPublic,
    ak_name: &[u8],
    credential: &[u8],
    rng: &mut (impl RngCore + rand::CryptoRng),
) -> Result<CredentialChallenge, CredentialError> {
    if ak_name.len() != 34 || ak_name[..2] != [0x00, 0x0B] {
        return Err(CredentialError::AkName(ak_name.len()));
    }
    if credential.is_empty() || credential.len() > 32 {
        return Err(CredentialError::Credential(credential.len()));
    }
    let (seed, encrypted_secret) = seed_for(ek, rng)?;

    // The credential travels as a TPM2B_DIGEST, encrypted with AES-128-CFB (the EK template's
    // symmetric algorithm) under a key bound to the AK's name.
    let symmetric_key = kdfa(&seed, "STORAGE", ak_name, &[], 128);
    let mut identity = (credential.len() as u16).to_be_bytes().to_vec();
    identity.extend_from_slice(credential);
    let iv = [0u8; 16];
    cfb_mode::Encryptor::<aes::Aes128>::new_from_slices(&symmetric_key, &iv)
        .map_err(|error| CredentialError::Encrypt(error.to_string()))?
        .encrypt(&mut identity);

    let hmac_key = kdfa(&seed, "INTEGRITY", &[], &[], 256);
    let mut mac = HmacSha256::new_from_slice(&hmac_key)
        .map_err(|error| CredentialError::Encrypt(error.to_string()))?;
    mac.update(&identity);
    mac.update(ak_name);
    let integrity = mac.finalize().into_bytes();

    let mut id_object = 32u16.to_be_bytes().to_vec();
    id_object.extend_from_slice(&integrity);
    id_object.extend_from_slice(&identity);
    Ok(CredentialChallenge {
        id_object,
        encrypted_secret,
    })
}

/// A TPM object name for SHA-256: the algorithm identifier and the digest of the marshalled
/// public area.
pub fn object_name(marshalled_public: &[u8]) -> Vec<u8> {
    let mut name = vec![0x00, 0x0B];
    name.extend_from_slice(&Sha256::digest(marshalled_public));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_gives_the_requested_length_and_depends_on_every_input() {
        let a = kdfa(b"key", "STORAGE", b"name", b"", 128);
        assert_eq!(a.len(), 16);
        assert_eq!(kdfa(b"key", "STORAGE", b"name", b"", 256).len(), 32);
        assert_eq!(kdfa(b"key", "STORAGE", b"name", b"", 520).len(), 65);
        assert_ne!(a, kdfa(b"kez", "STORAGE", b"name", b"", 128));
        assert_ne!(a, kdfa(b"key", "INTEGRITY", b"name", b"", 128));
        assert_ne!(a, kdfa(b"key", "STORAGE", b"namf", b"", 128));
    }

    #[test]
    fn refuses_bad_names_and_credentials() {
        let mut rng = rand::rngs::OsRng;
        let ek = EkPublic::rsa(&[0xC5u8; 256]).expect("a 2048-bit modulus");
        assert_eq!(
            make_credential(&ek, &[0; 10], b"x", &mut rng),
            Err(CredentialError::AkName(10))
        );
        let name = object_name(b"public");
        assert_eq!(
            make_credential(&ek, &name, &[0; 33], &mut rng),
            Err(CredentialError::Credential(33))
        );
    }

    #[test]
    fn an_ek_has_one_encoding_only() {
        // A point that is not on the curve is refused before anything is encrypted to it.
        assert_eq!(
            EkPublic::ecc(&[1; 32], &[2; 32]),
            Err(EkKeyError::NotOnCurve)
        );
        // The P-256 generator, as a TPM sends it, and the same point with a leading zero.
        let x = hex::decode("6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296")
            .expect("hex");
        let y = hex::decode("4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5")
            .expect("hex");
        let canonical = EkPublic::ecc(&x, &y).expect("on the curve");
        assert_eq!(canonical.kind(), EkKind::Ecc);
        let padded = [&[0u8][..], &x].concat();
        assert_eq!(
            EkPublic::ecc(&padded, &y),
            Err(EkKeyError::CoordinateLength {
                coordinate: "x",
                length: 33
            })
        );
        assert_eq!(
            EkPublic::ecc(&x[1..], &y),
            Err(EkKeyError::CoordinateLength {
                coordinate: "x",
                length: 31
            })
        );
        let modulus = [0xC5u8; 256];
        assert!(EkPublic::rsa(&modulus).is_ok());
        let padded = [&[0u8][..], &modulus].concat();
        assert_eq!(
            EkPublic::rsa(&padded),
            Err(EkKeyError::ModulusLength { length: 257 })
        );
        let mut short = modulus;
        short[0] = 0x00;
        assert_eq!(
            EkPublic::rsa(&short),
            Err(EkKeyError::ModulusBits { first: 0 })
        );
    }
}
