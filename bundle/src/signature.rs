//! The bundle's signature: Ed25519 by the operator's key for the bundle's kind (the workload
//! key of `edgeward keys init` for workloads) over a domain label, the kind and the manifest's
//! exact bytes. The label keeps a bundle signature from being taken for any other Ed25519
//! signature the same key might make; the kind keeps a workload's from passing as another
//! kind's should one key ever sign both.

use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};

use crate::{BundleError, Kind};

/// Prepended to what is signed.
pub const DOMAIN: &[u8] = b"edgeward-bundle-v1\0";

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410): what `workload.pub` holds
/// before the key's 32 bytes.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// A public key bundles are checked against: on the appliance, the one baked into its
/// measured root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedKey([u8; 32]);

impl TrustedKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// From an Ed25519 SubjectPublicKeyInfo, DER.
    pub fn from_spki_der(der: &[u8]) -> Result<Self, BundleError> {
        let key = der
            .strip_prefix(&SPKI_PREFIX[..])
            .filter(|key| key.len() == 32)
            .ok_or_else(|| {
                BundleError::BadKey("not an Ed25519 SubjectPublicKeyInfo (RFC 8410)".into())
            })?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(key);
        Ok(Self(bytes))
    }

    /// From the PEM `PUBLIC KEY` block `edgeward keys init` writes (`workload.pub`).
    pub fn from_pem(text: &str) -> Result<Self, BundleError> {
        let block =
            pem::parse(text).map_err(|error| BundleError::BadKey(format!("not PEM: {error}")))?;
        if block.tag() != "PUBLIC KEY" {
            return Err(BundleError::BadKey(format!(
                "a PEM {} block, not a PUBLIC KEY",
                block.tag()
            )));
        }
        Self::from_spki_der(block.contents())
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The PEM form, as `edgeward keys init` writes it.
    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        pem::encode(&pem::Pem::new("PUBLIC KEY", der))
    }
}

/// The public key of a signing key pair.
pub fn public_key(key: &Ed25519KeyPair) -> TrustedKey {
    use ring::signature::KeyPair as _;
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(key.public_key().as_ref());
    TrustedKey(bytes)
}

fn message(kind: Kind, manifest: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(DOMAIN.len() + 4 + manifest.len());
    message.extend_from_slice(DOMAIN);
    message.extend_from_slice(&kind.code().to_le_bytes());
    message.extend_from_slice(manifest);
    message
}

/// Signs a manifest of the given kind.
pub fn sign(kind: Kind, manifest: &[u8], key: &Ed25519KeyPair) -> [u8; 64] {
    let mut signature = [0u8; 64];
    signature.copy_from_slice(key.sign(&message(kind, manifest)).as_ref());
    signature
}

/// Checks a manifest's signature; nothing in the manifest is read before this passes.
pub fn verify(
    kind: Kind,
    manifest: &[u8],
    signature: &[u8],
    key: &TrustedKey,
) -> Result<(), BundleError> {
    UnparsedPublicKey::new(&ED25519, &key.0)
        .verify(&message(kind, manifest), signature)
        .map_err(|_| BundleError::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_pair(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("key")
    }

    #[test]
    fn a_signature_verifies_only_for_its_key_kind_and_bytes() {
        let key = key_pair(1);
        let manifest = b"name = \"freq-alarm\"\n";
        let signature = sign(Kind::Workload, manifest, &key);
        verify(Kind::Workload, manifest, &signature, &public_key(&key)).expect("verifies");
        assert_eq!(
            verify(
                Kind::Workload,
                manifest,
                &signature,
                &public_key(&key_pair(2))
            ),
            Err(BundleError::BadSignature)
        );
        assert_eq!(
            verify(
                Kind::Workload,
                b"name = \"freq-alarn\"\n",
                &signature,
                &public_key(&key)
            ),
            Err(BundleError::BadSignature)
        );
        assert_eq!(
            verify(
                Kind::Workload,
                manifest,
                &signature[..63],
                &public_key(&key)
            ),
            Err(BundleError::BadSignature)
        );
    }

    #[test]
    fn the_public_key_reads_from_its_pem_and_back() {
        let key = public_key(&key_pair(3));
        assert_eq!(TrustedKey::from_pem(&key.to_pem()), Ok(key.clone()));
        assert!(matches!(
            TrustedKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"),
            Err(BundleError::BadKey(_))
        ));
        assert!(matches!(
            TrustedKey::from_pem("hello"),
            Err(BundleError::BadKey(_))
        ));
    }
}
