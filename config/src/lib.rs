//! The device configuration an operator signs and an appliance obeys: identity, location,
//! network, time, verifier, broker, TSA, block length, buffer size and PMU streams
//! ([`device::DeviceConfig`]), signed with the operator's configuration key (Ed25519 over the
//! exact bytes, the signature in hex beside the file, as manifests are). The appliance verifies
//! it against the public key baked into its measured image before anything starts; an unsigned,
//! foreign-signed or altered configuration is refused with one line that says which.
//!
//! Sans-I/O: text and signature bytes in, a validated configuration or a typed error out.
#![forbid(unsafe_code)]

pub mod device;
pub mod draft;
pub mod pmu;
pub mod rollback;

use ring::signature::{Ed25519KeyPair, UnparsedPublicKey, ED25519};
use thiserror::Error;

pub use device::DeviceConfig;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("the configuration's signature is not 64 bytes of hex")]
    MalformedSignature,
    #[error(
        "the configuration's signature does not verify with this appliance's configuration key: \
         it was altered after signing, or signed with another key"
    )]
    BadSignature,
    #[error("the configuration key is not 32 bytes of hex (config.pub.raw)")]
    MalformedKey,
    #[error("the configuration is not UTF-8 text")]
    NotText,
    #[error("the configuration is not valid TOML: {0}")]
    Toml(String),
    #[error("the configuration is invalid: {0}")]
    Invalid(String),
}

/// The operator's configuration public key (`config.pub.raw`: 32 bytes of hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigKey([u8; 32]);

impl ConfigKey {
    pub fn from_hex(text: &str) -> Result<Self, ConfigError> {
        hex::decode(text.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .map(Self)
            .ok_or(ConfigError::MalformedKey)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

/// Checks the detached signature (hex Ed25519 over the exact bytes) and only then reads the
/// configuration.
pub fn verify(
    text: &[u8],
    signature_hex: &[u8],
    key: &ConfigKey,
) -> Result<DeviceConfig, ConfigError> {
    let signature = std::str::from_utf8(signature_hex)
        .ok()
        .and_then(|hex_text| hex::decode(hex_text.trim()).ok())
        .filter(|signature| signature.len() == 64)
        .ok_or(ConfigError::MalformedSignature)?;
    UnparsedPublicKey::new(&ED25519, &key.0)
        .verify(text, &signature)
        .map_err(|_| ConfigError::BadSignature)?;
    let text = std::str::from_utf8(text).map_err(|_| ConfigError::NotText)?;
    DeviceConfig::parse(text)
}

/// Signs a configuration after checking it is valid: an operator cannot sign what an appliance
/// would refuse. Returns the signature as hex, with a newline, as it is written beside the file.
pub fn sign(text: &[u8], key: &Ed25519KeyPair) -> Result<String, ConfigError> {
    let parsed = std::str::from_utf8(text).map_err(|_| ConfigError::NotText)?;
    DeviceConfig::parse(parsed)?;
    Ok(format!("{}\n", hex::encode(key.sign(text).as_ref())))
}

/// The public key of a signing key pair, as an appliance holds it.
pub fn public_key(key: &Ed25519KeyPair) -> ConfigKey {
    use ring::signature::KeyPair as _;
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(key.public_key().as_ref());
    ConfigKey(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CA: &str =
        "-----BEGIN CERTIFICATE-----\nMIIBhTCCASugAwIBAgIUAQ==\n-----END CERTIFICATE-----\n";

    fn text() -> String {
        draft::example(CA).to_toml().expect("TOML")
    }

    fn key() -> Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")
    }

    #[test]
    fn a_signed_configuration_is_read_and_an_altered_or_foreign_one_refused() {
        let key = key();
        let text = text();
        let signature = sign(text.as_bytes(), &key).expect("valid, so signed");
        let config =
            verify(text.as_bytes(), signature.as_bytes(), &public_key(&key)).expect("verifies");
        assert_eq!(config.identity.as_str(), "bay-1");
        assert_eq!(config.verifier.address.to_string(), "10.0.2.2:8443");
        assert_eq!(config.tsa.path, "/api/v1/timestamp");
        assert_eq!(config.block_seconds, 2);
        assert_eq!(config.buffer_bytes, 1 << 30, "the default");
        assert_eq!(config.pmus.len(), 1);
        // One byte altered (the PMU's port): refused before it is read.
        let altered = text.replace("10.0.2.2:4712", "10.0.2.2:4713");
        assert_eq!(
            verify(altered.as_bytes(), signature.as_bytes(), &public_key(&key)).err(),
            Some(ConfigError::BadSignature)
        );
        // Signed by another key.
        let other = key_other(&text);
        assert_eq!(
            verify(text.as_bytes(), other.as_bytes(), &public_key(&key)).err(),
            Some(ConfigError::BadSignature)
        );
        assert_eq!(
            verify(text.as_bytes(), b"", &public_key(&key)).err(),
            Some(ConfigError::MalformedSignature)
        );
    }

    fn key_other(text: &str) -> String {
        sign(text.as_bytes(), &key()).expect("signed")
    }

    #[test]
    fn what_an_appliance_would_refuse_is_not_signed() {
        let key = key();
        let cases = [
            (
                text().replace("bay-1\"\nlocation", "Bay 1\"\nlocation"),
                "identity",
            ),
            (
                text().replace("mode = \"dhcp\"", "mode = \"ppp\""),
                "network: mode",
            ),
            (
                text().replace("sntp = [\"10.0.2.2:123\"]", "sntp = []"),
                "signs nothing",
            ),
            (
                text().replace("https://10.0.2.2:8443", "http://10.0.2.2:8443"),
                "https://",
            ),
            (
                text().replace("ek = \"rsa\"", "ek = \"dsa\""),
                "verifier.ek",
            ),
            (
                text().replace("block_seconds = 2", "block_seconds = 0"),
                "data.block_seconds",
            ),
            (text().replace("idcode = 7", "idcode = 0"), "reserved"),
            // No serial: nothing to protect it from being put back later.
            (text().replace("serial = 1\n", ""), "missing field `serial`"),
            (
                text().replace("serial = 1\n", "serial = 0\n"),
                "serial is 0",
            ),
            (
                text().replace("[data]", "[data]\nsecret = 1"),
                "unknown field",
            ),
            (
                text().replacen(
                    CA,
                    "-----BEGIN PRIVATE KEY-----\nAA==\n-----END PRIVATE KEY-----\n",
                    1,
                ),
                "holds no key",
            ),
        ];
        for (text, reason) in cases {
            let error = sign(text.as_bytes(), &key).expect_err(reason).to_string();
            assert!(error.contains(reason), "{reason}: {error}");
        }
    }
}
