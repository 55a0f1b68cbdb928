//! The verifier's decisions, without I/O: registration (EK certificate chain, one identity per
//! EK, the credential challenge), activation, single-use nonces, the appraisal of an attestation
//! (quote, event-log replay, TPM counters, released manifests, platform PCRs) and certification
//! of the device key. The service feeds it requests, the time and randomness, and stores the
//! [`DeviceRecord`]s it returns.
//!
//! Each refusal says what differs and what to do, because the person reading it is an operator
//! looking at a substation that stopped delivering data.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::{Duration, SystemTime};

use edgeward_bootchain::eventlog::{parse, replay, HashAlgorithm, PcrIndex};
use edgeward_bootchain::manifest::{find_match, ReferenceValues};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::api::{
    ActivateRequest, AttestRequest, CertifyRequest, CertifyResponse, EkKey, Hex, RegisterRequest,
    RegisterResponse, Verdict,
};
use crate::credential::{make_credential, EkPublic};
use crate::device_ca::DeviceCa;
use crate::ek_certificate::verify_ek_certificate;
use crate::quote::{appraise_certify, appraise_quote, parse_ak_public, pcr_digest, QuoteError};

/// A device identity: the CN of its certificates, its MQTT username and the ACL identity, so it
/// is restricted to what is safe in all three and in a file name: 1-64 of `a-z 0-9 - _ .`,
/// starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DeviceId(String);

impl DeviceId {
    pub fn new(text: &str) -> Result<Self, Refusal> {
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
            Err(Refusal::BadRequest(format!(
                "device identity {text:?} must be 1-64 characters of a-z, 0-9, '-', '_', '.', \
                 starting with a letter or digit"
            )))
        }
    }

    /// The identity of a device that asks for none: from its EK, so it is stable.
    pub fn from_ek(ek: &EkPublic) -> Self {
        Self(format!("tpm-{}", &hex::encode(ek.fingerprint())[..20]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DeviceId {
    type Error = Refusal;
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

/// A verifier nonce: 32 random bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VerifierNonce([u8; 32]);

impl VerifierNonce {
    pub fn random(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// Why the verifier said no. The code and HTTP status are part of the API.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("malformed request: {0}")]
    BadRequest(String),
    #[error("device {0} is not registered: register it first")]
    UnknownDevice(String),
    #[error("device {device} is denied ({reason}); `edgeward verifier allow {device}` lifts it")]
    Denied { device: String, reason: String },
    #[error(
        "device identity {device} belongs to another TPM (EK {registered}); this TPM's EK is \
         {presented}. Choose another identity, or deny and delete the old device first"
    )]
    IdentityTaken {
        device: String,
        registered: String,
        presented: String,
    },
    #[error("this TPM (EK {ek}) is already registered as {device}; one identity per TPM")]
    EkTaken { device: String, ek: String },
    #[error("the EK certificate is not trusted: {0}")]
    EkCertificate(String),
    #[error("the AK is not acceptable: {0}")]
    Ak(String),
    #[error("the activation secret is wrong or expired: the AK is not in the TPM that holds the EK, or the challenge was for another registration")]
    Activation,
    #[error("device {0} has no activated AK: complete registration (register, activate) first")]
    NotActivated(String),
    #[error("nonce refused: {0}")]
    Nonce(String),
    #[error("attestation refused: {}", .0.join("; "))]
    Attestation(Vec<String>),
    #[error("device {device} has no valid attestation ({why}): attest again, then certify")]
    AttestationRequired { device: String, why: String },
    #[error("the device key is not acceptable: {0}")]
    DeviceKey(String),
    #[error("too many outstanding nonces; retry shortly")]
    Busy,
    #[error("the device CA could not issue the certificate: {0}")]
    Ca(String),
}

impl Refusal {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::UnknownDevice(_) => "unknown_device",
            Self::Denied { .. } => "denied",
            Self::IdentityTaken { .. } => "identity_taken",
            Self::EkTaken { .. } => "ek_taken",
            Self::EkCertificate(_) => "ek_certificate",
            Self::Ak(_) => "ak",
            Self::Activation => "activation",
            Self::NotActivated(_) => "not_activated",
            Self::Nonce(_) => "nonce",
            Self::Attestation(_) => "attestation",
            Self::AttestationRequired { .. } => "attestation_required",
            Self::DeviceKey(_) => "device_key",
            Self::Busy => "busy",
            Self::Ca(_) => "ca",
        }
    }

    /// The HTTP status the service answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::UnknownDevice(_) => 404,
            Self::IdentityTaken { .. } | Self::EkTaken { .. } => 409,
            Self::Busy => 503,
            Self::Ca(_) => 500,
            _ => 403,
        }
    }

    /// The findings of an attestation refusal, one per line.
    pub fn reasons(&self) -> Vec<String> {
        match self {
            Self::Attestation(reasons) => reasons.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// What the verifier accepts, from its configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Manufacturer roots for EK certificates (DER).
    pub ek_roots: Vec<Vec<u8>>,
    /// Intermediates the verifier knows of (DER), in addition to those devices send.
    pub ek_intermediates: Vec<Vec<u8>>,
    /// The released images, verified with the release key.
    pub manifests: Vec<ReferenceValues>,
    /// The SHA-256 PCRs every quote covers.
    pub pcrs: Vec<u8>,
    /// Accepted values of PCRs the image cannot predict (firmware, platform), per PCR; a PCR
    /// not listed here is checked only for matching the event log.
    pub platform_pcrs: BTreeMap<u32, Vec<[u8; 32]>>,
    /// How long an accepted attestation lets the device get certificates.
    pub attestation_validity: Duration,
    pub certificate_validity: Duration,
    pub nonce_lifetime: Duration,
    /// How long a credential challenge may take to come back.
    pub activation_lifetime: Duration,
}

impl Policy {
    /// The defaults a verifier starts from: PCRs 0-7 (firmware, Secure Boot, the UKI), 9 and 11
    /// (what the kernel got and the UKI's contents), 12 and 13 (must stay zero); attestation
    /// good for an hour, certificates for a day.
    pub fn new(ek_roots: Vec<Vec<u8>>, manifests: Vec<ReferenceValues>) -> Self {
        Self {
            ek_roots,
            ek_intermediates: Vec::new(),
            manifests,
            pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13],
            platform_pcrs: BTreeMap::new(),
            attestation_validity: Duration::from_secs(3600),
            certificate_validity: Duration::from_secs(24 * 3600),
            nonce_lifetime: Duration::from_secs(120),
            activation_lifetime: Duration::from_secs(300),
        }
    }
}

/// The TPM's clock and boot counters at the last accepted quote, which must never go back:
/// a TPM whose state was rolled back (or a replay across boots) shows here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
}

/// Checks that `now` does not go back from `last`: the reset count never decreases; within one
/// reset the restart count never decreases; the clock never decreases.
pub fn check_counters(last: &Counters, now: &Counters) -> Result<(), String> {
    if now.reset_count < last.reset_count {
        return Err(format!(
            "the TPM's reset count went back from {} to {} (rolled-back TPM state or a replayed quote)",
            last.reset_count, now.reset_count
        ));
    }
    if now.reset_count == last.reset_count && now.restart_count < last.restart_count {
        return Err(format!(
            "the TPM's restart count went back from {} to {} within reset {}",
            last.restart_count, now.restart_count, now.reset_count
        ));
    }
    if now.clock < last.clock {
        return Err(format!(
            "the TPM's clock went back from {} ms to {} ms (rolled-back TPM state or a replayed quote)",
            last.clock, now.clock
        ));
    }
    Ok(())
}

/// A registration waiting for its credential to come back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingActivation {
    pub secret_digest: Hex,
    pub ak_public: Hex,
    pub expires: u64,
}

/// Why and when a device was denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    pub at: u64,
    pub reason: String,
}

/// The last verdict, kept for `edgeward verifier devices`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub at: u64,
    pub accepted: bool,
    #[serde(default)]
    pub manifest: Option<String>,
    #[serde(default)]
    pub reasons: Vec<String>,
}

/// A certificate the device CA issued, kept for audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateRecord {
    pub serial: String,
    pub issued: u64,
    pub not_after: u64,
    /// SHA-256 of the device key's public area.
    pub device_key: String,
}

/// How many issued certificates a record keeps.
pub const CERTIFICATE_HISTORY: usize = 16;

/// Everything the verifier knows about one device. Persisted by the service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    pub id: DeviceId,
    pub ek: EkKey,
    /// [`EkPublic::fingerprint`], hex: the binding of this identity to one TPM.
    pub ek_fingerprint: String,
    /// The EK certificate's path to its root, subjects from the EK up.
    pub ek_chain: Vec<String>,
    pub registered: u64,
    /// The AK bound to the EK by credential activation.
    #[serde(default)]
    pub ak_public: Option<Hex>,
    #[serde(default)]
    pub pending: Option<PendingActivation>,
    #[serde(default)]
    pub denied: Option<Denial>,
    #[serde(default)]
    pub counters: Option<Counters>,
    #[serde(default)]
    pub last_verdict: Option<VerdictRecord>,
    #[serde(default)]
    pub attested_until: Option<u64>,
    #[serde(default)]
    pub certificates: Vec<CertificateRecord>,
}

impl DeviceRecord {
    /// One line for `edgeward verifier devices`.
    pub fn state(&self, now: u64) -> &'static str {
        if self.denied.is_some() {
            "denied"
        } else if self.ak_public.is_none() {
            "registering"
        } else if self.attested_until.is_some_and(|until| until > now) {
            "attested"
        } else if self
            .last_verdict
            .as_ref()
            .is_some_and(|verdict| !verdict.accepted)
        {
            "failed"
        } else {
            "attestation due"
        }
    }

    fn refuse_if_denied(&self) -> Result<(), Refusal> {
        match &self.denied {
            Some(denial) => Err(Refusal::Denied {
                device: self.id.to_string(),
                reason: denial.reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn ak(&self) -> Result<crate::quote::AkPublic, Refusal> {
        let public = self
            .ak_public
            .as_ref()
            .ok_or_else(|| Refusal::NotActivated(self.id.to_string()))?;
        parse_ak_public(&public.0).map_err(|error| Refusal::Ak(error.to_string()))
    }
}

fn seconds(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// The identity a registration asks for: the one it names, else the one derived from its EK.
pub fn identity_of(request: &RegisterRequest) -> Result<DeviceId, Refusal> {
    match &request.device {
        Some(name) => DeviceId::new(name),
        None => Ok(DeviceId::from_ek(&request.ek.clone().into())),
    }
}

/// Registration: checks the EK certificate and the AK, binds the identity to the EK, and makes
/// the credential challenge. `existing` is the record of the requested identity, if any;
/// `ek_owner` the identity already bound to this EK, if any. Returns the record to store.
pub fn register(
    policy: &Policy,
    request: RegisterRequest,
    existing: Option<DeviceRecord>,
    ek_owner: Option<DeviceId>,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(DeviceRecord, RegisterResponse), Refusal> {
    let ek: EkPublic = request.ek.clone().into();
    let fingerprint = hex::encode(ek.fingerprint());
    let id = identity_of(&request)?;
    if let Some(record) = &existing {
        if record.ek_fingerprint != fingerprint {
            return Err(Refusal::IdentityTaken {
                device: id.to_string(),
                registered: record.ek_fingerprint.clone(),
                presented: fingerprint,
            });
        }
        record.refuse_if_denied()?;
    }
    if let Some(owner) = &ek_owner {
        if *owner != id {
            return Err(Refusal::EkTaken {
                device: owner.to_string(),
                ek: fingerprint,
            });
        }
    }
    let mut intermediates = policy.ek_intermediates.clone();
    intermediates.extend(request.ek_intermediates.iter().map(|der| der.0.clone()));
    let ek_chain = verify_ek_certificate(
        &request.ek_certificate.0,
        &intermediates,
        &policy.ek_roots,
        &ek,
        now,
    )
    .map_err(|error| Refusal::EkCertificate(error.to_string()))?;
    let ak =
        parse_ak_public(&request.ak_public.0).map_err(|error| Refusal::Ak(error.to_string()))?;
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut secret);
    let challenge = make_credential(&ek, &ak.name, &secret, rng)
        .map_err(|error| Refusal::EkCertificate(error.to_string()))?;
    let now = seconds(now);
    let pending = PendingActivation {
        secret_digest: Hex(Sha256::digest(secret).to_vec()),
        ak_public: request.ak_public,
        expires: now + policy.activation_lifetime.as_secs(),
    };
    let record = match existing {
        // Registering again (the device lost its AK, say): the old AK stays bound until the new
        // one is activated.
        Some(mut record) => {
            record.pending = Some(pending);
            record.ek_chain = ek_chain;
            record
        }
        None => DeviceRecord {
            id: id.clone(),
            ek: request.ek,
            ek_fingerprint: fingerprint,
            ek_chain,
            registered: now,
            ak_public: None,
            pending: Some(pending),
            denied: None,
            counters: None,
            last_verdict: None,
            attested_until: None,
            certificates: Vec::new(),
        },
    };
    Ok((
        record,
        RegisterResponse {
            device: id.to_string(),
            id_object: Hex(challenge.id_object),
            encrypted_secret: Hex(challenge.encrypted_secret),
        },
    ))
}

/// Activation: the secret came back, so the AK lives in the TPM that holds the EK.
pub fn activate(
    mut record: DeviceRecord,
    request: &ActivateRequest,
    now: SystemTime,
) -> Result<DeviceRecord, Refusal> {
    record.refuse_if_denied()?;
    let pending = record.pending.take().ok_or(Refusal::Activation)?;
    let digest = Sha256::digest(&request.secret.0);
    let same = digest.len() == pending.secret_digest.0.len()
        && digest
            .iter()
            .zip(&pending.secret_digest.0)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same || seconds(now) > pending.expires {
        return Err(Refusal::Activation);
    }
    if record.ak_public.as_ref() != Some(&pending.ak_public) {
        // A new AK: what the old one attested no longer counts.
        record.attested_until = None;
    }
    record.ak_public = Some(pending.ak_public);
    Ok(record)
}

/// Outstanding nonces: each is issued for one device, used once, and expires.
#[derive(Debug, Default)]
pub struct NonceBook {
    issued: HashMap<VerifierNonce, (DeviceId, u64)>,
}

/// The most nonces outstanding at once.
pub const MAX_OUTSTANDING_NONCES: usize = 100_000;

impl NonceBook {
    pub fn issue(
        &mut self,
        device: DeviceId,
        lifetime: Duration,
        now: SystemTime,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> Result<VerifierNonce, Refusal> {
        let now = seconds(now);
        if self.issued.len() >= MAX_OUTSTANDING_NONCES {
            self.issued.retain(|_, (_, expires)| *expires >= now);
            if self.issued.len() >= MAX_OUTSTANDING_NONCES {
                return Err(Refusal::Busy);
            }
        }
        let nonce = VerifierNonce::random(rng);
        self.issued
            .insert(nonce, (device, now + lifetime.as_secs()));
        Ok(nonce)
    }

    /// Takes the nonce out of the book: it cannot be used again, whatever the outcome.
    pub fn consume(
        &mut self,
        nonce: &[u8],
        device: &DeviceId,
        now: SystemTime,
    ) -> Result<VerifierNonce, Refusal> {
        let nonce = VerifierNonce::from_bytes(nonce).ok_or_else(|| {
            Refusal::Nonce(format!(
                "{} bytes; the verifier's nonces are 32",
                nonce.len()
            ))
        })?;
        match self.issued.remove(&nonce) {
            None => Err(Refusal::Nonce(
                "it was not issued by this verifier or was already used (a replayed quote?): \
                 ask for a new one"
                    .into(),
            )),
            Some((owner, _)) if owner != *device => Err(Refusal::Nonce(format!(
                "it was issued to device {owner}, not {device}"
            ))),
            Some((_, expires)) if seconds(now) > expires => {
                Err(Refusal::Nonce("it expired: ask for a new one".into()))
            }
            Some(_) => Ok(nonce),
        }
    }
}

/// The appraisal of an attestation whose nonce the service already consumed. Returns the
/// record to store (with the verdict, also when refused) and the verdict.
pub fn attest(
    policy: &Policy,
    mut record: DeviceRecord,
    request: &AttestRequest,
    nonce: &VerifierNonce,
    now: SystemTime,
) -> (DeviceRecord, Verdict) {
    let at = seconds(now);
    let outcome = appraise(policy, &mut record, request, nonce);
    let (accepted, manifest, reasons) = match outcome {
        Ok(manifest) => (true, Some(manifest), Vec::new()),
        Err(refusal) => (false, None, refusal.reasons()),
    };
    record.attested_until = accepted.then(|| at + policy.attestation_validity.as_secs());
    record.last_verdict = Some(VerdictRecord {
        at,
        accepted,
        manifest: manifest.clone(),
        reasons: reasons.clone(),
    });
    let verdict = Verdict {
        device: record.id.to_string(),
        accepted,
        manifest,
        reasons,
        attested_until: record.attested_until,
    };
    (record, verdict)
}

fn appraise(
    policy: &Policy,
    record: &mut DeviceRecord,
    request: &AttestRequest,
    nonce: &VerifierNonce,
) -> Result<String, Refusal> {
    record.refuse_if_denied()?;
    let ak = record.ak()?;
    let log = parse(&request.event_log.0).map_err(|error| {
        Refusal::Attestation(vec![format!("the event log is unreadable: {error}")])
    })?;
    let replayed = replay(&log).map_err(|error| {
        Refusal::Attestation(vec![format!("the event log cannot be replayed: {error}")])
    })?;
    let replayed_value = |pcr: u8| -> [u8; 32] {
        PcrIndex::new(u32::from(pcr))
            .and_then(|index| replayed.get(HashAlgorithm::Sha256, index))
            .and_then(|value| value.try_into().ok())
            .unwrap_or([0; 32])
    };
    let expected: Vec<(u8, [u8; 32])> = policy
        .pcrs
        .iter()
        .map(|pcr| (*pcr, replayed_value(*pcr)))
        .collect();

    let attest = match appraise_quote(
        &request.quote.0,
        &request.signature.0,
        &ak.key,
        nonce.as_bytes(),
        &expected,
    ) {
        Ok(attest) => attest,
        Err(QuoteError::PcrDigestMismatch { quoted, .. }) => {
            return Err(Refusal::Attestation(log_differs_from_tpm(
                policy, request, &expected, &quoted,
            )))
        }
        Err(QuoteError::BadSignature) => {
            return Err(Refusal::Attestation(vec![
                "the quote's signature does not verify with the device's activated AK: it was \
                 altered, or made by another TPM"
                    .into(),
            ]))
        }
        Err(other) => return Err(Refusal::Attestation(vec![format!("quote: {other}")])),
    };

    // The quote is genuine and fresh: its counters are the TPM's.
    let counters = Counters {
        clock: attest.clock.clock,
        reset_count: attest.clock.reset_count,
        restart_count: attest.clock.restart_count,
    };
    if let Some(last) = &record.counters {
        check_counters(last, &counters).map_err(|reason| Refusal::Attestation(vec![reason]))?;
    }
    record.counters = Some(counters);

    let mut reasons = Vec::new();
    for (pcr, allowed) in &policy.platform_pcrs {
        let value = u8::try_from(*pcr).map(replayed_value).unwrap_or([0; 32]);
        if !allowed.contains(&value) {
            reasons.push(format!(
                "platform PCR {pcr} is {}, which the platform policy does not list",
                hex::encode(value)
            ));
        }
    }
    let manifest = match find_match(&log, &replayed, &policy.manifests) {
        Ok(manifest) => Some(manifest.label()),
        Err(no_match) => {
            if no_match.comparisons.is_empty() {
                reasons.push("no image manifest is released on this verifier".into());
            }
            for comparison in &no_match.comparisons {
                for difference in &comparison.differences {
                    reasons.push(format!("not {}: {difference}", comparison.manifest));
                }
            }
            None
        }
    };
    match manifest {
        Some(manifest) if reasons.is_empty() => Ok(manifest),
        _ => Err(Refusal::Attestation(reasons)),
    }
}

/// The quote's PCRs differ from the log's replay. When the device's reported values reproduce
/// the signed digest they are the TPM's, so each differing PCR can be named.
fn log_differs_from_tpm(
    policy: &Policy,
    request: &AttestRequest,
    expected: &[(u8, [u8; 32])],
    quoted_digest: &str,
) -> Vec<String> {
    let reported: Option<Vec<&[u8]>> = policy
        .pcrs
        .iter()
        .map(|pcr| request.pcr_values.get(pcr).map(|value| value.0.as_slice()))
        .collect();
    let authentic = reported
        .as_ref()
        .is_some_and(|values| hex::encode(pcr_digest(values.iter().copied())) == quoted_digest);
    let mut reasons = Vec::new();
    if let (true, Some(values)) = (authentic, reported) {
        for ((pcr, from_log), in_tpm) in expected.iter().zip(values) {
            if in_tpm != from_log.as_slice() {
                reasons.push(format!(
                    "PCR {pcr} is {} in the TPM's signed quote but the event log replays to {}: \
                     the log was altered, or the PCR was extended after boot without a log entry",
                    hex::encode(in_tpm),
                    hex::encode(from_log)
                ));
            }
        }
    }
    if reasons.is_empty() {
        reasons.push(format!(
            "the quoted PCR digest {quoted_digest} is not what the event log replays to: the log \
             was altered, or a PCR was extended after boot (the device's PCR report does not say \
             which)"
        ));
    }
    reasons
}

/// Certification: the AK certified the device key with a fresh nonce, the key is a TPM-bound
/// P-256 signing key, and the device holds a valid attestation. Issues its certificate.
pub fn certify(
    policy: &Policy,
    mut record: DeviceRecord,
    request: &CertifyRequest,
    nonce: &VerifierNonce,
    ca: &DeviceCa,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(DeviceRecord, CertifyResponse), Refusal> {
    record.refuse_if_denied()?;
    let at = seconds(now);
    match record.attested_until {
        Some(until) if until > at => {}
        Some(_) => {
            return Err(Refusal::AttestationRequired {
                device: record.id.to_string(),
                why: "the last attestation expired".into(),
            })
        }
        None => {
            return Err(Refusal::AttestationRequired {
                device: record.id.to_string(),
                why: match &record.last_verdict {
                    Some(verdict) if !verdict.accepted => "the last attestation failed".into(),
                    _ => "none accepted yet".into(),
                },
            })
        }
    }
    let ak = record.ak()?;
    let key = appraise_certify(
        &request.device_key_public.0,
        &request.certify_info.0,
        &request.signature.0,
        &ak.key,
        nonce.as_bytes(),
    )
    .map_err(|error| Refusal::DeviceKey(error.to_string()))?;
    let mut serial = [0u8; 16];
    rng.fill_bytes(&mut serial);
    // A little slack for devices whose clock runs behind.
    let not_before = at.saturating_sub(300);
    let not_after = at + policy.certificate_validity.as_secs();
    let issued = ca
        .issue(record.id.as_str(), &key, not_before, not_after, serial)
        .map_err(|error| Refusal::Ca(error.to_string()))?;
    record.certificates.push(CertificateRecord {
        serial: issued.serial.clone(),
        issued: at,
        not_after,
        device_key: hex::encode(Sha256::digest(&request.device_key_public.0)),
    });
    if record.certificates.len() > CERTIFICATE_HISTORY {
        let excess = record.certificates.len() - CERTIFICATE_HISTORY;
        record.certificates.drain(..excess);
    }
    let response = CertifyResponse {
        device: record.id.to_string(),
        certificate: issued.pem,
        chain: ca.chain_pem().to_owned(),
        serial: issued.serial,
        not_after,
    };
    Ok((record, response))
}

/// Denies a device: no attestation, no certificate, until it is allowed again.
pub fn deny(mut record: DeviceRecord, reason: &str, now: SystemTime) -> DeviceRecord {
    record.denied = Some(Denial {
        at: seconds(now),
        reason: reason.to_owned(),
    });
    record.attested_until = None;
    record
}

/// Lifts a denial; the device must attest again before it gets a certificate.
pub fn allow(mut record: DeviceRecord) -> DeviceRecord {
    record.denied = None;
    record
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
    }

    #[test]
    fn counters_never_go_back() {
        let last = Counters {
            clock: 1000,
            reset_count: 5,
            restart_count: 2,
        };
        let later = |clock, reset_count, restart_count| Counters {
            clock,
            reset_count,
            restart_count,
        };
        assert!(check_counters(&last, &later(1001, 5, 2)).is_ok());
        assert!(
            check_counters(&last, &later(2000, 6, 0)).is_ok(),
            "a reboot"
        );
        assert!(check_counters(&last, &later(999, 5, 2)).is_err(), "clock");
        assert!(check_counters(&last, &later(2000, 4, 9)).is_err(), "resets");
        assert!(
            check_counters(&last, &later(2000, 5, 1)).is_err(),
            "restarts"
        );
    }

    #[test]
    fn nonces_are_single_use_per_device_and_expire() {
        let mut rng = rand::rngs::OsRng;
        let mut book = NonceBook::default();
        let device = DeviceId::new("bay-1").expect("valid");
        let other = DeviceId::new("bay-2").expect("valid");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lifetime = Duration::from_secs(60);
        let nonce = book
            .issue(device.clone(), lifetime, now, &mut rng)
            .expect("issued");
        assert!(book.consume(nonce.as_bytes(), &device, now).is_ok());
        assert!(matches!(
            book.consume(nonce.as_bytes(), &device, now),
            Err(Refusal::Nonce(_))
        ));
        let nonce = book
            .issue(device.clone(), lifetime, now, &mut rng)
            .expect("issued");
        assert!(book.consume(nonce.as_bytes(), &other, now).is_err());
        let nonce = book
            .issue(device.clone(), lifetime, now, &mut rng)
            .expect("issued");
        let late = now + Duration::from_secs(61);
        assert!(book.consume(nonce.as_bytes(), &device, late).is_err());
        assert!(book.consume(&[0; 31], &device, now).is_err());
    }
}
