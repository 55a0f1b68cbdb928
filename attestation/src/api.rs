//! The verifier's JSON API, shared by the service and the agent: one request and one response
//! type per endpoint, bytes as lowercase hex. Every endpoint is `POST /v1/<name>` with a JSON
//! body; errors come back as [`ErrorBody`] with an HTTP status from [`crate::verifier::Refusal`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bytes as hex in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hex(pub Vec<u8>);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        hex::decode(&text)
            .map(Hex)
            .map_err(|_| serde::de::Error::custom("expected lowercase hex bytes"))
    }
}

/// The EK's public key on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum EkKey {
    Rsa { modulus: Hex },
    Ecc { x: Hex, y: Hex },
}

impl From<&crate::credential::EkPublic> for EkKey {
    fn from(key: &crate::credential::EkPublic) -> Self {
        match key {
            crate::credential::EkPublic::Rsa { modulus } => Self::Rsa {
                modulus: Hex(modulus.to_vec()),
            },
            crate::credential::EkPublic::Ecc { x, y } => Self::Ecc {
                x: Hex(x.to_vec()),
                y: Hex(y.to_vec()),
            },
        }
    }
}

impl TryFrom<&EkKey> for crate::credential::EkPublic {
    type Error = crate::credential::EkKeyError;

    /// Only the canonical encoding is accepted (exact lengths, the point on the curve).
    fn try_from(key: &EkKey) -> Result<Self, Self::Error> {
        match key {
            EkKey::Rsa { modulus } => Self::rsa(&modulus.0),
            EkKey::Ecc { x, y } => Self::ecc(&x.0, &y.0),
        }
    }
}

/// `POST /v1/register`: the device's TPM introduces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The identity the device asks for; without one the verifier derives it from the EK.
    #[serde(default)]
    pub device: Option<String>,
    pub ek: EkKey,
    /// The EK certificate (DER) from the TPM's NV.
    pub ek_certificate: Hex,
    /// Intermediates the device has (DER); roots come only from the verifier's configuration.
    #[serde(default)]
    pub ek_intermediates: Vec<Hex>,
    /// The AK's marshalled `TPMT_PUBLIC`.
    pub ak_public: Hex,
}

/// The credential challenge: only the TPM holding the EK, with the AK loaded, can open it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub device: String,
    pub id_object: Hex,
    pub encrypted_secret: Hex,
}

/// `POST /v1/activate`: the secret ActivateCredential recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub device: String,
    pub secret: Hex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivateResponse {
    pub device: String,
    pub activated: bool,
}

/// `POST /v1/nonce`: a fresh, single-use nonce for the next quote or certification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NonceRequest {
    pub device: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonceResponse {
    pub nonce: Hex,
    /// The SHA-256 PCRs to quote.
    pub pcrs: Vec<u8>,
    /// Seconds the nonce stays valid.
    pub expires_in: u64,
}

/// `POST /v1/attest`: a quote over the verifier's selection with its nonce, and the event log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub device: String,
    pub nonce: Hex,
    /// `TPMS_ATTEST`, marshalled.
    pub quote: Hex,
    /// `TPMT_SIGNATURE`, marshalled.
    pub signature: Hex,
    /// The PCR values the device read after quoting. Not trusted: used to name the PCRs that
    /// differ, and only when their digest equals the signed one.
    #[serde(default)]
    pub pcr_values: BTreeMap<u8, Hex>,
    /// `binary_bios_measurements`.
    pub event_log: Hex,
    /// What the agent measured since boot (the workloads it launched), in extend order.
    #[serde(default)]
    pub agent_log: Vec<crate::agent_log::AgentEvent>,
}

/// The verifier's verdict on an attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub device: String,
    pub accepted: bool,
    /// The released image the boot matched.
    #[serde(default)]
    pub manifest: Option<String>,
    /// Why it was refused, one line per finding; empty when accepted.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Every check the policy skipped, by name: nothing passes unchecked without saying so.
    #[serde(default)]
    pub skipped: Vec<SkippedCheck>,
    /// Until when (Unix seconds) the verifier issues certificates on this attestation.
    #[serde(default)]
    pub attested_until: Option<u64>,
    /// The released workloads the agent's log showed running, `name version (manifest …)`.
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// A check an appraisal did not make, because the policy says so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedCheck {
    /// The check's name (`pcr0`, …).
    pub check: String,
    /// What was not compared, and which setting says so.
    pub reason: String,
}

/// `POST /v1/certify`: the AK's TPM2_Certify of the device key, with a fresh nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyRequest {
    pub device: String,
    pub nonce: Hex,
    /// The device key's marshalled `TPMT_PUBLIC`.
    pub device_key_public: Hex,
    /// `TPMS_ATTEST` of TPM2_Certify.
    pub certify_info: Hex,
    pub signature: Hex,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertifyResponse {
    pub device: String,
    /// The client certificate, PEM.
    pub certificate: String,
    /// The device CA and any CAs above it, PEM.
    pub chain: String,
    pub serial: String,
    /// Unix seconds.
    pub not_after: u64,
}

/// What every refusal carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable machine-readable code (`nonce`, `denied`, `identity_taken`, …).
    pub error: String,
    /// What happened and what to do about it.
    pub reason: String,
    /// Each finding, for attestation refusals.
    #[serde(default)]
    pub reasons: Vec<String>,
}
