//! One thread owns the TPM: the device key signs TLS handshakes (rustls calls in synchronously)
//! and block digests (from the pipeline) through it, one command at a time, as a TPM without a
//! resource manager needs.

use std::path::Path;
use std::sync::mpsc;

use anyhow::{anyhow, Context, Result};
use edgeward_attestation::tpm::{self, KeyBlob};

type Reply = mpsc::Sender<Result<Vec<u8>, String>>;

/// A handle that signs SHA-256 digests with the device key inside the TPM.
#[derive(Clone, Debug)]
pub struct TpmSigner {
    requests: mpsc::Sender<([u8; 32], Reply)>,
}

impl TpmSigner {
    /// Starts the TPM thread with the device key saved by `edgeward-agent attest` in `state`.
    pub fn start(tcti: &str, state: &Path) -> Result<Self> {
        let public = std::fs::read(state.join("device-key.pub"));
        let private = std::fs::read(state.join("device-key.priv"));
        let (Ok(public), Ok(private)) = (public, private) else {
            return Err(anyhow!(
                "no device key in {} (run edgeward-agent attest first)",
                state.display()
            ));
        };
        let blob = KeyBlob { public, private };
        let started = std::time::Instant::now();
        let mut context = tpm::open(tcti)?;
        let opened = started.elapsed();
        let flushed = tpm::flush_leftover_objects(&mut context)?;
        let cleaned = started.elapsed();
        let key = tpm::load_device_key(&mut context, &blob)
            .context("the device key does not load in this TPM")?;
        if key.policy != tpm::current_device_key_policy(&mut context)? {
            key.flush(&mut context);
            return Err(anyhow!(
                "the device key in {} is bound to another boot's PCRs {:?} (an image update?): \
                 run edgeward-agent attest, which makes a new key and gets its certificate",
                state.display(),
                tpm::DEVICE_KEY_PCRS
            ));
        }
        tracing::info!(
            open_ms = opened.as_millis() as u64,
            flush_ms = (cleaned - opened).as_millis() as u64,
            load_ms = (started.elapsed() - cleaned).as_millis() as u64,
            flushed,
            "device key loaded"
        );
        let (requests, receiver) = mpsc::channel::<([u8; 32], Reply)>();
        std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                for (digest, reply) in receiver {
                    let signature = tpm::sign_digest(&mut context, &key, &digest)
                        .map_err(|error| error.to_string());
                    let _ = reply.send(signature);
                }
                key.flush(&mut context);
            })
            .context("cannot start the TPM thread")?;
        Ok(Self { requests })
    }

    /// Signs; blocks the calling thread for the TPM's time (a few milliseconds).
    pub fn sign(&self, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        let (reply, answer) = mpsc::channel();
        self.requests
            .send((*digest, reply))
            .map_err(|_| "the TPM thread has stopped".to_owned())?;
        answer
            .recv()
            .map_err(|_| "the TPM thread has stopped".to_owned())?
    }
}
