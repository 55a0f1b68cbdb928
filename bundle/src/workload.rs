//! Workload bundles: the manifest an algorithm team's program comes with, what its size means,
//! packing a directory's erofs image into a bundle, signing it, and reading one back.
//!
//! ```toml
//! format = 1
//! name = "freq-alarm"               # [a-z0-9-], at most 64: cgroup, log and alert name
//! version = "1.0.0"
//! command = "/bin/freq-alarm"       # absolute, inside the image
//! arguments = ["--band-mhz", "200"]
//! size = "S"                        # S, M or L: CPU, memory and task limits (Size::limits)
//! network = false                   # false: no network namespace of the appliance's, no IP sockets
//! streams = ["bay-1"]               # the PMU streams of the device configuration it may read
//! restart = "on-failure"            # never, on-failure or always
//!
//! [environment]
//! RUST_LOG = "info"
//!
//! [image]                           # written by `pack`, covered by the signature
//! filesystem = "erofs"
//! verity_root_hash = "…"            # 64 hex digits
//! verity_salt = "…"
//! data_blocks = 301                 # 4096-byte blocks of the image
//! hash_bytes = 8192                 # the hash device: superblock block and tree
//! ```

use std::collections::{BTreeMap, BTreeSet};

use edgeward_platform::topics::TopicSegment;
use edgeward_verity::{HashTree, RootHash, Salt, Superblock, BLOCK_SIZE};
use ring::signature::Ed25519KeyPair;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::signature::{self, TrustedKey};
use crate::{BundleError, Header, Kind, Layout, BLOCK};

/// The manifest format this crate writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// The UUID of every workload's verity superblock: the superblock is not what identifies a
/// bundle (its signed manifest is), and a fixed one keeps packing reproducible.
const VERITY_UUID: [u8; 16] = [
    0x6d, 0x0f, 0x2c, 0x1e, 0x0b, 0x3a, 0x4e, 0x5b, 0x9a, 0x77, 0x45, 0xdc, 0x0e, 0x1d, 0x2b, 0x01,
];

/// A workload's name: lower-case letters, digits and `-`, 1 to 64 of them, not starting with
/// `-`. It names the workload's cgroup, its log span and its alerts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkloadName(String);

impl WorkloadName {
    pub fn new(name: &str) -> Result<Self, BundleError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(BundleError::Manifest(format!(
                "name {name:?} is not 1 to 64 of a-z, 0-9 and '-' (not first)"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A T-shirt size: the resources a workload is given, and may not exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Size {
    S,
    M,
    L,
}

/// What a size allows (docs/bundle-format.md, decision 0036).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Per cent of one CPU core (cgroup v2 `cpu.max` over a 100 ms period).
    pub cpu_percent: u32,
    /// Bytes of memory before the kernel kills it (`memory.max`; no swap).
    pub memory_bytes: u64,
    /// Processes and threads at most (`pids.max`).
    pub tasks: u32,
}

impl Size {
    pub fn limits(self) -> Limits {
        const MIB: u64 = 1024 * 1024;
        match self {
            Size::S => Limits {
                cpu_percent: 10,
                memory_bytes: 64 * MIB,
                tasks: 32,
            },
            Size::M => Limits {
                cpu_percent: 25,
                memory_bytes: 128 * MIB,
                tasks: 64,
            },
            Size::L => Limits {
                cpu_percent: 50,
                memory_bytes: 256 * MIB,
                tasks: 256,
            },
        }
    }
}

/// When a workload that ended is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    Never,
    OnFailure,
    Always,
}

/// The image's seal: what the kernel checks every block of it against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSeal {
    pub root_hash: RootHash,
    pub salt: Salt,
    pub data_blocks: u64,
    pub hash_bytes: u64,
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadManifest {
    pub name: WorkloadName,
    pub version: String,
    pub command: String,
    pub arguments: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub size: Size,
    pub network: bool,
    pub streams: Vec<TopicSegment>,
    pub restart: Restart,
    pub image: ImageSeal,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    name: String,
    version: String,
    command: String,
    #[serde(default)]
    arguments: Vec<String>,
    size: Size,
    network: bool,
    #[serde(default)]
    streams: Vec<String>,
    #[serde(default = "default_restart")]
    restart: Restart,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    image: RawImage,
}

fn default_restart() -> Restart {
    Restart::OnFailure
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    filesystem: String,
    verity_root_hash: String,
    verity_salt: String,
    data_blocks: u64,
    hash_bytes: u64,
}

fn invalid(reason: String) -> BundleError {
    BundleError::Manifest(reason)
}

fn no_nul(what: &str, text: &str) -> Result<(), BundleError> {
    if text.contains('\0') {
        return Err(invalid(format!("{what} holds a NUL byte")));
    }
    Ok(())
}

/// What the operator chooses; `pack` adds the image's seal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadDraft {
    pub name: String,
    pub version: String,
    pub command: String,
    pub arguments: Vec<String>,
    pub environment: BTreeMap<String, String>,
    pub size: Size,
    pub network: bool,
    pub streams: Vec<String>,
    pub restart: Restart,
}

impl WorkloadManifest {
    /// Reads and validates a manifest. Only ever called on bytes whose signature verified, or
    /// by the writer on what it wrote.
    pub fn parse(bytes: &[u8]) -> Result<Self, BundleError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| BundleError::ManifestSyntax("not UTF-8".into()))?;
        let raw: RawManifest =
            toml::from_str(text).map_err(|error| BundleError::ManifestSyntax(error.to_string()))?;
        if raw.format != MANIFEST_FORMAT {
            return Err(invalid(format!(
                "format {} is not {MANIFEST_FORMAT}",
                raw.format
            )));
        }
        let name = WorkloadName::new(&raw.name)?;
        if raw.version.is_empty()
            || raw.version.len() > 64
            || !raw.version.bytes().all(|byte| byte.is_ascii_graphic())
        {
            return Err(invalid(format!(
                "version {:?} is not 1 to 64 printable characters without spaces",
                raw.version
            )));
        }
        no_nul("the command", &raw.command)?;
        if !raw.command.starts_with('/')
            || raw.command.len() > 4096
            || raw.command.split('/').any(|part| part == "..")
        {
            return Err(invalid(format!(
                "command {:?} is not an absolute path inside the image",
                raw.command
            )));
        }
        if raw.arguments.len() > 256 {
            return Err(invalid(format!(
                "{} arguments, at most 256",
                raw.arguments.len()
            )));
        }
        for argument in &raw.arguments {
            no_nul("an argument", argument)?;
        }
        if raw.environment.len() > 256 {
            return Err(invalid(format!(
                "{} environment variables, at most 256",
                raw.environment.len()
            )));
        }
        for (key, value) in &raw.environment {
            let valid_key = key
                .bytes()
                .next()
                .is_some_and(|first| first.is_ascii_alphabetic() || first == b'_')
                && key
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_');
            if !valid_key {
                return Err(invalid(format!(
                    "environment variable {key:?} is not a name of letters, digits and '_'"
                )));
            }
            no_nul("an environment value", value)?;
        }
        if raw.streams.len() > 64 {
            return Err(invalid(format!(
                "{} streams, at most 64",
                raw.streams.len()
            )));
        }
        let mut seen = BTreeSet::new();
        let mut streams = Vec::with_capacity(raw.streams.len());
        for stream in &raw.streams {
            let segment = TopicSegment::new(stream)
                .map_err(|error| invalid(format!("stream {stream:?}: {error}")))?;
            if !seen.insert(stream.clone()) {
                return Err(invalid(format!("stream {stream:?} is named twice")));
            }
            streams.push(segment);
        }
        if raw.image.filesystem != "erofs" {
            return Err(invalid(format!(
                "image file system {:?} is not erofs",
                raw.image.filesystem
            )));
        }
        let root_hash = RootHash::from_hex(&raw.image.verity_root_hash)
            .map_err(|error| invalid(error.to_string()))?;
        let salt = hex::decode(&raw.image.verity_salt)
            .ok()
            .and_then(|bytes| Salt::new(bytes).ok())
            .ok_or_else(|| invalid("the verity salt is not hex of at most 256 bytes".into()))?;
        if raw.image.data_blocks == 0 || raw.image.data_blocks > u64::MAX / BLOCK {
            return Err(invalid(format!("{} data blocks", raw.image.data_blocks)));
        }
        let expected_hash = BLOCK + HashTree::tree_len(raw.image.data_blocks);
        if raw.image.hash_bytes != expected_hash {
            return Err(invalid(format!(
                "the hash device is said to be {} bytes; {} data blocks need {expected_hash}",
                raw.image.hash_bytes, raw.image.data_blocks
            )));
        }
        Ok(Self {
            name,
            version: raw.version,
            command: raw.command,
            arguments: raw.arguments,
            environment: raw.environment,
            size: raw.size,
            network: raw.network,
            streams,
            restart: raw.restart,
            image: ImageSeal {
                root_hash,
                salt,
                data_blocks: raw.image.data_blocks,
                hash_bytes: raw.image.hash_bytes,
            },
        })
    }

    /// The manifest's text, as `pack` writes it (and the signature then covers).
    pub fn to_toml(&self) -> String {
        let raw = RawManifest {
            format: MANIFEST_FORMAT,
            name: self.name.to_string(),
            version: self.version.clone(),
            command: self.command.clone(),
            arguments: self.arguments.clone(),
            size: self.size,
            network: self.network,
            streams: self
                .streams
                .iter()
                .map(|stream| stream.as_str().to_owned())
                .collect(),
            restart: self.restart,
            environment: self.environment.clone(),
            image: RawImage {
                filesystem: "erofs".into(),
                verity_root_hash: self.image.root_hash.to_hex(),
                verity_salt: hex::encode(self.image.salt.as_bytes()),
                data_blocks: self.image.data_blocks,
                hash_bytes: self.image.hash_bytes,
            },
        };
        // Serialising plain strings, numbers, lists and maps cannot fail.
        toml::to_string(&raw).unwrap_or_default()
    }
}

/// The salt a workload image's tree gets: derived from the image, so that packing the same
/// directory twice gives the same bundle, and every different image a different salt.
fn salt_for(image: &[u8]) -> Result<Salt, BundleError> {
    let mut hasher = Sha256::new();
    hasher.update(b"edgeward workload verity salt\0");
    hasher.update(image);
    Salt::new(hasher.finalize().to_vec()).map_err(|error| BundleError::Image(error.to_string()))
}

/// Packs an erofs image into an unsigned workload bundle.
pub fn pack(draft: &WorkloadDraft, image: &[u8]) -> Result<Vec<u8>, BundleError> {
    let tree = HashTree::of(image, salt_for(image)?)
        .map_err(|error| BundleError::Image(error.to_string()))?;
    let hash_device = tree.hash_device(VERITY_UUID);
    let raw = RawManifest {
        format: MANIFEST_FORMAT,
        name: draft.name.clone(),
        version: draft.version.clone(),
        command: draft.command.clone(),
        arguments: draft.arguments.clone(),
        size: draft.size,
        network: draft.network,
        streams: draft.streams.clone(),
        restart: draft.restart,
        environment: draft.environment.clone(),
        image: RawImage {
            filesystem: "erofs".into(),
            verity_root_hash: tree.root().to_hex(),
            verity_salt: hex::encode(tree.salt().as_bytes()),
            data_blocks: tree.data_blocks(),
            hash_bytes: hash_device.len() as u64,
        },
    };
    let text = toml::to_string(&raw).map_err(|error| invalid(error.to_string()))?;
    // What is written must be what a reader accepts.
    WorkloadManifest::parse(text.as_bytes())?;
    let header = Header {
        kind: Kind::Workload,
        manifest_len: text.len() as u64,
        signed: false,
        image_len: image.len() as u64,
        hash_len: hash_device.len() as u64,
    };
    if header.manifest_len > crate::MAX_MANIFEST_LEN {
        return Err(invalid(format!(
            "the manifest is {} bytes, at most {}",
            header.manifest_len,
            crate::MAX_MANIFEST_LEN
        )));
    }
    let layout = header.layout();
    let mut bundle = Vec::with_capacity(layout.total as usize);
    bundle.extend_from_slice(&header.to_bytes());
    bundle.extend_from_slice(text.as_bytes());
    bundle.resize(layout.image.start as usize, 0);
    bundle.extend_from_slice(image);
    bundle.extend_from_slice(&hash_device);
    Ok(bundle)
}

/// The writes that sign a bundle in place: `(offset, bytes)` for the header (now marked
/// signed) and the signature. `front` holds the file from its start through the signature
/// block at least; `file_len` is the whole file's length. A manifest the appliance would refuse
/// is not signed.
pub fn sign(
    front: &[u8],
    file_len: u64,
    key: &Ed25519KeyPair,
) -> Result<Vec<(u64, Vec<u8>)>, BundleError> {
    let mut header = Header::parse(front, file_len)?;
    if header.kind != Kind::Workload {
        return Err(BundleError::WrongKind {
            expected: Kind::Workload,
            seen: header.kind,
        });
    }
    let layout = header.layout();
    let manifest = slice(front, &layout.manifest)?;
    let parsed = WorkloadManifest::parse(manifest)?;
    check_layout(&parsed, &header)?;
    let signature = signature::sign(Kind::Workload, manifest, key);
    header.signed = true;
    Ok(vec![
        (0, header.to_bytes()),
        (layout.signature.start, signature.to_vec()),
    ])
}

fn slice<'a>(bytes: &'a [u8], range: &std::ops::Range<u64>) -> Result<&'a [u8], BundleError> {
    bytes
        .get(range.start as usize..range.end as usize)
        .ok_or(BundleError::Truncated {
            len: bytes.len() as u64,
        })
}

fn check_layout(manifest: &WorkloadManifest, header: &Header) -> Result<(), BundleError> {
    let image_len = manifest.image.data_blocks * BLOCK;
    if header.image_len != image_len {
        return Err(BundleError::Mismatch(format!(
            "the image is {} bytes, the manifest seals {image_len}",
            header.image_len
        )));
    }
    if header.hash_len != manifest.image.hash_bytes {
        return Err(BundleError::Mismatch(format!(
            "the hash device is {} bytes, the manifest says {}",
            header.hash_len, manifest.image.hash_bytes
        )));
    }
    Ok(())
}

/// A bundle whose signature verified against the trusted key, with its manifest read.
#[derive(Clone, Debug)]
pub struct VerifiedWorkload {
    pub manifest: WorkloadManifest,
    /// SHA-256 of the manifest's exact bytes: what the appliance measures into its PCR and
    /// the verifier looks up among released workloads.
    pub manifest_digest: [u8; 32],
    /// The manifest's bytes, for the event log.
    pub manifest_bytes: Vec<u8>,
    pub layout: Layout,
}

impl VerifiedWorkload {
    /// Where the verity tree starts, in 4096-byte blocks from the image's start (on a loop
    /// device over the image and the hash device together): past the image and the superblock.
    pub fn hash_start_block(&self) -> u64 {
        self.manifest.image.data_blocks + 1
    }
}

/// How much of the file [`open`] needs: the header, manifest and signature blocks.
pub fn front_len(header: &Header) -> u64 {
    header.layout().image.start
}

/// Opens a workload bundle: `front` is the file from its start through the signature block
/// (at least [`front_len`]), `superblock` the first 512 bytes of its hash device, `file_len`
/// the file's length. Checks in this order, stopping at the first failure: the header, that it
/// is signed, the signature over the manifest with `key`, the manifest, the header against the
/// manifest, the hash device's superblock against the manifest. The image's bytes are not read:
/// dm-verity checks each against the sealed root hash when it is read.
pub fn open(
    front: &[u8],
    superblock: &[u8],
    file_len: u64,
    key: &TrustedKey,
) -> Result<VerifiedWorkload, BundleError> {
    let header = Header::parse(front, file_len)?;
    if header.kind != Kind::Workload {
        return Err(BundleError::WrongKind {
            expected: Kind::Workload,
            seen: header.kind,
        });
    }
    if !header.signed {
        return Err(BundleError::Unsigned);
    }
    let layout = header.layout();
    let manifest_bytes = slice(front, &layout.manifest)?;
    let signature_bytes = slice(front, &layout.signature)?;
    signature::verify(Kind::Workload, manifest_bytes, signature_bytes, key)?;
    let manifest = WorkloadManifest::parse(manifest_bytes)?;
    check_layout(&manifest, &header)?;
    let superblock = Superblock::parse(superblock)
        .map_err(|error| BundleError::Image(format!("the hash device: {error}")))?;
    if superblock.data_blocks != manifest.image.data_blocks
        || superblock.salt != manifest.image.salt
    {
        return Err(BundleError::Mismatch(
            "the hash device's superblock is not for the sealed image".into(),
        ));
    }
    Ok(VerifiedWorkload {
        manifest_digest: Sha256::digest(manifest_bytes).into(),
        manifest_bytes: manifest_bytes.to_vec(),
        manifest,
        layout,
    })
}

/// The verity tree a workload's image must hash to: checks the whole image in user space (the
/// operator's tools, tests; the appliance leaves it to the kernel, block by block).
pub fn verify_image(bundle: &[u8], workload: &VerifiedWorkload) -> Result<(), BundleError> {
    let image = slice(bundle, &workload.layout.image)?;
    let hash = slice(bundle, &workload.layout.hash)?;
    let tree = hash
        .get(BLOCK_SIZE..)
        .ok_or_else(|| BundleError::Image("the hash device has no tree".into()))?;
    HashTree::verify(
        image,
        tree,
        &workload.manifest.image.salt,
        &workload.manifest.image.root_hash,
    )
    .map_err(|error| BundleError::Image(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> WorkloadDraft {
        WorkloadDraft {
            name: "freq-alarm".into(),
            version: "1.0.0".into(),
            command: "/bin/freq-alarm".into(),
            arguments: vec!["--band-mhz".into(), "200".into()],
            environment: BTreeMap::from([("RUST_LOG".into(), "info".into())]),
            size: Size::S,
            network: false,
            streams: vec!["bay-1".into()],
            restart: Restart::OnFailure,
        }
    }

    fn image() -> Vec<u8> {
        (0..200 * BLOCK_SIZE).map(|i| (i % 253) as u8).collect()
    }

    fn key(seed: u8) -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("key")
    }

    fn signed() -> Vec<u8> {
        let mut bundle = pack(&draft(), &image()).expect("packs");
        let len = bundle.len() as u64;
        for (at, bytes) in sign(&bundle, len, &key(1)).expect("signs") {
            bundle[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
        }
        bundle
    }

    fn open_all(bundle: &[u8], trusted: &TrustedKey) -> Result<VerifiedWorkload, BundleError> {
        let header = Header::parse(bundle, bundle.len() as u64)?;
        let layout = header.layout();
        let superblock = &bundle[layout.hash.start as usize..];
        open(bundle, superblock, bundle.len() as u64, trusted)
    }

    #[test]
    fn a_packed_and_signed_bundle_opens_and_its_image_verifies() {
        let bundle = signed();
        let workload = open_all(&bundle, &signature::public_key(&key(1))).expect("opens");
        assert_eq!(workload.manifest.name.as_str(), "freq-alarm");
        assert_eq!(
            workload.manifest.size.limits().memory_bytes,
            64 * 1024 * 1024
        );
        assert_eq!(
            workload.manifest_digest,
            <[u8; 32]>::from(Sha256::digest(&workload.manifest_bytes))
        );
        verify_image(&bundle, &workload).expect("the image hashes to the sealed root");
        assert_eq!(workload.hash_start_block(), 201);
    }

    #[test]
    fn packing_is_reproducible() {
        assert_eq!(pack(&draft(), &image()), pack(&draft(), &image()));
    }

    #[test]
    fn unsigned_foreign_and_altered_bundles_are_refused_by_name() {
        let trusted = signature::public_key(&key(1));
        let unsigned = pack(&draft(), &image()).expect("packs");
        assert_eq!(
            open_all(&unsigned, &trusted).map(|_| ()),
            Err(BundleError::Unsigned)
        );
        assert_eq!(
            open_all(&signed(), &signature::public_key(&key(2))).map(|_| ()),
            Err(BundleError::BadSignature)
        );
        // One byte of the manifest changed after signing: "S" became "L".
        let mut altered = signed();
        let layout = Header::parse(&altered, altered.len() as u64)
            .expect("header")
            .layout();
        let manifest = &altered[layout.manifest.start as usize..layout.manifest.end as usize];
        let at = manifest
            .windows(10)
            .position(|window| window == b"size = \"S\"")
            .expect("the size line")
            + layout.manifest.start as usize
            + 8;
        altered[at] = b'L';
        assert_eq!(
            open_all(&altered, &trusted).map(|_| ()),
            Err(BundleError::BadSignature)
        );
        // An altered image still opens (the manifest is intact) and is refused when read.
        let mut image_changed = signed();
        image_changed[layout.image.start as usize + 5000] ^= 1;
        let workload = open_all(&image_changed, &trusted).expect("the manifest is intact");
        assert!(matches!(
            verify_image(&image_changed, &workload),
            Err(BundleError::Image(_))
        ));
    }

    #[test]
    fn manifests_the_appliance_would_refuse_are_not_packed() {
        let mut bad = draft();
        bad.name = "Freq Alarm".into();
        assert!(matches!(
            pack(&bad, &image()),
            Err(BundleError::Manifest(_))
        ));
        let mut relative = draft();
        relative.command = "bin/freq-alarm".into();
        assert!(matches!(
            pack(&relative, &image()),
            Err(BundleError::Manifest(_))
        ));
        let mut twice = draft();
        twice.streams = vec!["bay-1".into(), "bay-1".into()];
        assert!(matches!(
            pack(&twice, &image()),
            Err(BundleError::Manifest(_))
        ));
        let mut env = draft();
        env.environment.insert("A=B".into(), "c".into());
        assert!(matches!(
            pack(&env, &image()),
            Err(BundleError::Manifest(_))
        ));
        assert!(matches!(
            pack(&draft(), &[1u8; 100]),
            Err(BundleError::Image(_))
        ));
    }

    #[test]
    fn a_manifest_round_trips_through_its_text() {
        let bundle = signed();
        let workload = open_all(&bundle, &signature::public_key(&key(1))).expect("opens");
        let text = workload.manifest.to_toml();
        assert_eq!(text.as_bytes(), workload.manifest_bytes.as_slice());
        assert_eq!(
            WorkloadManifest::parse(text.as_bytes()),
            Ok(workload.manifest)
        );
    }
}
