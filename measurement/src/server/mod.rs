//! The appliance's own PMU served as C37.118.2 to local PDCs: over TCP (commands and data on one
//! connection, several PDCs at once), over UDP (commands from a PDC's address, data back to it),
//! and as spontaneous UDP (data and a CFG-2 now and then to configured destinations) (C37.118.2
//! Annex E).
//!
//! This module only moves bytes; [`Station`] decides what each frame says and what each command
//! gets. Every data frame is encoded once and handed to every PDC that asked for data; a PDC too
//! slow to take them misses frames (counted and logged), never holds the others up.

pub mod station;

pub use station::{Answer, FrequencyFormat, Station, StationError};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::c37118::{ConfigKind, Frame, FramerEvent, StreamFramer};
use crate::estimator::Report;

/// Where and how to serve.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// TCP listening address (4712 is the standard's port).
    pub tcp: Option<SocketAddr>,
    /// UDP address for PDCs that send commands over UDP (4713 is the standard's port).
    pub udp: Option<SocketAddr>,
    /// Spontaneous UDP destinations: every data frame, and a CFG-2 every `config_interval`.
    pub spontaneous: Vec<SocketAddr>,
    pub config_interval: Duration,
    /// PDCs served at once over each of TCP and UDP; more are refused.
    pub max_clients: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            tcp: None,
            udp: None,
            spontaneous: Vec::new(),
            config_interval: Duration::from_secs(60),
            max_clients: 16,
        }
    }
}

/// Data frames a PDC may fall behind by before it misses some: two seconds at 120 fps.
const QUEUE: usize = 256;

/// A running C37.118.2 server. Dropping it stops every task.
pub struct PmuServer {
    station: Arc<Station>,
    data: broadcast::Sender<Arc<[u8]>>,
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl PmuServer {
    /// Binds the sockets and starts serving; fails when an address cannot be bound.
    pub async fn bind(station: Station, options: ServerOptions) -> std::io::Result<Self> {
        let station = Arc::new(station);
        let (data, _) = broadcast::channel(QUEUE);
        let mut tasks = Vec::new();
        let mut tcp = None;
        if let Some(address) = options.tcp {
            let listener = TcpListener::bind(address).await?;
            let local = listener.local_addr()?;
            tcp = Some(local);
            let span = info_span!("pmu server", tcp = %local, idcode = station.idcode().0);
            tasks.push(tokio::spawn(
                accept(listener, station.clone(), data.clone(), options.max_clients)
                    .instrument(span),
            ));
        }
        let mut udp = None;
        if options.udp.is_some() || !options.spontaneous.is_empty() {
            let bind = options
                .udp
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
            let socket = UdpSocket::bind(bind).await?;
            let local = socket.local_addr()?;
            if options.udp.is_some() {
                udp = Some(local);
            }
            let span = info_span!("pmu server", udp = %local, idcode = station.idcode().0);
            tasks.push(tokio::spawn(
                serve_udp(
                    socket,
                    station.clone(),
                    data.subscribe(),
                    UdpPlan {
                        commands: options.udp.is_some(),
                        spontaneous: options.spontaneous.clone(),
                        config_interval: options.config_interval,
                        max_clients: options.max_clients,
                    },
                )
                .instrument(span),
            ));
        }
        Ok(Self {
            station,
            data,
            tcp,
            udp,
            tasks,
        })
    }

    pub fn tcp_address(&self) -> Option<SocketAddr> {
        self.tcp
    }

    pub fn udp_address(&self) -> Option<SocketAddr> {
        self.udp
    }

    pub fn station(&self) -> &Station {
        &self.station
    }

    /// Sends one report to every PDC that asked for data.
    pub fn publish(&self, report: &Report) -> Result<(), StationError> {
        let frame: Arc<[u8]> = self.station.encode_data(report)?.into();
        // No receiver (no PDC, no UDP task) is not an error: nobody asked.
        let _ = self.data.send(frame);
        Ok(())
    }
}

impl Drop for PmuServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

fn now_soc() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as u32)
        .unwrap_or(0)
}

async fn accept(
    listener: TcpListener,
    station: Arc<Station>,
    data: broadcast::Sender<Arc<[u8]>>,
    max_clients: usize,
) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!(%error, "accepting a PDC failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= max_clients {
            warn!(%peer, max_clients, "refused a PDC: the server is full");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let (station, receiver, active) = (station.clone(), data.subscribe(), active.clone());
        let span = info_span!("pdc", %peer, transport = "tcp");
        tokio::spawn(
            async move {
                info!("PDC connected");
                let reason = serve_tcp(stream, &station, receiver).await;
                info!(reason, "PDC disconnected");
                active.fetch_sub(1, Ordering::SeqCst);
            }
            .instrument(span),
        );
    }
}

/// Serves one TCP PDC until it leaves; returns why it ended.
async fn serve_tcp(
    stream: TcpStream,
    station: &Station,
    mut data: broadcast::Receiver<Arc<[u8]>>,
) -> &'static str {
    let (mut reader, mut writer) = stream.into_split();
    let mut framer = StreamFramer::new();
    let mut sending = false;
    let mut missed = 0u64;
    let mut buffer = [0u8; 4096];
    loop {
        tokio::select! {
            read = reader.read(&mut buffer) => {
                let count = match read {
                    Ok(0) => return "closed by the PDC",
                    Ok(count) => count,
                    Err(_) => return "read error",
                };
                framer.push(&buffer[..count]);
                let mut frames = Vec::new();
                while let Some(event) = framer.next_event() {
                    match event {
                        FramerEvent::Frame(bytes) => frames.push(bytes.to_vec()),
                        FramerEvent::Discarded { reason, .. } => {
                            debug!(%reason, "bytes from the PDC dropped");
                        }
                    }
                }
                for bytes in frames {
                    let answer = match Frame::decode(&bytes, None) {
                        Ok(frame) => station.answer(&frame, now_soc()),
                        Err(error) => {
                            debug!(%error, "a frame from the PDC did not decode");
                            continue;
                        }
                    };
                    if let Some(reason) = answer.ignored {
                        debug!(reason, "frame ignored");
                    }
                    for reply in &answer.frames {
                        if let Err(reason) = write(&mut writer, reply).await {
                            return reason;
                        }
                    }
                    if let Some(on) = answer.data {
                        if on != sending {
                            info!(data = on, "data turned {}", if on { "on" } else { "off" });
                        }
                        sending = on;
                    }
                }
            }
            frame = data.recv() => match frame {
                Ok(frame) => {
                    if sending {
                        if let Err(reason) = write(&mut writer, &frame).await {
                            return reason;
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    missed += skipped;
                    warn!(skipped, missed, "the PDC is too slow: data frames missed");
                }
                Err(broadcast::error::RecvError::Closed) => return "server stopped",
            },
        }
    }
}

/// How long a write to a PDC may wait for room in its socket: a PDC that stops reading is let
/// go rather than holding one of the server's places for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

async fn write(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    bytes: &[u8],
) -> Result<(), &'static str> {
    match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("write error"),
        Err(_) => Err("not reading: a write waited 5 s"),
    }
}

struct UdpPlan {
    commands: bool,
    spontaneous: Vec<SocketAddr>,
    config_interval: Duration,
    max_clients: usize,
}

/// Serves UDP PDCs (one datagram, one frame) and spontaneous destinations from one socket.
async fn serve_udp(
    socket: UdpSocket,
    station: Arc<Station>,
    mut data: broadcast::Receiver<Arc<[u8]>>,
    plan: UdpPlan,
) {
    let mut peers: Vec<SocketAddr> = Vec::new();
    let mut config_timer = tokio::time::interval(plan.config_interval.max(Duration::from_secs(1)));
    let mut buffer = vec![0u8; 65_535];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buffer), if plan.commands => {
                let Ok((count, peer)) = received else { continue };
                let answer = match Frame::decode(&buffer[..count], None) {
                    Ok(frame) => station.answer(&frame, now_soc()),
                    Err(error) => {
                        debug!(%peer, %error, "a datagram from a PDC did not decode");
                        continue;
                    }
                };
                if let Some(reason) = answer.ignored {
                    debug!(%peer, reason, "datagram ignored");
                }
                for reply in &answer.frames {
                    let _ = socket.send_to(reply, peer).await;
                }
                match answer.data {
                    Some(true) if !peers.contains(&peer) => {
                        if peers.len() >= plan.max_clients {
                            warn!(%peer, "refused data to a UDP PDC: the server is full");
                        } else {
                            info!(%peer, transport = "udp", "data turned on");
                            peers.push(peer);
                        }
                    }
                    Some(false) => {
                        if peers.contains(&peer) {
                            info!(%peer, transport = "udp", "data turned off");
                        }
                        peers.retain(|known| *known != peer);
                    }
                    _ => {}
                }
            }
            frame = data.recv() => match frame {
                Ok(frame) => {
                    for peer in peers.iter().chain(&plan.spontaneous) {
                        if let Err(error) = socket.send_to(&frame, peer).await {
                            debug!(%peer, %error, "a data datagram was not sent");
                        }
                    }
                }
                Err(broadcast::error::RecvError::Lagged(skipped)) => {
                    warn!(skipped, "UDP sending fell behind: data frames missed");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = config_timer.tick(), if !plan.spontaneous.is_empty() => {
                match station.encode_config(ConfigKind::Cfg2, now_soc()) {
                    Ok(frame) => {
                        for peer in &plan.spontaneous {
                            let _ = socket.send_to(&frame, peer).await;
                        }
                    }
                    Err(error) => warn!(%error, "the CFG-2 did not encode"),
                }
            }
        }
    }
}
