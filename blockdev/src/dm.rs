//! Device-mapper devices by ioctl on `/dev/mapper/control`: create a device, load a one-target
//! table, resume it (which makes the table live), remove it. The messages are `struct
//! dm_ioctl` (312 bytes) followed by a `struct dm_target_spec` (40 bytes) and the target's
//! parameter string, laid out here in safe code (`linux/dm-ioctl.h`).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::PathBuf;

use crate::sys::{self, DM_IOCTL_LEN};
use crate::BlockdevError;

const CONTROL: &str = "/dev/mapper/control";
/// The interface version this code speaks; the kernel accepts any request of its major version
/// whose minor is not newer than its own.
const VERSION: [u32; 3] = [4, 0, 0];
const NAME_LEN: usize = 128;
const UUID_LEN: usize = 129;
const TARGET_SPEC_LEN: usize = 40;
const TARGET_TYPE_LEN: usize = 16;
const READONLY_FLAG: u32 = 1 << 0;

/// A device-mapper device's name: what `/dev/mapper` would call it. Printable ASCII without
/// `/`, at most 127 bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceName(String);

impl DeviceName {
    pub fn new(name: &str) -> Result<Self, BlockdevError> {
        let valid = !name.is_empty()
            && name.len() < NAME_LEN
            && name != "."
            && name != ".."
            && name
                .bytes()
                .all(|byte| byte.is_ascii_graphic() && byte != b'/');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(BlockdevError::Invalid(format!(
                "{name:?} is not a device-mapper name (1 to 127 printable characters, no '/')"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One target line of a table: `start length type parameters`, in 512-byte sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub start: u64,
    pub sectors: u64,
    pub kind: String,
    pub parameters: String,
}

impl Target {
    /// A verity target from its table line (`edgeward_verity::VerityTarget::table`):
    /// `0 SECTORS verity PARAMETERS`.
    pub fn from_table_line(line: &str) -> Result<Self, BlockdevError> {
        let mut parts = line.splitn(4, ' ');
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| BlockdevError::Invalid(format!("table line {line:?} has no {what}")))
        };
        let start = next("start")?;
        let sectors = next("length")?;
        let kind = next("target type")?;
        let parameters = next("parameters")?;
        let number = |text: &str| {
            text.parse::<u64>()
                .map_err(|_| BlockdevError::Invalid(format!("{text:?} is not a sector count")))
        };
        Ok(Self {
            start: number(start)?,
            sectors: number(sectors)?,
            kind: kind.to_owned(),
            parameters: parameters.to_owned(),
        })
    }
}

/// The header of every message: version, sizes, flags, the device's name.
fn header(name: &DeviceName, data_size: usize, target_count: u32, flags: u32) -> Vec<u8> {
    let mut message = vec![0u8; data_size];
    for (index, part) in VERSION.iter().enumerate() {
        message[index * 4..index * 4 + 4].copy_from_slice(&part.to_ne_bytes());
    }
    message[12..16].copy_from_slice(&(data_size as u32).to_ne_bytes());
    message[16..20].copy_from_slice(&(DM_IOCTL_LEN as u32).to_ne_bytes());
    message[20..24].copy_from_slice(&target_count.to_ne_bytes());
    message[28..32].copy_from_slice(&flags.to_ne_bytes());
    message[48..48 + name.0.len()].copy_from_slice(name.0.as_bytes());
    message
}

/// `DM_TABLE_LOAD`'s message: the header, then the target spec and its NUL-terminated
/// parameters, padded so that the message is a whole number of 8-byte words.
fn table_message(name: &DeviceName, target: &Target) -> Result<Vec<u8>, BlockdevError> {
    if target.kind.is_empty() || target.kind.len() >= TARGET_TYPE_LEN {
        return Err(BlockdevError::Invalid(format!(
            "target type {:?} is not 1 to 15 bytes",
            target.kind
        )));
    }
    if target.parameters.contains('\0') {
        return Err(BlockdevError::Invalid(
            "the target's parameters hold a NUL byte".into(),
        ));
    }
    let spec_len = (TARGET_SPEC_LEN + target.parameters.len() + 1).div_ceil(8) * 8;
    let mut message = header(name, DM_IOCTL_LEN + spec_len, 1, READONLY_FLAG);
    let spec = &mut message[DM_IOCTL_LEN..];
    spec[0..8].copy_from_slice(&target.start.to_ne_bytes());
    spec[8..16].copy_from_slice(&target.sectors.to_ne_bytes());
    spec[20..24].copy_from_slice(&(spec_len as u32).to_ne_bytes());
    spec[24..24 + target.kind.len()].copy_from_slice(target.kind.as_bytes());
    spec[TARGET_SPEC_LEN..TARGET_SPEC_LEN + target.parameters.len()]
        .copy_from_slice(target.parameters.as_bytes());
    Ok(message)
}

fn ioctl(
    control: &File,
    operation: &'static str,
    request: nix::sys::ioctl::ioctl_num_type,
    message: &mut [u8],
) -> Result<(), BlockdevError> {
    sys::dm_ioctl(control.as_fd(), request, message)
        .map_err(|errno| BlockdevError::Ioctl { operation, errno })
}

/// A live, read-only device-mapper device; removed when dropped.
#[derive(Debug)]
pub struct MappedDevice {
    name: DeviceName,
    /// `/dev/dm-N`.
    pub path: PathBuf,
    control: File,
    removed: bool,
}

impl MappedDevice {
    /// Creates the device `name` with the one `target` as its table, read-only, and makes it
    /// live. A table the kernel refuses (a verity root hash the hash device does not start
    /// from, say) is an error here, and the half-made device is removed; the kernel's log
    /// says why.
    pub fn create(name: DeviceName, target: &Target) -> Result<Self, BlockdevError> {
        let control = crate::open_control(CONTROL)?;
        let mut create = header(&name, DM_IOCTL_LEN, 0, 0);
        let uuid = format!("EDGEWARD-{}", name.0);
        if uuid.len() < UUID_LEN {
            create[176..176 + uuid.len()].copy_from_slice(uuid.as_bytes());
        }
        ioctl(&control, "DM_DEV_CREATE", sys::DM_DEV_CREATE, &mut create)?;
        let dev = u64::from_ne_bytes(create[40..48].try_into().unwrap_or_default());
        let minor = ((dev & 0xff) | ((dev >> 12) & 0xfff_ff00)) as u32;
        let device = Self {
            path: PathBuf::from(format!("/dev/dm-{minor}")),
            name,
            control,
            removed: false,
        };
        let mut load = table_message(&device.name, target)?;
        ioctl(
            &device.control,
            "DM_TABLE_LOAD",
            sys::DM_TABLE_LOAD,
            &mut load,
        )?;
        // Resuming a device with a loaded table makes that table live.
        let mut resume = header(&device.name, DM_IOCTL_LEN, 0, 0);
        ioctl(
            &device.control,
            "DM_DEV_SUSPEND (resume)",
            sys::DM_DEV_SUSPEND,
            &mut resume,
        )?;
        Ok(device)
    }

    pub fn name(&self) -> &DeviceName {
        &self.name
    }

    /// Removes the device; fails while something (a mount) still holds it open.
    pub fn remove(mut self) -> Result<(), BlockdevError> {
        self.remove_now()
    }

    fn remove_now(&mut self) -> Result<(), BlockdevError> {
        if self.removed {
            return Ok(());
        }
        let mut message = header(&self.name, DM_IOCTL_LEN, 0, 0);
        ioctl(
            &self.control,
            "DM_DEV_REMOVE",
            sys::DM_DEV_REMOVE,
            &mut message,
        )?;
        self.removed = true;
        Ok(())
    }
}

impl Drop for MappedDevice {
    fn drop(&mut self) {
        let _ = self.remove_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_message_lays_out_header_spec_and_parameters() {
        let name = DeviceName::new("workload-freq-alarm").expect("name");
        let target = Target::from_table_line(
            "0 2408 verity 1 /dev/loop0 /dev/loop0 4096 4096 301 302 sha256 aa bb",
        )
        .expect("line");
        assert_eq!(target.sectors, 2408);
        let message = table_message(&name, &target).expect("message");
        assert_eq!(message.len() % 8, 0);
        assert_eq!(&message[0..4], &4u32.to_ne_bytes());
        assert_eq!(&message[12..16], &(message.len() as u32).to_ne_bytes());
        assert_eq!(&message[16..20], &312u32.to_ne_bytes());
        assert_eq!(&message[20..24], &1u32.to_ne_bytes());
        assert_eq!(&message[28..32], &READONLY_FLAG.to_ne_bytes());
        assert_eq!(&message[48..67], b"workload-freq-alarm");
        let spec = &message[312..];
        assert_eq!(&spec[8..16], &2408u64.to_ne_bytes());
        assert_eq!(&spec[24..30], b"verity");
        let parameters = &spec[40..];
        let end = parameters.iter().position(|byte| *byte == 0).expect("NUL");
        assert_eq!(
            &parameters[..end],
            b"1 /dev/loop0 /dev/loop0 4096 4096 301 302 sha256 aa bb"
        );
    }

    #[test]
    fn names_and_lines_that_the_kernel_would_misread_are_refused() {
        assert!(DeviceName::new("a/b").is_err());
        assert!(DeviceName::new(&"x".repeat(128)).is_err());
        assert!(DeviceName::new("").is_err());
        assert!(Target::from_table_line("0 8 verity").is_err());
        assert!(Target::from_table_line("zero 8 verity 1").is_err());
        let name = DeviceName::new("n").expect("name");
        let long_kind = Target {
            start: 0,
            sectors: 8,
            kind: "a-target-type-too-long".into(),
            parameters: String::new(),
        };
        assert!(table_message(&name, &long_kind).is_err());
    }
}
