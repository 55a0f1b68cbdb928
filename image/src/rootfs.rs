//! The appliance's root file system as a dm-verity partition (decision 0035): the same tree the
//! initramfs would hold (the agent as `/init`, its libraries, the configuration key) as a
//! read-only erofs image, followed on the partition by its verity hash device; the kernel
//! command line, which the UKI carries and the firmware and stub measure, names the root hash,
//! and the kernel makes the verity device itself before it mounts the root (`dm-mod.create=`).
//!
//! Why not the initramfs: every byte of the UKI is hashed three times before the kernel starts
//! (the firmware's signature check, its PCR 4 measurement, systemd-stub's PCR 11) and the
//! initramfs is then unpacked in full; a verity root is read, and hashed once, only where it is
//! used. Under TCG that is 1.5 s of each boot (docs/benchmarks.md).

use std::path::{Path, PathBuf};

use edgeward_verity::{HashTree, OnCorruption, Salt, VerityTarget, BLOCK_SIZE};
use sha2::{Digest as _, Sha256};

use crate::build::BuildError;
use crate::cpio::{Archive, EntryKind};
use crate::tool::io;

/// The root partition's GPT unique GUID: the command line finds it by this, whatever the disk
/// is called on the machine (`/dev/vda` in QEMU, `/dev/sda` or `/dev/nvme0n1` on hardware).
pub const ROOT_PARTUUID: &str = "6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a06";
/// The erofs file system's UUID and the verity superblock's: fixed, so that builds repeat.
const EROFS_UUID: &str = "6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a07";
const VERITY_UUID: [u8; 16] = [
    0x6d, 0x0f, 0x2c, 0x1e, 0x0b, 0x3a, 0x4e, 0x5b, 0x9a, 0x77, 0x45, 0xdc, 0x0e, 0x1d, 0x2a, 0x08,
];
/// The device-mapper name of the root's verity device (`/dev/dm-0`, the first one made).
const DEVICE_NAME: &str = "edgeward-root";

/// A built root partition.
pub struct VerityRoot {
    /// The partition's bytes: the erofs image, then the verity hash device (superblock, tree).
    pub partition: PathBuf,
    pub tree: HashTree,
    /// SHA-256 of the erofs image alone, for the manifest.
    pub erofs_sha256: String,
}

impl VerityRoot {
    /// The kernel command-line parameters that make the verity device and boot from it. The
    /// tree starts one block after the data: the superblock is in between.
    pub fn kernel_parameters(&self) -> String {
        let device = format!("PARTUUID={ROOT_PARTUUID}");
        let target = VerityTarget {
            data_device: device.clone(),
            hash_device: device.clone(),
            hash_start_block: self.tree.data_blocks() + 1,
            // A block that does not match fails its read and the kernel names it on the
            // console; a root that cannot be read stops the boot (init cannot start, or dies,
            // and the kernel panics and powers off with panic=-1).
            on_corruption: OnCorruption::FailRead,
        };
        format!(
            "dm-mod.create=\"{DEVICE_NAME},,,ro,{}\" dm-mod.waitfor={device} root=/dev/dm-0 rootfstype=erofs ro init=/init",
            target.table(&self.tree)
        )
    }
}

/// Writes the archive's entries as a directory tree under `dir` (which must not exist), with
/// the modes the archive gives them.
fn materialize(archive: &Archive, dir: &Path) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt as _;
    let context = |path: &Path| format!("cannot write the root tree at {}", path.display());
    io(context(dir), std::fs::create_dir_all(dir))?;
    for entry in archive.entries() {
        let path = dir.join(&entry.path);
        match &entry.kind {
            EntryKind::Directory => {
                io(context(&path), std::fs::create_dir_all(&path))?;
                io(
                    context(&path),
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)),
                )?;
            }
            EntryKind::File {
                contents,
                executable,
            } => {
                io(context(&path), std::fs::write(&path, contents))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                io(
                    context(&path),
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)),
                )?;
            }
            EntryKind::Symlink { target } => {
                io(context(&path), std::os::unix::fs::symlink(target, &path))?;
            }
        }
    }
    Ok(())
}

/// The erofs image of `archive` and its verity tree, as one partition image in `work`.
pub fn build(archive: &Archive, work: &Path) -> Result<VerityRoot, BuildError> {
    let tree_dir = work.join("root");
    let _ = std::fs::remove_dir_all(&tree_dir);
    materialize(archive, &tree_dir)?;
    let mut bytes = crate::erofs::make(&tree_dir, &work.join("root.erofs"), EROFS_UUID)?;
    let _ = std::fs::remove_dir_all(&tree_dir);
    let erofs_sha256 = hex::encode(Sha256::digest(&bytes));
    // The salt is derived from the image rather than drawn at random, so that the same tree
    // builds the same partition and root hash; it still differs for every different root.
    let mut salt = Sha256::new();
    salt.update(b"edgeward root verity salt\0");
    salt.update(&bytes);
    let salt = Salt::new(salt.finalize().to_vec()).map_err(verity_error)?;
    let tree = HashTree::of(&bytes, salt).map_err(verity_error)?;
    let data_len = bytes.len();
    bytes.extend(tree.hash_device(VERITY_UUID));
    // What goes on the disk is checked against the root the command line will name.
    HashTree::verify(
        &bytes[..data_len],
        &bytes[data_len + BLOCK_SIZE..],
        tree.salt(),
        &tree.root(),
    )
    .map_err(verity_error)?;
    let partition = work.join("root.img");
    io(
        "cannot write the root partition image",
        std::fs::write(&partition, &bytes),
    )?;
    Ok(VerityRoot {
        partition,
        tree,
        erofs_sha256,
    })
}

fn verity_error(error: edgeward_verity::VerityError) -> BuildError {
    BuildError::Input(format!("the root's verity tree: {error}"))
}
