//! Loop devices: a range of a file as a read-only block device (`LOOP_CTL_GET_FREE` on
//! `/dev/loop-control`, then `LOOP_CONFIGURE`), detached when the last user closes it.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;

use crate::sys::{self, LOOP_CONFIG_LEN};
use crate::BlockdevError;

const CONTROL: &str = "/dev/loop-control";
const LO_FLAGS_READ_ONLY: u32 = 1;
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// A device taken by someone else between GET_FREE and CONFIGURE is tried again this often.
const ATTEMPTS: usize = 8;

/// `struct loop_config` for `fd`, from `offset`, at most `size` bytes, read-only, detached on
/// last close (`linux/loop.h`: fd, block_size, then `struct loop_info64` with lo_offset at 24,
/// lo_sizelimit at 32, lo_flags at 52, all after the first 8 bytes).
fn config(fd: u32, offset: u64, size: u64) -> [u8; LOOP_CONFIG_LEN] {
    let mut config = [0u8; LOOP_CONFIG_LEN];
    config[0..4].copy_from_slice(&fd.to_ne_bytes());
    let info = 8;
    config[info + 24..info + 32].copy_from_slice(&offset.to_ne_bytes());
    config[info + 32..info + 40].copy_from_slice(&size.to_ne_bytes());
    config[info + 52..info + 56]
        .copy_from_slice(&(LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR).to_ne_bytes());
    config
}

/// A read-only loop device over part of a file. The kernel detaches it when the last holder
/// closes it (this handle, and any device-mapper table over it).
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
    device: File,
}

impl LoopDevice {
    /// `size` bytes of `backing` from `offset`, as a new loop device.
    pub fn attach(backing: &File, offset: u64, size: u64) -> Result<Self, BlockdevError> {
        let control = crate::open_control(CONTROL)?;
        let fd = u32::try_from(backing.as_raw_fd())
            .map_err(|_| BlockdevError::Invalid("the backing file has no descriptor".into()))?;
        let config = config(fd, offset, size);
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let index =
                sys::loop_get_free(control.as_fd()).map_err(|errno| BlockdevError::Ioctl {
                    operation: "LOOP_CTL_GET_FREE",
                    errno,
                })?;
            let path = PathBuf::from(format!("/dev/loop{index}"));
            let device =
                File::options()
                    .read(true)
                    .open(&path)
                    .map_err(|source| BlockdevError::Open {
                        path: path.display().to_string(),
                        source,
                    })?;
            match sys::loop_configure(device.as_fd(), &config) {
                Ok(()) => return Ok(Self { path, device }),
                // Another process configured it first: take the next free one.
                Err(nix::errno::Errno::EBUSY) => last = Some(nix::errno::Errno::EBUSY),
                Err(errno) => {
                    return Err(BlockdevError::Ioctl {
                        operation: "LOOP_CONFIGURE",
                        errno,
                    })
                }
            }
        }
        Err(BlockdevError::Ioctl {
            operation: "LOOP_CONFIGURE",
            errno: last.unwrap_or(nix::errno::Errno::EBUSY),
        })
    }

    /// Detaches the backing file now rather than at the last close.
    pub fn detach(self) -> Result<(), BlockdevError> {
        sys::loop_clear(self.device.as_fd()).map_err(|errno| BlockdevError::Ioctl {
            operation: "LOOP_CLR_FD",
            errno,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_puts_each_field_where_loop_h_has_it() {
        let config = config(7, 8192, 4096 * 3);
        assert_eq!(&config[0..4], &7u32.to_ne_bytes());
        assert_eq!(&config[4..8], &[0; 4], "block size: the backing file's");
        assert_eq!(&config[32..40], &8192u64.to_ne_bytes());
        assert_eq!(&config[40..48], &12288u64.to_ne_bytes());
        assert_eq!(&config[60..64], &5u32.to_ne_bytes());
        assert!(config[64..].iter().all(|byte| *byte == 0));
    }
}
