//! The agent's one owner of the TPM: a thread that holds the TSS context and the loaded device
//! key, and runs what the roles send it, one command sequence at a time, as a TPM without a
//! resource manager needs (and as `/dev/tpmrm0` is used best: one context, few handles). The
//! attestation role sends its register, activate, quote and certify steps; the data path and
//! the TLS handshakes send signatures. Nothing else in the agent opens the TPM.

use std::path::Path;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use anyhow::{anyhow, Context as _, Result};
use edgeward_attestation::agent_log::AgentEvent;
use edgeward_attestation::tpm::{self, DeviceKey, KeyBlob};
use tss_esapi::Context;

/// What the TPM thread holds between jobs.
pub struct TpmState {
    pub context: Context,
    /// The device key, once loaded or made; it stays loaded for signing.
    pub device_key: Option<DeviceKey>,
    /// What this agent extended since it opened the TPM, in order: kept with the context so
    /// that a quote and the log sent with it are read in one job and always agree.
    pub agent_log: Vec<AgentEvent>,
}

type Job = Box<dyn FnOnce(&mut TpmState) + Send>;

/// What the TPM thread is sent: a job, or the order to finish.
enum Message {
    Run(Job),
    /// Flush the device key, finalize the TSS context (which unloads the TCTI library) and end.
    Close,
}

/// A handle on the TPM thread. Cheap to clone; the thread ends on [`Tpm::close`] or when every
/// handle is gone.
#[derive(Clone, Debug)]
pub struct Tpm {
    jobs: mpsc::Sender<Message>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Tpm {
    /// Opens the TPM named by `tcti`, flushes what a killed agent left loaded, and starts the
    /// thread that owns it.
    pub fn open(tcti: &str) -> Result<Self> {
        let started = std::time::Instant::now();
        let mut context = tpm::open(tcti)?;
        let flushed = tpm::flush_leftover_objects(&mut context)?;
        if flushed > 0 {
            tracing::warn!(
                flushed,
                "flushed objects and sessions an earlier run left loaded in the TPM"
            );
        }
        tracing::debug!(open_ms = started.elapsed().as_millis() as u64, %tcti, "TPM opened");
        let (jobs, receiver) = mpsc::channel::<Message>();
        let thread = std::thread::Builder::new()
            .name("tpm".into())
            .spawn(move || {
                let mut state = TpmState {
                    context,
                    device_key: None,
                    agent_log: Vec::new(),
                };
                for message in receiver {
                    match message {
                        Message::Run(job) => job(&mut state),
                        Message::Close => break,
                    }
                }
                if let Some(key) = state.device_key.take() {
                    key.flush(&mut state.context);
                }
                drop(state);
                tracing::info!("TPM closed");
            })
            .context("cannot start the TPM thread")?;
        Ok(Self {
            jobs,
            thread: Arc::new(Mutex::new(Some(thread))),
        })
    }

    /// Runs `job` on the TPM thread and waits for its result (blocking the calling thread for
    /// the TPM's time).
    pub fn call_blocking<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut TpmState) -> T + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = mpsc::channel();
        self.jobs
            .send(Message::Run(Box::new(move |state| {
                let _ = reply.send(job(state));
            })))
            .map_err(|_| anyhow!("the TPM thread has stopped"))?;
        answer
            .recv()
            .map_err(|_| anyhow!("the TPM thread stopped during a command"))
    }

    /// Runs `job` on the TPM thread without blocking the async runtime.
    pub async fn call<T: Send + 'static>(
        &self,
        job: impl FnOnce(&mut TpmState) -> T + Send + 'static,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Message::Run(Box::new(move |state| {
                let _ = reply.send(job(state));
            })))
            .map_err(|_| anyhow!("the TPM thread has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow!("the TPM thread stopped during a command"))
    }

    /// Makes the device key loaded in the thread the one saved in `state` (by `edgeward-agent
    /// attest` or the attestation role), refusing a key bound to another boot's PCRs.
    pub fn load_device_key(&self, state: &Path) -> Result<()> {
        let public = std::fs::read(state.join("device-key.pub"));
        let private = std::fs::read(state.join("device-key.priv"));
        let (Ok(public), Ok(private)) = (public, private) else {
            return Err(anyhow!(
                "no device key in {} (run edgeward-agent attest first)",
                state.display()
            ));
        };
        let blob = KeyBlob { public, private };
        let directory = state.display().to_string();
        self.call_blocking(move |tpm_state| -> Result<()> {
            let key = tpm::load_device_key(&mut tpm_state.context, &blob)
                .context("the device key does not load in this TPM")?;
            if key.policy != tpm::current_device_key_policy(&mut tpm_state.context)? {
                key.flush(&mut tpm_state.context);
                return Err(anyhow!(
                    "the device key in {directory} is bound to another boot's PCRs {:?} (an \
                     image update?): run edgeward-agent attest, which makes a new key and gets \
                     its certificate",
                    tpm::DEVICE_KEY_PCRS
                ));
            }
            if let Some(old) = tpm_state.device_key.replace(key) {
                old.flush(&mut tpm_state.context);
            }
            Ok(())
        })?
    }

    /// Flushes the device key, closes the TPM and waits until the thread has ended; every call
    /// after it fails. Call it before the process ends: a TPM reached without a resource manager
    /// (swtpm, /dev/tpm0) keeps a loaded key after its process exits, in one of its three object
    /// slots. And the TSS context must be finalized before `main` returns: finalizing unloads the
    /// TCTI library and frees libtss2's state, and doing that on this thread while `exit` tears
    /// down the C libraries on the main one corrupted the heap (an agent aborted in
    /// `malloc_consolidate` on SIGTERM, once, in CI).
    pub fn close(&self) -> Result<()> {
        // Already closed: nothing is left to flush or finalize.
        let _ = self.jobs.send(Message::Close);
        let thread = self
            .thread
            .lock()
            .map_err(|_| anyhow!("the TPM thread's handle is poisoned"))?
            .take();
        match thread {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow!("the TPM thread panicked while closing")),
            None => Ok(()),
        }
    }

    /// Extends `event`'s digest into its PCR and appends it to the agent's log, in one job:
    /// the log never shows an extend the TPM did not make, nor misses one it did. Called before
    /// the measured thing runs.
    pub async fn measure(&self, event: AgentEvent) -> Result<()> {
        let digest: [u8; 32] = event
            .digest
            .0
            .as_slice()
            .try_into()
            .map_err(|_| anyhow!("a measurement must be a SHA-256 digest"))?;
        self.call(move |state| -> Result<()> {
            tpm::extend_pcrs(&mut state.context, &[(event.pcr, digest)])
                .with_context(|| format!("cannot extend PCR {}", event.pcr))?;
            state.agent_log.push(event);
            Ok(())
        })
        .await?
    }

    /// A signer over the device key this thread holds.
    pub fn signer(&self) -> TpmSigner {
        TpmSigner { tpm: self.clone() }
    }
}

/// Signs SHA-256 digests with the device key inside the TPM (the TLS handshake through rustls,
/// which calls in synchronously, and the block signatures).
#[derive(Clone, Debug)]
pub struct TpmSigner {
    tpm: Tpm,
}

impl TpmSigner {
    /// Opens the TPM and loads the device key saved in `state`: the signer of `edgeward-agent
    /// stream`.
    pub fn start(tcti: &str, state: &Path) -> Result<Self> {
        let tpm = Tpm::open(tcti)?;
        tpm.load_device_key(state)?;
        tracing::info!("device key loaded");
        Ok(tpm.signer())
    }

    /// Flushes the device key: see [`Tpm::close`].
    pub fn close(&self) -> Result<()> {
        self.tpm.close()
    }

    /// Signs; blocks the calling thread for the TPM's time (a few milliseconds).
    pub fn sign(&self, digest: &[u8; 32]) -> Result<Vec<u8>, String> {
        let digest = *digest;
        self.tpm
            .call_blocking(move |state| match &state.device_key {
                Some(key) => {
                    tpm::sign_digest(&mut state.context, key, &digest).map_err(|e| e.to_string())
                }
                None => Err("no device key is loaded".to_owned()),
            })
            .map_err(|error| error.to_string())?
    }
}
