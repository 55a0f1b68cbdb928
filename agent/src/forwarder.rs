//! Sends the buffer to the broker over mutual TLS, QoS 1, oldest first, with a bounded number
//! of messages awaiting PUBACK. A message leaves the buffer only on its PUBACK. Each connection
//! starts again from the oldest message still buffered, so after an outage everything unacked
//! goes again in order; reconnects back off exponentially.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing as Sent, Packet, QoS, Transport};
use tracing::{info, warn};

use crate::buffer::Buffer;

/// How long acknowledged ids wait to leave the buffer together. Their removal is not fsynced
/// (a crash before it sends them again), so grouping costs nothing but this much staleness in
/// the buffer's fill.
const ACK_GROUP: Duration = Duration::from_millis(50);

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
}

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
    let mut backoff = Duration::from_millis(200);
    let mut attempt = 0usize;
    let mut waiting = false;
    loop {
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
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let (host, port) = &options.addresses[attempt % options.addresses.len()];
        attempt = attempt.wrapping_add(1);
        match connection(&options, tls, host, *port, &buffer, &stats, on_ack.as_ref()).await {
            Ok(()) => return Ok(()),
            Err(error) => {
                stats.connected.store(false, Ordering::Relaxed);
                warn!(error = %format!("{error:#}"), retry_ms = backoff.as_millis() as u64, "broker connection lost");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

async fn connection(
    options: &BrokerOptions,
    tls: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    buffer: &Buffer,
    stats: &ForwarderStats,
    on_ack: Option<&AckHook>,
) -> Result<()> {
    let mut mqtt = MqttOptions::new(&options.client_id, host, port);
    mqtt.set_transport(Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    mqtt.set_keep_alive(Duration::from_secs(5));
    mqtt.set_clean_session(true);
    mqtt.set_inflight(options.window.min(u16::MAX as usize) as u16);
    mqtt.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(mqtt, options.window * 2);
    // Without TCP_NODELAY, Nagle's algorithm holds small publishes back until the broker's
    // delayed ACK, up to 40 ms: more than the whole latency budget.
    let mut network = events.network_options();
    network.set_tcp_nodelay(true);
    events.set_network_options(network);

    // Ids published on this connection, in order, until their packet id is known; then by
    // packet id until acknowledged.
    let mut unnumbered: VecDeque<u64> = VecDeque::new();
    let mut by_packet: HashMap<u16, u64> = HashMap::new();
    let mut last_sent = 0u64;
    let mut connected = false;
    // Acknowledged ids leave the buffer in groups: one write per group, not per PUBACK (a crash
    // before the write only means those are sent again).
    let mut acknowledged: Vec<u64> = Vec::new();
    let mut written = tokio::time::Instant::now();
    // Whether the buffer may hold messages not yet published: after an acceptance, a wake-up
    // of the idle timer, or a read that filled the window. Reading it only then spares a read
    // transaction for every PUBACK and publish event.
    let mut fresh = true;
    loop {
        let due = acknowledged.len() >= 128
            || (!acknowledged.is_empty() && written.elapsed() >= ACK_GROUP);
        if due {
            written = tokio::time::Instant::now();
            buffer.acknowledged(&acknowledged)?;
            stats
                .acknowledged
                .fetch_add(acknowledged.len() as u64, Ordering::Relaxed);
            acknowledged.clear();
        }
        if connected {
            let room = options
                .window
                .saturating_sub(unnumbered.len() + by_packet.len());
            // Refill in runs, not one message per PUBACK.
            if fresh
                && room > 0
                && (room >= options.window / 8 || unnumbered.len() + by_packet.len() < 8)
            {
                let unsent = buffer.after(last_sent, room)?;
                fresh = unsent.len() == room;
                for (id, message) in unsent {
                    client
                        .try_publish(
                            message.topic,
                            QoS::AtLeastOnce,
                            message.retain,
                            message.payload,
                        )
                        .context("queueing a publish")?;
                    unnumbered.push_back(id);
                    last_sent = id;
                }
            }
        }
        tokio::select! {
            event = events.poll() => {
                match event.context("MQTT")? {
                    Event::Incoming(Packet::ConnAck(ack)) => {
                        if ack.code != rumqttc::ConnectReturnCode::Success {
                            anyhow::bail!("the broker refused the connection: {:?}", ack.code);
                        }
                        connected = true;
                        fresh = true;
                        stats.connected.store(true, Ordering::Relaxed);
                        info!(%host, port, "connected to the broker");
                    }
                    Event::Outgoing(Sent::Publish(packet)) => {
                        if let Some(id) = unnumbered.pop_front() {
                            by_packet.insert(packet, id);
                        }
                    }
                    Event::Incoming(Packet::PubAck(ack)) => {
                        if let Some(id) = by_packet.remove(&ack.pkid) {
                            if let Some(hook) = on_ack {
                                hook(id);
                            }
                            acknowledged.push(id);
                        }
                    }
                    Event::Incoming(Packet::Disconnect) => anyhow::bail!("the broker disconnected"),
                    _ => {}
                }
            }
            _ = buffer.accepted.notified(), if connected => fresh = true,
            _ = tokio::time::sleep(if acknowledged.is_empty() { IDLE_CHECK } else { ACK_GROUP }), if connected => fresh = true,
        }
    }
}
