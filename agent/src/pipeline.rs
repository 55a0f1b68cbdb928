//! The data path on the device: PMU frames → samples per PMU topic → blocks and their digest →
//! the durable buffer; each closed block's digest is signed in the TPM and time-stamped at the
//! TSA, and its signature and token join the buffer; the forwarder sends the buffer on.
//!
//! One task accepts everything into the buffer (so ids follow acceptance order); it groups what
//! has arrived into one fsync, so durability costs one flush per batch, not per frame.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use edgeward_measurement::block::BlockInterval;
use edgeward_measurement::c37118::{ConfigFrame, DataFrame};
use edgeward_measurement::client::{ClientEvent, ClientOptions, PmuClient, SessionEvent};
use edgeward_measurement::sample::samples_from_data_frame;
use edgeward_platform::heartbeat::{BufferFigures, Heartbeat};
use edgeward_platform::notification::Notification;
use edgeward_platform::topics::{
    PointTopic, TopicSegment, HEARTBEAT_TOPIC, SIGNATURE_TOPIC, TSR_TOPIC,
};
use edgeward_proof::timestamp::{self, TsaNonce};
use edgeward_proof::trust::TrustAnchors;
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::accept::Acceptance;
use crate::buffer::{Buffer, Outgoing, StateChanges};
use crate::config::{EstimatedPmu, PmuStream, StreamSource};
use crate::forwarder::{BrokerOptions, ForwarderStats};
use crate::tpm::TpmSigner;

/// Everything the pipeline needs.
pub struct PipelineOptions {
    pub streams: Vec<PmuStream>,
    pub location: TopicSegment,
    /// The device identity: the certificate's CN, the ACL user, the topic's device level.
    pub device: TopicSegment,
    pub interval: BlockInterval,
    pub buffer: Buffer,
    pub signer: TpmSigner,
    /// The device certificate and its CA chain, for the block signatures (read per block).
    pub credentials: crate::credentials::DeviceCredentials,
    pub tsa: TsaClient,
    pub broker: BrokerOptions,
    pub heartbeat: Duration,
    pub duration: Option<Duration>,
    /// Stops the pipeline when it changes (the appliance's shutdown); without one it stops on
    /// SIGTERM or SIGINT.
    pub stop: Option<tokio::sync::watch::Receiver<bool>>,
    /// The roles' health, reported in heartbeats.
    pub health: Option<crate::appliance::Health>,
    /// Where accepted samples and layouts are shown to workloads.
    pub tap: Option<crate::workload_role::Tap>,
}

/// The TSA: where to ask and whom to trust.
#[derive(Clone)]
pub struct TsaClient {
    pub host: String,
    pub port: u16,
    pub path: String,
    pub anchors: Arc<TrustAnchors>,
    pub untrusted: Arc<Vec<Vec<u8>>>,
}

impl TsaClient {
    /// `http://HOST[:PORT]/PATH` (the platform's TSA answers plain HTTP on its host port).
    pub fn new(url: &str, anchors: TrustAnchors, untrusted: Vec<Vec<u8>>) -> Result<Self> {
        let uri: hyper::Uri = url
            .parse()
            .with_context(|| format!("{url:?} is not a URL"))?;
        if uri.scheme_str() != Some("http") {
            bail!("the TSA URL must be http://HOST[:PORT]/PATH, got {url:?}");
        }
        Ok(Self {
            host: uri
                .host()
                .ok_or_else(|| anyhow!("the TSA URL {url:?} has no host"))?
                .to_owned(),
            port: uri.port_u16().unwrap_or(80),
            path: uri.path().to_owned(),
            anchors: Arc::new(anchors),
            untrusted: Arc::new(untrusted),
        })
    }

    /// Asks for a token for `digest` and checks it; returns the unchanged DER response.
    pub async fn stamp(&self, digest: &[u8; 32]) -> Result<Vec<u8>> {
        use http_body_util::{BodyExt as _, Full};
        let nonce = TsaNonce::from_random(rand::random());
        let request = timestamp::request(digest, nonce)?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((self.host.as_str(), self.port))
                .await
                .with_context(|| format!("cannot reach the TSA at {}:{}", self.host, self.port))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
            tokio::spawn(connection);
            let request = hyper::Request::post(&self.path)
                .header("host", &self.host)
                .header("content-type", "application/timestamp-query")
                .body(Full::new(hyper::body::Bytes::from(request)))?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let body = http_body_util::Limited::new(response.into_body(), 1 << 20)
                .collect()
                .await
                .map_err(|error| anyhow!("reading the TSA's answer: {error}"))?
                .to_bytes();
            if !status.is_success() {
                bail!("the TSA answered HTTP {status}");
            }
            Ok::<_, anyhow::Error>(body.to_vec())
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| anyhow!("the TSA did not answer within 10 s"))??;
        timestamp::verify_response(
            &response,
            digest,
            Some(nonce),
            &self.anchors,
            &self.untrusted,
        )
        .context("the TSA's answer failed the checks")?;
        Ok(response)
    }
}

/// A sample on its way from a PMU task to the accepting task.
pub use crate::accept::{notice, Input};

/// The accepting step with its buffer: what [`Acceptance`] decides, committed in one fsync per
/// batch; a notice when the buffer had to drop old messages for room.
pub struct Accepter {
    buffer: Buffer,
    acceptance: Acceptance,
}

/// What one batch did.
#[derive(Debug, Default)]
pub struct Accepted {
    /// Buffer ids of the batch's messages, in order; for samples, in input order.
    pub ids: Vec<u64>,
    /// Old messages dropped to make room.
    pub dropped: u64,
    /// Whether a block closed (its proofs are due).
    pub closed_block: bool,
}

impl Accepter {
    /// Restores the open blocks from before a restart: their samples were accepted, so their
    /// digests must cover them.
    pub fn new(buffer: Buffer, interval: BlockInterval, device: TopicSegment) -> Result<Self> {
        let mut acceptance = Acceptance::new(interval, device);
        let restored = acceptance
            .restore(buffer.open_block_samples()?)
            .context("a stored open-block sample")?;
        if restored.samples > 0 {
            info!(
                samples = restored.samples,
                blocks = restored.blocks,
                "restored open blocks after a restart"
            );
        }
        Ok(Self { buffer, acceptance })
    }

    /// Samples accepted by this process.
    pub fn samples(&self) -> u64 {
        self.acceptance.samples
    }

    pub fn accept(&mut self, batch: Vec<Input>) -> Result<Accepted> {
        let taken = self.acceptance.take(batch)?;
        let (ids, dropped) = self.buffer.accept(&taken.messages, &taken.state)?;
        // After the fsync: what this line names survives a crash.
        if let (false, Some(first_id), Some(last_id)) =
            (taken.sequences.is_empty(), ids.first(), ids.last())
        {
            debug!(first_id, last_id, sequences = %taken.sequences.iter().map(u64::to_string).collect::<Vec<_>>().join(","), "accepted");
        }
        if dropped > 0 {
            warn!(dropped, "buffer full: dropped the oldest messages");
            self.buffer.accept(
                &[self.acceptance.buffer_full(dropped)],
                &StateChanges::default(),
            )?;
        }
        Ok(Accepted {
            ids,
            dropped,
            closed_block: taken.closed_block,
        })
    }
}

/// The layouts of a batch, for the tap, which keeps them for workloads that connect later; and
/// its samples when a workload is listening.
fn tapped(batch: &[Input], samples: bool) -> Vec<Input> {
    batch
        .iter()
        .filter_map(|input| match input {
            Input::Sample { topic, sample } if samples => Some(Input::Sample {
                topic: topic.clone(),
                sample: sample.clone(),
            }),
            Input::Metadata { topic, json } => Some(Input::Metadata {
                topic: topic.clone(),
                json: json.clone(),
            }),
            Input::Sample { .. } | Input::Notice(_) => None,
        })
        .collect()
}

pub async fn run(options: PipelineOptions) -> Result<()> {
    let PipelineOptions {
        streams,
        location,
        device,
        interval,
        buffer,
        signer,
        credentials,
        tsa,
        broker,
        heartbeat,
        duration,
        stop,
        health,
        tap,
    } = options;
    let stats = Arc::new(ForwarderStats::default());
    let forwarder = tokio::spawn(crate::forwarder::run(
        broker,
        buffer.clone(),
        stats.clone(),
        None,
    ));

    let (inputs, mut received) = mpsc::channel::<Input>(65_536);
    // Every task this run starts ends with it: a restarted role must not leave a second
    // reader of a PMU or a second signer of the same blocks behind.
    let streams_read = streams.len();
    let mut readers = Vec::new();
    for stream in streams {
        let span = info_span!("pmu", name = %stream.name, idcode = %stream.idcode);
        readers.push(tokio::spawn(
            read_stream(stream, location.clone(), device.clone(), inputs.clone()).instrument(span),
        ));
    }
    let readers_guard = AbortOnDrop(readers.iter().map(|task| task.abort_handle()).collect());
    let _forwarder_guard = AbortOnDrop(vec![forwarder.abort_handle()]);
    let mut accepter = Accepter::new(buffer.clone(), interval, device.clone())?;

    let proofs = Arc::new(tokio::sync::Notify::new());
    let proving = tokio::spawn(
        prove_blocks(
            buffer.clone(),
            signer,
            credentials.clone(),
            tsa,
            device.clone(),
            proofs.clone(),
        )
        .instrument(info_span!("proofs")),
    );
    let proofs_guard = AbortOnDrop(vec![proving.abort_handle()]);
    proofs.notify_one();

    let mut beat = tokio::time::interval(heartbeat);
    let deadline = async {
        match duration {
            Some(duration) => tokio::time::sleep(duration).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let signals = stop.is_none();
    let mut stop = stop;
    let stopped = async move {
        match &mut stop {
            Some(stop) => {
                let _ = stop.changed().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(stopped);
    let mut warned_full = false;
    let mut warned_attestation = false;
    loop {
        let first = tokio::select! {
            input = received.recv() => match input {
                Some(input) => input,
                None => break,
            },
            _ = beat.tick() => {
                let fill = buffer.fill()?;
                let roles = health.as_ref().map(crate::appliance::Health::snapshot).unwrap_or_default();
                let mut messages = vec![heartbeat_message(&device, &fill, &stats, accepter.samples(), heartbeat, roles)];
                if fill.percent() > 80.0 && !warned_full {
                    warned_full = true;
                    messages.push(notice(
                        &Notification::buffer_filling(&device, fill.percent(), fill.max_bytes),
                        &device,
                    ));
                } else if fill.percent() < 50.0 {
                    warned_full = false;
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|elapsed| elapsed.as_secs() as i64)
                    .unwrap_or(0);
                match credentials.load() {
                    Ok(loaded) if loaded.renewal_overdue(now) => {
                        if !warned_attestation {
                            warned_attestation = true;
                            messages.push(notice(
                                &Notification::attestation_failing(&device, loaded.not_after - now),
                                &device,
                            ));
                        }
                    }
                    Ok(_) => warned_attestation = false,
                    Err(error) => debug!(error = %format!("{error:#}"), "no device certificate yet"),
                }
                buffer.accept(&messages, &StateChanges::default())?;
                continue;
            }
            _ = &mut deadline => break,
            _ = &mut stopped => break,
            _ = tokio::signal::ctrl_c(), if signals => break,
            _ = terminate.recv(), if signals => break,
        };
        // Group commit: what arrives within the window goes to disk in one fsync. The PMUs of
        // a substation are synchronised to UTC and send each instant within a millisecond or
        // two of each other, so the window closes as soon as every stream's frame is in (at
        // once with one stream) and waits at most COMMIT_WINDOW for a late one.
        let window = tokio::time::Instant::now() + COMMIT_WINDOW;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match received.try_recv() {
                Ok(input) => batch.push(input),
                Err(_) if crate::accept::every_stream_in(&batch, streams_read) => break,
                Err(_) => match tokio::time::timeout_at(window, received.recv()).await {
                    Ok(Some(input)) => batch.push(input),
                    Ok(None) | Err(_) => break,
                },
            }
        }
        // What workloads are shown is what was accepted: copied before, sent after the commit.
        let tapped = tap.as_ref().map(|tap| tapped(&batch, tap.wanted()));
        if accepter.accept(batch)?.closed_block {
            proofs.notify_one();
        }
        if let (Some(tap), Some(tapped)) = (&tap, tapped) {
            for input in &tapped {
                match input {
                    Input::Sample { topic, sample } => tap.sample(topic.point.as_str(), sample),
                    Input::Metadata { topic, json } => tap.layout(topic.point.as_str(), json),
                    Input::Notice(_) => {}
                }
            }
        }
    }
    info!(
        samples = accepter.samples(),
        acknowledged = stats.acknowledged.load(Ordering::Relaxed),
        "stopping"
    );
    // Reading stops first; then the closed blocks get their proofs and what is buffered goes
    // out, each for a bounded time. What is not done by then stays on disk for the next start.
    drop(readers_guard);
    let grace = tokio::time::Instant::now() + PROOF_GRACE;
    while tokio::time::Instant::now() < grace
        && credentials.load().is_ok()
        && !buffer.pending_timestamps()?.is_empty()
    {
        proofs.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(proofs_guard);
    let drain_until = tokio::time::Instant::now() + DRAIN_GRACE;
    while buffer.fill()?.messages > 0
        && stats.connected.load(Ordering::Relaxed)
        && tokio::time::Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    buffer.flush()?;
    let (unproven, unsent) = (buffer.pending_timestamps()?.len(), buffer.fill()?.messages);
    if unproven > 0 || unsent > 0 {
        info!(
            blocks_awaiting_proofs = unproven,
            messages_unsent = unsent,
            "stopped; the rest is on disk and goes out at the next start"
        );
    } else {
        info!("stopped; everything accepted is proven and delivered");
    }
    Ok(())
}

/// How long an acceptance waits for the other streams' frames of the same instant, at most.
/// It adds at most this to a frame's way to the broker (frame-to-PUBACK target: 20 ms).
const COMMIT_WINDOW: Duration = Duration::from_millis(5);

/// Inputs committed together at most.
const MAX_BATCH: usize = 4096;

/// How long a stop waits for the proofs of closed blocks (TPM signature, TSA token each).
const PROOF_GRACE: Duration = Duration::from_secs(20);
/// How long a stop waits for the buffer to drain to a connected broker.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Aborts the tasks when dropped: on every way out of [`run`], errors included.
struct AbortOnDrop(Vec<tokio::task::AbortHandle>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

fn heartbeat_message(
    device: &TopicSegment,
    fill: &crate::buffer::Fill,
    stats: &ForwarderStats,
    samples: u64,
    interval: Duration,
    roles: BTreeMap<String, String>,
) -> Outgoing {
    let uptime_seconds = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    let temperature = std::fs::read_to_string("/sys/class/thermal/thermal_zone0/temp")
        .ok()
        .and_then(|text| text.trim().parse::<f64>().ok())
        .map(|milli| milli / 1000.0);
    let beat = Heartbeat {
        host: device.clone(),
        interval_seconds: interval.as_secs(),
        uptime_seconds,
        memory_percent: memory_percent().unwrap_or(0.0),
        disk_percent: disk_percent().unwrap_or(0.0),
        temperature,
        buffer: BufferFigures {
            messages: fill.messages,
            bytes: fill.bytes,
            percent: fill.percent(),
            dropped: fill.dropped,
            acknowledged: stats.acknowledged.load(Ordering::Relaxed),
            broker_connected: stats.connected.load(Ordering::Relaxed),
            samples_accepted: samples,
        },
        roles,
    };
    Outgoing {
        topic: HEARTBEAT_TOPIC.into(),
        payload: beat.payload(),
        retain: false,
    }
}

fn memory_percent() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<f64> {
        text.lines()
            .find(|line| line.starts_with(name))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let (total, available) = (field("MemTotal:")?, field("MemAvailable:")?);
    Some((total - available) * 100.0 / total)
}

fn disk_percent() -> Option<f64> {
    let stat = nix::sys::statvfs::statvfs("/").ok()?;
    let total = stat.blocks() as f64;
    (total > 0.0).then(|| (total - stat.blocks_available() as f64) * 100.0 / total)
}

/// Signs and time-stamps every closed block, oldest first; a block leaves the pending list only
/// with its signature and token accepted into the buffer. An unreachable TSA is retried with
/// backoff and reported once per outage.
async fn prove_blocks(
    buffer: Buffer,
    signer: TpmSigner,
    credentials: crate::credentials::DeviceCredentials,
    tsa: TsaClient,
    device: TopicSegment,
    wake: Arc<tokio::sync::Notify>,
) {
    let mut backoff = Duration::from_secs(1);
    let mut reported = false;
    loop {
        let pending = match buffer.pending_timestamps() {
            Ok(pending) => pending,
            Err(error) => {
                warn!(error = %format!("{error:#}"), "cannot read pending blocks");
                Vec::new()
            }
        };
        if !pending.is_empty() && credentials.load().is_err() {
            // Before the first certificate of this boot (the verifier not reached yet, or this
            // image not released): the blocks wait, signed once there is one.
            debug!(
                blocks = pending.len(),
                "no device certificate yet; blocks wait for their proofs"
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut failed = false;
        for (key, value) in pending {
            let Ok(digest) = <[u8; 32]>::try_from(key.as_slice()) else {
                continue;
            };
            let what = String::from_utf8_lossy(&value).into_owned();
            match prove(&digest, &signer, &credentials, &tsa).await {
                Ok(Proof {
                    signature,
                    token,
                    sign_ms,
                    stamp_ms,
                }) => {
                    let result = buffer.accept(
                        &[
                            Outgoing {
                                topic: SIGNATURE_TOPIC.into(),
                                payload: signature,
                                retain: false,
                            },
                            Outgoing {
                                topic: TSR_TOPIC.into(),
                                payload: token,
                                retain: false,
                            },
                        ],
                        &StateChanges {
                            timestamps_done: vec![key.clone()],
                            ..Default::default()
                        },
                    );
                    match result {
                        Ok(_) => {
                            info!(block = %what, sign_ms, stamp_ms, "block signed and time-stamped")
                        }
                        Err(error) => {
                            warn!(error = %format!("{error:#}"), "cannot buffer a block's proofs")
                        }
                    }
                    if reported {
                        reported = false;
                        let _ = buffer.accept(
                            &[notice(&Notification::tsa_reachable(&device), &device)],
                            &StateChanges::default(),
                        );
                    }
                    backoff = Duration::from_secs(1);
                }
                Err(error) => {
                    warn!(block = %what, error = %format!("{error:#}"), retry_s = backoff.as_secs(), "cannot prove a block yet");
                    if !reported {
                        reported = true;
                        let _ = buffer.accept(
                            &[notice(
                                &Notification::tsa_unreachable(&device, &format!("{error:#}")),
                                &device,
                            )],
                            &StateChanges::default(),
                        );
                    }
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        } else {
            wake.notified().await;
        }
    }
}

async fn prove(
    digest: &[u8; 32],
    signer: &TpmSigner,
    credentials: &crate::credentials::DeviceCredentials,
    tsa: &TsaClient,
) -> Result<Proof> {
    let chain = credentials.load()?.chain;
    let (certificate, above) = chain
        .split_first()
        .ok_or_else(|| anyhow!("no device certificate"))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0);
    let signer = signer.clone();
    let (digest_copy, certificate, above) = (*digest, certificate.clone(), above.to_vec());
    // The signature and the token are both over the block's digest, neither over the other:
    // the TPM and the TSA work at the same time, and a block takes the longer of the two.
    let started = std::time::Instant::now();
    let signing = async {
        let signature = tokio::task::spawn_blocking(move || {
            edgeward_proof::origin::sign_block(&digest_copy, &certificate, &above, now, |to_sign| {
                signer.sign(to_sign)
            })
        })
        .await??;
        Ok::<_, anyhow::Error>((signature, started.elapsed()))
    };
    let stamping = async {
        let token = tsa.stamp(digest).await?;
        Ok::<_, anyhow::Error>((token, started.elapsed()))
    };
    let ((signature, signed_in), (token, stamped_in)) = tokio::try_join!(signing, stamping)?;
    Ok(Proof {
        signature,
        token,
        sign_ms: signed_in.as_millis() as u64,
        stamp_ms: stamped_in.as_millis() as u64,
    })
}

/// A block's proofs, with how long the TPM and the TSA took (the log says, for an operator
/// looking at a backlog that drains slowly).
struct Proof {
    signature: Vec<u8>,
    token: Vec<u8>,
    sign_ms: u64,
    stamp_ms: u64,
}

async fn read_stream(
    stream: PmuStream,
    location: TopicSegment,
    device: TopicSegment,
    inputs: mpsc::Sender<Input>,
) {
    let mut forward = StreamForward {
        name: stream.name.clone(),
        location,
        device,
        topics: BTreeMap::new(),
        unlocked: BTreeMap::new(),
        inputs,
    };
    match &stream.source {
        StreamSource::Remote(options) => read_remote(options, &mut forward).await,
        StreamSource::Estimated(pmu) => read_estimated(&stream, pmu, &mut forward).await,
    }
    let _ = forward
        .inputs
        .send(Input::Notice(Notification::stream_ended(&stream.name)))
        .await;
}

async fn read_remote(options: &ClientOptions, forward: &mut StreamForward) {
    let mut client = PmuClient::spawn(options.clone());
    while let Some(event) = client.next_event().await {
        match event {
            ClientEvent::Connected { peer } => info!(%peer, "connected"),
            ClientEvent::Disconnected { reason } => warn!(%reason, "stream lost; reconnecting"),
            ClientEvent::Session(SessionEvent::Config { config, changed }) => {
                info!(
                    stations = config.pmus.len(),
                    rate = config.data_rate.0,
                    changed,
                    "configuration received"
                );
                forward.configure(&config).await;
            }
            ClientEvent::Session(SessionEvent::Data { frame, config }) => {
                if !forward.data(&frame, &config).await {
                    return;
                }
            }
            ClientEvent::Session(SessionEvent::Dropped(reason)) => warn!(%reason, "frame dropped"),
            ClientEvent::Session(SessionEvent::Header(_)) => {}
        }
    }
}

/// The appliance's own PMU: its data frames go the way a remote PMU's do. A sample source that
/// fails (an ADC that stops or does not open) is started again with a growing delay, as a
/// remote PMU is reconnected; a configuration it cannot start with ends the stream.
async fn read_estimated(stream: &PmuStream, pmu: &EstimatedPmu, forward: &mut StreamForward) {
    let mut retry = SOURCE_RETRY_FIRST;
    loop {
        let started = tokio::time::Instant::now();
        let mut estimated = match crate::estimated::start(&stream.name, stream.idcode, pmu).await {
            Ok(estimated) => estimated,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "the estimated PMU did not start");
                return;
            }
        };
        let config = estimated.config.clone();
        forward.configure(&config).await;
        while let Some(frame) = estimated.frames.recv().await {
            if !forward.data(&frame, &config).await {
                return;
            }
        }
        let reason = estimated.failure().await;
        drop(estimated);
        if started.elapsed() >= SOURCE_RETRY_RESET {
            retry = SOURCE_RETRY_FIRST;
        }
        warn!(%reason, retry_seconds = retry.as_secs(), "the sample source failed; restarting it");
        if forward
            .inputs
            .send(Input::Notice(Notification::source_failed(
                &stream.name,
                &reason,
                retry.as_secs(),
            )))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(retry).await;
        retry = (retry * 2).min(SOURCE_RETRY_MAX);
    }
}

/// The first wait before a failed sample source is started again; it doubles up to the
/// maximum, and starts over after a source that ran for the reset time.
const SOURCE_RETRY_FIRST: Duration = Duration::from_secs(1);
const SOURCE_RETRY_MAX: Duration = Duration::from_secs(60);
const SOURCE_RETRY_RESET: Duration = Duration::from_secs(120);

/// Turns one stream's configurations and data frames into the pipeline's inputs: retained
/// metadata per PMU, samples, and a notice when a PMU's clock locks or unlocks.
struct StreamForward {
    name: String,
    location: TopicSegment,
    device: TopicSegment,
    topics: BTreeMap<u16, Arc<PointTopic>>,
    /// Per PMU: whether its clock was last reported unlocked (STAT bit 13).
    unlocked: BTreeMap<u16, bool>,
    inputs: mpsc::Sender<Input>,
}

impl StreamForward {
    async fn configure(&mut self, config: &ConfigFrame) {
        self.topics.clear();
        for pmu in &config.pmus {
            let point = if config.pmus.len() == 1 {
                self.name.clone()
            } else {
                format!("{}-{}", self.name, pmu.idcode.0)
            };
            let Ok(point) = TopicSegment::new(&point) else {
                warn!(%point, "the PMU's name cannot be a topic level; its data is not forwarded");
                continue;
            };
            let topic = Arc::new(PointTopic {
                location: self.location.clone(),
                device: self.device.clone(),
                point,
            });
            let json = edgeward_platform::layout::point_layout(pmu, config);
            let _ = self
                .inputs
                .send(Input::Metadata {
                    topic: topic.clone(),
                    json,
                })
                .await;
            self.topics.insert(pmu.idcode.0, topic);
        }
    }

    /// Forwards one data frame; false when the pipeline has gone.
    async fn data(&mut self, frame: &DataFrame, config: &ConfigFrame) -> bool {
        for (block, pmu) in frame.pmus.iter().zip(&config.pmus) {
            let now_unlocked = block.stat.sync_error();
            let before = self
                .unlocked
                .insert(pmu.idcode.0, now_unlocked)
                .unwrap_or(false);
            if now_unlocked != before {
                warn!(
                    idcode = pmu.idcode.0,
                    unlocked = now_unlocked,
                    "PMU clock state changed"
                );
                let notification = Notification::pmu_clock(&self.name, pmu.idcode.0, now_unlocked);
                if self.inputs.send(Input::Notice(notification)).await.is_err() {
                    return false;
                }
            }
        }
        for (idcode, sample) in samples_from_data_frame(frame, config) {
            if let Some(topic) = self.topics.get(&idcode.0) {
                let input = Input::Sample {
                    topic: topic.clone(),
                    sample,
                };
                if self.inputs.send(input).await.is_err() {
                    return false;
                }
            }
        }
        true
    }
}
