//! The operator's keys: Secure Boot PK, KEK and db (RSA-2048 X.509, what OVMF and most firmware
//! accept), the workload-signing key, the release key that signs reference manifests and the
//! configuration key that signs device configurations (Ed25519), and the owner GUID that the
//! firmware stores with each enrolled certificate.
//!
//! `init` never overwrites: it creates the keys that are missing (a key directory made before a
//! key was added to the set gains it) and refuses when every key is there, or when only one file
//! of a key's pair is. Private keys are created with mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("refusing to overwrite existing key material: {}", .0.iter().map(|path| path.display().to_string()).collect::<Vec<_>>().join(", "))]
    WouldOverwrite(Vec<PathBuf>),
    #[error("key file {path} is missing (run `edgeward keys init {dir}`)", dir = .dir.display(), path = .path.display())]
    Missing { dir: PathBuf, path: PathBuf },
    #[error("cannot write {path}", path = .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot generate the {name} key: {reason}")]
    Generate { name: &'static str, reason: String },
    #[error("{path} holds no usable key: {reason}", path = .path.display())]
    Invalid { path: PathBuf, reason: String },
}

/// The Secure Boot keys, by role.
pub const SECURE_BOOT_KEYS: [&str; 3] = ["PK", "KEK", "db"];

/// The Ed25519 keys: workload bundles, released manifests, device configurations.
pub const SIGNING_KEYS: [&str; 3] = ["workload", "release", "config"];

/// The paths of a key directory.
#[derive(Debug, Clone)]
pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn certificate(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    pub fn private_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    pub fn public_key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pub"))
    }

    pub fn owner_guid_path(&self) -> PathBuf {
        self.dir.join("owner.guid")
    }

    fn all_paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = SECURE_BOOT_KEYS
            .iter()
            .flat_map(|name| [self.private_key(name), self.certificate(name)])
            .collect();
        for name in SIGNING_KEYS {
            paths.push(self.private_key(name));
            paths.push(self.public_key(name));
        }
        paths.push(self.owner_guid_path());
        paths
    }

    /// Checks every file of the set is there.
    pub fn check(&self) -> Result<(), KeyError> {
        match self.all_paths().into_iter().find(|path| !path.is_file()) {
            Some(path) => Err(KeyError::Missing {
                dir: self.dir.clone(),
                path,
            }),
            None => Ok(()),
        }
    }

    /// The owner GUID recorded with every certificate the firmware enrols.
    pub fn owner_guid(&self) -> Result<String, KeyError> {
        let path = self.owner_guid_path();
        let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        let guid = text.trim().to_owned();
        if parse_guid(&guid).is_none() {
            return Err(KeyError::Invalid {
                path,
                reason: "not a GUID".into(),
            });
        }
        Ok(guid)
    }

    /// A certificate as DER.
    pub fn certificate_der(&self, name: &str) -> Result<Vec<u8>, KeyError> {
        let path = self.certificate(name);
        let pem = std::fs::read_to_string(&path).map_err(|source| KeyError::Read {
            path: path.clone(),
            source,
        })?;
        pem_body(&pem, "CERTIFICATE").ok_or(KeyError::Invalid {
            path,
            reason: "no PEM CERTIFICATE block".into(),
        })
    }

    /// The release key, for signing manifests.
    pub fn release_key(&self) -> Result<ring::signature::Ed25519KeyPair, KeyError> {
        self.ed25519_key("release")
    }

    /// The configuration key, for signing device configurations.
    pub fn config_key(&self) -> Result<ring::signature::Ed25519KeyPair, KeyError> {
        self.ed25519_key("config")
    }

    fn ed25519_key(&self, name: &str) -> Result<ring::signature::Ed25519KeyPair, KeyError> {
        read_ed25519_key(&self.private_key(name))
    }
}

/// An Ed25519 private key as `init` writes it (PKCS#8 in a PEM `PRIVATE KEY` block).
pub fn read_ed25519_key(path: &Path) -> Result<ring::signature::Ed25519KeyPair, KeyError> {
    let pem = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let der = pem_body(&pem, "PRIVATE KEY").ok_or_else(|| KeyError::Invalid {
        path: path.to_owned(),
        reason: "no PEM PRIVATE KEY block".into(),
    })?;
    ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|error| {
        KeyError::Invalid {
            path: path.to_owned(),
            reason: error.to_string(),
        }
    })
}

/// The contents of the first PEM block labelled `label`.
pub fn pem_body(text: &str, label: &str) -> Option<Vec<u8>> {
    pem::parse_many(text)
        .ok()?
        .into_iter()
        .find(|block| block.tag() == label)
        .map(|block| block.contents().to_vec())
}

/// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` into its UEFI byte layout (first three fields
/// little-endian).
pub fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let parts: Vec<&str> = text.split('-').collect();
    if parts.len() != 5 || [8, 4, 4, 4, 12] != parts.iter().map(|p| p.len()).collect::<Vec<_>>()[..]
    {
        return None;
    }
    let hex: String = parts.concat();
    let bytes = hex::decode(hex).ok()?;
    let mut out = [0u8; 16];
    out[0..4].copy_from_slice(&[bytes[3], bytes[2], bytes[1], bytes[0]]);
    out[4..6].copy_from_slice(&[bytes[5], bytes[4]]);
    out[6..8].copy_from_slice(&[bytes[7], bytes[6]]);
    out[8..].copy_from_slice(&bytes[8..]);
    Some(out)
}

fn random_guid() -> String {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0F) | 0x40;
    bytes[8] = (bytes[8] & 0x3F) | 0x80;
    let hex = hex::encode(bytes);
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), KeyError> {
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    write().map_err(|source| KeyError::Write {
        path: path.to_owned(),
        source,
    })
}

fn certificate(name: &'static str, key: &KeyPair) -> Result<String, KeyError> {
    let mut params = CertificateParams::default();
    let mut subject = DistinguishedName::new();
    subject.push(DnType::CommonName, format!("Edgeward {name}"));
    subject.push(DnType::OrganizationName, "Edgeward operator");
    params.distinguished_name = subject;
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    params
        .self_signed(key)
        .map(|certificate| certificate.pem())
        .map_err(|error| KeyError::Generate {
            name,
            reason: error.to_string(),
        })
}

/// Creates the missing keys of the set in `dir` (created if missing). Returns the files written.
pub fn init(dir: &Path) -> Result<Vec<PathBuf>, KeyError> {
    let keys = KeyDir::new(dir);
    let all = keys.all_paths();
    if all.iter().all(|path| path.exists()) {
        return Err(KeyError::WouldOverwrite(all));
    }
    // A key whose pair is half there is not recreated: that would replace the half that is.
    let half: Vec<PathBuf> = SECURE_BOOT_KEYS
        .iter()
        .map(|name| (keys.private_key(name), keys.certificate(name)))
        .chain(
            SIGNING_KEYS
                .iter()
                .map(|name| (keys.private_key(name), keys.public_key(name))),
        )
        .filter(|(private, public)| private.exists() != public.exists())
        .map(|(private, public)| if private.exists() { private } else { public })
        .collect();
    if !half.is_empty() {
        return Err(KeyError::WouldOverwrite(half));
    }
    // The Secure Boot keys and the owner GUID go together: the firmware enrols them as a set.
    let secure_boot_missing = SECURE_BOOT_KEYS
        .iter()
        .all(|name| !keys.private_key(name).exists())
        && !keys.owner_guid_path().exists();
    let secure_boot_present = SECURE_BOOT_KEYS
        .iter()
        .all(|name| keys.private_key(name).exists())
        && keys.owner_guid_path().exists();
    if !secure_boot_missing && !secure_boot_present {
        return Err(KeyError::WouldOverwrite(
            SECURE_BOOT_KEYS
                .iter()
                .map(|name| keys.private_key(name))
                .chain([keys.owner_guid_path()])
                .filter(|path| path.exists())
                .collect(),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|source| KeyError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let mut written = Vec::new();
    if secure_boot_missing {
        for name in SECURE_BOOT_KEYS {
            let private =
                rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).map_err(|error| {
                    KeyError::Generate {
                        name,
                        reason: error.to_string(),
                    }
                })?;
            let pem = private
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|error| KeyError::Generate {
                    name,
                    reason: error.to_string(),
                })?;
            let pair = KeyPair::from_pkcs8_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256)
                .map_err(|error| KeyError::Generate {
                    name,
                    reason: error.to_string(),
                })?;
            let cert = certificate(name, &pair)?;
            write_new(&keys.private_key(name), pem.as_bytes(), 0o600)?;
            write_new(&keys.certificate(name), cert.as_bytes(), 0o644)?;
            written.extend([keys.private_key(name), keys.certificate(name)]);
        }
        write_new(
            &keys.owner_guid_path(),
            format!("{}\n", random_guid()).as_bytes(),
            0o644,
        )?;
        written.push(keys.owner_guid_path());
    }
    for name in SIGNING_KEYS {
        if keys.private_key(name).exists() {
            continue;
        }
        let pair =
            KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(|error| KeyError::Generate {
                name,
                reason: error.to_string(),
            })?;
        write_new(
            &keys.private_key(name),
            pair.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_new(
            &keys.public_key(name),
            pair.public_key_pem().as_bytes(),
            0o644,
        )?;
        written.extend([keys.private_key(name), keys.public_key(name)]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_a_complete_set_once_and_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("edgeward-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = init(&dir).expect("keys are created");
        assert_eq!(written.len(), 13);
        let keys = KeyDir::new(&dir);
        keys.check().expect("complete");
        for name in ["PK", "KEK", "db", "workload", "release", "config"] {
            let mode = std::fs::metadata(keys.private_key(name))
                .expect("exists")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}.key is private");
        }
        assert!(keys.certificate_der("db").expect("readable").len() > 500);
        parse_guid(&keys.owner_guid().expect("a GUID")).expect("parses");
        keys.release_key().expect("an Ed25519 key");
        keys.config_key().expect("an Ed25519 key");
        let before = std::fs::read(keys.private_key("PK")).expect("readable");
        match init(&dir) {
            Err(KeyError::WouldOverwrite(paths)) => assert_eq!(paths.len(), 13),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // A set made before the configuration key existed gains it, and keeps everything else.
        std::fs::remove_file(keys.private_key("config")).expect("remove");
        std::fs::remove_file(keys.public_key("config")).expect("remove");
        let release = std::fs::read(keys.private_key("release")).expect("readable");
        let added = init(&dir).expect("the missing key is added");
        assert_eq!(
            added,
            vec![keys.private_key("config"), keys.public_key("config")]
        );
        assert_eq!(
            std::fs::read(keys.private_key("release")).expect("readable"),
            release
        );
        // Half a pair is never completed: its other half would not match.
        std::fs::remove_file(keys.public_key("config")).expect("remove");
        assert!(matches!(init(&dir), Err(KeyError::WouldOverwrite(_))));
        assert_eq!(
            std::fs::read(keys.private_key("PK")).expect("readable"),
            before
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn guids_are_laid_out_as_uefi_stores_them() {
        let bytes = parse_guid("8be4df61-93ca-11d2-aa0d-00e098032b8c").expect("valid");
        assert_eq!(hex::encode(bytes), "61dfe48bca93d211aa0d00e098032b8c");
        assert!(parse_guid("not-a-guid").is_none());
    }
}
