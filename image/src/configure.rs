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
    #[error(transparent)]
    Tool(#[from] ToolError),
}

fn read(path: &Path) -> Result<Vec<u8>, ConfigureError> {
    std::fs::read(path).map_err(|source| ConfigureError::Io {
        what: format!("cannot read {}", path.display()),
        source,
    })
}

/// Checks `config` (with `config.sig` beside it) against `image/config.pub.raw` and writes both
/// onto the ESP of `disk`. Returns the configured identity.
pub fn configure(image: &Path, disk: &Path, config: &Path) -> Result<String, ConfigureError> {
    let key = edgeward_config::ConfigKey::from_hex(&String::from_utf8_lossy(&read(
        &image.join("config.pub.raw"),
    )?))?;
    let mut signature_path = config.as_os_str().to_owned();
    signature_path.push(".sig");
    let signature_path = std::path::PathBuf::from(signature_path);
    let text = read(config)?;
    let signature = read(&signature_path)?;
    let parsed = edgeward_config::verify(&text, &signature, &key)?;
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
    for (source, name) in [
        (config, "device.toml"),
        (signature_path.as_path(), "device.toml.sig"),
    ] {
        run(
            mtools(&["mcopy", "-o"])
                .arg(source)
                .arg(format!("::{CONFIG_DIR}/{name}")),
            "mtools",
        )?;
    }
    Ok(parsed.identity.to_string())
}
