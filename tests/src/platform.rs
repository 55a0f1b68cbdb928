//! The central side of the data path as real processes, the way the SEGuRo platform runs it:
//! an OpenSSL PKI (platform CA, broker, recorder and TSA certificates), Mosquitto 2 with
//! `require_certificate` and `use_identity_as_username` and a default-deny ACL, `edgeward tsa
//! serve` as the TSA and `edgeward recorder` as the recorder; and devices, each a swtpm whose
//! device key was certified by its AK and given a certificate by the device CA (an intermediate
//! under the platform CA), laid out as `edgeward-agent attest` leaves it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::openssl::{leaf, root_ca, KeyKind, TSA_EXTENSIONS};
use crate::required_peer_missing;
use crate::swtpm::Swtpm;

/// A child process killed when dropped.
pub struct Process(pub Child);

impl Process {
    /// Stops it as a service manager would: SIGTERM, then SIGKILL after 5 s.
    pub fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until something listens on the loopback port.
pub fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{what} listens on {port} within 15 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The identities the broker lets read every topic: the recorder, and an operator's (`admin`,
/// for outside tools attached to a demo).
const READERS: [&str; 2] = ["recorder", "admin"];

pub struct Platform {
    pub dir: PathBuf,
    pub mqtt_port: u16,
    pub tsa_port: u16,
    pub mosquitto: Option<Process>,
    /// `set_tcp_nodelay true` in the broker (the platform's configuration leaves it off).
    pub broker_nodelay: bool,
    tsa: Option<Process>,
    device_ca: (String, String),
}

/// A device: its TPM and what attestation left on disk.
pub struct Device {
    pub tpm: Swtpm,
    pub name: String,
    pub state: PathBuf,
    pub pki: PathBuf,
}

impl Platform {
    /// The PKI, the broker and the TSA in `dir`. `None` when Mosquitto is missing outside CI.
    pub fn start(dir: &Path) -> Option<Self> {
        if Command::new("mosquitto").arg("-h").output().is_err() {
            required_peer_missing("mosquitto is not installed (run scripts/setup)");
            return None;
        }
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        std::fs::create_dir_all(dir.join("logs")).expect("logs dir");
        root_ca(&pki, "ca", "/CN=SEGuRo Certificate Authority");
        // 10.0.2.2: the host as a QEMU guest on the user network sees it.
        leaf(
            &pki,
            "server",
            KeyKind::P256,
            "/CN=localhost",
            "ca",
            "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.2.2\n",
        );
        for reader in READERS {
            leaf(
                &pki,
                reader,
                KeyKind::P256,
                &format!("/CN={reader}"),
                "ca",
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
            );
        }
        root_ca(&pki, "tsa-root", "/CN=Platform TSA Root");
        leaf(
            &pki,
            "tsa",
            KeyKind::P256,
            "/CN=Platform TSA",
            "tsa-root",
            TSA_EXTENSIONS,
        );
        let platform_ca = std::fs::read_to_string(pki.join("ca.crt")).expect("CA");
        let platform_key = std::fs::read_to_string(pki.join("ca.key")).expect("CA key");
        let now = now();
        let device_ca = edgeward_attestation::device_ca::new_ca(
            "Edgeward device CA",
            Some((&platform_ca, &platform_key)),
            now - 300,
            now + 86_400,
        )
        .expect("device CA");
        std::fs::write(pki.join("device-ca.crt"), &device_ca.0).expect("write");
        // For certificates the device CA issues to software keys (a compromised device's).
        std::fs::write(pki.join("device-ca.key"), &device_ca.1).expect("write");

        let mqtt_port = crate::pypmu::free_port();
        let mut platform = Self {
            dir: dir.to_owned(),
            mqtt_port,
            tsa_port: 0,
            mosquitto: None,
            broker_nodelay: false,
            tsa: None,
            device_ca,
        };
        platform.tsa_port = crate::pypmu::free_port();
        platform.start_tsa();
        platform.launch_broker(true);
        Some(platform)
    }

    /// Starts (or starts again, on the same port) `edgeward tsa serve`.
    pub fn start_tsa(&mut self) {
        let pki = self.dir.join("pki");
        let child = Command::new(crate::edgeward_binary())
            .args([
                "tsa",
                "serve",
                "--listen",
                &format!("127.0.0.1:{}", self.tsa_port),
            ])
            .arg("--cert")
            .arg(pki.join("tsa.crt"))
            .arg("--key")
            .arg(pki.join("tsa.key"))
            .arg("--chain")
            .arg(pki.join("tsa-root.crt"))
            .env("EDGEWARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(self.log("tsa"))
            .spawn()
            .expect("edgeward tsa serve starts");
        self.tsa = Some(Process(child));
        wait_for_port(self.tsa_port, "edgeward tsa serve");
    }

    /// Stops the TSA: it becomes unreachable.
    pub fn stop_tsa(&mut self) {
        self.tsa = None;
    }

    /// The broker configuration: the platform's, with an ACL file in place of dynsec (the same
    /// rules: the recorder reads everything, a device writes only its own topics).
    pub fn broker_config(&self) -> PathBuf {
        let pki = self.dir.join("pki");
        let acl = self.dir.join("acl");
        std::fs::write(&acl, edgeward_platform::acl::mosquitto_acl(&READERS)).expect("acl");
        let config = self.dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "per_listener_settings false\nuser root\npersistence true\npersistence_location {dir}/\n\
                 log_dest stderr\nlog_type error\nlog_type warning\nlog_type notice\n\
                 listener {port} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/server.crt\n\
                 keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n\
                 allow_anonymous false\nacl_file {acl}\nmax_inflight_messages 1000\nmax_queued_messages 100000\n\
                 set_tcp_nodelay {nodelay}\n",
                port = self.mqtt_port,
                dir = self.dir.display(),
                pki = pki.display(),
                acl = acl.display(),
                nodelay = self.broker_nodelay,
            ),
        )
        .expect("mosquitto.conf");
        config
    }

    /// Starts (or starts again) the broker. The port was free when it was picked, but another
    /// test's server may have taken it since: then mosquitto exits ("Address already in use")
    /// while the other server answers on the port, so a listening port alone proves nothing.
    /// On its first start the broker then gets another port; started again (after an outage)
    /// it keeps its port, which the clients know, and tries again.
    pub fn start_broker(&mut self) {
        self.launch_broker(false);
    }

    /// [`Platform::start_broker`]; `may_move`: no client knows the port yet.
    fn launch_broker(&mut self, may_move: bool) {
        for _attempt in 0..5 {
            let log = self.log("mosquitto");
            let mut child = Command::new("mosquitto")
                .arg("-c")
                .arg(self.broker_config())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("mosquitto starts");
            let started = Instant::now();
            let exited = loop {
                if child.try_wait().ok().flatten().is_some() {
                    break true;
                }
                if std::net::TcpStream::connect(("127.0.0.1", self.mqtt_port)).is_ok() {
                    // Listening, but maybe someone else: mosquitto fails to bind within
                    // milliseconds of its start.
                    std::thread::sleep(Duration::from_millis(300));
                    break child.try_wait().ok().flatten().is_some();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "mosquitto listens on {} within 15 s",
                    self.mqtt_port
                );
                std::thread::sleep(Duration::from_millis(50));
            };
            if !exited {
                self.mosquitto = Some(Process(child));
                // Where outside tools (a subscriber, the platform's own recorder) attach.
                std::fs::write(
                    self.dir.join("broker.txt"),
                    format!("127.0.0.1:{}\n", self.mqtt_port),
                )
                .expect("broker.txt");
                return;
            }
            if may_move {
                self.mqtt_port = crate::pypmu::free_port();
            } else {
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        panic!(
            "mosquitto did not start: {}",
            std::fs::read_to_string(self.dir.join("logs/mosquitto.log")).unwrap_or_default()
        );
    }

    /// Stops the broker as its service manager would (SIGTERM: it saves its sessions, so the
    /// recorder's persistent session and queue survive): an outage.
    pub fn stop_broker(&mut self) {
        if let Some(mut broker) = self.mosquitto.take() {
            broker.stop();
        }
    }

    /// `logs/NAME.log`, opened for appending: each service's output, kept with the rest.
    pub fn log(&self, name: &str) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("logs").join(format!("{name}.log")))
            .expect("a log file in logs/")
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.dir.join("pki").join(file)
    }

    /// `edgeward recorder` into `store`.
    pub fn recorder(&self, store: &Path) -> Process {
        self.recorder_trusting(store, &self.pki("device-ca.crt"))
    }

    /// `edgeward recorder` into `store`, taking device signatures that chain to `device_ca`
    /// (a verifier's device CA, rather than this rig's).
    pub fn recorder_trusting(&self, store: &Path, device_ca: &Path) -> Process {
        let log = self.log("recorder");
        let child = Command::new(crate::edgeward_binary())
            .args([
                "recorder",
                "--broker",
                &format!("127.0.0.1:{}", self.mqtt_port),
            ])
            .arg("--ca")
            .arg(self.pki("ca.crt"))
            .arg("--cert")
            .arg(self.pki("recorder.crt"))
            .arg("--key")
            .arg(self.pki("recorder.key"))
            .arg("--store")
            .arg(store)
            .arg("--tsa-root")
            .arg(self.pki("tsa-root.crt"))
            .arg("--device-ca")
            .arg(device_ca)
            .env("EDGEWARD_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("recorder starts");
        Process(child)
    }

    /// `edgeward verify-data` on `store` with this platform's TSA root and device CA: whether
    /// every block verified, and its report.
    pub fn verify_data(&self, store: &Path) -> (bool, String) {
        self.verify_data_trusting(store, &self.pki("device-ca.crt"))
    }

    /// `edgeward verify-data` with `device_ca` as the device CA.
    pub fn verify_data_trusting(&self, store: &Path, device_ca: &Path) -> (bool, String) {
        let output = Command::new(crate::edgeward_binary())
            .arg("verify-data")
            .arg(store)
            .arg("--tsa-root")
            .arg(self.pki("tsa-root.crt"))
            .arg("--device-ca")
            .arg(device_ca)
            .output()
            .expect("verify-data runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    }

    /// A device named `name`: a swtpm with its device key, certified and given a certificate
    /// for `name`, in the files `edgeward-agent attest` writes.
    pub fn device(&self, name: &str) -> Option<Device> {
        self.device_valid(name, now() - 60, now() + 86_400)
    }

    /// [`Platform::device`] with a certificate valid from `not_before` to `not_after`.
    pub fn device_valid(&self, name: &str, not_before: u64, not_after: u64) -> Option<Device> {
        use edgeward_attestation::tpm;
        let device_tpm = Swtpm::start()?;
        let state = self.dir.join(format!("{name}-state"));
        let pki = self.dir.join(format!("{name}-pki"));
        std::fs::create_dir_all(&state).expect("state");
        std::fs::create_dir_all(&pki).expect("pki");
        let mut context = tpm::open(&device_tpm.tcti()).expect("swtpm");
        let key = tpm::create_device_key(&mut context).expect("device key");
        let keys = tpm::create_attestation_keys(&mut context, tpm::EkKind::Rsa).expect("AK");
        let nonce = tpm::Nonce::new(b"data path device".to_vec()).expect("nonce");
        let (attest, signature) = tpm::certify(&mut context, &keys, &key, &nonce).expect("certify");
        let ak = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_pem(
            &keys.ak_public_pem,
        )
        .expect("AK");
        let (certified, _) = edgeward_attestation::quote::appraise_certify(
            &key.public,
            &attest,
            &signature,
            &ak,
            nonce.as_bytes(),
        )
        .expect("certified");
        let platform_ca = std::fs::read_to_string(self.pki("ca.crt")).expect("CA");
        let ca = edgeward_attestation::device_ca::DeviceCa::from_pem(
            &self.device_ca.0,
            &self.device_ca.1,
            &platform_ca,
        )
        .expect("device CA");
        let issued = ca
            .issue(name, &certified, not_before, not_after, rand::random())
            .expect("device certificate");
        std::fs::write(pki.join("device.crt"), &issued.pem).expect("write");
        std::fs::write(pki.join("device-ca-chain.crt"), ca.chain_pem()).expect("write");
        let blob = key.blob();
        std::fs::write(state.join("device-key.pub"), &blob.public).expect("write");
        std::fs::write(state.join("device-key.priv"), &blob.private).expect("write");
        keys.flush(&mut context);
        key.flush(&mut context);
        Some(Device {
            tpm: device_tpm,
            name: name.to_owned(),
            state,
            pki,
        })
    }

    /// `edgeward-agent stream` for `device`, reading the PMU at `pmu_port` (IDCODE `idcode`).
    pub fn agent(&self, device: &Device, pmu_port: u16, idcode: u16, buffer: &Path) -> Command {
        let config = self.dir.join(format!("{}-agent.toml", device.name));
        std::fs::write(
            &config,
            format!(
                "statistics_interval = 5\n[[pmu]]\nname = \"bay-1\"\nidcode = {idcode}\n\
                 address = \"127.0.0.1:{pmu_port}\"\nreconnect_initial_ms = 100\nreconnect_max_seconds = 1\n"
            ),
        )
        .expect("agent config");
        let mut command = self.agent_with(device, &config, buffer);
        command.args(["--block-seconds", "1", "--heartbeat-seconds", "2"]);
        command
    }

    /// `edgeward-agent stream` for `device` with the streams of the agent configuration
    /// `config`, at the agent's default block and heartbeat intervals.
    pub fn agent_with(&self, device: &Device, config: &Path, buffer: &Path) -> Command {
        let mut command = Command::new(crate::agent_binary());
        command
            .args(["stream", "--location", "sub1", "--tcti", &device.tpm.tcti()])
            .arg("--config")
            .arg(config)
            .arg("--state")
            .arg(&device.state)
            .arg("--pki")
            .arg(&device.pki)
            .arg("--buffer")
            .arg(buffer)
            .args(["--broker", &format!("127.0.0.1:{}", self.mqtt_port)])
            .arg("--broker-ca")
            .arg(self.pki("ca.crt"))
            .args([
                "--tsa",
                &format!("http://127.0.0.1:{}/api/v1/timestamp", self.tsa_port),
            ])
            .arg("--tsa-root")
            .arg(self.pki("tsa-root.crt"));
        command
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `mosquitto_sub` to the broker with the recorder's identity (which reads every topic).
pub fn recorder_subscriber(platform: &Platform) -> Command {
    let mut command = Command::new("mosquitto_sub");
    command
        .args(["-h", "127.0.0.1", "-p", &platform.mqtt_port.to_string()])
        .arg("--cafile")
        .arg(platform.pki("ca.crt"))
        .arg("--cert")
        .arg(platform.pki("recorder.crt"))
        .arg("--key")
        .arg(platform.pki("recorder.key"));
    command
}

/// A subscriber (the recorder's identity) that keeps every message of `topic`'s payload, one
/// line each, as it arrives, until dropped: for tests and demos that wait for a message they
/// expect among others.
pub struct Collector {
    child: Child,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Collector {
    pub fn start(platform: &Platform, topic: &str) -> Self {
        use std::io::BufRead as _;
        let mut child = recorder_subscriber(platform)
            .args(["-t", topic, "-q", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_sub runs");
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stdout)
                    .lines()
                    .map_while(Result::ok)
                {
                    lines
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(line);
                }
            });
        }
        Self { child, lines }
    }

    /// The payloads so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until every one of `texts` is in some payload; whether they all came in `timeout`.
    pub fn wait_for_all(&self, texts: &[&str], timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if texts
                .iter()
                .all(|text| lines.iter().any(|line| line.contains(text)))
            {
                return true;
            }
            if Instant::now() > until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mosquitto_sub` as the recorder, collecting `topic` for `seconds`: what the broker delivers,
/// one line per message (`-v`: topic and payload, hex).
pub fn subscribe(platform: &Platform, topic: &str, seconds: u64) -> Child {
    recorder_subscriber(platform)
        .args(["-t", topic, "-v", "-W", &seconds.to_string(), "-q", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mosquitto_sub runs")
}

/// `openssl` made certificates for a device key outside any TPM, for clients that must be
/// refused (another device's name, no certificate at all).
pub fn software_client(platform: &Platform, name: &str) -> (PathBuf, PathBuf) {
    let pki = platform.dir.join("pki");
    leaf(
        &pki,
        name,
        KeyKind::P256,
        &format!("/CN={name}"),
        "ca",
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    (
        pki.join(format!("{name}.crt")),
        pki.join(format!("{name}.key")),
    )
}

/// A certificate from the device CA for a software key named `name`, as a compromised device
/// with a genuine certificate would hold: (certificate followed by the device CA, PEM key,
/// PKCS#8 DER key).
pub fn software_device(platform: &Platform, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let pki = platform.dir.join("pki");
    leaf(
        &pki,
        name,
        KeyKind::P256,
        &format!("/CN={name}"),
        "device-ca",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n",
    );
    let chain = pki.join(format!("{name}-chain.crt"));
    let text = format!(
        "{}{}",
        std::fs::read_to_string(pki.join(format!("{name}.crt"))).expect("certificate"),
        std::fs::read_to_string(pki.join("device-ca.crt")).expect("device CA")
    );
    std::fs::write(&chain, text).expect("write");
    (
        chain,
        pki.join(format!("{name}.key")),
        pki.join(format!("{name}.pk8")),
    )
}

/// The block files the recorder wrote for the test device's PMU (`sub1/pmu-a/bay-1`), in order.
pub fn block_files(store: &Path) -> Vec<PathBuf> {
    block_files_of(store, "sub1/pmu-a/bay-1")
}

/// The block files the recorder wrote for the point `location/device/pmu`, in order.
pub fn block_files_of(store: &Path, point: &str) -> Vec<PathBuf> {
    let dir = store.join("data/measurements").join(point);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                // Not the recorder's files in the making.
                .filter(|path| {
                    path.extension()
                        .is_some_and(|extension| extension == "parquet")
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Every recorded sequence of that PMU, in order, across its block files.
pub fn recorded_sequences(store: &Path) -> Vec<u64> {
    recorded_sequences_of(store, "sub1/pmu-a/bay-1")
}

/// Every recorded sequence of the point `location/device/pmu`, in block order.
pub fn recorded_sequences_of(store: &Path, point: &str) -> Vec<u64> {
    recorded_samples_of(store, point)
        .into_iter()
        .map(|sample| sample.sequence)
        .collect()
}

/// Every sample the recorder filed for `point`, block after block.
pub fn recorded_samples_of(store: &Path, point: &str) -> Vec<edgeward_measurement::sample::Sample> {
    block_files_of(store, point)
        .iter()
        .flat_map(|file| {
            edgeward_platform::parquet_block::decode_block(std::fs::read(file).expect("read"))
                .expect("block")
        })
        .collect()
}
