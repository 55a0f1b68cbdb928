//! A device identity: the CN of its certificates, its MQTT username, its ACL identity and the
//! device level of its topics, so it is restricted to what is safe in all of them and in a file
//! name: 1-64 of `a-z 0-9 - _ .`, starting with a letter or digit.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

/// Why a name cannot be a device identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "device identity {name:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.', starting with \
     a letter or digit"
)]
pub struct IdentityError {
    pub name: String,
}

impl DeviceId {
    pub fn new(text: &str) -> Result<Self, IdentityError> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b))
            && text
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdentityError {
                name: text.to_owned(),
            })
        }
    }

    /// `tpm-` and the first 20 hex digits of a fingerprint: the identity of a device that asks
    /// for none, stable because its EK is.
    pub fn from_fingerprint(fingerprint: &[u8; 32]) -> Self {
        Self(format!("tpm-{}", &hex::encode(fingerprint)[..20]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The identity as a topic's device level (always valid: an identity is a stricter set).
    pub fn topic_segment(&self) -> crate::topics::TopicSegment {
        crate::topics::TopicSegment::from_identity(self)
    }
}

impl TryFrom<String> for DeviceId {
    type Error = IdentityError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::new(&text)
    }
}

impl From<DeviceId> for String {
    fn from(id: DeviceId) -> Self {
        id.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_are_safe_as_cn_username_topic_and_file_name() {
        for good in ["bay-7", "substation.north_pmu1", "0a"] {
            assert!(DeviceId::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Bay7",
            "-x",
            "a/b",
            "a+b",
            "a#",
            "../x",
            &"a".repeat(65),
        ] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?}");
        }
        let derived = DeviceId::from_fingerprint(&[0xAB; 32]);
        assert_eq!(derived.as_str(), "tpm-abababababababababab");
        assert!(DeviceId::new(derived.as_str()).is_ok());
        assert_eq!(derived.topic_segment().as_str(), derived.as_str());
    }
}
