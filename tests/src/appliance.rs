//! The central side of a booted appliance, on this machine: the platform (Mosquitto, the TSA),
//! a verifier that knows the released image, pyPMU and chronyd, all on loopback, which a QEMU
//! guest on the user network reaches as 10.0.2.2; and the device's signed configuration on a
//! writable copy of the image's disk.

use std::path::{Path, PathBuf};

use crate::platform::Platform;
use crate::pypmu::{free_port, PyPmu};
use crate::run_edgeward;
use crate::sntp::Chrony;
use crate::swtpm::Manufacturer;
use crate::verifier::Verifier;

/// The PMU's reporting rate.
pub const RATE: u64 = 50;

/// A released image and its keys.
pub struct Release {
    pub dir: PathBuf,
    pub keys: PathBuf,
    pub image: PathBuf,
}

/// The central side on the host, as a device on QEMU's user network sees it.
pub struct Central {
    pub dir: PathBuf,
    pub platform: Platform,
    pub verifier: Verifier,
    /// The verifier's device CA, which the recorder and verify-data trust.
    pub device_ca: PathBuf,
    pub pmu: PyPmu,
    pub sntp: Chrony,
}

impl Central {
    /// The platform, a verifier that knows the releases in `manifests`, pyPMU and chronyd, in
    /// `release.dir/name`, and the device's TPM state in its `tpm/`. `None` (after saying why) when a peer is missing outside CI.
    pub fn start(release: &Release, name: &str, manifests: &[&Path]) -> Option<Self> {
        Self::start_in(&release.dir.join(name), release, manifests)
    }

    /// [`Central::start`] in `dir`: `pki/`, `logs/` (every service's log), `broker.txt`, the
    /// verifier's `verifier/`, the device's `tpm/`.
    pub fn start_in(dir: &Path, release: &Release, manifests: &[&Path]) -> Option<Self> {
        Self::start_releasing(dir, release, manifests, None)
    }

    /// [`Central::start_in`] with the verifier's `released_workloads` set to `released` (a list
    /// `edgeward workload release` wrote, its signature beside it).
    pub fn start_releasing(
        dir: &Path,
        release: &Release,
        manifests: &[&Path],
        released: Option<&Path>,
    ) -> Option<Self> {
        let dir = dir.to_owned();
        std::fs::create_dir_all(&dir).expect("dir");
        let platform = Platform::start(&dir)?;
        let stamps = dir.join("pmu-stamps.txt");
        let _ = std::fs::remove_file(&stamps);
        let pmu = PyPmu::start_with(
            7,
            RATE as u16,
            "int-rect",
            &["--stamps", &stamps.to_string_lossy()],
        )?;
        let sntp = Chrony::start(&dir.join("chrony"))?;
        let port = free_port();
        let verifier_dir = dir.join("verifier");
        // The device's TPM is made before the verifier is told who makes TPMs.
        crate::swtpm::manufacture(&dir.join("tpm"));
        let swtpm_ca = Manufacturer::swtpm_localca();
        let path = |path: &Path| path.to_string_lossy().into_owned();
        let mut args: Vec<String> = [
            "verifier",
            "init",
            "--dir",
            &path(&verifier_dir),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--hostname",
            "10.0.2.2",
            "--hostname",
            "127.0.0.1",
            "--platform-ca",
            &path(&platform.pki("ca.crt")),
            "--platform-ca-key",
            &path(&platform.pki("ca.key")),
            "--release-key",
            &path(&release.image.join("release.pub.raw")),
            "--ek-root",
            &path(&swtpm_ca.root),
            "--ek-intermediate",
            &path(&swtpm_ca.intermediate),
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect();
        for manifest in manifests {
            args.push("--manifest".into());
            args.push(path(manifest));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_edgeward(&args);
        let config = verifier_dir.join("verifier.toml");
        if let Some(released) = released {
            let mut text = std::fs::read_to_string(&config).expect("verifier.toml");
            text.push_str(&format!(
                "released_workloads = {}\n",
                toml_string(&released.to_string_lossy())
            ));
            std::fs::write(&config, text).expect("verifier.toml");
        }
        let verifier = Verifier::start_logging(
            &config,
            port,
            &verifier_dir.join("tls-ca.crt"),
            platform.log("verifier"),
        );
        Some(Self {
            device_ca: verifier_dir.join("device-ca.crt"),
            dir,
            platform,
            verifier,
            pmu,
            sntp,
        })
    }

    /// The grid sequences of the frames pyPMU has sent so far (each frame's stamp as it encoded
    /// it, as the appliance turns it into a sequence: round(t × rate)), so a test tells a frame
    /// the PMU never sent from one the appliance lost.
    pub fn pmu_sent_sequences(&self) -> std::collections::BTreeSet<u64> {
        // Without the record every frame would pass as never sent: no record is a failure.
        let text = std::fs::read_to_string(self.dir.join("pmu-stamps.txt"))
            .expect("pyPMU's record of the frames it sent");
        assert!(!text.is_empty(), "pyPMU recorded no frame it sent");
        text.lines()
            .filter_map(|line| {
                let (soc, fraction) = line.split_once(' ')?;
                let (soc, fraction): (u64, u64) = (soc.parse().ok()?, fraction.parse().ok()?);
                // The stream's time base is 1 000 000 (pmu_server.py).
                Some(soc * RATE + (fraction * RATE + 500_000) / 1_000_000)
            })
            .collect()
    }

    /// The signed configuration of device bay-50 (location sub1, PMU bay-1, 1 s blocks),
    /// pointing at this central side.
    pub fn device_config(&self, release: &Release) -> PathBuf {
        self.device_config_with(release, 1)
    }

    /// The same with `streams` PMU streams, bay-1 to bay-N, all served by the one pyPMU.
    pub fn device_config_with(&self, release: &Release, streams: usize) -> PathBuf {
        self.device_config_issue(release, streams, 1, &self.dir.join("device.toml"))
    }

    /// Issue `serial` of the configuration with `streams` streams, signed, written to `file`
    /// (and `file.sig`).
    pub fn device_config_issue(
        &self,
        release: &Release,
        streams: usize,
        serial: u64,
        file: &Path,
    ) -> PathBuf {
        self.device_config_with_workloads(release, streams, serial, &[], file)
    }

    /// [`Central::device_config_issue`] that also runs the workload bundles `workloads` (file
    /// names; [`configured_disk_with`] puts the bundles on the disk).
    pub fn device_config_with_workloads(
        &self,
        release: &Release,
        streams: usize,
        serial: u64,
        workloads: &[&str],
        file: &Path,
    ) -> PathBuf {
        let host = |port: u16| format!("10.0.2.2:{port}");
        let mut draft = self.draft(serial, workloads);
        draft.pmus = (1..=streams)
            .map(|n| (format!("bay-{n}"), 7, host(self.pmu.port)))
            .collect();
        sign_draft(&draft, release, file)
    }

    /// [`Self::device_config_with_workloads`] with the appliance as the PMU: one stream,
    /// `bay-1`, estimated (P class, 50 fps) from simulated samples of a `frequency` Hz signal.
    pub fn device_config_estimating(
        &self,
        release: &Release,
        serial: u64,
        workloads: &[&str],
        frequency: f64,
        file: &Path,
    ) -> PathBuf {
        let mut draft = self.draft(serial, workloads);
        draft.estimated = vec![edgeward_config::draft::EstimatedDraft {
            name: "bay-1".into(),
            idcode: 7,
            class: "P".into(),
            nominal: 50,
            rate: 50,
            sampling: (),
            fs: 10_000,
            frequency,
            noise: 0.0001,
        }];
        sign_draft(&draft, release, file)
    }

    /// A configuration for this central side, without PMU streams.
    fn draft(&self, serial: u64, workloads: &[&str]) -> edgeward_config::draft::Draft {
        let pem = |path: &Path| std::fs::read_to_string(path).expect("PEM");
        let host = |port: u16| format!("10.0.2.2:{port}");
        edgeward_config::draft::Draft {
            serial,
            identity: "bay-50".into(),
            location: "sub1".into(),
            sntp: vec![host(self.sntp.port)],
            // The verifier listens on the host's loopback, which the guest reaches as 10.0.2.2.
            verifier_url: self.verifier.url.replace("127.0.0.1", "10.0.2.2"),
            verifier_ca: pem(&self.verifier.ca),
            ek: "rsa".into(),
            brokers: vec![host(self.platform.mqtt_port)],
            broker_ca: pem(&self.platform.pki("ca.crt")),
            tsa_url: format!("http://{}/api/v1/timestamp", host(self.platform.tsa_port)),
            tsa_root: pem(&self.platform.pki("tsa-root.crt")),
            block_seconds: Some(1),
            heartbeat_seconds: Some(2),
            buffer_bytes: None,
            pmus: Vec::new(),
            estimated: Vec::new(),
            workloads: workloads.iter().map(|name| name.to_string()).collect(),
        }
    }
}

/// Writes `draft` to `file` and signs it with the release's config key.
fn sign_draft(draft: &edgeward_config::draft::Draft, release: &Release, file: &Path) -> PathBuf {
    if let Some(parent) = file.parent() {
        std::fs::create_dir_all(parent).expect("a directory for the configuration");
    }
    std::fs::write(file, draft.to_toml().expect("TOML")).expect("write");
    run_edgeward(&[
        "config",
        "sign",
        &file.to_string_lossy(),
        "--keys",
        &release.keys.to_string_lossy(),
    ]);
    file.to_owned()
}

fn toml_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A writable copy of `image`'s disk at `disk`, configured with `config` (`edgeward image
/// configure`).
pub fn configured_disk(image: &Path, config: &Path, disk: &Path) {
    configured_disk_with(image, config, &[], disk);
}

/// [`configured_disk`] with the workload bundles `workloads` on its ESP.
pub fn configured_disk_with(image: &Path, config: &Path, workloads: &[&Path], disk: &Path) {
    crate::copy_sparse(&image.join("disk.img"), disk);
    let mut args: Vec<String> = [
        "image",
        "configure",
        "--image",
        &image.to_string_lossy(),
        "--disk",
        &disk.to_string_lossy(),
        "--config",
        &config.to_string_lossy(),
    ]
    .iter()
    .map(|arg| arg.to_string())
    .collect();
    for bundle in workloads {
        args.push("--workload".into());
        args.push(bundle.to_string_lossy().into_owned());
    }
    run_edgeward(&args.iter().map(String::as_str).collect::<Vec<_>>());
}
