//! The PMU client: keeps one C37.118 stream flowing from a PMU or PDC over TCP, TCP/UDP or
//! spontaneous UDP, reconnecting with backoff, and hands decoded frames to the application.
//!
//! This module only moves bytes; [`Session`] decides what they mean and what to ask for.

mod session;

pub use session::{Session, SessionEvent, SessionOutput, SessionState, CONFIG_RETRY_SECONDS};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::c37118::{
    Command, CommandFrame, CommonHeader, ConfigFrame, FracSec, Frame, FrameType, IdCode,
    StreamFramer, TimeQuality,
};
use crate::stats::StreamStatistics;

/// How the stream reaches us (C37.118.2 Annex E).
#[derive(Debug, Clone)]
pub enum Transport {
    /// Commands and data over one TCP connection to `address` (`host:port`).
    Tcp { address: String },
    /// Commands over TCP to `address`, data over UDP received on `bind`.
    TcpUdp { address: String, bind: SocketAddr },
    /// Data and an occasional configuration over UDP received on `bind`; no commands. Data is
    /// decoded with `config` (an imported CFG-2) until the stream sends its own.
    SpontaneousUdp {
        bind: SocketAddr,
        config: Option<ConfigFrame>,
    },
}

/// Reconnection delays: doubling from `initial` up to `max`, reset after a configuration arrives.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

/// What to connect to and how.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// The stream's IDCODE: the destination of commands and the source of data.
    pub idcode: IdCode,
    pub transport: Transport,
    pub backoff: Backoff,
    pub connect_timeout: Duration,
    /// Where the latest CFG-2 is written, so a restart in spontaneous mode can decode at once.
    pub config_cache: Option<PathBuf>,
}

impl ClientOptions {
    pub fn tcp(address: impl Into<String>, idcode: IdCode) -> Self {
        Self {
            idcode,
            transport: Transport::Tcp {
                address: address.into(),
            },
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            config_cache: None,
        }
    }
}

/// What the client reports to the application.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Connected { peer: String },
    Disconnected { reason: String },
    Session(SessionEvent),
}

/// A running client. Dropping it stops the stream.
pub struct PmuClient {
    commands: mpsc::Sender<Command>,
    events: mpsc::Receiver<ClientEvent>,
    statistics: watch::Receiver<StreamStatistics>,
    task: JoinHandle<()>,
}

impl Drop for PmuClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PmuClient {
    /// Starts the stream on the current tokio runtime.
    pub fn spawn(options: ClientOptions) -> Self {
        let (command_tx, command_rx) = mpsc::channel(16);
        let (event_tx, event_rx) = mpsc::channel(1024);
        let (stats_tx, stats_rx) = watch::channel(StreamStatistics::new());
        let span = info_span!("pmu_stream", idcode = %options.idcode);
        let driver = Driver {
            session: match &options.transport {
                Transport::SpontaneousUdp { config, .. } => {
                    Session::spontaneous(options.idcode, config.clone())
                }
                _ => Session::commanded(options.idcode),
            },
            options,
            commands: command_rx,
            events: event_tx,
            statistics: stats_tx,
        };
        let task = tokio::spawn(driver.run().instrument(span));
        Self {
            commands: command_tx,
            events: event_rx,
            statistics: stats_rx,
            task,
        }
    }

    /// The next event; `None` once the client stopped.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }

    /// Sends a command to the PMU on the current connection (dropped when there is none).
    pub async fn send(&self, command: Command) {
        // The driver only goes away when the client does.
        let _ = self.commands.send(command).await;
    }

    /// A snapshot of the stream's statistics.
    pub fn statistics(&self) -> StreamStatistics {
        self.statistics.borrow().clone()
    }

    /// Stops the stream. Returns the events it had queued and the application had not read yet,
    /// with the statistics as of the stop: those count exactly the frames handed on, read or in
    /// the returned queue (a snapshot taken while the driver runs may count frames still queued).
    pub async fn stop(mut self) -> (Vec<ClientEvent>, StreamStatistics) {
        self.task.abort();
        // Cancelled at an await: after its last event was queued, or before the next one was.
        let _ = (&mut self.task).await;
        let mut queued = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            queued.push(event);
        }
        let statistics = self.statistics();
        (queued, statistics)
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

fn command_frame(idcode: IdCode, command: Command) -> Option<Vec<u8>> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let header = CommonHeader::new(
        FrameType::Command,
        idcode,
        u32::try_from(now.as_secs()).unwrap_or(u32::MAX),
        FracSec::new(TimeQuality::from_raw(0), now.subsec_micros()),
    );
    CommandFrame { header, command }.encode().ok()
}

/// Why a connection ended.
enum Ended {
    /// The application went away: stop for good.
    Stopped,
    Lost(String),
}

struct Driver {
    options: ClientOptions,
    session: Session,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<ClientEvent>,
    statistics: watch::Sender<StreamStatistics>,
}

impl Driver {
    async fn run(mut self) {
        let mut delay = self.options.backoff.initial;
        loop {
            let (ended, got_config) = match self.options.transport.clone() {
                Transport::Tcp { address } => self.connect_tcp(&address, None).await,
                Transport::TcpUdp { address, bind } => match UdpSocket::bind(bind).await {
                    Ok(udp) => self.connect_tcp(&address, Some(udp)).await,
                    Err(error) => (
                        Ended::Lost(format!("cannot bind UDP {bind}: {error}")),
                        false,
                    ),
                },
                Transport::SpontaneousUdp { bind, .. } => match UdpSocket::bind(bind).await {
                    Ok(udp) => (self.stream_udp_only(udp).await, false),
                    Err(error) => (
                        Ended::Lost(format!("cannot bind UDP {bind}: {error}")),
                        false,
                    ),
                },
            };
            let reason = match ended {
                Ended::Stopped => return,
                Ended::Lost(reason) => reason,
            };
            warn!(%reason, retry_in = ?delay, "stream lost");
            if !self.emit(ClientEvent::Disconnected { reason }).await {
                return;
            }
            if got_config {
                delay = self.options.backoff.initial;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.options.backoff.max);
        }
    }

    async fn emit(&self, event: ClientEvent) -> bool {
        self.events.send(event).await.is_ok()
    }

    async fn connect_tcp(&mut self, address: &str, udp: Option<UdpSocket>) -> (Ended, bool) {
        let stream =
            match tokio::time::timeout(self.options.connect_timeout, TcpStream::connect(address))
                .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    return (
                        Ended::Lost(format!("cannot connect to {address}: {error}")),
                        false,
                    )
                }
                Err(_) => {
                    return (
                        Ended::Lost(format!("timed out connecting to {address}")),
                        false,
                    )
                }
            };
        let _ = stream.set_nodelay(true);
        let peer = stream
            .peer_addr()
            .map_or_else(|_| address.to_owned(), |peer| peer.to_string());
        info!(%peer, "connected");
        if !self.emit(ClientEvent::Connected { peer }).await {
            return (Ended::Stopped, false);
        }
        let (mut reader, mut writer) = stream.into_split();
        let mut got_config = false;
        let mut framer = StreamFramer::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut datagram = vec![0u8; 65_536];
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let mut pending = self.session.connected(now_seconds());
        loop {
            for command in pending.drain(..) {
                debug!(command = command.name(), "sending command");
                let Some(bytes) = command_frame(self.options.idcode, command) else {
                    continue;
                };
                if let Err(error) = writer.write_all(&bytes).await {
                    return (
                        Ended::Lost(format!("cannot send command: {error}")),
                        got_config,
                    );
                }
            }
            tokio::select! {
                read = reader.read(&mut buffer) => {
                    let count = match read {
                        Ok(0) => return (Ended::Lost("PMU closed the connection".into()), got_config),
                        Ok(count) => count,
                        Err(error) => return (Ended::Lost(format!("read failed: {error}")), got_config),
                    };
                    framer.push(&buffer[..count]);
                    match self.drain(&mut framer, &mut pending, &mut got_config).await {
                        Some(ended) => return (ended, got_config),
                        None => continue,
                    }
                }
                received = async {
                    match &udp {
                        Some(socket) => socket.recv_from(&mut datagram).await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Ok((count, _from)) = received else { continue };
                    let mut framer = StreamFramer::new();
                    framer.push(&datagram[..count]);
                    if let Some(ended) = self.drain(&mut framer, &mut pending, &mut got_config).await {
                        return (ended, got_config);
                    }
                }
                command = self.commands.recv() => match command {
                    Some(command) => pending.push(command),
                    None => return (Ended::Stopped, got_config),
                },
                _ = tick.tick() => pending.extend(self.session.tick(now_seconds())),
            }
        }
    }

    async fn stream_udp_only(&mut self, socket: UdpSocket) -> Ended {
        let mut datagram = vec![0u8; 65_536];
        let mut pending = Vec::new();
        let mut got_config = false;
        loop {
            tokio::select! {
                received = socket.recv_from(&mut datagram) => {
                    let count = match received {
                        Ok((count, _)) => count,
                        Err(error) => return Ended::Lost(format!("UDP receive failed: {error}")),
                    };
                    let mut framer = StreamFramer::new();
                    framer.push(&datagram[..count]);
                    if let Some(ended) = self.drain(&mut framer, &mut pending, &mut got_config).await {
                        return ended;
                    }
                    // Spontaneous streams take no commands.
                    pending.clear();
                }
                command = self.commands.recv() => if command.is_none() {
                    return Ended::Stopped;
                },
            }
        }
    }

    /// Hands every complete frame to the session; returns `Some` when the application is gone.
    async fn drain(
        &mut self,
        framer: &mut StreamFramer,
        pending: &mut Vec<Command>,
        got_config: &mut bool,
    ) -> Option<Ended> {
        let now = now_seconds();
        while let Some(event) = framer.next_event() {
            let output = self.session.handle(event, now);
            pending.extend(output.commands);
            let Some(event) = output.event else { continue };
            match &event {
                SessionEvent::Config { config, changed } => {
                    *got_config = true;
                    if *changed {
                        info!(cfgcnt = ?config.pmus.iter().map(|pmu| pmu.cfgcnt).collect::<Vec<_>>(), "configuration changed");
                    }
                    self.cache_config(config);
                }
                SessionEvent::Dropped(reason) => debug!(%reason, "frame dropped"),
                _ => {}
            }
            if !self.emit(ClientEvent::Session(event)).await {
                return Some(Ended::Stopped);
            }
            // Published after each event is queued (no await in between), so at any point where
            // the driver can be stopped the figures count exactly the frames it handed on.
            self.statistics
                .send_replace(self.session.statistics().clone());
        }
        self.statistics
            .send_replace(self.session.statistics().clone());
        None
    }

    fn cache_config(&self, config: &Arc<ConfigFrame>) {
        let Some(path) = &self.options.config_cache else {
            return;
        };
        let written = Frame::Config(config.as_ref().clone())
            .encode()
            .map_err(|error| error.to_string())
            .and_then(|bytes| {
                let temporary = path.with_extension("tmp");
                std::fs::write(&temporary, bytes)
                    .and_then(|()| std::fs::rename(&temporary, path))
                    .map_err(|error| error.to_string())
            });
        if let Err(error) = written {
            warn!(path = %path.display(), %error, "cannot cache the configuration");
        }
    }
}
