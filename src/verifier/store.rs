//! The verifier's state on disk: one JSON file per device (`devices/<id>.json`) and one file per
//! EK binding (`ek/<fingerprint>`, holding the identity). A record is replaced atomically
//! (written beside, synced, renamed, directory synced), so a crash or power cut leaves the old
//! or the new record, never half of one. Read-modify-write happens under an exclusive lock on
//! `lock`, so `edgeward verifier deny` can change a record while the service runs; the service
//! caches nothing and sees it on the next request. Decision record: docs/decisions/0012.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use edgeward_attestation::verifier::{DeviceId, DeviceRecord};

pub struct Store {
    dir: PathBuf,
}

/// Held while a read-modify-write is in progress.
pub struct Locked {
    _file: File,
}

fn private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        private_dir(&dir.join("devices"))?;
        private_dir(&dir.join("ek"))?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Takes the state lock (blocking until the holder lets go).
    pub fn lock(&self) -> Result<Locked> {
        let path = self.dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        file.lock()
            .with_context(|| format!("cannot lock {}", path.display()))?;
        Ok(Locked { _file: file })
    }

    fn device_path(&self, id: &DeviceId) -> PathBuf {
        self.dir.join("devices").join(format!("{id}.json"))
    }

    pub fn get(&self, _lock: &Locked, id: &DeviceId) -> Result<Option<DeviceRecord>> {
        let path = self.device_path(id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("{} is not a device record", path.display())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The identity bound to an EK fingerprint, if any.
    pub fn ek_owner(&self, _lock: &Locked, fingerprint: &str) -> Result<Option<DeviceId>> {
        let path = self.dir.join("ek").join(fingerprint);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(DeviceId::new(text.trim()).map_err(|error| {
                anyhow::anyhow!("{} holds no identity: {error}", path.display())
            })?)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Stores a record, binding its EK to its identity the first time.
    pub fn put(&self, lock: &Locked, record: &DeviceRecord) -> Result<()> {
        if self.ek_owner(lock, &record.ek_fingerprint)?.is_none() {
            write_atomically(
                &self.dir.join("ek").join(&record.ek_fingerprint),
                format!("{}\n", record.id).as_bytes(),
            )?;
        }
        let mut bytes = serde_json::to_vec_pretty(record)?;
        bytes.push(b'\n');
        write_atomically(&self.device_path(&record.id), &bytes)
    }

    pub fn list(&self, lock: &Locked) -> Result<Vec<DeviceRecord>> {
        let dir = self.dir.join("devices");
        let mut records = Vec::new();
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let name = entry?.file_name();
            let Some(id) = name.to_str().and_then(|name| name.strip_suffix(".json")) else {
                continue;
            };
            let Ok(id) = DeviceId::new(id) else { continue };
            if let Some(record) = self.get(lock, &id)? {
                records.push(record);
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let temporary = path.with_extension("tmp");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&temporary)
        .with_context(|| format!("cannot write {}", temporary.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, path)
        .with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(parent) = path.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}
