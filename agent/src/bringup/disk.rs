//! The disk: the partitions the image build made, found by their GPT names as the kernel
//! reports them (`PARTNAME=` in `/sys/class/block/*/uevent`), so the device name (vda, sda,
//! nvme0n1) does not matter. The ESP is mounted read-only for the signed configuration; the
//! data partition (ext4, formatted by the build) holds what must survive a reboot.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use nix::mount::{mount, MsFlags};
use tracing::info;

/// The GPT names `edgeward image build` gives its partitions.
pub const ESP_NAME: &str = "esp";
pub const DATA_NAME: &str = "edgeward-data";

/// Where they are mounted.
pub const ESP_MOUNT: &str = "/run/esp";
pub const DATA_MOUNT: &str = "/var/lib/edgeward";

/// The block device whose GPT partition name is `name`.
pub fn partition(name: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/sys/class/block").context("cannot list /sys/class/block")? {
        let Ok(entry) = entry else { continue };
        let Ok(uevent) = std::fs::read_to_string(entry.path().join("uevent")) else {
            continue;
        };
        let field = |key: &str| {
            uevent
                .lines()
                .find_map(|line| line.strip_prefix(key))
                .map(str::to_owned)
        };
        if field("PARTNAME=").as_deref() == Some(name) {
            if let Some(device) = field("DEVNAME=") {
                found.push(Path::new("/dev").join(device));
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(anyhow!(
            "no partition is named {name:?} (is this an Edgeward disk?)"
        )),
        // Two disks with our layout (a second, attacker-supplied one among them): which one is
        // ours cannot be told, so neither is used.
        _ => Err(anyhow!(
            "{} partitions are named {name:?} ({}); remove the disk that is not this appliance's",
            found.len(),
            found
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn mount_at(device: &Path, target: &str, fstype: &str, flags: MsFlags, data: &str) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("cannot create {target}"))?;
    mount(
        Some(device),
        target,
        Some(fstype),
        flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data),
    )
    .with_context(|| format!("cannot mount {} ({fstype}) on {target}", device.display()))
}

/// Mounts the ESP read-only: the appliance reads its configuration there and never writes it.
pub fn mount_esp() -> Result<PathBuf> {
    let device = partition(ESP_NAME)?;
    mount_at(&device, ESP_MOUNT, "vfat", MsFlags::MS_RDONLY, "")?;
    info!(device = %device.display(), at = ESP_MOUNT, "ESP mounted read-only");
    Ok(PathBuf::from(ESP_MOUNT))
}

/// Mounts the data partition. ext4's journal keeps the file system whole through a power cut;
/// the buffer's own commits (fsync) keep what it accepted.
pub fn mount_data() -> Result<PathBuf> {
    let device = partition(DATA_NAME)?;
    mount_at(
        &device,
        DATA_MOUNT,
        "ext4",
        MsFlags::MS_NOATIME,
        "errors=remount-ro",
    )
    .context("the data partition is not the ext4 file system the image build made")?;
    info!(device = %device.display(), at = DATA_MOUNT, "data partition mounted");
    Ok(PathBuf::from(DATA_MOUNT))
}

/// Writes everything out and unmounts what [`mount_esp`] and [`mount_data`] mounted.
pub fn unmount_all() {
    nix::unistd::sync();
    for target in [DATA_MOUNT, ESP_MOUNT] {
        match nix::mount::umount(target) {
            // Not mounted (this boot stopped before mounting it).
            Ok(()) | Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => {}
            Err(error) => tracing::warn!(target, %error, "cannot unmount"),
        }
    }
}
