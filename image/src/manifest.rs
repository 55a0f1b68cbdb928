//! The reference-value manifest: what an image's devices will measure, signed by the operator's
//! release key. The verifier accepts a device only when its replayed log matches a manifest it
//! can verify, so the signature is over the exact bytes of `manifest.json`.

use std::path::Path;

use edgeward_bootchain::manifest::{verify, ReferenceValues, ReleaseKey};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ManifestError {
    #[error("cannot write {path}", path = .path.display())]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}", path = .path.display())]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Reference(#[from] edgeward_bootchain::manifest::ManifestError),
    #[error("the manifest is not JSON: {0}")]
    NotJson(String),
}

/// Writes `DIR/manifest.json` and its detached signature `DIR/manifest.json.sig` (hex Ed25519).
pub fn sign_manifest(
    dir: &Path,
    manifest: &Value,
    key: &Ed25519KeyPair,
) -> Result<(), ManifestError> {
    let mut text = serde_json::to_string_pretty(manifest)
        .map_err(|error| ManifestError::NotJson(error.to_string()))?;
    text.push('\n');
    let signature = key.sign(text.as_bytes());
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| ManifestError::Write { path, source })
    };
    write("manifest.json", text.as_bytes())?;
    write(
        "manifest.json.sig",
        format!("{}\n", hex::encode(signature.as_ref())).as_bytes(),
    )?;
    write(
        "release.pub.raw",
        format!("{}\n", hex::encode(key.public_key().as_ref())).as_bytes(),
    )?;
    Ok(())
}

/// Reads `DIR/manifest.json` after checking its signature against the raw Ed25519 public key
/// (the checks of [`edgeward_bootchain::manifest::verify`]).
pub fn verify_manifest(
    dir: &Path,
    public_key: &ReleaseKey,
) -> Result<ReferenceValues, ManifestError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|source| ManifestError::Read { path, source })
    };
    Ok(verify(
        &read("manifest.json")?,
        &read("manifest.json.sig")?,
        public_key,
    )?)
}
