//! `edgeward-agent attest`: registration (EK certificate, AK, ActivateCredential), attestation
//! (quote with the verifier's nonce, event log) and certification of the device key, then the
//! certificate written out. Keys are TPM blobs in the state directory and reused across
//! restarts; in daemon mode the certificate is renewed before it expires and the device
//! re-attests on SIGHUP or when the verifier asks for it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use edgeward_attestation::api::{
    ActivateRequest, ActivateResponse, AttestRequest, CertifyRequest, CertifyResponse, EkKey, Hex,
    NonceRequest, NonceResponse, RegisterRequest, RegisterResponse, Verdict,
};
use edgeward_attestation::tpm::{self, EkKind, KeyBlob, PcrSelection};
use serde::{Deserialize, Serialize};

use crate::verifier_client::{Refused, VerifierClient};

/// The kernel's copy of the firmware's event log.
pub const EVENT_LOG: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";

#[derive(Debug, Clone)]
pub struct Options {
    pub verifier: String,
    pub ca: PathBuf,
    pub tcti: String,
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

/// One run: register if needed, attest, certify, write the certificate.
pub async fn attest_once(options: &Options) -> Result<Outcome> {
    let ca = std::fs::read_to_string(&options.ca)
        .with_context(|| format!("cannot read the verifier CA {}", options.ca.display()))?;
    let client = VerifierClient::new(&options.verifier, &ca)?;
    std::fs::create_dir_all(&options.state)
        .with_context(|| format!("cannot create {}", options.state.display()))?;
    std::fs::create_dir_all(&options.out)
        .with_context(|| format!("cannot create {}", options.out.display()))?;

    let mut context = tpm::open(&options.tcti)?;
    let flushed = tpm::flush_leftover_objects(&mut context)?;
    if flushed > 0 {
        tracing::warn!(
            flushed,
            "flushed objects an earlier run left loaded in the TPM"
        );
    }
    // The device key first: it needs the storage root key loaded beside it, and a TPM without a
    // resource manager has three object slots.
    let saved = match read_blob(&options.state, "device-key")? {
        Some(blob) => Some(
            tpm::load_device_key(&mut context, &blob)
                .context("the saved device key does not load in this TPM (was the TPM cleared?)")?,
        ),
        None => None,
    };
    // The key signs only in the boot whose PCRs it is bound to; after an image update (or in
    // any other boot) it is useless, and a new key gets a new certificate (docs/decisions/0021).
    let current = tpm::current_device_key_policy(&mut context)?;
    let device_key = match saved {
        Some(key) if key.policy == current => key,
        stale => {
            if let Some(key) = stale {
                tracing::warn!(
                    key_policy = %hex::encode(&key.policy),
                    boot_policy = %hex::encode(current),
                    "the saved device key is bound to another boot's PCRs (an image update?): \
                     making a new one"
                );
                key.flush(&mut context);
            }
            let key = tpm::create_device_key(&mut context)?;
            write_blob(&options.state, "device-key", &key.blob())?;
            tracing::info!(pcrs = ?tpm::DEVICE_KEY_PCRS, "device key created in the TPM, bound to this boot");
            key
        }
    };
    let result = with_device_key(options, &client, &mut context, &device_key).await;
    device_key.flush(&mut context);
    result
}

async fn with_device_key(
    options: &Options,
    client: &VerifierClient,
    context: &mut tss_esapi::Context,
    device_key: &tpm::DeviceKey,
) -> Result<Outcome> {
    let keys = match read_blob(&options.state, "ak")? {
        Some(blob) => tpm::load_attestation_keys(context, options.ek, &blob)
            .context("the saved AK does not load under this TPM's EK (was the TPM cleared?)")?,
        None => {
            let keys = tpm::create_attestation_keys(context, options.ek)?;
            write_blob(&options.state, "ak", &keys.ak_blob)?;
            tracing::info!("AK created under the EK");
            keys
        }
    };
    let result = attest_with(options, client, context, &keys, device_key).await;
    keys.flush(context);
    result
}

async fn register(
    options: &Options,
    client: &VerifierClient,
    context: &mut tss_esapi::Context,
    keys: &tpm::AttestationKeys,
) -> Result<String> {
    let ek_certificate = tpm::read_ek_certificate(context, options.ek)
        .context("the TPM has no EK certificate for this EK kind (try --ek rsa or --ek ecc)")?;
    let request = RegisterRequest {
        device: options.device.clone(),
        ek: EkKey::from(&keys.ek_public),
        ek_certificate: Hex(ek_certificate),
        ek_intermediates: Vec::new(),
        ak_public: Hex(keys.ak_blob.public.clone()),
    };
    let challenge: RegisterResponse = client.post("register", &request).await?;
    let secret = tpm::activate_credential(
        context,
        keys,
        &challenge.id_object.0,
        &challenge.encrypted_secret.0,
    )
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
    context: &mut tss_esapi::Context,
    keys: &tpm::AttestationKeys,
    device_key: &tpm::DeviceKey,
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
        None => register(options, client, context, keys).await?,
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
            device = register(options, client, context, keys).await?;
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
    let quote = tpm::quote_with(
        context,
        keys,
        &tpm::Nonce::new(nonce.nonce.0.clone())?,
        &selection,
    )?;
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
    };
    let verdict: Verdict = client.post("attest", &request).await?;
    tracing::info!(%device, manifest = ?verdict.manifest, "attestation accepted");

    let nonce: NonceResponse = client
        .post(
            "nonce",
            &NonceRequest {
                device: device.clone(),
            },
        )
        .await?;
    let (certify_info, signature) = tpm::certify(
        context,
        keys,
        device_key,
        &tpm::Nonce::new(nonce.nonce.0.clone())?,
    )?;
    let certified: CertifyResponse = client
        .post(
            "certify",
            &CertifyRequest {
                device: device.clone(),
                nonce: nonce.nonce,
                device_key_public: Hex(device_key.public.clone()),
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
/// and never stop the daemon.
pub async fn daemon(options: Options) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut backoff = Duration::from_secs(5);
    loop {
        let started = now_seconds();
        let wait = match attest_once(&options).await {
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
            _ = terminate.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
