//! `edgeward image configure`: puts one device's signed configuration on an image's ESP
//! (`EFI/edgeward/device.toml` and `.sig`), after checking it against the image's configuration
//! key, so that a disk written for a device boots into that device's appliance. The UKI, and so
//! every measured value, stays as released: one release serves every device.

use std::path::Path;
use std::process::Command;

use thiserror::Error;

use crate::build::MIB;
use crate::tool::{run, ToolError};

/// The ESP's offset in the disk `edgeward image build` makes.
const ESP_OFFSET: u64 = MIB;
/// Where the appliance looks for its configuration on the ESP.
pub const CONFIG_DIR: &str = "EFI/edgeward";

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigureError {
    #[error("{what}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the configuration is not one this image obeys: {0}")]
    Refused(#[from] edgeward_config::ConfigError),
    #[error("the workload bundle {file} is not one this image runs: {source}")]
    Bundle {
        file: String,
        source: edgeward_bundle::BundleError,
    },
    #[error("{0}")]
    Workloads(String),
    #[error(transparent)]
    Tool(#[from] ToolError),
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigureError> {
    std::fs::read(path).map_err(|source| ConfigureError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })
}

/// Where the appliance looks for workload bundles on the ESP.
pub const WORKLOADS_DIR: &str = "EFI/edgeward/workloads";

/// Checks a bundle as the appliance will (the signature with the image's workload key) and
/// every block of its image against its sealed root hash, so that a disk is not written with
/// a workload that would be refused at boot.
fn check_bundle(
    path: &Path,
    key: &edgeward_bundle::signature::TrustedKey,
) -> Result<(), ConfigureError> {
    let refused = |source| ConfigureError::Bundle {
        file: path.display().to_string(),
        source,
    };
    let bytes = read(path)?;
    let header = edgeward_bundle::Header::parse(&bytes, bytes.len() as u64).map_err(refused)?;
    let hash_start = header.layout().hash.start as usize;
    let superblock = bytes.get(hash_start..).unwrap_or_default();
    let verified = edgeward_bundle::workload::open(&bytes, superblock, bytes.len() as u64, key)
        .map_err(refused)?;
    edgeward_bundle::workload::verify_image(&bytes, &verified).map_err(refused)
}

/// Checks `config` (with `config.sig` beside it) against `image/config.pub.raw`, and each of
/// `workloads` against `image/workload.pub`, and writes them onto the ESP of `disk`. The
/// bundles given must be exactly those the configuration lists. Returns the configured
/// identity.
pub fn configure(
    image: &Path,
    disk: &Path,
    config: &Path,
    workloads: &[std::path::PathBuf],
) -> Result<String, ConfigureError> {
    let key = edgeward_config::ConfigKey::from_hex(&String::from_utf8_lossy(&read(
        &image.join("config.pub.raw"),
    )?))?;
    let mut signature_path = config.as_os_str().to_owned();
    signature_path.push(".sig");
    let signature_path = std::path::PathBuf::from(signature_path);
    let text = read(config)?;
    let signature = read(&signature_path)?;
    let parsed = edgeward_config::verify(&text, &signature, &key)?;
    let given: Vec<String> = workloads
        .iter()
        .map(|path| {
            path.file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let (mut listed, mut sorted) = (parsed.workloads.clone(), given.clone());
    listed.sort();
    sorted.sort();
    if listed != sorted {
        return Err(ConfigureError::Workloads(format!(
            "the configuration lists the workload bundles {listed:?}, --workload gives {sorted:?}"
        )));
    }
    if !workloads.is_empty() {
        let key_text = String::from_utf8_lossy(&read(&image.join("workload.pub"))?).into_owned();
        let key =
            edgeward_bundle::signature::TrustedKey::from_pem(&key_text).map_err(|source| {
                ConfigureError::Bundle {
                    file: image.join("workload.pub").display().to_string(),
                    source,
                }
            })?;
        for path in workloads {
            check_bundle(path, &key)?;
        }
    }
    let target = format!("{}@@{ESP_OFFSET}", disk.display());
    let mtools = |args: &[&str]| {
        let mut command = Command::new(args[0]);
        command
            .args(["-i", &target])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1");
        command
    };
    // mmd fails when the directory exists; whether it does is what mdir says.
    if run(&mut mtools(&["mdir", &format!("::{CONFIG_DIR}")]), "mtools").is_err() {
        run(&mut mtools(&["mmd", &format!("::{CONFIG_DIR}")]), "mtools")?;
    }
    let mut copies = vec![
        (config.to_owned(), format!("{CONFIG_DIR}/device.toml")),
        (
            signature_path.clone(),
            format!("{CONFIG_DIR}/device.toml.sig"),
        ),
    ];
    if !workloads.is_empty() {
        if run(
            &mut mtools(&["mdir", &format!("::{WORKLOADS_DIR}")]),
            "mtools",
        )
        .is_err()
        {
            run(
                &mut mtools(&["mmd", &format!("::{WORKLOADS_DIR}")]),
                "mtools",
            )?;
        }
        for (path, name) in workloads.iter().zip(&given) {
            copies.push((path.clone(), format!("{WORKLOADS_DIR}/{name}")));
        }
    }
    for (source, target) in copies {
        run(
            mtools(&["mcopy", "-o"])
                .arg(source)
                .arg(format!("::{target}")),
            "mtools",
        )?;
    }
    Ok(parsed.identity.to_string())
}
