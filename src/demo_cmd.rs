//! `edgeward demo data-path`: the whole data path on one machine, without QEMU. It makes a
//! platform PKI, starts a software TPM holding the device key, a TSA, Mosquitto 2 with mutual
//! TLS and a default-deny ACL, the recorder, a pyPMU simulator and the agent's pipeline; stops
//! them after the duration; and checks every recorded block with `verify-data`.
//!
//! The device certificate: the verifier issues one only to a device whose measured boot it
//! appraised, and there is no boot here. So the demo, as the device CA, issues it after the
//! AK certified the device key (TPM2_Certify, checked as the verifier checks it), unless
//! `--device-state`/`--device-pki`/`--tcti` name a device that `edgeward-agent attest` enrolled
//! (`qemu/demo` does that after a real measured boot).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use edgeward_attestation::device_ca::{
    new_ca, new_leaf, new_root_ca, new_server_certificate, DeviceCa, LeafKind,
};

#[derive(clap::Args)]
pub struct DataPathArgs {
    /// Where the store, the PKI and the logs go (DIR/store, DIR/pki, DIR/logs).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Seconds of streaming.
    #[arg(long, default_value_t = 15)]
    pub duration: u64,
    /// Block length in seconds.
    #[arg(long, default_value_t = 2)]
    pub block_seconds: u64,
    /// An enrolled device's attestation state (device key blob), instead of a new swtpm.
    #[arg(long, value_name = "DIR", requires_all = ["device_pki", "tcti", "device_ca"])]
    pub device_state: Option<PathBuf>,
    /// Its device.crt and device-ca-chain.crt.
    #[arg(long, value_name = "DIR")]
    pub device_pki: Option<PathBuf>,
    /// Its TPM.
    #[arg(long)]
    pub tcti: Option<String>,
    /// The CA that issued its certificate (the verifier's device-ca.crt).
    #[arg(long, value_name = "FILE")]
    pub device_ca: Option<PathBuf>,
    /// A PMU to read (HOST:PORT) instead of starting pyPMU; with --pmu-idcode.
    #[arg(long)]
    pub pmu: Option<String>,
    #[arg(long, default_value_t = 7)]
    pub pmu_idcode: u16,
}

#[derive(Subcommand)]
pub enum DemoCommand {
    /// PMU samples to a platform-layout store, signed in the TPM and time-stamped.
    DataPath(DataPathArgs),
    /// The appliance: the released image, configured for one device, booted in QEMU against
    /// a central side on this machine; then every recorded block verified.
    Appliance(crate::demo_appliance::ApplianceArgs),
}

/// A child process with its log, stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct Service {
    pub child: Child,
}

impl Service {
    pub fn start(name: &'static str, logs: &Path, command: &mut Command) -> Result<Self> {
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        let child = command
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self { child })
    }

    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

use std::os::unix::process::CommandExt as _;

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub(crate) fn wait_for_port(port: u16, what: &str, service: &mut Service) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = service.child.try_wait() {
            bail!("{what} exited ({status}); see its log");
        }
        if Instant::now() > deadline {
            bail!("{what} did not listen on port {port} within 20 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// The binaries beside this one.
pub(crate) fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.is_file() {
        bail!(
            "{} is missing (cargo build --workspace --bins)",
            path.display()
        );
    }
    Ok(path)
}

struct Device {
    state: PathBuf,
    pki: PathBuf,
    tcti: String,
    ca: PathBuf,
    _tpm: Option<Service>,
}

pub fn run(command: DemoCommand) -> Result<()> {
    match command {
        DemoCommand::DataPath(args) => data_path(args),
        DemoCommand::Appliance(args) => crate::demo_appliance::run(args),
    }
}

fn data_path(args: DataPathArgs) -> Result<()> {
    let DataPathArgs {
        out,
        duration,
        block_seconds,
        device_state,
        device_pki,
        tcti,
        device_ca,
        pmu,
        pmu_idcode,
    } = args;
    let out = std::path::absolute(&out)?;
    for dir in ["pki", "store", "logs", "run"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    let (pki, logs, run) = (out.join("pki"), out.join("logs"), out.join("run"));
    let say = |text: &str| eprintln!("demo: {text}");

    let central = Central::start(&out, &["localhost", "127.0.0.1"])?;
    let (ca, ca_key) = (central.ca.clone(), central.ca_key.clone());
    let device = match (device_state, device_pki, tcti, device_ca) {
        (Some(state), Some(device_pki), Some(tcti), Some(device_ca)) => {
            say("using the enrolled device given");
            Device {
                state,
                pki: device_pki,
                tcti,
                ca: device_ca,
                _tpm: None,
            }
        }
        _ => provision(&run, &logs, &ca, &ca_key)?,
    };
    std::fs::copy(&device.ca, pki.join("device-ca.crt"))?;
    let identity = {
        let text = std::fs::read_to_string(device.pki.join("device.crt"))?;
        let der = pem::parse(text)?.into_contents();
        let (_, certificate) = x509_parser::parse_x509_certificate(&der)
            .map_err(|error| anyhow::anyhow!("device.crt: {error}"))?;
        let name = certificate
            .subject()
            .iter_common_name()
            .next()
            .and_then(|name| name.as_str().ok())
            .context("device.crt has no CN")?
            .to_owned();
        name
    };
    say(&format!(
        "device {identity}: key in the TPM at {}",
        device.tcti
    ));
    let (mqtt, tsa_port) = (central.mqtt, central.tsa_port);

    let store = out.join("store");
    let mut recorder_service = central.recorder(&store, &pki.join("device-ca.crt"))?;

    let (pmu_address, _pmu) = match pmu {
        Some(address) => (address, None),
        None => {
            let (address, service) = start_pypmu(&logs, pmu_idcode)?;
            (address, Some(service))
        }
    };

    write(
        &run.join("agent.toml"),
        &format!(
            "statistics_interval = 10\n[[pmu]]\nname = \"bay-1\"\nidcode = {pmu_idcode}\n\
             address = \"{pmu_address}\"\n"
        ),
    )?;
    say(&format!(
        "streaming for {duration} s in {block_seconds} s blocks"
    ));
    let mut agent = Service::start(
        "agent",
        &logs,
        Command::new(sibling("edgeward-agent")?)
            .args([
                "stream",
                "--location",
                "substation-1",
                "--tcti",
                &device.tcti,
            ])
            .arg("--config")
            .arg(run.join("agent.toml"))
            .arg("--state")
            .arg(&device.state)
            .arg("--pki")
            .arg(&device.pki)
            .arg("--buffer")
            .arg(run.join("buffer"))
            .args(["--broker", &format!("127.0.0.1:{mqtt}")])
            .arg("--broker-ca")
            .arg(pki.join("ca.crt"))
            .args([
                "--tsa",
                &format!("http://127.0.0.1:{tsa_port}/api/v1/timestamp"),
            ])
            .arg("--tsa-root")
            .arg(pki.join("tsa-root.crt"))
            .args(["--block-seconds", &block_seconds.to_string()])
            .args(["--duration", &duration.to_string()])
            .env("EDGEWARD_LOG", "info,tss_esapi=warn"),
    )?;
    let status = agent.child.wait()?;
    if !status.success() {
        bail!(
            "the agent failed ({status}); see {}",
            logs.join("agent.log").display()
        );
    }
    // The recorder files a block when the next one starts; give the last messages a moment.
    std::thread::sleep(Duration::from_secs(2));
    recorder_service.stop();
    drop((agent, central));
    say(&format!(
        "store {} (pki: ca.crt, device-ca.crt, tsa.crt, tsa-root.crt); verifying every block:",
        store.display()
    ));
    let verified = crate::verify_data::check_store(
        &store,
        &crate::proof_trust::load_anchors(
            &pki.join("tsa-root.crt"),
            &pki.join("device-ca.crt"),
            None,
        )?,
    )?;
    if !verified {
        bail!("some blocks did not verify");
    }
    Ok(())
}

/// A software TPM with a device key the AK certified, and its certificate from a device CA
/// under the platform CA, laid out as `edgeward-agent attest` leaves it.
fn provision(run: &Path, logs: &Path, ca: &str, ca_key: &str) -> Result<Device> {
    use edgeward_attestation::tpm;
    let state = run.join("tpm");
    std::fs::create_dir_all(&state)?;
    let port = loop {
        let port = free_port()?;
        if std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            break port;
        }
    };
    let mut swtpm = Service::start(
        "swtpm",
        logs,
        Command::new("swtpm")
            .args(["socket", "--tpm2", "--flags", "not-need-init,startup-clear"])
            .arg("--tpmstate")
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1)),
    )?;
    wait_for_port(port, "swtpm", &mut swtpm)?;
    let tcti = format!("swtpm:host=127.0.0.1,port={port}");
    let mut context = tpm::open(&tcti)?;
    let key = tpm::create_device_key(&mut context)?;
    let keys = tpm::create_attestation_keys(&mut context, tpm::EkKind::Rsa)?;
    let nonce = tpm::Nonce::new(rand::random::<[u8; 16]>().to_vec())?;
    let (attest, signature) = tpm::certify(&mut context, &keys, &key, &nonce)?;
    let ak = <rsa::RsaPublicKey as rsa::pkcs8::DecodePublicKey>::from_public_key_pem(
        &keys.ak_public_pem,
    )
    .context("the AK's public key")?;
    let (certified, _) = edgeward_attestation::quote::appraise_certify(
        &key.public,
        &attest,
        &signature,
        &ak,
        nonce.as_bytes(),
    )?;
    let (device_ca, device_ca_key) = new_ca(
        "Edgeward device CA",
        Some((ca, ca_key)),
        now() - 300,
        now() + 86_400,
    )?;
    let issuer = DeviceCa::from_pem(&device_ca, &device_ca_key, ca)?;
    let issued = issuer.issue(
        "pmu-demo",
        &certified,
        now() - 60,
        now() + 86_400,
        rand::random(),
    )?;
    let device_state = run.join("device-state");
    let device_pki = run.join("device-pki");
    std::fs::create_dir_all(&device_state)?;
    std::fs::create_dir_all(&device_pki)?;
    let blob = key.blob();
    std::fs::write(device_state.join("device-key.pub"), &blob.public)?;
    std::fs::write(device_state.join("device-key.priv"), &blob.private)?;
    write(&device_pki.join("device.crt"), &issued.pem)?;
    write(&device_pki.join("device-ca-chain.crt"), issuer.chain_pem())?;
    let ca_path = run.join("device-ca.crt");
    write(&ca_path, &device_ca)?;
    keys.flush(&mut context);
    key.flush(&mut context);
    drop(context);
    Ok(Device {
        state: device_state,
        pki: device_pki,
        tcti,
        ca: ca_path,
        _tpm: Some(swtpm),
    })
}

/// The operator's reader identity on the broker (`pki/admin.crt`).
const ADMIN: &str = "admin";

/// The central side as the platform runs it: its PKI (as its setup-pki.sh makes it: a CA, the
/// broker's and the recorder's certificates, a TSA under its own root), Mosquitto 2 with its
/// listener settings and ACL, and the TSA.
pub(crate) struct Central {
    pub pki: PathBuf,
    pub logs: PathBuf,
    pub ca: String,
    pub ca_key: String,
    pub mqtt: u16,
    pub tsa_port: u16,
    _broker: Service,
    _tsa: Service,
}

impl Central {
    /// Starts it with its files in `out/pki`, `out/logs`, `out/run`; the broker's certificate
    /// names `hostnames`.
    pub fn start(out: &Path, hostnames: &[&str]) -> Result<Self> {
        for dir in ["pki", "logs", "run"] {
            std::fs::create_dir_all(out.join(dir))?;
        }
        let (pki, logs, run) = (out.join("pki"), out.join("logs"), out.join("run"));
        let (from, to) = (now() - 300, now() + 86_400);
        let (ca, ca_key) = new_root_ca("SEGuRo Certificate Authority", from, to)?;
        let names: Vec<String> = hostnames.iter().map(|name| name.to_string()).collect();
        let (server, server_key) = new_server_certificate(&names, &ca, &ca_key, from, to)?;
        let (recorder, recorder_key) =
            new_leaf("recorder", LeafKind::Client, &ca, &ca_key, from, to)?;
        // An operator's identity: the broker lets it read every topic, as the recorder.
        let (admin, admin_key) = new_leaf(ADMIN, LeafKind::Client, &ca, &ca_key, from, to)?;
        let (tsa_root, tsa_root_key) = new_root_ca("Platform TSA root", from, to)?;
        let (tsa, tsa_key) = new_leaf(
            "Platform TSA",
            LeafKind::TimeStamping,
            &tsa_root,
            &tsa_root_key,
            from,
            to,
        )?;
        for (name, text) in [
            ("ca.crt", &ca),
            ("ca.key", &ca_key),
            ("server.crt", &server),
            ("server.key", &server_key),
            ("recorder.crt", &recorder),
            ("recorder.key", &recorder_key),
            ("admin.crt", &admin),
            ("admin.key", &admin_key),
            ("tsa-root.crt", &tsa_root),
            ("tsa.crt", &tsa),
            ("tsa.key", &tsa_key),
        ] {
            write(&pki.join(name), text)?;
        }
        // The broker: the platform's listener settings, an ACL file with the platform's rules.
        // Devices send their CA's chain up to the platform CA with their certificate.
        let mqtt = free_port()?;
        write(
            &run.join("acl"),
            &edgeward_platform::acl::mosquitto_acl(&["recorder", ADMIN]),
        )?;
        write(
            &run.join("mosquitto.conf"),
            &format!(
                "per_listener_settings false\nuser root\npersistence true\n\
                 persistence_location {run}/\nlog_dest stderr\n\
                 listener {mqtt} 127.0.0.1\ncafile {pki}/ca.crt\ncertfile {pki}/server.crt\n\
                 keyfile {pki}/server.key\nrequire_certificate true\nuse_identity_as_username true\n\
                 allow_anonymous false\nacl_file {run}/acl\n",
                pki = pki.display(),
                run = run.display()
            ),
        )?;
        let mut broker = Service::start(
            "mosquitto",
            &logs,
            Command::new("mosquitto")
                .arg("-c")
                .arg(run.join("mosquitto.conf")),
        )?;
        wait_for_port(mqtt, "mosquitto", &mut broker)?;
        // Where outside tools (the platform's own recorder, a subscriber) attach.
        write(&out.join("broker.txt"), &format!("127.0.0.1:{mqtt}\n"))?;
        eprintln!("demo: Mosquitto on 127.0.0.1:{mqtt} (mTLS, ACL)");
        let tsa_port = free_port()?;
        let mut tsa_service = Service::start(
            "tsa",
            &logs,
            Command::new(std::env::current_exe()?)
                .args(["tsa", "serve", "--listen", &format!("127.0.0.1:{tsa_port}")])
                .arg("--cert")
                .arg(pki.join("tsa.crt"))
                .arg("--key")
                .arg(pki.join("tsa.key"))
                .arg("--chain")
                .arg(pki.join("tsa-root.crt"))
                .env("EDGEWARD_LOG", "info"),
        )?;
        wait_for_port(tsa_port, "the TSA", &mut tsa_service)?;
        eprintln!("demo: TSA on http://127.0.0.1:{tsa_port}/api/v1/timestamp");
        Ok(Self {
            pki,
            logs,
            ca,
            ca_key,
            mqtt,
            tsa_port,
            _broker: broker,
            _tsa: tsa_service,
        })
    }

    /// `edgeward recorder` into `store`, taking signatures that chain to `device_ca`.
    pub fn recorder(&self, store: &Path, device_ca: &Path) -> Result<Service> {
        Service::start(
            "recorder",
            &self.logs,
            Command::new(std::env::current_exe()?)
                .args(["recorder", "--broker", &format!("127.0.0.1:{}", self.mqtt)])
                .arg("--ca")
                .arg(self.pki.join("ca.crt"))
                .arg("--cert")
                .arg(self.pki.join("recorder.crt"))
                .arg("--key")
                .arg(self.pki.join("recorder.key"))
                .arg("--store")
                .arg(store)
                .arg("--tsa-root")
                .arg(self.pki.join("tsa-root.crt"))
                .arg("--device-ca")
                .arg(device_ca)
                .env("EDGEWARD_LOG", "info"),
        )
    }
}

/// pyPMU serving stream `idcode` at 50 frames/s on a free loopback port.
pub(crate) fn start_pypmu(logs: &Path, idcode: u16) -> Result<(String, Service)> {
    let port = free_port()?;
    let python = std::env::var_os("EDGEWARD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".venv/bin/python"));
    let mut service = Service::start(
        "pmu",
        logs,
        Command::new(python)
            .arg("tests/pypmu/pmu_server.py")
            .args(["--id", &idcode.to_string(), "--port", &port.to_string()])
            .args(["--rate", "50", "--format", "float-polar"]),
    )
    .context("cannot start pyPMU (run from the repository root after scripts/setup)")?;
    wait_for_port(port, "pyPMU", &mut service)?;
    eprintln!("demo: pyPMU (IDCODE {idcode}, 50 frames/s) on 127.0.0.1:{port}");
    Ok((format!("127.0.0.1:{port}"), service))
}
