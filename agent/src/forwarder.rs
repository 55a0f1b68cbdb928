//! Sends the buffer to the broker over mutual TLS, QoS 1, oldest first, with a bounded number
//! of messages awaiting PUBACK. A message leaves the buffer only on its PUBACK. Each connection
//! starts again from the oldest message still buffered, so after an outage everything unacked
//! goes again in order; reconnects back off exponentially.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use edgeward_mqtt::{Event as SessionEvent, Session};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tracing::{info, warn};

use crate::buffer::Buffer;

/// How long acknowledged ids wait to leave the buffer together (or until this many are in).
/// Their removal is not fsynced (a crash before it sends them again, and the recorder drops
/// what it has), so grouping costs nothing but this much staleness in the buffer's fill; each
/// removal is a B-tree write, and at 50 ms they were a sixth of the agent's time with ten
/// streams (docs/benchmarks.md).
const ACK_GROUP: Duration = Duration::from_millis(250);
const ACK_GROUP_COUNT: usize = 1024;

/// The first wait before connecting again; it doubles with each failed attempt, up to 10 s.
const INITIAL_BACKOFF: Duration = Duration::from_millis(200);

/// How often an idle connection looks at the buffer without being woken by an acceptance.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Where and how to connect.
#[derive(Clone)]
pub struct BrokerOptions {
    /// The broker's `(host, port)`s: each connection attempt takes the next one.
    pub addresses: Vec<(String, u16)>,
    pub client_id: String,
    /// The TLS configuration, made again for each connection (a renewed device certificate is
    /// picked up when the broker refuses the expired one and the agent reconnects).
    pub tls: TlsSource,
    /// Messages published and not yet acknowledged, at most.
    pub window: usize,
    /// Woken when new credentials are in place, so that a forwarder waiting for its first
    /// certificate connects at once; without it, it looks again every second.
    pub credentials_changed: Option<Arc<tokio::sync::Notify>>,
}

/// How often a forwarder without credentials looks for them when nothing wakes it.
const CREDENTIALS_LOOK: Duration = Duration::from_secs(1);

/// Makes the client TLS configuration.
pub type TlsSource = Arc<dyn Fn() -> Result<Arc<rustls::ClientConfig>> + Send + Sync>;

/// Counters the pipeline reports in heartbeats and at the end.
#[derive(Debug, Default)]
pub struct ForwarderStats {
    pub acknowledged: AtomicU64,
    pub connections: AtomicU64,
    /// Milliseconds from acceptance to PUBACK, recorded by the caller's hook.
    pub connected: std::sync::atomic::AtomicBool,
}

/// Called with each id as its PUBACK arrives.
pub type AckHook = Arc<dyn Fn(u64) + Send + Sync>;

pub async fn run(
    options: BrokerOptions,
    buffer: Buffer,
    stats: Arc<ForwarderStats>,
    on_ack: Option<AckHook>,
) -> Result<()> {
    if options.addresses.is_empty() {
        anyhow::bail!("no broker address is configured");
    }
    let mut backoff = INITIAL_BACKOFF;
    let mut attempt = 0usize;
    let mut waiting = false;
    loop {
        // Registered before the look, so that credentials arriving between the look and the
        // wait still wake it.
        let mut changed = options
            .credentials_changed
            .as_ref()
            .map(|notify| Box::pin(notify.clone().notified_owned()));
        if let Some(changed) = changed.as_mut() {
            changed.as_mut().enable();
        }
        // Without its credentials (no certificate yet in this boot) the device has nothing to
        // connect with: it waits, saying so once, and the buffer keeps what comes meanwhile.
        let tls = match (options.tls)() {
            Ok(tls) => {
                if waiting {
                    info!("credentials ready; connecting to the broker");
                }
                waiting = false;
                tls
            }
            Err(error) => {
                if !waiting {
                    info!(reason = %format!("{error:#}"), "not connecting to the broker yet");
                }
                waiting = true;
                match changed {
                    Some(changed) => {
                        let _ = tokio::time::timeout(CREDENTIALS_LOOK, changed).await;
                    }
                    None => tokio::time::sleep(CREDENTIALS_LOOK).await,
                }
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (host, port) = &options.addresses[attempt % options.addresses.len()];
        attempt = attempt.wrapping_add(1);
        match connection(&options, tls, host, *port, &buffer, &stats, on_ack.as_ref()).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                // A connection the broker had accepted was lost: the next outage starts the
                // backoff again from its shortest wait, not from where the last one left it.
                if stats.connected.swap(false, Ordering::Relaxed) {
                    backoff = INITIAL_BACKOFF;
                }
                warn!(error = %format!("{error:#}"), retry_ms = backoff.as_millis() as u64, "broker connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Keep-alive of the MQTT connection: a broker that stops answering is noticed within two of
/// these, and the buffer's backlog goes to the next address.
const KEEP_ALIVE: Duration = Duration::from_secs(5);

/// How long the TCP connection and the TLS handshake may take together.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn connection(
    options: &BrokerOptions,
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    buffer: &Buffer,
    stats: &ForwarderStats,
    on_ack: Option<&AckHook>,
) -> Result<()> {
    let server = rustls::pki_types::ServerName::try_from(host.to_string()).with_context(|| {
        format!("{host:?} is not a host name the broker's certificate can be checked against")
    })?;
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((host, port))
            .await
            .with_context(|| format!("connecting to {host}:{port}"))?;
        // Without TCP_NODELAY, Nagle's algorithm holds small publishes back until the broker's
        // delayed ACK, up to 40 ms: more than the whole latency budget.
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        tokio_rustls::TlsConnector::from(tls)
            .connect(server, tcp)
            .await
            .with_context(|| format!("TLS handshake with {host}:{port}"))
    })
    .await
    .with_context(|| {
        format!("{host}:{port} did not complete TCP and TLS within {CONNECT_TIMEOUT:?}")
    })??;

    let mut session: Session<u64> =
        Session::new(&options.client_id, KEEP_ALIVE, std::time::Instant::now())?;
    // Acknowledged ids leave the buffer in groups: one write per group, not per PUBACK (a crash
    // before the write only means those are sent again).
    let mut acknowledged: Vec<u64> = Vec::new();
    let ended = exchange(
        options,
        &mut stream,
        &mut session,
        buffer,
        stats,
        on_ack,
        &mut acknowledged,
        host,
        port,
    )
    .await;
    // However the connection ended, what the broker acknowledged is no longer the device's to
    // send: removed now, not sent again after the reconnect (up to a whole group of them).
    if !acknowledged.is_empty() {
        buffer.acknowledged(&acknowledged)?;
        stats
            .acknowledged
            .fetch_add(acknowledged.len() as u64, Ordering::Relaxed);
    }
    ended
}

/// The publish and acknowledge loop of one connection, until it fails; acknowledged ids not yet
/// removed from the buffer are left in `acknowledged` for the caller.
// The connection's parts, borrowed for the loop so the caller keeps what it must finish.
#[allow(clippy::too_many_arguments)]
async fn exchange<S>(
    options: &BrokerOptions,
    stream: &mut S,
    session: &mut Session<u64>,
    buffer: &Buffer,
    stats: &ForwarderStats,
    on_ack: Option<&AckHook>,
    acknowledged: &mut Vec<u64>,
    host: &str,
    port: u16,
) -> Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut events: Vec<SessionEvent<u64>> = Vec::new();
    let mut received = vec![0u8; 16 * 1024];
    let mut last_sent = 0u64;
    let mut written = tokio::time::Instant::now();
    // Whether the buffer may hold messages not yet published: after an acceptance, a wake-up
    // of the idle timer, or a read that filled the window. Reading it only then spares a read
    // transaction for every PUBACK.
    let mut fresh = true;
    loop {
        let due = acknowledged.len() >= ACK_GROUP_COUNT
            || (!acknowledged.is_empty() && written.elapsed() >= ACK_GROUP);
        if due {
            written = tokio::time::Instant::now();
            buffer.acknowledged(acknowledged)?;
            stats
                .acknowledged
                .fetch_add(acknowledged.len() as u64, Ordering::Relaxed);
            acknowledged.clear();
        }
        if session.is_connected() {
            let in_flight = session.in_flight();
            let room = options.window.saturating_sub(in_flight);
            // Refill in runs, not one message per PUBACK.
            if fresh && room > 0 && (room >= options.window / 8 || in_flight < 8) {
                let unsent = buffer.after(last_sent, room)?;
                fresh = unsent.len() == room;
                let now = std::time::Instant::now();
                for (id, message) in unsent {
                    session.publish(
                        id,
                        &message.topic,
                        Bytes::from(message.payload),
                        message.retain,
                        now,
                    )?;
                    last_sent = id;
                }
            }
        }
        // Everything queued since the last write goes in one write: one TLS record for a whole
        // instant's publishes instead of one record and one syscall each.
        let outgoing = session.take_outgoing();
        if !outgoing.is_empty() {
            stream
                .write_all(&outgoing)
                .await
                .context("writing to the broker")?;
            stream.flush().await.context("writing to the broker")?;
        }
        let timer = if acknowledged.is_empty() {
            IDLE_CHECK
        } else {
            ACK_GROUP
        };
        let keep_alive = tokio::time::Instant::from_std(session.next_deadline());
        tokio::select! {
            read = stream.read(&mut received) => {
                let count = read.context("reading from the broker")?;
                if count == 0 {
                    anyhow::bail!("the broker closed the connection");
                }
                // PUBACKs that came before a protocol error are the broker's all the same.
                let outcome = session.receive(&received[..count], &mut events);
                for event in events.drain(..) {
                    match event {
                        SessionEvent::Connected => {
                            fresh = true;
                            stats.connected.store(true, Ordering::Relaxed);
                            info!(%host, port, "connected to the broker");
                        }
                        SessionEvent::Acknowledged(id) => {
                            if let Some(hook) = on_ack {
                                hook(id);
                            }
                            acknowledged.push(id);
                        }
                    }
                }
                outcome?;
            }
            _ = buffer.accepted.notified(), if session.is_connected() => fresh = true,
            _ = tokio::time::sleep(timer), if session.is_connected() => fresh = true,
            _ = tokio::time::sleep_until(keep_alive) => session.tick(std::time::Instant::now())?,
        }
    }
}
