//! Workloads on the appliance: each bundle the signed device configuration lists is opened
//! against the workload key baked into the image, measured into PCR 15 through the TPM owner
//! (before the first attestation, so the first certificate already covers it), its image
//! mapped through dm-verity, and run in its sandbox under its size's cgroup limits, restarted
//! as its manifest says. The samples of the streams its manifest names reach it through a Unix
//! socket; its alerts go on `notifications` under its name (docs/bundle-format.md).
//!
//! `edgeward-agent workload run` uses the same [`Host`] for one bundle, without the data path.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _, Result};
use edgeward_attestation::agent_log::AgentEvent;
use edgeward_blockdev::dm::DeviceName;
use edgeward_bundle::signature::TrustedKey;
use edgeward_bundle::workload::{Restart, VerifiedWorkload};
use edgeward_measurement::sample::Sample;
use edgeward_platform::notification::{Notification, NotifyType};
use edgeward_platform::topics::TopicSegment;
use edgeward_workload::cgroup::{Cgroups, WorkloadCgroup};
use edgeward_workload::channel::{self, AlertLimiter, FromWorkload, Level, ToWorkload};
use edgeward_workload::image::MappedImage;
use edgeward_workload::sandbox::{self, SandboxSpec};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{broadcast, watch};
use tracing::{error, info, info_span, warn, Instrument as _};

use crate::accept::notice;
use crate::buffer::{Buffer, StateChanges};
use crate::tpm::Tpm;

/// The workload key's public half in the image (`edgeward image build` puts it there).
pub const TRUST_KEY: &str = "/etc/edgeward/workload.pub";
/// Where the appliance's bundles are: beside the device configuration on the ESP.
pub const BUNDLES_ON_ESP: &str = "EFI/edgeward/workloads";
/// Mount points and sockets of running workloads.
pub const RUN_DIR: &str = "/run/edgeward/workloads";
/// The first workload's user and group; the n-th configured gets FIRST_UID + n.
pub const FIRST_UID: u32 = 61000;
/// How long a stopped workload has after SIGTERM before its cgroup is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of something other than alerts before the channel is closed on a workload.
const MAX_BAD_LINES: u32 = 10;

/// What the data path shows workloads: each point's layout when it is known, and each sample
/// once it is accepted (on disk). A workload too slow to keep up misses samples; the data
/// path never waits for one.
#[derive(Clone, Debug)]
pub struct Tap {
    sender: broadcast::Sender<Arc<ToWorkload>>,
    layouts: Arc<Mutex<BTreeMap<String, Arc<ToWorkload>>>>,
}

impl Default for Tap {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
            layouts: Arc::default(),
        }
    }
}

impl Tap {
    /// Whether any workload is listening (samples are not copied otherwise).
    pub fn wanted(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    pub fn layout(&self, stream: &str, json: &str) {
        let layout = serde_json::from_str(json).unwrap_or(serde_json::Value::Null);
        let message = Arc::new(ToWorkload::Layout {
            stream: stream.to_owned(),
            layout,
        });
        self.layouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(stream.to_owned(), message.clone());
        let _ = self.sender.send(message);
    }

    pub fn sample(&self, stream: &str, sample: &Sample) {
        let _ = self
            .sender
            .send(Arc::new(ToWorkload::sample(stream, sample)));
    }

    fn layouts(&self) -> Vec<Arc<ToWorkload>> {
        self.layouts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// Where a workload's alerts and what the role has to say go: the buffer, as notifications of
/// the device (the appliance), or the log (`edgeward-agent workload run`).
#[derive(Clone)]
pub enum Notices {
    Buffer {
        buffer: Buffer,
        device: TopicSegment,
    },
    Log,
}

impl Notices {
    fn send(&self, notification: Notification) {
        info!(
            title = %notification.title,
            body = %notification.body,
            tag = %notification.tag,
            "notification"
        );
        if let Notices::Buffer { buffer, device } = self {
            if let Err(error) =
                buffer.accept(&[notice(&notification, device)], &StateChanges::default())
            {
                error!(error = %format!("{error:#}"), "cannot buffer the notification");
            }
        }
    }
}

/// What runs workloads: the TPM owner that measures them, the trusted key, the cgroups.
pub struct Host {
    pub tpm: Tpm,
    pub key: TrustedKey,
    pub cgroups: Cgroups,
    pub run_dir: PathBuf,
    /// The agent's own executable: the sandbox's two stages.
    pub own_binary: PathBuf,
    pub notices: Notices,
    pub tap: Tap,
    /// Measure each image's read rate, through dm-verity and raw, before it runs (an image
    /// built with `edgeward.bench=workloads` on its command line: the benchmark's, never a
    /// release).
    pub bench: bool,
}

/// The kernel command line's switch for [`Host::bench`].
pub const BENCH_SWITCH: &str = "edgeward.bench=workloads";

/// A bundle whose signature verified and whose manifest is measured: ready to run.
pub struct Admitted {
    pub path: PathBuf,
    file: File,
    pub verified: VerifiedWorkload,
    pub uid: u32,
}

impl Admitted {
    pub fn name(&self) -> &str {
        self.verified.manifest.name.as_str()
    }
}

/// How a run of a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The exit code (128 + signal when killed).
    pub code: i32,
    /// Why, for people.
    pub reason: String,
    /// Stopped by the appliance, not ended by itself.
    pub stopped: bool,
}

impl Host {
    /// Reads the trusted key and readies cgroup v2 for workloads.
    pub fn new(
        tpm: Tpm,
        key_file: &Path,
        notices: Notices,
        tap: Tap,
        own_binary: PathBuf,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(key_file)
            .with_context(|| format!("the workload key {} cannot be read", key_file.display()))?;
        let key = TrustedKey::from_pem(&text)
            .with_context(|| format!("the workload key {}", key_file.display()))?;
        let cgroups = Cgroups::prepare(Path::new("/sys/fs/cgroup"))
            .context("workloads need cgroup v2 with the cpu, memory and pids controllers")?;
        Ok(Self {
            tpm,
            key,
            cgroups,
            run_dir: PathBuf::from(RUN_DIR),
            own_binary,
            notices,
            tap,
            bench: false,
        })
    }

    /// Opens `path`, checks it against the trusted key and measures its manifest into PCR 15
    /// (the agent's log gets the event in the same TPM job). A refused bundle is not measured:
    /// it never runs. The refusal is one line, also sent as a notification.
    pub async fn admit(&self, path: &Path, uid: u32) -> Result<Admitted> {
        let label = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        let started = Instant::now();
        let (file, verified) = match edgeward_workload::image::open(path, &self.key) {
            Ok(opened) => opened,
            Err(error) => {
                let reason = format!("{error}");
                error!(bundle = %path.display(), %reason, "workload refused");
                self.notices
                    .send(Notification::workload_refused(&label, &reason));
                return Err(anyhow!("{} is refused: {reason}", path.display()));
            }
        };
        let manifest = &verified.manifest;
        let event = AgentEvent::workload(
            verified.manifest_digest,
            manifest.name.as_str(),
            &manifest.version,
        );
        self.tpm
            .measure(event)
            .await
            .with_context(|| format!("cannot measure {}", manifest.name.as_str()))?;
        info!(
            workload = manifest.name.as_str(),
            version = %manifest.version,
            manifest_sha256 = %hex::encode(verified.manifest_digest),
            pcr = edgeward_attestation::agent_log::WORKLOAD_PCR,
            admit_ms = started.elapsed().as_secs_f64() * 1000.0,
            "workload measured"
        );
        Ok(Admitted {
            path: path.to_owned(),
            file,
            verified,
            uid,
        })
    }

    /// Maps the admitted workload's image and runs it, restarting it as its manifest says,
    /// until it ends for good or `stop` changes. Returns the last run's end.
    pub async fn run(
        &self,
        admitted: &Admitted,
        mut stop: watch::Receiver<bool>,
        on_state: impl Fn(&str),
    ) -> Result<Ended> {
        let name = admitted.name().to_owned();
        let manifest = &admitted.verified.manifest;
        let dir = self.run_dir.join(&name);
        let (root, io) = (dir.join("root"), dir.join("io"));
        for path in [&root, &io] {
            std::fs::create_dir_all(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
        }
        std::fs::set_permissions(&io, std::fs::Permissions::from_mode(0o755))?;
        let device = DeviceName::new(&format!("edgeward-workload-{name}"))?;
        let mapping = Instant::now();
        let image = MappedImage::map(&admitted.file, &admitted.verified, device, &root)
            .with_context(|| format!("{name}: cannot map its image"))?;
        info!(
            workload = %name,
            device = ?image.device(),
            at = %root.display(),
            map_ms = mapping.elapsed().as_secs_f64() * 1000.0,
            "image mapped through dm-verity"
        );
        if self.bench {
            match read_rates(admitted, &root, &dir.join("raw")) {
                Ok(line) => println!("EDGEWARD-BENCH workload={name} {line}"),
                Err(error) => error!(error = %format!("{error:#}"), "the read benchmark failed"),
            }
        }
        let limits = manifest.size.limits();
        let cgroup = self.cgroups.create(&manifest.name, &limits)?;
        let spec = SandboxSpec {
            name: name.clone(),
            uid: admitted.uid,
            image_root: root.clone(),
            io_dir: io.clone(),
            cgroup: Some(cgroup.path().to_owned()),
            command: manifest.command.clone(),
            arguments: manifest.arguments.clone(),
            environment: manifest.environment.clone(),
            network: manifest.network,
            // Its tmpfs pages are charged to its memory limit anyway; a quarter of it.
            tmp_bytes: limits.memory_bytes / 4,
        };
        let mut failures = 0u32;
        let ended = loop {
            on_state("running");
            let ended = self
                .run_once(admitted, &spec, &cgroup, &io, stop.clone())
                .await?;
            let restart = !ended.stopped
                && match manifest.restart {
                    Restart::Never => false,
                    Restart::OnFailure => ended.code != 0,
                    Restart::Always => true,
                };
            if ended.stopped {
                info!(workload = %name, "workload stopped");
                break ended;
            }
            if ended.code != 0 {
                self.notices
                    .send(Notification::workload_ended(&name, &ended.reason, restart));
            } else {
                info!(workload = %name, "workload exited");
            }
            if !restart {
                break ended;
            }
            failures = if ended.code == 0 { 0 } else { failures + 1 };
            let wait = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
            on_state(&format!(
                "restarting in {} s: {}",
                wait.as_secs(),
                ended.reason
            ));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break Ended { stopped: true, ..ended },
            }
        };
        on_state(&if ended.stopped {
            "stopped".to_owned()
        } else {
            format!("ended: {}", ended.reason)
        });
        if let Err(error) = cgroup.remove() {
            warn!(workload = %name, %error, "cannot remove the cgroup");
        }
        if let Err(error) = image.unmap() {
            warn!(workload = %name, %error, "cannot unmap the image");
        }
        Ok(ended)
    }

    async fn run_once(
        &self,
        admitted: &Admitted,
        spec: &SandboxSpec,
        cgroup: &WorkloadCgroup,
        io: &Path,
        mut stop: watch::Receiver<bool>,
    ) -> Result<Ended> {
        let name = spec.name.clone();
        let socket_path = io.join("samples.sock");
        let _ = std::fs::remove_file(&socket_path);
        let listener = tokio::net::UnixListener::bind(&socket_path)
            .with_context(|| format!("cannot listen on {}", socket_path.display()))?;
        // The workload's user connects; nothing else in its sandbox can reach the socket.
        std::fs::set_permissions(&socket_path, std::fs::Permissions::from_mode(0o666))?;
        let channel_task = tokio::spawn(
            serve_channel(
                listener,
                name.clone(),
                admitted
                    .verified
                    .manifest
                    .streams
                    .iter()
                    .map(|stream| stream.as_str().to_owned())
                    .collect(),
                self.tap.clone(),
                self.notices.clone(),
            )
            .instrument(info_span!("channel", workload = %name)),
        );
        let oom_before = cgroup.oom_kills();
        let started = Instant::now();
        let mut child = tokio::process::Command::new(&self.own_binary)
            .arg(sandbox::STAGE_ONE)
            .arg(spec.to_json())
            .env_clear()
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the sandbox")?;
        info!(workload = %name, uid = spec.uid, command = %spec.command, "workload started");
        let mut output = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            output.push(tokio::spawn(log_lines(
                stdout,
                name.clone(),
                "stdout",
                started,
            )));
        }
        if let Some(stderr) = child.stderr.take() {
            output.push(tokio::spawn(log_lines(
                stderr,
                name.clone(),
                "stderr",
                started,
            )));
        }
        let (status, stopped) = tokio::select! {
            status = child.wait() => (status?, false),
            _ = stop.changed() => {
                // The command is PID 1 of its namespace: it gets SIGTERM only if it handles it,
                // so every process of the cgroup gets one, then the cgroup is killed.
                for pid in cgroup.procs().unwrap_or_default() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                match tokio::time::timeout(STOP_GRACE, child.wait()).await {
                    Ok(status) => (status?, true),
                    Err(_) => {
                        cgroup.kill()?;
                        (child.wait().await?, true)
                    }
                }
            }
        };
        // Whatever is left of it (a child it started) goes with it.
        if !cgroup.procs().unwrap_or_default().is_empty() {
            cgroup.kill()?;
        }
        channel_task.abort();
        for task in output {
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        let code = sandbox::exit_code(status);
        let killed_at_limit = cgroup.oom_kills() > oom_before;
        let reason = if killed_at_limit {
            format!(
                "killed at its memory limit ({} MiB, size {:?})",
                admitted.verified.manifest.size.limits().memory_bytes >> 20,
                admitted.verified.manifest.size
            )
        } else if code == sandbox::SANDBOX_FAILED {
            "its sandbox could not be made (exit 125)".to_owned()
        } else if code > 128 {
            format!("killed by signal {}", code - 128)
        } else {
            format!("exited with {code}")
        };
        info!(
            workload = %name,
            code,
            seconds = started.elapsed().as_secs_f64(),
            %reason,
            stopped,
            "workload ended"
        );
        Ok(Ended {
            code,
            reason,
            stopped,
        })
    }
}

/// Each line the workload writes, into the log under its name; the first with how long after
/// the sandbox's start it came (the launch's last step).
async fn log_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    workload: String,
    which: &'static str,
    started: Instant,
) {
    let mut lines = BufReader::new(stream).lines();
    let mut first = true;
    while let Ok(Some(line)) = lines.next_line().await {
        if std::mem::take(&mut first) {
            info!(
                workload = %workload,
                stream = which,
                after_start_ms = started.elapsed().as_secs_f64() * 1000.0,
                "first output"
            );
        }
        info!(target: "edgeward_agent::workload", workload = %workload, stream = which, "{line}");
    }
}

/// The samples channel: one connection at a time (a new one replaces the old). The alert
/// limit holds across connections: reconnecting does not earn a new burst.
async fn serve_channel(
    listener: tokio::net::UnixListener,
    name: String,
    streams: Vec<String>,
    tap: Tap,
    notices: Notices,
) {
    let limiter = Arc::new(Mutex::new(AlertLimiter::new(Instant::now())));
    let mut current: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let Ok((connection, _)) = listener.accept().await else {
            return;
        };
        if let Some(previous) = current.take() {
            previous.abort();
        }
        info!("workload connected to the samples channel");
        let (name, streams, tap, notices, limiter) = (
            name.clone(),
            streams.clone(),
            tap.clone(),
            notices.clone(),
            limiter.clone(),
        );
        current = Some(tokio::spawn(async move {
            if let Err(error) =
                converse(connection, &name, &streams, &tap, &notices, &limiter).await
            {
                warn!(%error, "samples channel closed");
            }
        }));
    }
}

async fn converse(
    connection: tokio::net::UnixStream,
    name: &str,
    streams: &[String],
    tap: &Tap,
    notices: &Notices,
    limiter: &Mutex<AlertLimiter>,
) -> Result<()> {
    let (reader, mut writer) = connection.into_split();
    let mut feed = tap.sender.subscribe();
    let allowed = |message: &ToWorkload| {
        let stream = match message {
            ToWorkload::Layout { stream, .. } | ToWorkload::Sample { stream, .. } => stream,
        };
        streams.iter().any(|allowed| allowed == stream)
    };
    for layout in tap.layouts() {
        if allowed(&layout) {
            writer.write_all(&layout.to_line()).await?;
        }
    }
    let mut lines = BufReader::new(reader).lines();
    let (mut missed, mut bad_lines) = (0u64, 0u32);
    loop {
        tokio::select! {
            message = feed.recv() => match message {
                Ok(message) => {
                    if allowed(&message) {
                        writer.write_all(&message.to_line()).await?;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(count)) => {
                    missed += count;
                    warn!(missed, "the workload reads too slowly: samples skipped");
                }
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            line = lines.next_line() => {
                let Some(line) = line? else {
                    return Ok(());
                };
                match channel::read_line(line.as_bytes()) {
                    Ok(FromWorkload::Alert { title, body, level, tag }) => {
                        let (admitted, dropped) = {
                            let mut limiter = limiter
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            (limiter.admit(Instant::now()), limiter.dropped())
                        };
                        if admitted {
                            let kind = match level {
                                Level::Info => NotifyType::Info,
                                Level::Warning => NotifyType::Warning,
                                Level::Failure => NotifyType::Failure,
                            };
                            notices.send(Notification::workload_alert(name, &title, &body, kind, &tag));
                        } else {
                            warn!(dropped, "alert over the workload's rate dropped");
                        }
                    }
                    Err(error) => {
                        bad_lines += 1;
                        warn!(%error, "the workload sent a line that is not an alert");
                        if bad_lines >= MAX_BAD_LINES {
                            return Err(anyhow!("{MAX_BAD_LINES} lines that are not alerts"));
                        }
                    }
                }
            }
        }
    }
}

/// Reads every file of the mapped image (at `root`) with the page cache dropped, then the same
/// files from the image mounted through a plain loop device at `raw` (no verity), and says both
/// rates: what dm-verity's checking costs a workload reading its files. The benchmark's only.
fn read_rates(admitted: &Admitted, root: &Path, raw: &Path) -> Result<String> {
    use edgeward_blockdev::loop_device::LoopDevice;
    fn read_tree(dir: &Path) -> Result<u64> {
        let mut bytes = 0;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            if kind.is_dir() {
                bytes += read_tree(&entry.path())?;
            } else if kind.is_file() {
                let mut file = File::open(entry.path())?;
                bytes += std::io::copy(&mut file, &mut std::io::sink())?;
            }
        }
        Ok(bytes)
    }
    fn timed(dir: &Path) -> Result<(u64, f64)> {
        nix::unistd::sync();
        std::fs::write("/proc/sys/vm/drop_caches", "3").context("cannot drop the page cache")?;
        let started = Instant::now();
        let bytes = read_tree(dir)?;
        Ok((bytes, started.elapsed().as_secs_f64()))
    }
    let (bytes, verity_s) = timed(root)?;
    let image = &admitted.verified.layout.image;
    let device = LoopDevice::attach(&admitted.file, image.start, image.end - image.start)?;
    std::fs::create_dir_all(raw)?;
    nix::mount::mount(
        Some(&device.path),
        raw,
        Some("erofs"),
        nix::mount::MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .context("cannot mount the raw image")?;
    let raw_read = timed(raw);
    let _ = nix::mount::umount2(raw, nix::mount::MntFlags::MNT_DETACH);
    drop(device);
    let (_, raw_s) = raw_read?;
    let rate = |seconds: f64| bytes as f64 / seconds.max(1e-9) / 1e6;
    Ok(format!(
        "bytes={bytes} verity_s={verity_s:.3} verity_mb_s={:.1} raw_s={raw_s:.3} raw_mb_s={:.1}",
        rate(verity_s),
        rate(raw_s)
    ))
}

/// The device configuration's bundles, in `dir` (the ESP's [`BUNDLES_ON_ESP`] in the
/// appliance).
pub fn bundle_paths(dir: &Path, bundles: &[String]) -> Vec<PathBuf> {
    bundles.iter().map(|bundle| dir.join(bundle)).collect()
}
