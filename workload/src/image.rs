//! A workload's image as a read-only file system: the bundle's image and hash device through a
//! loop device, dm-verity over it with the root hash its signed manifest seals, erofs mounted
//! from that. A block that does not hash up to the root fails its read (EIO), whenever it is
//! read, for as long as the workload runs.

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use edgeward_blockdev::dm::{DeviceName, MappedDevice, Target};
use edgeward_blockdev::loop_device::LoopDevice;
use edgeward_bundle::signature::TrustedKey;
use edgeward_bundle::workload::{self, VerifiedWorkload};
use edgeward_bundle::{Header, HEADER_LEN};
use edgeward_verity::{OnCorruption, VerityTarget, SUPERBLOCK_LEN};
use nix::mount::{MntFlags, MsFlags};

use crate::{io_error, sys_error, WorkloadError};

/// Opens the bundle at `path` and checks it against `key` (header, signature, manifest,
/// superblock: [`edgeward_bundle::workload::open`]); reads only its first blocks and the
/// superblock, not the image.
pub fn open(path: &Path, key: &TrustedKey) -> Result<(File, VerifiedWorkload), WorkloadError> {
    let context = || format!("cannot read {}", path.display());
    let mut file = File::open(path).map_err(io_error(context()))?;
    let len = file.metadata().map_err(io_error(context()))?.len();
    let mut header = vec![0u8; HEADER_LEN.min(len as usize)];
    file.read_exact(&mut header).map_err(io_error(context()))?;
    let parsed = Header::parse(&header, len)?;
    let mut front = vec![0u8; workload::front_len(&parsed) as usize];
    file.seek(SeekFrom::Start(0)).map_err(io_error(context()))?;
    file.read_exact(&mut front).map_err(io_error(context()))?;
    let mut superblock = vec![0u8; SUPERBLOCK_LEN];
    file.seek(SeekFrom::Start(parsed.layout().hash.start))
        .map_err(io_error(context()))?;
    file.read_exact(&mut superblock)
        .map_err(io_error(context()))?;
    let verified = workload::open(&front, &superblock, len, key)?;
    Ok((file, verified))
}

/// The mapped and mounted image; unmounted and unmapped when dropped.
#[derive(Debug)]
pub struct MappedImage {
    mount_point: PathBuf,
    mounted: bool,
    device: Option<MappedDevice>,
    loop_device: Option<LoopDevice>,
}

impl MappedImage {
    /// Maps `workload`'s image from `bundle` as the device-mapper device `name` and mounts it
    /// read-only at `mount_point` (which must exist).
    pub fn map(
        bundle: &File,
        workload: &VerifiedWorkload,
        name: DeviceName,
        mount_point: &Path,
    ) -> Result<Self, WorkloadError> {
        let layout = &workload.layout;
        // One loop device over the image and its hash device, which follow each other in the
        // bundle: dm-verity reads both from it.
        let loop_device = LoopDevice::attach(
            bundle,
            layout.image.start,
            layout.hash.end - layout.image.start,
        )?;
        let device_path = loop_device.path.display().to_string();
        let seal = &workload.manifest.image;
        let target = VerityTarget {
            data_device: device_path.clone(),
            hash_device: device_path,
            hash_start_block: workload.hash_start_block(),
            on_corruption: OnCorruption::FailRead,
        };
        let table = target.table_for(seal.data_blocks, &seal.root_hash, &seal.salt);
        let device = MappedDevice::create(name, &Target::from_table_line(&table)?)?;
        let mut mapped = Self {
            mount_point: mount_point.to_owned(),
            mounted: false,
            device: Some(device),
            loop_device: Some(loop_device),
        };
        let source = mapped
            .device
            .as_ref()
            .map(|device| device.path.clone())
            .unwrap_or_default();
        nix::mount::mount(
            Some(&source),
            mount_point,
            Some("erofs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            None::<&str>,
        )
        .map_err(sys_error(format!(
            "cannot mount the workload's image ({}) on {}",
            source.display(),
            mount_point.display()
        )))?;
        mapped.mounted = true;
        Ok(mapped)
    }

    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }

    /// The device-mapper device the image is read through (`/dev/dm-N`).
    pub fn device(&self) -> Option<&Path> {
        self.device.as_ref().map(|device| device.path.as_path())
    }

    /// Unmounts and unmaps, saying what could not be undone.
    pub fn unmap(mut self) -> Result<(), WorkloadError> {
        self.release()
    }

    fn release(&mut self) -> Result<(), WorkloadError> {
        if self.mounted {
            nix::mount::umount2(&self.mount_point, MntFlags::MNT_DETACH).map_err(sys_error(
                format!("cannot unmount {}", self.mount_point.display()),
            ))?;
            self.mounted = false;
        }
        if let Some(device) = self.device.take() {
            device.remove()?;
        }
        // Detached by the kernel now that the last holder (the verity device) let go.
        self.loop_device.take();
        Ok(())
    }
}

impl Drop for MappedImage {
    fn drop(&mut self) {
        let _ = self.release();
    }
}
