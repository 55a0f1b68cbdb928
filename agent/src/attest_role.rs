//! The attestation role (and `edgeward-agent attest`): registration (EK certificate, AK,
//! ActivateCredential), attestation (quote with the verifier's nonce, event log) and
//! certification of the device key, then the certificate written out and handed to the roles
//! that use it. Keys are TPM blobs in the state directory and reused across restarts; every TPM
//! step runs on the agent's one TPM owner ([`crate::tpm::Tpm`]). In daemon mode the certificate
//! is renewed before it expires and the device re-attests on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use edgeward_attestation::api::{
    ActivateRequest, ActivateResponse, AttestRequest, CertifyRequest, CertifyResponse, EkKey, Hex,
    NonceRequest, NonceResponse, RegisterRequest, RegisterResponse, Verdict,
};
use edgeward_attestation::tpm::{self, EkKind, KeyBlob, PcrSelection};
use serde::{Deserialize, Serialize};

use crate::credentials::DeviceCredentials;
use crate::tpm::Tpm;
use crate::verifier_client::{Refused, VerifierClient};

/// The kernel's copy of the firmware's event log.
pub const EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

#[derive(Debug, Clone)]
pub struct Options {
    pub verifier: String,
    /// The verifier's TLS CA, PEM.
    pub ca: String,
    pub ek: EkKind,
    pub device: Option<String>,
    pub state: PathBuf,
    pub out: PathBuf,
    pub event_log: PathBuf,
}

/// What the agent remembers of its registration.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Registration {
    verifier: String,
    device: String,
    /// SHA-256 of the AK blob's public part that was activated.
    ak: String,
}

/// The AK's TPM2_Certify of the device key: its public area, the attestation and signature.
struct Certification {
    public: Vec<u8>,
    info: Vec<u8>,
    signature: Vec<u8>,
}

/// What one attestation gave.
#[derive(Debug)]
pub struct Outcome {
    pub device: String,
    pub attested_until: Option<u64>,
    pub not_after: u64,
}

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(mode)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn read_blob(state: &Path, name: &str) -> Result<Option<KeyBlob>> {
    let public = state.join(format!("{name}.pub"));
    let private = state.join(format!("{name}.priv"));
    if !public.exists() || !private.exists() {
        return Ok(None);
    }
    Ok(Some(KeyBlob {
        public: std::fs::read(&public)
            .with_context(|| format!("cannot read {}", public.display()))?,
        private: std::fs::read(&private)
            .with_context(|| format!("cannot read {}", private.display()))?,
    }))
}

fn write_blob(state: &Path, name: &str, blob: &KeyBlob) -> Result<()> {
    write_atomically(&state.join(format!("{name}.pub")), &blob.public, 0o600)?;
    write_atomically(&state.join(format!("{name}.priv")), &blob.private, 0o600)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn refusal_code(error: &anyhow::Error) -> Option<&str> {
    error
        .downcast_ref::<Refused>()
        .map(|refused| refused.body.error.as_str())
}

/// One run: register if needed, attest, certify, write the certificate and hand it to
/// `credentials`.
pub async fn attest_once(
    options: &Options,
    tpm: &Tpm,
    credentials: &DeviceCredentials,
) -> Result<Outcome> {
    let client = VerifierClient::new(&options.verifier, &options.ca)?;
    std::fs::create_dir_all(&options.state)
        .with_context(|| format!("cannot create {}", options.state.display()))?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;
    ensure_device_key(options, tpm).await?;
    let saved = read_blob(&options.state, "ak")?;
    let ek = options.ek;
    // The device key is loaded first (it needs the storage root key beside it, and a TPM
    // without a resource manager has three object slots); EK and AK come next.
    let (keys, created) = tpm
        .call(move |state| -> Result<(tpm::AttestationKeys, bool)> {
            Ok(match saved {
                Some(blob) => (
                    tpm::load_attestation_keys(&mut state.context, ek, &blob).context(
                        "the saved AK does not load under this TPM's EK (was the TPM cleared?)",
                    )?,
                    false,
                ),
                None => (tpm::create_attestation_keys(&mut state.context, ek)?, true),
            })
        })
        .await??;
    if created {
        write_blob(&options.state, "ak", &keys.ak_blob)?;
        tracing::info!("AK created under the EK");
    }
    let keys = Arc::new(keys);
    let result = attest_with(options, &client, tpm, &keys, credentials).await;
    let keys = Arc::try_unwrap(keys).map_err(|_| anyhow!("the AK is still in use"))?;
    tpm.call(move |state| keys.flush(&mut state.context))
        .await?;
    result
}

/// Loads the saved device key, or makes a new one when there is none or it is bound to another
/// boot's PCRs (an image update): the key signs only in the boot it was made in.
async fn ensure_device_key(options: &Options, tpm: &Tpm) -> Result<()> {
    let saved = read_blob(&options.state, "device-key")?;
    let made = tpm
        .call(move |state| -> Result<Option<KeyBlob>> {
            let current = tpm::current_device_key_policy(&mut state.context)?;
            if state
                .device_key
                .as_ref()
                .is_some_and(|key| key.policy == current)
            {
                return Ok(None);
            }
            if let Some(old) = state.device_key.take() {
                old.flush(&mut state.context);
            }
            if let Some(blob) = saved {
                let key = tpm::load_device_key(&mut state.context, &blob).context(
                    "the saved device key does not load in this TPM (was the TPM cleared?)",
                )?;
                if key.policy == current {
                    state.device_key = Some(key);
                    return Ok(None);
                }
                tracing::warn!(
                    key_policy = %hex::encode(&key.policy),
                    boot_policy = %hex::encode(current),
                    "the saved device key is bound to another boot's PCRs (an image update?): \
                     making a new one"
                );
                key.flush(&mut state.context);
            }
            let key = tpm::create_device_key(&mut state.context)?;
            let blob = key.blob();
            state.device_key = Some(key);
            Ok(Some(blob))
        })
        .await??;
    if let Some(blob) = made {
        write_blob(&options.state, "device-key", &blob)?;
        tracing::info!(pcrs = ?tpm::DEVICE_KEY_PCRS, "device key created in the TPM, bound to this boot");
    }
    Ok(())
}

async fn register(
    options: &Options,
    client: &VerifierClient,
    tpm: &Tpm,
    keys: &Arc<tpm::AttestationKeys>,
) -> Result<String> {
    let ek = options.ek;
    let ek_certificate = tpm
        .call(move |state| tpm::read_ek_certificate(&mut state.context, ek))
        .await?
        .context("the TPM has no EK certificate for this EK kind (try --ek rsa or --ek ecc)")?;
    let request = RegisterRequest {
        device: options.device.clone(),
        ek: EkKey::from(&keys.ek_public),
        ek_certificate: Hex(ek_certificate),
        ek_intermediates: Vec::new(),
        ak_public: Hex(keys.ak_blob.public.clone()),
    };
    let challenge: RegisterResponse = client.post("register", &request).await?;
    let (id_object, encrypted_secret) = (
        challenge.id_object.0.clone(),
        challenge.encrypted_secret.0.clone(),
    );
    let held = keys.clone();
    let secret = tpm
        .call(move |state| {
            tpm::activate_credential(&mut state.context, &held, &id_object, &encrypted_secret)
        })
        .await?
        .context("ActivateCredential failed: the challenge is not for this TPM's EK and AK")?;
    let _: ActivateResponse = client
        .post(
            "activate",
            &ActivateRequest {
                device: challenge.device.clone(),
                secret: Hex(secret),
            },
        )
        .await?;
    let registration = Registration {
        verifier: options.verifier.clone(),
        device: challenge.device.clone(),
        ak: sha256_hex(&keys.ak_blob.public),
    };
    write_atomically(
        &options.state.join("registration.json"),
        &serde_json::to_vec_pretty(&registration)?,
        0o600,
    )?;
    tracing::info!(device = %challenge.device, "registered: AK activated with the verifier");
    Ok(challenge.device)
}

async fn attest_with(
    options: &Options,
    client: &VerifierClient,
    tpm: &Tpm,
    keys: &Arc<tpm::AttestationKeys>,
    credentials: &DeviceCredentials,
) -> Result<Outcome> {
    let registration: Option<Registration> = std::fs::read(options.state.join("registration.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let current = registration.filter(|registration| {
        registration.verifier == options.verifier
            && registration.ak == sha256_hex(&keys.ak_blob.public)
            && options
                .device
                .as_ref()
                .is_none_or(|device| *device == registration.device)
    });
    let mut device = match current {
        Some(registration) => registration.device,
        None => register(options, client, tpm, keys).await?,
    };
    let nonce: NonceResponse = match client
        .post(
            "nonce",
            &NonceRequest {
                device: device.clone(),
            },
        )
        .await
    {
        // The verifier lost or never completed the registration: do it again, once.
        Err(error)
            if matches!(
                refusal_code(&error),
                Some("unknown_device" | "not_activated")
            ) =>
        {
            tracing::warn!(%error, "registering again");
            device = register(options, client, tpm, keys).await?;
            client
                .post(
                    "nonce",
                    &NonceRequest {
                        device: device.clone(),
                    },
                )
                .await?
        }
        other => other?,
    };
    let selection = PcrSelection {
        bank: tss_esapi::interface_types::algorithm::HashingAlgorithm::Sha256,
        pcrs: nonce.pcrs.clone(),
    };
    let quote_nonce = tpm::Nonce::new(nonce.nonce.0.clone())?;
    let (held, quoted) = (keys.clone(), selection.clone());
    let (quote, agent_log) = tpm
        .call(move |state| {
            tpm::quote_with(&mut state.context, &held, &quote_nonce, &quoted)
                .map(|quote| (quote, state.agent_log.clone()))
        })
        .await??;
    let event_log = std::fs::read(&options.event_log)
        .with_context(|| format!("cannot read the event log {}", options.event_log.display()))?;
    let request = AttestRequest {
        device: device.clone(),
        nonce: nonce.nonce,
        quote: Hex(quote.attest),
        signature: Hex(quote.signature),
        pcr_values: selection
            .pcrs
            .iter()
            .zip(quote.pcr_values)
            .map(|(pcr, value)| (*pcr, Hex(value)))
            .collect(),
        event_log: Hex(event_log),
        agent_log,
    };
    let verdict: Verdict = client.post("attest", &request).await?;
    tracing::info!(
        %device,
        manifest = ?verdict.manifest,
        workloads = ?verdict.workloads,
        "attestation accepted"
    );

    let nonce: NonceResponse = client
        .post(
            "nonce",
            &NonceRequest {
                device: device.clone(),
            },
        )
        .await?;
    let certify_nonce = tpm::Nonce::new(nonce.nonce.0.clone())?;
    let held = keys.clone();
    let certification = tpm
        .call(move |state| -> Result<Certification> {
            let key = state
                .device_key
                .as_ref()
                .ok_or_else(|| anyhow!("no device key is loaded"))?;
            let (info, signature) = tpm::certify(&mut state.context, &held, key, &certify_nonce)?;
            Ok(Certification {
                public: key.public.clone(),
                info,
                signature,
            })
        })
        .await??;
    let (device_key_public, certify_info, signature) = (
        certification.public,
        certification.info,
        certification.signature,
    );
    let certified: CertifyResponse = client
        .post(
            "certify",
            &CertifyRequest {
                device: device.clone(),
                nonce: nonce.nonce,
                device_key_public: Hex(device_key_public),
                certify_info: Hex(certify_info),
                signature: Hex(signature),
            },
        )
        .await?;
    write_atomically(
        &options.out.join("device.crt"),
        certified.certificate.as_bytes(),
        0o644,
    )?;
    write_atomically(
        &options.out.join("device-ca-chain.crt"),
        certified.chain.as_bytes(),
        0o644,
    )?;
    credentials.reload()?;
    tracing::info!(%device, serial = %certified.serial, not_after = certified.not_after, out = %options.out.display(), "device certificate written");
    Ok(Outcome {
        device,
        attested_until: verdict.attested_until,
        not_after: certified.not_after,
    })
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// When to run again: before the certificate's last third, and no later than the verifier's
/// attestation interval.
fn next_run(outcome: &Outcome, issued: u64) -> Duration {
    let lifetime = outcome.not_after.saturating_sub(issued);
    let renew = issued + lifetime * 2 / 3;
    let due = outcome
        .attested_until
        .map_or(renew, |until| until.min(renew));
    Duration::from_secs(due.saturating_sub(now_seconds()).max(10))
}

/// Daemon mode: attest, renew before expiry, re-attest on SIGHUP; failures retry with backoff
/// and never stop the daemon. Returns when `stop` changes.
pub async fn daemon(
    options: Options,
    tpm: Tpm,
    credentials: DeviceCredentials,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut backoff = Duration::from_secs(5);
    loop {
        let started = now_seconds();
        let wait = match attest_once(&options, &tpm, &credentials).await {
            Ok(outcome) => {
                backoff = Duration::from_secs(5);
                let wait = next_run(&outcome, started);
                tracing::info!(device = %outcome.device, next_in_s = wait.as_secs(), "attested and certified");
                wait
            }
            Err(error) => {
                tracing::error!(
                    error = format!("{error:#}"),
                    retry_in_s = backoff.as_secs(),
                    "attestation failed"
                );
                let wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(600));
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hangup.recv() => tracing::info!("SIGHUP: re-attesting now"),
            _ = stop.changed() => return Ok(()),
        }
    }
}
