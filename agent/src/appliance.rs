//! The appliance: one process that runs the device's roles under one supervisor, from one
//! operator-signed configuration and with one TPM owner. The roles today are attestation (with
//! renewal), the data path (PMU streams to the broker) and, with DHCP, keeping the lease;
//! workloads and updates join them.
//! A role that fails is restarted with backoff, each role's state goes into the heartbeats,
//! and a stop (SIGTERM, the ACPI power button) ends every role cleanly, the buffer flushed.
//!
//! The roles share what they must through handles, never files: the TPM ([`Tpm`]), the device
//! certificate ([`DeviceCredentials::shared`]), the health map. Files on the data partition are
//! for the next boot: key blobs, the certificate, the buffer.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use edgeward_attestation::tpm::EkKind;
use edgeward_config::device::EkChoice;
use edgeward_config::DeviceConfig;
use edgeward_measurement::block::BlockInterval;
use edgeward_platform::topics::TopicSegment;
use edgeward_proof::trust::TrustAnchors;
use tokio::sync::watch;
use tracing::{error, info, info_span, warn, Instrument as _};

use crate::attest_role;
use crate::bringup::network::LeaseKeeper;
use crate::buffer::{Buffer, Limits};
use crate::credentials::DeviceCredentials;
use crate::forwarder::{BrokerOptions, TlsSource};
use crate::pipeline::{self, PipelineOptions, TsaClient};
use crate::tpm::Tpm;
use crate::workload_role::{Admitted, Host, Notices, Tap, FIRST_UID};

/// Each role's state, as heartbeats report it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, String>>>);

impl Health {
    pub fn set(&self, role: &str, state: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(role.to_owned(), state.into());
    }

    pub fn snapshot(&self) -> BTreeMap<String, String> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Where the appliance keeps what must survive a reboot.
#[derive(Debug, Clone)]
pub struct DataDirs {
    pub root: PathBuf,
}

impl DataDirs {
    pub fn new(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
        }
    }
    /// TPM key blobs and the registration.
    pub fn state(&self) -> PathBuf {
        self.root.join("attestation")
    }
    /// The device certificate and its chain.
    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }
    pub fn buffer(&self) -> PathBuf {
        self.root.join("buffer")
    }
}

/// What the appliance runs with.
pub struct Appliance {
    pub config: DeviceConfig,
    pub data: DataDirs,
    /// The TPM's one owner, opened by the caller (which checked the configuration's serial
    /// with it: [`admit_serial`]).
    pub tpm: Tpm,
    pub event_log: PathBuf,
    /// The DHCP lease to keep, when the address came from one (the `network` role).
    pub network: Option<LeaseKeeper>,
    /// The workload bundles the configuration lists, where they are.
    pub workloads: Vec<PathBuf>,
    /// The key they must be signed with (PEM).
    pub workload_key: PathBuf,
}

/// Reads the device configuration `file` and its signature (`file.sig`) and checks it against
/// the configuration key in `key` (hex, as the image carries it).
pub fn load_signed_config(file: &Path, key: &Path) -> Result<DeviceConfig> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("{what} {} cannot be read", path.display()))
    };
    let key = edgeward_config::ConfigKey::from_hex(&String::from_utf8_lossy(&read(
        key,
        "the configuration key",
    )?))?;
    let text = read(file, "the device configuration")?;
    let mut signature_file = file.as_os_str().to_owned();
    signature_file.push(".sig");
    let signature = read(
        Path::new(&signature_file),
        "the device configuration is unsigned: its signature",
    )?;
    edgeward_config::verify(&text, &signature, &key)
        .with_context(|| format!("the device configuration {} is refused", file.display()))
}

/// Refuses a configuration older than the newest this appliance has run, and records a newer
/// one as the newest, in the TPM's configuration counter (`edgeward_config::rollback`). Says
/// what it did, for the console.
pub fn admit_serial(tpm: &Tpm, serial: u64) -> Result<String> {
    use edgeward_attestation::config_counter;
    use edgeward_config::rollback::{judge, Verdict};
    tpm.call_blocking(move |state| -> Result<String> {
        let context = &mut state.context;
        // Never written: an appliance that has run no configuration. Its first increment gives
        // 1 on a new TPM, or one more than any counter of this TPM ever held.
        let counter = match config_counter::read(context)? {
            Some(counter) => counter,
            None => config_counter::increment(context)?,
        };
        match judge(serial, counter)? {
            Verdict::Current => Ok(format!("serial={serial} (the TPM counter's)")),
            Verdict::Advance(steps) => {
                let mut reached = counter;
                for _ in 0..steps {
                    reached = config_counter::increment(context)?;
                }
                if reached != serial {
                    anyhow::bail!(
                        "the TPM's configuration counter went from {counter} to {reached}, not to \
                         the configuration's serial {serial}"
                    );
                }
                Ok(format!(
                    "serial={serial} (the TPM counter advanced from {counter})"
                ))
            }
        }
    })?
}

/// Refuses a buffer larger than the data partition can hold: it would fill the disk and fail
/// with accepted data in it, rather than drop the oldest as it is configured to.
fn check_capacity(root: &Path, buffer_bytes: u64) -> Result<()> {
    let stats = nix::sys::statvfs::statvfs(root)
        .with_context(|| format!("cannot read the capacity of {}", root.display()))?;
    let total = stats.blocks().saturating_mul(stats.fragment_size());
    // The buffer's own overhead and the key blobs and certificate beside it.
    let usable = total / 10 * 8;
    if buffer_bytes > usable {
        anyhow::bail!(
            "data.buffer_bytes is {buffer_bytes}, but {} holds {total} bytes; at most {usable} \
             fit beside what else it keeps: lower data.buffer_bytes in the device configuration",
            root.display()
        );
    }
    Ok(())
}

/// How long a failed role waits before it starts again: doubling from 1 s to 60 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.min(6)).min(Duration::from_secs(60))
}

/// Runs `role` until `stop` changes, restarting it with backoff when it fails or ends.
async fn supervise<F, Fut>(
    name: &'static str,
    health: Health,
    mut stop: watch::Receiver<bool>,
    role: F,
) where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut failures = 0u32;
    loop {
        health.set(name, "running");
        let outcome = role(stop.clone())
            .instrument(info_span!("role", name))
            .await;
        if *stop.borrow() {
            health.set(name, "stopped");
            return;
        }
        let wait = backoff(failures);
        failures = failures.saturating_add(1);
        match outcome {
            Ok(()) => warn!(
                role = name,
                restart_in_s = wait.as_secs(),
                "role ended; restarting"
            ),
            Err(failure) => {
                error!(
                    role = name,
                    error = format!("{failure:#}"),
                    restart_in_s = wait.as_secs(),
                    "role failed; restarting"
                );
                health.set(name, format!("restarting: {failure:#}"));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {
                health.set(name, "stopped");
                return;
            }
        }
    }
}

impl Appliance {
    /// Runs every role until `stop` changes, then stops them, closes the TPM and returns (the
    /// TPM is closed on every way out: see [`Tpm::close`]).
    pub async fn run(self, stop: watch::Receiver<bool>) -> Result<()> {
        let tpm = self.tpm.clone();
        let outcome = self.run_roles(stop).await;
        let closed = tpm.close();
        outcome.and(closed)
    }

    async fn run_roles(self, stop: watch::Receiver<bool>) -> Result<()> {
        let config = Arc::new(self.config);
        for dir in [self.data.state(), self.data.pki(), self.data.buffer()] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        check_capacity(&self.data.root, config.buffer_bytes)?;
        let tpm = self.tpm;
        let credentials = DeviceCredentials::shared(&self.data.pki());
        let health = Health::default();
        let buffer = Buffer::open(
            &self.data.buffer(),
            Limits {
                max_bytes: config.buffer_bytes,
            },
        )?;
        info!(device = %config.identity, location = %config.location, "appliance starting its roles");
        let device = TopicSegment::new(config.identity.as_str())?;
        let tap = Tap::default();
        // Measured before the first attestation, so that its quote and the certificate it
        // earns already cover every workload this boot runs.
        let workloads = self::admit_workloads(
            &self.workloads,
            &self.workload_key,
            &tpm,
            Notices::Buffer {
                buffer: buffer.clone(),
                device: device.clone(),
            },
            tap.clone(),
            &health,
        )
        .await;

        let attestation = {
            let options = attest_role::Options {
                verifier: format!(
                    "https://{}{}",
                    config.verifier.address,
                    config.verifier.path.trim_end_matches('/')
                ),
                ca: config.verifier_ca.clone(),
                ek: match config.ek {
                    EkChoice::Rsa => EkKind::Rsa,
                    EkChoice::Ecc => EkKind::Ecc,
                },
                device: Some(config.identity.to_string()),
                state: self.data.state(),
                out: self.data.pki(),
                event_log: self.event_log.clone(),
            };
            let (tpm, credentials) = (tpm.clone(), credentials.clone());
            tokio::spawn(supervise(
                "attestation",
                health.clone(),
                stop.clone(),
                move |stop| {
                    attest_role::daemon(options.clone(), tpm.clone(), credentials.clone(), stop)
                },
            ))
        };

        let stream = {
            let (config, tpm, credentials, health_for_role, buffer, tap) = (
                config.clone(),
                tpm.clone(),
                credentials.clone(),
                health.clone(),
                buffer.clone(),
                tap.clone(),
            );
            tokio::spawn(supervise(
                "stream",
                health.clone(),
                stop.clone(),
                move |stop| {
                    stream_role(
                        config.clone(),
                        tpm.clone(),
                        credentials.clone(),
                        buffer.clone(),
                        health_for_role.clone(),
                        tap.clone(),
                        stop,
                    )
                },
            ))
        };
        let mut roles = vec![("attestation", attestation), ("stream", stream)];
        if let Some((host, admitted)) = workloads {
            let host = Arc::new(host);
            for workload in admitted {
                let (host, health, stop) = (host.clone(), health.clone(), stop.clone());
                let role = format!("workload:{}", workload.name());
                let span = info_span!("workload", name = %workload.name());
                roles.push((
                    "workload",
                    tokio::spawn(
                        async move {
                            let state = |state: &str| health.set(&role, state);
                            if let Err(error) = host.run(&workload, stop, state).await {
                                error!(error = %format!("{error:#}"), "workload cannot run");
                                health.set(&role, format!("failed: {error:#}"));
                            }
                        }
                        .instrument(span),
                    ),
                ));
            }
        }
        if let Some(keeper) = self.network {
            let health_for_role = health.clone();
            roles.push((
                "network",
                tokio::spawn(supervise(
                    "network",
                    health.clone(),
                    stop.clone(),
                    move |stop| {
                        let (keeper, health) = (keeper.clone(), health_for_role.clone());
                        async move {
                            keeper
                                .keep(stop, |state| health.set("network", state))
                                .await
                        }
                    },
                )),
            ));
        }
        let mut stop_wait = stop.clone();
        let _ = stop_wait.changed().await;
        info!("stopping the roles");
        for (name, role) in roles {
            if tokio::time::timeout(Duration::from_secs(10), role)
                .await
                .is_err()
            {
                warn!(role = name, "did not stop within 10 s");
            }
        }
        buffer.flush()?;
        info!("appliance stopped; the buffer is on disk");
        Ok(())
    }
}

/// The data path: the PMU streams to the broker, signed with the device key once the
/// attestation role has a certificate for it.
async fn stream_role(
    config: Arc<DeviceConfig>,
    tpm: Tpm,
    credentials: DeviceCredentials,
    buffer: Buffer,
    health: Health,
    tap: Tap,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let signer = tpm.signer();
    let credentials_changed = credentials.reloaded();
    let broker_ca = config.broker_ca.clone();
    let tls: TlsSource = {
        let (credentials, signer) = (credentials.clone(), signer.clone());
        Arc::new(move || {
            crate::mtls::client_config(&broker_ca, &credentials.load()?.pem, signer.clone())
        })
    };
    let anchors = TrustAnchors::from_pem(&config.tsa_root).context("the TSA root")?;
    let mut streams = config.pmus.clone();
    crate::config::load_config_caches(&mut streams)?;
    let options = PipelineOptions {
        streams,
        location: config.location.clone(),
        device: TopicSegment::new(config.identity.as_str())?,
        interval: BlockInterval::from_secs(config.block_seconds)
            .context("block_seconds must be at least 1")?,
        buffer,
        signer,
        credentials,
        tsa: TsaClient::new(
            &format!("http://{}{}", config.tsa.address, config.tsa.path),
            anchors,
            Vec::new(),
        )?,
        broker: BrokerOptions {
            addresses: config
                .brokers
                .iter()
                .map(|broker| (broker.host.clone(), broker.port))
                .collect(),
            client_id: config.identity.to_string(),
            tls,
            window: 256,
            credentials_changed: Some(credentials_changed),
        },
        heartbeat: Duration::from_secs(config.heartbeat_seconds),
        duration: None,
        stop: Some(stop),
        health: Some(health),
        tap: Some(tap),
    };
    pipeline::run(options).await
}

/// Opens, checks and measures each configured bundle; a refused one is reported (console,
/// notification, health) and left out. `None` when there are none to run.
async fn admit_workloads(
    bundles: &[PathBuf],
    key: &Path,
    tpm: &Tpm,
    notices: Notices,
    tap: Tap,
    health: &Health,
) -> Option<(Host, Vec<Admitted>)> {
    if bundles.is_empty() {
        return None;
    }
    let own = match std::env::current_exe() {
        Ok(own) => own,
        Err(error) => {
            error!(%error, "cannot find the agent's executable: no workload runs");
            health.set("workloads", format!("failed: {error}"));
            return None;
        }
    };
    let host = match Host::new(tpm.clone(), key, notices, tap, own) {
        Ok(mut host) => {
            host.bench = std::fs::read_to_string("/proc/cmdline").is_ok_and(|cmdline| {
                cmdline
                    .split_whitespace()
                    .any(|word| word == crate::workload_role::BENCH_SWITCH)
            });
            host
        }
        Err(error) => {
            error!(error = %format!("{error:#}"), "no workload runs");
            health.set("workloads", format!("failed: {error:#}"));
            return None;
        }
    };
    let mut admitted = Vec::new();
    for (index, bundle) in bundles.iter().enumerate() {
        match host.admit(bundle, FIRST_UID + index as u32).await {
            Ok(workload) => admitted.push(workload),
            Err(error) => {
                let name = bundle
                    .file_name()
                    .map(|name| name.to_string_lossy().into_owned())
                    .unwrap_or_default();
                println!("EDGEWARD-WORKLOAD-REFUSED {error:#}");
                health.set(&format!("workload:{name}"), format!("refused: {error:#}"));
            }
        }
    }
    Some((host, admitted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_role_waits_longer_each_time_up_to_a_minute() {
        let waits: Vec<u64> = (0..9).map(|failures| backoff(failures).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_supervisor_restarts_a_failed_role_and_stops_it_on_request() {
        let health = Health::default();
        let (stopping, stop) = watch::channel(false);
        let starts = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = starts.clone();
        let supervisor = tokio::spawn(supervise("flaky", health.clone(), stop, move |_| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                anyhow::bail!("the PMU went away")
            }
        }));
        // 1 + 2 + 4 s of backoff: the fourth start.
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert!(health.snapshot()["flaky"].contains("the PMU went away"));
        let _ = stopping.send(true);
        supervisor.await.expect("stops");
        assert_eq!(health.snapshot()["flaky"], "stopped");
    }
}
