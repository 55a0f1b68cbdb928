//! The verifier's decisions, without I/O: registration (EK certificate chain, one identity per
//! TPM, the credential challenge), activation, single-use nonces, the appraisal of an
//! attestation (quote, event-log replay, TPM counters, released manifests, platform PCRs, with
//! every check that is skipped named) and certification of the device key in the boot that was
//! attested. The service feeds it requests, the time and randomness, and stores the
//! [`DeviceRecord`]s it returns.
//!
//! Nothing a client sends changes what the verifier knows of a device until the device's AK
//! has signed it over a nonce of this verifier: an unauthenticated request is refused and leaves
//! no trace.
//!
//! Each refusal says what differs and what to do, because the person reading it is an operator
//! looking at a substation that stopped delivering data.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime};

use edgeward_bootchain::eventlog::{parse, replay, HashAlgorithm, PcrIndex};
use edgeward_bootchain::manifest::{find_match, ReferenceValues};
use hmac::{Hmac, Mac};
use rand::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::agent_log::{self, ReleasedWorkloads, WORKLOAD_PCR};
use crate::api::{
    ActivateRequest, AttestRequest, CertifyRequest, CertifyResponse, EkKey, Hex, RegisterRequest,
    RegisterResponse, SkippedCheck, Verdict,
};
use crate::credential::{make_credential, EkKind, EkPublic};
use crate::device_ca::DeviceCa;
use crate::ek_certificate::{verify_ek_certificate, EkRoots};
use crate::key_policy::{pcr_policy_digest, DEVICE_KEY_PCRS};
use crate::quote::{
    authenticate, check_certify, check_quote, parse_ak_public, pcr_digest, Attest, QuoteError,
};

pub use edgeward_platform::identity::{DeviceId, IdentityError};

/// The identity of a device that asks for none: from its EK, so it is stable.
pub fn identity_from_ek(ek: &EkPublic) -> DeviceId {
    DeviceId::from_fingerprint(&ek.fingerprint())
}

impl From<IdentityError> for Refusal {
    fn from(error: IdentityError) -> Self {
        Refusal::BadRequest(error.to_string())
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
    #[error(
        "device identity {0} is reserved: the broker gives it more than a device's rights \
         (reserved_identities in the verifier's configuration)"
    )]
    ReservedIdentity(String),
    #[error("the EK certificate is not trusted: {0}")]
    EkCertificate(String),
    #[error("the EK is refused: {0}")]
    EkKey(String),
    #[error(
        "this verifier registers {configured} only (ek_kind = \"{configured_name}\" in \
         verifier.toml), the device presented {presented}: attest with --ek {configured_name}"
    )]
    EkKind {
        configured: &'static str,
        configured_name: &'static str,
        presented: &'static str,
    },
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
    #[error("too many attestations at once: {0}; retry shortly")]
    Busy(String),
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
            Self::ReservedIdentity(_) => "reserved_identity",
            Self::EkCertificate(_) => "ek_certificate",
            Self::EkKey(_) => "ek_key",
            Self::EkKind { .. } => "ek_kind",
            Self::Ak(_) => "ak",
            Self::Activation => "activation",
            Self::NotActivated(_) => "not_activated",
            Self::Nonce(_) => "nonce",
            Self::Attestation(_) => "attestation",
            Self::AttestationRequired { .. } => "attestation_required",
            Self::DeviceKey(_) => "device_key",
            Self::Busy(_) => "busy",
            Self::Ca(_) => "ca",
        }
    }

    /// The HTTP status the service answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::UnknownDevice(_) => 404,
            Self::IdentityTaken { .. } | Self::EkTaken { .. } => 409,
            Self::Busy(_) => 503,
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
    /// The one EK kind this fleet registers (a TPM may carry both).
    pub ek_kind: EkKind,
    /// Manufacturer roots for EK certificates (DER), and the documented exceptions among them.
    pub ek_roots: EkRoots,
    /// Intermediates the verifier knows of (DER), in addition to those devices send.
    pub ek_intermediates: Vec<Vec<u8>>,
    /// The released images, verified with the release key.
    pub manifests: Vec<ReferenceValues>,
    /// The SHA-256 PCRs every quote covers.
    pub pcrs: Vec<u8>,
    /// Accepted values of PCRs the image cannot predict (firmware, platform), per PCR.
    pub platform_pcrs: BTreeMap<u32, Vec<[u8; 32]>>,
    /// Quoted PCRs checked only for matching the event log (the quote and the log agree, but
    /// no reference value is compared): each appraisal names them as skipped.
    pub log_only_pcrs: BTreeSet<u8>,
    /// How long an accepted attestation lets the device get certificates.
    pub attestation_validity: Duration,
    pub certificate_validity: Duration,
    pub nonce_lifetime: Duration,
    /// How long a credential challenge may take to come back.
    pub activation_lifetime: Duration,
    /// Identities no device may take: the platform's own clients (the recorder, an operator's
    /// reader), to which the broker's ACL gives more than a device's rights. A device
    /// certificate is a broker identity by its CN, so one issued under such a name would read
    /// every topic.
    pub reserved_identities: BTreeSet<DeviceId>,
    /// The workloads an operator released: PCR 15 is replayed from the agent's log, and every
    /// entry must be one of these. None released refuses any device that launched a workload.
    pub workloads: ReleasedWorkloads,
}

impl Policy {
    /// The defaults a verifier starts from: PCRs 0-7 (firmware, Secure Boot, the UKI), 9 and 11
    /// (what the kernel got and the UKI's contents), 12 and 13 (must stay zero), 15 (the
    /// workloads, replayed from the agent's log; none released until configured); attestation
    /// good for an hour, certificates for a day. No PCR is log-only until the configuration
    /// says so, so [`Policy::check`] refuses the defaults until each quoted PCR has a reference.
    pub fn new(ek_kind: EkKind, ek_roots: EkRoots, manifests: Vec<ReferenceValues>) -> Self {
        Self {
            ek_kind,
            ek_roots,
            ek_intermediates: Vec::new(),
            manifests,
            pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13, WORKLOAD_PCR],
            platform_pcrs: BTreeMap::new(),
            log_only_pcrs: BTreeSet::new(),
            attestation_validity: Duration::from_secs(3600),
            certificate_validity: Duration::from_secs(24 * 3600),
            nonce_lifetime: Duration::from_secs(120),
            activation_lifetime: Duration::from_secs(300),
            reserved_identities: BTreeSet::new(),
            workloads: ReleasedWorkloads::none(),
        }
    }

    /// Whether anything would pass by omission: every released manifest predicts only quoted
    /// PCRs, and every quoted PCR is, for every manifest, either predicted by it, listed with
    /// accepted values, or listed as log-only; the device key's PCRs are quoted. Returns every
    /// problem found, one line each.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let quoted: BTreeSet<u32> = self.pcrs.iter().map(|pcr| u32::from(*pcr)).collect();
        if quoted.is_empty() {
            problems.push("pcrs is empty: the quote would cover nothing".into());
        }
        if self.manifests.is_empty() {
            problems.push("no image manifest is released: no device could attest".into());
        }
        for manifest in &self.manifests {
            for pcr in manifest.pcrs.keys() {
                if !quoted.contains(pcr) {
                    problems.push(format!(
                        "{} predicts PCR {pcr}, which pcrs does not quote: its value would be \
                         taken from the device's own log; add {pcr} to pcrs",
                        manifest.label()
                    ));
                }
            }
            for pcr in &quoted {
                let known = *pcr == u32::from(WORKLOAD_PCR)
                    || manifest.pcrs.contains_key(pcr)
                    || self.platform_pcrs.contains_key(pcr)
                    || u8::try_from(*pcr).is_ok_and(|pcr| self.log_only_pcrs.contains(&pcr));
                if !known {
                    problems.push(format!(
                        "PCR {pcr} is quoted but {} does not predict it, platform_pcrs lists \
                         no values for it and log_only_pcrs does not name it: say which",
                        manifest.label()
                    ));
                }
            }
        }
        for pcr in self.platform_pcrs.keys() {
            if !quoted.contains(pcr) {
                problems.push(format!(
                    "platform_pcrs lists PCR {pcr}, which pcrs does not quote"
                ));
            }
            if u8::try_from(*pcr).is_ok_and(|pcr| self.log_only_pcrs.contains(&pcr)) {
                problems.push(format!(
                    "PCR {pcr} is both in platform_pcrs and in log_only_pcrs"
                ));
            }
        }
        for pcr in &self.log_only_pcrs {
            if !self.pcrs.contains(pcr) {
                problems.push(format!(
                    "log_only_pcrs lists PCR {pcr}, which pcrs does not quote"
                ));
            }
        }
        if !self.pcrs.contains(&WORKLOAD_PCR) {
            problems.push(format!(
                "pcrs must quote PCR {WORKLOAD_PCR}: a workload the agent launched would go unseen"
            ));
        }
        for pcr in [WORKLOAD_PCR] {
            if self.platform_pcrs.contains_key(&u32::from(pcr)) || self.log_only_pcrs.contains(&pcr)
            {
                problems.push(format!(
                    "PCR {pcr} is the workloads', replayed from the agent's log: it cannot be in \
                     platform_pcrs or log_only_pcrs"
                ));
            }
            for manifest in &self.manifests {
                if manifest.pcrs.contains_key(&u32::from(pcr)) {
                    problems.push(format!(
                        "{} predicts PCR {pcr}, which is the workloads'",
                        manifest.label()
                    ));
                }
            }
        }
        for pcr in DEVICE_KEY_PCRS {
            if !self.pcrs.contains(&pcr) {
                problems.push(format!(
                    "pcrs must quote PCR {pcr}: the device key is bound to PCRs {DEVICE_KEY_PCRS:?}"
                ));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
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
    /// TPMS_CLOCK_INFO.safe: no greater clock was reported before. A TPM says NO after a power
    /// cut made its clock fall back to the value it last saved.
    #[serde(default = "safe_by_default")]
    pub safe: bool,
}

fn safe_by_default() -> bool {
    true
}

impl Counters {
    pub fn of(clock: &crate::quote::ClockInfo) -> Self {
        Self {
            clock: clock.clock,
            reset_count: clock.reset_count,
            restart_count: clock.restart_count,
            safe: clock.safe,
        }
    }
}

/// Checks that `now` does not go back from `last`: the reset count never decreases; within one
/// reset the restart count never decreases; within one boot (same reset and restart) the clock
/// never decreases. Across a reboot the clock may fall back (a power cut loses what the TPM had
/// not saved), but only when the TPM says so: `safe` is NO (TPM 2.0 Part 2, TPMS_CLOCK_INFO). A
/// rolled-back TPM state shows a lower clock as safe, or lower counters.
pub fn check_counters(last: &Counters, now: &Counters) -> Result<(), String> {
    if now.reset_count < last.reset_count {
        return Err(format!(
            "the TPM's reset count went back from {} to {} (rolled-back TPM state or a replayed quote)",
            last.reset_count, now.reset_count
        ));
    }
    let same_reset = now.reset_count == last.reset_count;
    if same_reset && now.restart_count < last.restart_count {
        return Err(format!(
            "the TPM's restart count went back from {} to {} within reset {}",
            last.restart_count, now.restart_count, now.reset_count
        ));
    }
    if now.clock < last.clock {
        if same_reset && now.restart_count == last.restart_count {
            return Err(format!(
                "the TPM's clock went back from {} ms to {} ms within one boot (rolled-back TPM \
                 state or a replayed quote)",
                last.clock, now.clock
            ));
        }
        if now.safe {
            return Err(format!(
                "the TPM's clock went back from {} ms to {} ms while it reports it as never \
                 reported before (safe): rolled-back TPM state",
                last.clock, now.clock
            ));
        }
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
    /// The checks the policy skipped, by name.
    #[serde(default)]
    pub skipped: Vec<SkippedCheck>,
    /// The released workloads the agent's log showed running.
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// The boot an accepted attestation came from: a certification must come from the same one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedBoot {
    /// The quote's TPM counters: the same reset and restart count mean the same boot.
    pub reset_count: u32,
    pub restart_count: u32,
    /// The TPM's clock at the quote (ms); a certification is not earlier.
    pub clock: u64,
    /// The policy digest a device key bound to this boot's PCRs has (key_policy).
    pub device_key_policy: Hex,
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
    /// The boot of the accepted attestation, while it is valid.
    #[serde(default)]
    pub attested_boot: Option<AttestedBoot>,
    #[serde(default)]
    pub certificates: Vec<CertificateRecord>,
}

impl DeviceRecord {
    /// A device just registered, with its EK bound to `id` and nothing else known.
    pub fn new(id: DeviceId, ek: &EkPublic, ek_chain: Vec<String>, registered: u64) -> Self {
        Self {
            id,
            ek: EkKey::from(ek),
            ek_fingerprint: hex::encode(ek.fingerprint()),
            ek_chain,
            registered,
            ak_public: None,
            pending: None,
            denied: None,
            counters: None,
            last_verdict: None,
            attested_until: None,
            attested_boot: None,
            certificates: Vec::new(),
        }
    }

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

/// The EK a registration presents, in its canonical form, and the identity it asks for: the
/// one it names, else the one derived from its EK. Refuses non-canonical encodings.
pub fn identity_of(request: &RegisterRequest) -> Result<(EkPublic, DeviceId), Refusal> {
    let ek = EkPublic::try_from(&request.ek).map_err(|error| Refusal::EkKey(error.to_string()))?;
    let id = match &request.device {
        Some(name) => DeviceId::new(name)?,
        None => identity_from_ek(&ek),
    };
    Ok((ek, id))
}

/// Registration: checks the EK (its kind and encoding) and its certificate, and the AK, binds
/// the identity to the EK, and makes the credential challenge. `existing` is the record of the
/// requested identity, if any; `ek_owner` the identity already bound to this EK, if any.
/// Returns the record to store.
pub fn register(
    policy: &Policy,
    request: RegisterRequest,
    existing: Option<DeviceRecord>,
    ek_owner: Option<DeviceId>,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(DeviceRecord, RegisterResponse), Refusal> {
    let (ek, id) = identity_of(&request)?;
    if policy.reserved_identities.contains(&id) {
        return Err(Refusal::ReservedIdentity(id.to_string()));
    }
    if ek.kind() != policy.ek_kind {
        return Err(Refusal::EkKind {
            configured: policy.ek_kind.describe(),
            configured_name: policy.ek_kind.name(),
            presented: ek.kind().describe(),
        });
    }
    let fingerprint = hex::encode(ek.fingerprint());
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
    let verified = verify_ek_certificate(
        &request.ek_certificate.0,
        &intermediates,
        &policy.ek_roots,
        &ek,
        now,
    )
    .map_err(|error| Refusal::EkCertificate(error.to_string()))?;
    let mut ek_chain = verified.path;
    if verified.eku_exception {
        ek_chain.push(
            "(no EK extended key usage: accepted for this root by ek_roots_without_eku)".into(),
        );
    }
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
        None => {
            let mut record = DeviceRecord::new(id.clone(), &ek, ek_chain, now);
            record.pending = Some(pending);
            record
        }
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
        // A new AK: what the old one attested no longer counts. The counters stay: they are the
        // TPM's, not the AK's (an AK under the EK sees them unobfuscated).
        record.attested_until = None;
        record.attested_boot = None;
    }
    record.ak_public = Some(pending.ak_public);
    Ok(record)
}

/// The verifier's nonces. A nonce carries its own expiry and device, authenticated with a key
/// only this verifier holds, so issuing one stores nothing: no number of nonce requests can
/// exhaust anything or lock a device out. What is stored is the set of nonces already used,
/// and a nonce joins it only with a TPM signature over it (a quote or certification by the
/// device's AK), bounded per device and overall. A verifier that restarts takes a new key, and
/// nonces issued before are no longer accepted. Decision record: docs/decisions/0020.
#[derive(Debug)]
pub struct NonceBook {
    key: [u8; 32],
    /// Used nonces, until they expire: nonce → (device, expiry).
    used: HashMap<VerifierNonce, (DeviceId, u64)>,
    used_per_device: HashMap<DeviceId, usize>,
}

/// The most nonces one device may use within a nonce lifetime (a quote and a certification
/// per attestation; a device looping on its TPM is refused, not the fleet).
pub const MAX_USED_PER_DEVICE: usize = 64;
/// The most used nonces kept at once.
pub const MAX_USED_NONCES: usize = 100_000;

type NonceMac = Hmac<Sha256>;

/// `expiry (8, big-endian seconds) ‖ random (8) ‖ HMAC-SHA256(key, device ‖ expiry ‖ random)
/// truncated to 16`.
const MAC_LEN: usize = 16;

impl NonceBook {
    pub fn new(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self {
            key,
            used: HashMap::new(),
            used_per_device: HashMap::new(),
        }
    }

    fn mac(&self, device: &DeviceId, head: &[u8]) -> [u8; MAC_LEN] {
        let mut out = [0u8; MAC_LEN];
        // HMAC takes keys of any length; the key is 32 bytes.
        if let Ok(mut mac) = <NonceMac as Mac>::new_from_slice(&self.key) {
            mac.update(b"edgeward verifier nonce\0");
            mac.update(&(device.as_str().len() as u16).to_be_bytes());
            mac.update(device.as_str().as_bytes());
            mac.update(head);
            out.copy_from_slice(&mac.finalize().into_bytes()[..MAC_LEN]);
        }
        out
    }

    /// A nonce for `device`, valid for `lifetime`. Stores nothing.
    pub fn issue(
        &self,
        device: &DeviceId,
        lifetime: Duration,
        now: SystemTime,
        rng: &mut (impl RngCore + CryptoRng),
    ) -> VerifierNonce {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&(seconds(now) + lifetime.as_secs()).to_be_bytes());
        rng.fill_bytes(&mut bytes[8..16]);
        let mac = self.mac(device, &bytes[..16]);
        bytes[16..].copy_from_slice(&mac);
        VerifierNonce(bytes)
    }

    /// Whether `nonce` is one this verifier issued to `device`, unexpired and unused. Changes
    /// nothing: a nonce is used up only by [`NonceBook::redeem`].
    pub fn check(
        &self,
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
        let expected = self.mac(device, &nonce.0[..16]);
        // Constant time: the comparison must not tell how much of a forged MAC was right.
        let same = expected
            .iter()
            .zip(&nonce.0[16..])
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if !same {
            return Err(Refusal::Nonce(format!(
                "it was not issued to device {device} by this verifier (or the verifier \
                 restarted since): ask for a new one"
            )));
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&nonce.0[..8]);
        if seconds(now) > u64::from_be_bytes(expiry) {
            return Err(Refusal::Nonce("it expired: ask for a new one".into()));
        }
        if self.used.contains_key(&nonce) {
            return Err(Refusal::Nonce(
                "it was already used (a replayed quote?): ask for a new one".into(),
            ));
        }
        Ok(nonce)
    }

    /// Uses a checked nonce up, once the device's TPM signed over it. Refuses a nonce used
    /// before, and a device that used too many at once.
    pub fn redeem(
        &mut self,
        nonce: &VerifierNonce,
        device: &DeviceId,
        now: SystemTime,
    ) -> Result<(), Refusal> {
        let now = seconds(now);
        if self.used.len() >= MAX_USED_NONCES
            || self.used_per_device.get(device).copied().unwrap_or(0) >= MAX_USED_PER_DEVICE
        {
            self.forget_expired(now);
        }
        if self.used.contains_key(nonce) {
            return Err(Refusal::Nonce(
                "it was already used (a replayed quote?): ask for a new one".into(),
            ));
        }
        let held = self.used_per_device.get(device).copied().unwrap_or(0);
        if held >= MAX_USED_PER_DEVICE {
            return Err(Refusal::Busy(format!(
                "device {device} used {held} nonces within their lifetime"
            )));
        }
        if self.used.len() >= MAX_USED_NONCES {
            return Err(Refusal::Busy(format!(
                "{MAX_USED_NONCES} nonces used within their lifetime"
            )));
        }
        let mut expiry = [0u8; 8];
        expiry.copy_from_slice(&nonce.0[..8]);
        self.used
            .insert(*nonce, (device.clone(), u64::from_be_bytes(expiry)));
        *self.used_per_device.entry(device.clone()).or_default() += 1;
        Ok(())
    }

    fn forget_expired(&mut self, now: u64) {
        let per_device = &mut self.used_per_device;
        self.used.retain(|_, (device, expires)| {
            let keep = *expires >= now;
            if !keep {
                if let Some(count) = per_device.get_mut(device) {
                    *count = count.saturating_sub(1);
                }
            }
            keep
        });
        per_device.retain(|_, count| *count > 0);
    }

    /// How many used nonces are held (for tests and the service's health).
    pub fn used(&self) -> usize {
        self.used.len()
    }
}

/// The first step of an attestation or certification: the device is not denied, and its AK
/// signed `quote` over the nonce the request names. Until this passes nothing about the device
/// may change.
fn authenticated(
    record: &DeviceRecord,
    structure: &[u8],
    signature: &[u8],
    nonce: &VerifierNonce,
) -> Result<Attest, Refusal> {
    record.refuse_if_denied()?;
    let ak = record.ak()?;
    authenticate(structure, signature, &ak.key, nonce.as_bytes()).map_err(|error| match error {
        QuoteError::BadSignature => Refusal::Attestation(vec![
            "the signature does not verify with the device's activated AK: the structure was \
             altered, or made by another TPM"
                .into(),
        ]),
        QuoteError::NonceMismatch { .. } => Refusal::Nonce(format!(
            "{error}: the TPM signed for another nonce than the one presented (a replayed \
             quote?)"
        )),
        other => Refusal::Attestation(vec![format!("quote: {other}")]),
    })
}

/// An attestation: the nonce is this verifier's for the device, the device's AK signed the
/// quote over it, then the quote is appraised. `Err` when the request is not the device's own
/// (nothing to store: an unauthenticated client leaves no trace); otherwise the record to store
/// and the verdict, accepted or not.
pub fn attest(
    policy: &Policy,
    record: DeviceRecord,
    request: &AttestRequest,
    nonces: &mut NonceBook,
    now: SystemTime,
) -> Result<(DeviceRecord, Verdict), Refusal> {
    record.refuse_if_denied()?;
    let nonce = nonces.check(&request.nonce.0, &record.id, now)?;
    let quote = authenticated(&record, &request.quote.0, &request.signature.0, &nonce)?;
    nonces.redeem(&nonce, &record.id, now)?;
    Ok(appraise_attestation(policy, record, request, &quote, now))
}

/// The appraisal of a quote already authenticated ([`attest`]): returns the record to store
/// (with the verdict, also when refused) and the verdict.
pub fn appraise_attestation(
    policy: &Policy,
    mut record: DeviceRecord,
    request: &AttestRequest,
    quote: &Attest,
    now: SystemTime,
) -> (DeviceRecord, Verdict) {
    let at = seconds(now);
    let outcome = appraise(policy, &mut record, request, quote);
    let (accepted, manifest, reasons, skipped, boot, workloads) = match outcome {
        Ok(appraisal) => (
            true,
            Some(appraisal.manifest),
            Vec::new(),
            appraisal.skipped,
            Some(appraisal.boot),
            appraisal.workloads,
        ),
        Err(refusal) => (false, None, refusal.reasons(), Vec::new(), None, Vec::new()),
    };
    record.attested_until = accepted.then(|| at + policy.attestation_validity.as_secs());
    record.attested_boot = boot;
    record.last_verdict = Some(VerdictRecord {
        at,
        accepted,
        manifest: manifest.clone(),
        reasons: reasons.clone(),
        skipped: skipped.clone(),
        workloads: workloads.clone(),
    });
    let verdict = Verdict {
        device: record.id.to_string(),
        accepted,
        manifest,
        reasons,
        skipped,
        attested_until: record.attested_until,
        workloads,
    };
    (record, verdict)
}

/// What an accepted attestation established.
struct Appraisal {
    manifest: String,
    workloads: Vec<String>,
    skipped: Vec<SkippedCheck>,
    boot: AttestedBoot,
}

fn appraise(
    policy: &Policy,
    record: &mut DeviceRecord,
    request: &AttestRequest,
    quote: &Attest,
) -> Result<Appraisal, Refusal> {
    // The configuration was checked at start; a policy built otherwise is checked here, so that
    // nothing passes because of how the verifier was set up.
    policy.check().map_err(|problems| {
        Refusal::Attestation(
            problems
                .into_iter()
                .map(|problem| format!("the verifier's policy is unsound: {problem}"))
                .collect(),
        )
    })?;
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
    // PCR 15 is the agent's: nothing before it may have touched it, and its value is what the
    // agent's log replays to.
    if PcrIndex::new(u32::from(WORKLOAD_PCR))
        .and_then(|index| replayed.get(HashAlgorithm::Sha256, index))
        .is_some()
    {
        return Err(Refusal::Attestation(vec![format!(
            "the firmware's event log extends PCR {WORKLOAD_PCR}, which only the agent's \
             workload measurements may"
        )]));
    }
    let agent = agent_log::replay(&request.agent_log).map_err(|error| {
        Refusal::Attestation(vec![format!("the agent's log cannot be replayed: {error}")])
    })?;
    let expected: Vec<(u8, [u8; 32])> = policy
        .pcrs
        .iter()
        .map(|pcr| {
            let value = if *pcr == WORKLOAD_PCR {
                agent.get(pcr).copied().unwrap_or([0; 32])
            } else {
                replayed_value(*pcr)
            };
            (*pcr, value)
        })
        .collect();

    match check_quote(quote, &expected) {
        Ok(()) => {}
        Err(QuoteError::PcrDigestMismatch { quoted, .. }) => {
            return Err(Refusal::Attestation(log_differs_from_tpm(
                policy, request, &expected, &quoted,
            )))
        }
        Err(other) => return Err(Refusal::Attestation(vec![format!("quote: {other}")])),
    }

    // The quote is genuine and fresh: its counters are the TPM's.
    let counters = Counters::of(&quote.clock);
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
    let matched = match find_match(&log, &replayed, &policy.manifests) {
        Ok(manifest) => Some(manifest),
        Err(no_match) => {
            for comparison in &no_match.comparisons {
                for difference in &comparison.differences {
                    reasons.push(format!("not {}: {difference}", comparison.manifest));
                }
            }
            None
        }
    };
    // Every workload the quote proves was launched must be one the operator released.
    let mut workloads = Vec::new();
    for event in &request.agent_log {
        match policy.workloads.find(&event.digest.0) {
            Some(released) => workloads.push(format!(
                "{} {} (manifest {})",
                released.name,
                released.version,
                hex::encode(&released.manifest_sha256.0[..6])
            )),
            None => reasons.push(format!(
                "workload {} is not released (edgeward workload release)",
                event.label()
            )),
        }
    }
    let Some(manifest) = matched else {
        return Err(Refusal::Attestation(reasons));
    };
    if !reasons.is_empty() {
        return Err(Refusal::Attestation(reasons));
    }
    // Every quoted PCR was compared with a reference, or the policy says it is log-only.
    let mut skipped = Vec::new();
    for (pcr, value) in &expected {
        let index = u32::from(*pcr);
        if manifest.pcrs.contains_key(&index)
            || policy.platform_pcrs.contains_key(&index)
            || *pcr == WORKLOAD_PCR
        {
            continue;
        }
        if policy.log_only_pcrs.contains(pcr) {
            skipped.push(SkippedCheck {
                check: format!("pcr{pcr}"),
                reason: format!(
                    "log consistency only (log_only_pcrs): PCR {pcr} = {} matches the event \
                     log, no reference value compared",
                    hex::encode(value)
                ),
            });
        } else {
            // Policy::check refuses this; kept so that the appraisal fails closed on its own.
            return Err(Refusal::Attestation(vec![format!(
                "PCR {pcr} has no reference value and is not listed as log-only"
            )]));
        }
    }
    let key_values: Vec<(u8, [u8; 32])> = expected
        .iter()
        .filter(|(pcr, _)| DEVICE_KEY_PCRS.contains(pcr))
        .copied()
        .collect();
    Ok(Appraisal {
        manifest: manifest.label(),
        workloads,
        skipped,
        boot: AttestedBoot {
            reset_count: counters.reset_count,
            restart_count: counters.restart_count,
            clock: counters.clock,
            device_key_policy: Hex(pcr_policy_digest(&key_values).to_vec()),
        },
    })
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
                let log = if *pcr == WORKLOAD_PCR {
                    "the agent's log of launched workloads"
                } else {
                    "the event log"
                };
                reasons.push(format!(
                    "PCR {pcr} is {} in the TPM's signed quote but {log} replays to {}: \
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

/// Certification: the nonce is this verifier's, the AK certified the device key over it in the
/// same boot as the accepted attestation, and the key is a TPM-bound P-256 signing key usable
/// only in that boot (its policy binds it to the attested PCRs). Issues its certificate.
#[allow(clippy::too_many_arguments)]
pub fn certify(
    policy: &Policy,
    mut record: DeviceRecord,
    request: &CertifyRequest,
    nonces: &mut NonceBook,
    ca: &DeviceCa,
    now: SystemTime,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(DeviceRecord, CertifyResponse), Refusal> {
    record.refuse_if_denied()?;
    let nonce = nonces.check(&request.nonce.0, &record.id, now)?;
    let at = seconds(now);
    let boot = match (&record.attested_until, &record.attested_boot) {
        (Some(until), Some(boot)) if *until > at => boot.clone(),
        (Some(_), _) => {
            return Err(Refusal::AttestationRequired {
                device: record.id.to_string(),
                why: "the last attestation expired".into(),
            })
        }
        (None, _) => {
            return Err(Refusal::AttestationRequired {
                device: record.id.to_string(),
                why: match &record.last_verdict {
                    Some(verdict) if !verdict.accepted => "the last attestation failed".into(),
                    _ => "none accepted yet".into(),
                },
            })
        }
    };
    let certification = authenticated(
        &record,
        &request.certify_info.0,
        &request.signature.0,
        &nonce,
    )?;
    nonces.redeem(&nonce, &record.id, now)?;
    let key = check_certify(&request.device_key_public.0, &certification)
        .map_err(|error| Refusal::DeviceKey(error.to_string()))?;
    let clock = &certification.clock;
    if clock.reset_count != boot.reset_count
        || clock.restart_count != boot.restart_count
        || clock.clock < boot.clock
    {
        return Err(Refusal::AttestationRequired {
            device: record.id.to_string(),
            why: format!(
                "the certification comes from another boot than the accepted attestation (TPM \
                 reset {} restart {} clock {} ms; attested in reset {} restart {} at {} ms)",
                clock.reset_count,
                clock.restart_count,
                clock.clock,
                boot.reset_count,
                boot.restart_count,
                boot.clock
            ),
        });
    }
    if key.auth_policy != boot.device_key_policy.0 {
        return Err(Refusal::DeviceKey(format!(
            "its policy {} does not bind it to the attested boot's PCRs {DEVICE_KEY_PCRS:?} \
             (policy {}): the key would sign outside that boot. The agent makes a new key \
             when the image changes",
            hex::encode(&key.auth_policy),
            hex::encode(&boot.device_key_policy.0)
        )));
    }
    record.counters = Some(Counters::of(clock));
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
    record.attested_boot = None;
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
    fn counters_never_go_back() {
        let last = Counters {
            clock: 1000,
            reset_count: 5,
            restart_count: 2,
            safe: true,
        };
        let later = |clock, reset_count, restart_count, safe| Counters {
            clock,
            reset_count,
            restart_count,
            safe,
        };
        assert!(check_counters(&last, &later(1001, 5, 2, true)).is_ok());
        assert!(
            check_counters(&last, &later(2000, 6, 0, true)).is_ok(),
            "a reboot"
        );
        assert!(
            check_counters(&last, &later(300, 6, 0, false)).is_ok(),
            "a power cut: the clock fell back and the TPM says so"
        );
        assert!(
            check_counters(&last, &later(300, 6, 0, true)).is_err(),
            "a lower clock the TPM calls safe: rolled back"
        );
        assert!(
            check_counters(&last, &later(999, 5, 2, false)).is_err(),
            "within one boot"
        );
        assert!(
            check_counters(&last, &later(2000, 4, 9, true)).is_err(),
            "resets"
        );
        assert!(
            check_counters(&last, &later(2000, 5, 1, true)).is_err(),
            "restarts"
        );
    }

    #[test]
    fn nonces_are_bound_to_their_device_used_once_and_expire() {
        let mut rng = rand::rngs::OsRng;
        let mut book = NonceBook::new(&mut rng);
        let device = DeviceId::new("bay-1").expect("valid");
        let other = DeviceId::new("bay-2").expect("valid");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lifetime = Duration::from_secs(60);
        let nonce = book.issue(&device, lifetime, now, &mut rng);
        let checked = book.check(nonce.as_bytes(), &device, now).expect("issued");
        book.redeem(&checked, &device, now).expect("first use");
        let refused = |result: Result<VerifierNonce, Refusal>| match result {
            Err(Refusal::Nonce(reason)) => reason,
            other => panic!("expected a nonce refusal, got {other:?}"),
        };
        assert!(refused(book.check(nonce.as_bytes(), &device, now)).contains("already used"));
        assert!(matches!(
            book.redeem(&checked, &device, now),
            Err(Refusal::Nonce(_))
        ));
        let nonce = book.issue(&device, lifetime, now, &mut rng);
        assert!(refused(book.check(nonce.as_bytes(), &other, now)).contains("not issued to"));
        let late = now + Duration::from_secs(61);
        assert!(refused(book.check(nonce.as_bytes(), &device, late)).contains("expired"));
        // Any altered byte (expiry, random part or MAC) is refused.
        for index in 0..32 {
            let mut altered = *nonce.as_bytes();
            altered[index] ^= 0x01;
            assert!(book.check(&altered, &device, now).is_err(), "byte {index}");
        }
        assert!(book.check(&[0; 31], &device, now).is_err());
        // Another verifier (or this one after a restart) does not take it.
        let restarted = NonceBook::new(&mut rng);
        assert!(restarted.check(nonce.as_bytes(), &device, now).is_err());
    }

    #[test]
    fn no_number_of_nonce_requests_locks_anyone_out() {
        let mut rng = rand::rngs::OsRng;
        let mut book = NonceBook::new(&mut rng);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lifetime = Duration::from_secs(120);
        // An unauthenticated client asks 200,000 times, for one device and for many.
        let victim = DeviceId::new("bay-1").expect("valid");
        for index in 0..200_000u32 {
            let device = if index % 2 == 0 {
                victim.clone()
            } else {
                DeviceId::new(&format!("bay-{}", index % 5000)).expect("valid")
            };
            let _ = book.issue(&device, lifetime, now, &mut rng);
        }
        assert_eq!(book.used(), 0, "issuing stores nothing");
        let nonce = book.issue(&victim, lifetime, now, &mut rng);
        let nonce = book.check(nonce.as_bytes(), &victim, now).expect("valid");
        book.redeem(&nonce, &victim, now)
            .expect("the device attests");
    }

    #[test]
    fn a_device_using_too_many_nonces_is_refused_alone() {
        let mut rng = rand::rngs::OsRng;
        let mut book = NonceBook::new(&mut rng);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let lifetime = Duration::from_secs(120);
        let looping = DeviceId::new("bay-1").expect("valid");
        let other = DeviceId::new("bay-2").expect("valid");
        for _ in 0..MAX_USED_PER_DEVICE {
            let nonce = book.issue(&looping, lifetime, now, &mut rng);
            book.redeem(&nonce, &looping, now)
                .expect("within the bound");
        }
        let nonce = book.issue(&looping, lifetime, now, &mut rng);
        assert!(matches!(
            book.redeem(&nonce, &looping, now),
            Err(Refusal::Busy(_))
        ));
        let nonce = book.issue(&other, lifetime, now, &mut rng);
        book.redeem(&nonce, &other, now)
            .expect("another device is not affected");
        // Once its nonces expire, the device may attest again.
        let later = now + Duration::from_secs(121);
        let nonce = book.issue(&looping, lifetime, later, &mut rng);
        book.redeem(&nonce, &looping, later).expect("after expiry");
    }
}
