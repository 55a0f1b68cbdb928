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

/// Makes a credential for the AK named `ak_name`, protected by the RSA EK with `ek_modulus`
/// (exponent 65537, the EK template's), using `rng` for the seed.
pub fn make_credential(
    ek_modulus: &[u8],
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
    let ek = RsaPublicKey::new(BigUint::from_bytes_be(ek_modulus), BigUint::from(65_537u32))
        .map_err(|error| CredentialError::EkKey(error.to_string()))?;
    if ek_modulus.len() != 256 {
        return Err(CredentialError::EkKey(format!(
            "{}-bit modulus",
            ek_modulus.len() * 8
        )));
    }
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let encrypted_secret = ek
        .encrypt(rng, Oaep::new_with_label::<Sha256, _>("IDENTITY\0"), &seed)
        .map_err(|error| CredentialError::Encrypt(error.to_string()))?;

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
        let modulus = [0xC5u8; 256];
        assert_eq!(
            make_credential(&modulus, &[0; 10], b"x", &mut rng),
            Err(CredentialError::AkName(10))
        );
        let name = object_name(b"public");
        assert_eq!(
            make_credential(&modulus, &name, &[0; 33], &mut rng),
            Err(CredentialError::Credential(33))
        );
    }
}
