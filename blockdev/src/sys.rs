//! The ioctl calls themselves: the only unsafe code in Edgeward. Each takes a buffer built by
//! safe code in `dm.rs` or `loop_device.rs` and an open file descriptor of the right device.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

/// `struct dm_ioctl` is 312 bytes; the ioctl numbers encode that size.
pub const DM_IOCTL_LEN: usize = 312;

/// `_IOWR(0xfd, cmd, struct dm_ioctl)` (`linux/dm-ioctl.h`).
const fn dm_request(command: u8) -> nix::sys::ioctl::ioctl_num_type {
    nix::request_code_readwrite!(0xfd, command, DM_IOCTL_LEN) as nix::sys::ioctl::ioctl_num_type
}

pub const DM_DEV_CREATE: nix::sys::ioctl::ioctl_num_type = dm_request(3);
pub const DM_DEV_REMOVE: nix::sys::ioctl::ioctl_num_type = dm_request(4);
pub const DM_DEV_SUSPEND: nix::sys::ioctl::ioctl_num_type = dm_request(6);
pub const DM_TABLE_LOAD: nix::sys::ioctl::ioctl_num_type = dm_request(9);

/// `linux/loop.h`.
const LOOP_CTL_GET_FREE: nix::sys::ioctl::ioctl_num_type = 0x4C82;
const LOOP_CONFIGURE: nix::sys::ioctl::ioctl_num_type = 0x4C0A;
const LOOP_CLR_FD: nix::sys::ioctl::ioctl_num_type = 0x4C01;

/// `sizeof(struct loop_config)`.
pub const LOOP_CONFIG_LEN: usize = 304;

nix::ioctl_write_ptr_bad!(loop_configure_raw, LOOP_CONFIGURE, u64);
nix::ioctl_none_bad!(loop_ctl_get_free_raw, LOOP_CTL_GET_FREE);
nix::ioctl_none_bad!(loop_clr_fd_raw, LOOP_CLR_FD);

/// Issues a device-mapper command on `/dev/mapper/control` with `message` as its `struct
/// dm_ioctl` and the data after it (`dm.rs` builds it); the kernel's answer is copied back
/// into `message`.
pub fn dm_ioctl(
    control: BorrowedFd<'_>,
    request: nix::sys::ioctl::ioctl_num_type,
    message: &mut [u8],
) -> nix::Result<()> {
    // The kernel reads data_size bytes (bytes 12..16 of the header): they must be the message.
    let data_size = message
        .get(12..16)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_ne_bytes);
    if message.len() < DM_IOCTL_LEN || data_size != Some(message.len() as u32) {
        return Err(nix::errno::Errno::EINVAL);
    }
    // Copied into 8-byte-aligned memory: the kernel reads the target specs' u64 fields in place.
    let mut aligned = vec![0u64; message.len().div_ceil(8)];
    for (word, chunk) in aligned.iter_mut().zip(message.chunks(8)) {
        let mut bytes = [0u8; 8];
        bytes[..chunk.len()].copy_from_slice(chunk);
        *word = u64::from_ne_bytes(bytes);
    }
    // SAFETY: `aligned` is a live, 8-byte-aligned, writable allocation of at least
    // `message.len()` bytes, which is the data_size the header gives and at least the 312 bytes
    // of `struct dm_ioctl`, so the kernel reads and writes only inside it; `control` is an open
    // descriptor for the whole call.
    let result = unsafe { nix::libc::ioctl(control.as_raw_fd(), request, aligned.as_mut_ptr()) };
    nix::errno::Errno::result(result)?;
    for (chunk, word) in message.chunks_mut(8).zip(&aligned) {
        chunk.copy_from_slice(&word.to_ne_bytes()[..chunk.len()]);
    }
    Ok(())
}

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: the index of a free loop device (made if need
/// be).
pub fn loop_get_free(control: BorrowedFd<'_>) -> nix::Result<u32> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument; `control` is open for the call.
    let index = unsafe { loop_ctl_get_free_raw(control.as_raw_fd()) }?;
    u32::try_from(index).map_err(|_| nix::errno::Errno::EINVAL)
}

/// `LOOP_CONFIGURE` on an open loop device with `config` as its `struct loop_config`.
pub fn loop_configure(device: BorrowedFd<'_>, config: &[u8; LOOP_CONFIG_LEN]) -> nix::Result<()> {
    let mut aligned = [0u64; LOOP_CONFIG_LEN / 8];
    for (word, chunk) in aligned.iter_mut().zip(config.chunks_exact(8)) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        *word = u64::from_ne_bytes(bytes);
    }
    // SAFETY: `aligned` is a live, aligned array of exactly the 304 bytes of `struct
    // loop_config`, which the kernel only reads; `device` is open for the call.
    unsafe { loop_configure_raw(device.as_raw_fd(), aligned.as_ptr()) }.map(drop)
}

/// `LOOP_CLR_FD`: detaches the backing file.
pub fn loop_clear(device: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: LOOP_CLR_FD takes no argument; `device` is open for the call.
    unsafe { loop_clr_fd_raw(device.as_raw_fd()) }.map(drop)
}
