//! `edgeward-blockdev`'s loop devices against the host's kernel (as root, which CI is): an erofs
//! image that lies inside a larger file, as a workload's does inside its bundle, attached at its
//! offset and length, mounts, reads back byte for byte and refuses writes; the device goes away
//! when its last holder lets go. Device-mapper is not in this host's kernel: the verity half is
//! tested in the booted appliance (tests/tests/workloads.rs).

use std::path::Path;
use std::process::Command;

use edgeward_blockdev::loop_device::LoopDevice;
use edgeward_tests::{required_peer_missing, scratch};

fn ready() -> bool {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipping: loop devices need root (CI runs as root)");
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        required_peer_missing("this kernel has no loop devices (/dev/loop-control)");
        return false;
    }
    let erofs = std::fs::read_to_string("/proc/filesystems").is_ok_and(|filesystems| {
        filesystems
            .lines()
            .any(|line| line.trim_end().ends_with("erofs"))
    });
    if !erofs {
        required_peer_missing("this kernel does not mount erofs");
        return false;
    }
    if Command::new("mkfs.erofs").arg("--help").output().is_err() {
        required_peer_missing("mkfs.erofs is not installed (erofs-utils; scripts/setup)");
        return false;
    }
    true
}

#[test]
fn an_image_inside_a_file_mounts_through_a_loop_device_read_only() {
    if !ready() {
        return;
    }
    let dir = scratch("loop-device");
    let content = dir.join("content");
    std::fs::create_dir_all(content.join("bin")).expect("content");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 251) as u8).collect();
    std::fs::write(content.join("bin/tool"), &payload).expect("file");
    let image = dir.join("image.erofs");
    let made = Command::new("mkfs.erofs")
        .args(["--quiet", "-T0", "--all-root"])
        .arg(&image)
        .arg(&content)
        .status()
        .expect("mkfs.erofs runs");
    assert!(made.success());
    let image_bytes = std::fs::read(&image).expect("image");
    // 12 KiB of something else before and after, as a bundle's header and tree are.
    let mut container = vec![0x5au8; 12 * 1024];
    container.extend_from_slice(&image_bytes);
    container.extend_from_slice(&[0xa5; 12 * 1024]);
    let file = dir.join("bundle");
    std::fs::write(&file, &container).expect("container");

    let backing = std::fs::File::open(&file).expect("open");
    let device = LoopDevice::attach(&backing, 12 * 1024, image_bytes.len() as u64)
        .expect("a loop device over the image's range");
    let size = std::fs::read_to_string(format!(
        "/sys/block/{}/size",
        device
            .path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("name")
    ))
    .expect("size");
    assert_eq!(
        size.trim().parse::<u64>().expect("sectors") * 512,
        image_bytes.len() as u64,
        "the device is exactly the image's range"
    );
    let read_only = std::fs::read_to_string(format!(
        "/sys/block/{}/ro",
        device
            .path
            .file_name()
            .and_then(|name| name.to_str())
            .expect("name")
    ))
    .expect("ro");
    assert_eq!(read_only.trim(), "1", "the device is read-only");

    let mount_point = dir.join("mnt");
    std::fs::create_dir_all(&mount_point).expect("mount point");
    nix::mount::mount(
        Some(&device.path),
        &mount_point,
        Some("erofs"),
        nix::mount::MsFlags::MS_RDONLY
            | nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV,
        None::<&str>,
    )
    .expect("erofs mounts from the loop device");
    let read = std::fs::read(mount_point.join("bin/tool"));
    let write = std::fs::write(mount_point.join("bin/other"), b"x");
    nix::mount::umount(&mount_point).expect("unmounts");
    assert_eq!(read.expect("the file reads"), payload);
    assert_eq!(
        write.expect_err("a read-only mount").raw_os_error(),
        Some(nix::libc::EROFS)
    );

    let name = device.path.clone();
    device.detach().expect("detaches");
    let backing_now = std::fs::read_to_string(format!(
        "/sys/block/{}/loop/backing_file",
        name.file_name()
            .and_then(|name| name.to_str())
            .expect("name")
    ));
    assert!(backing_now.is_err(), "detached: no backing file any more");
    let _ = std::fs::remove_dir_all(&dir);
}
