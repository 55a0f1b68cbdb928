//! The hash trees of `edgeward-verity` against cryptsetup's `veritysetup`, a writer and reader
//! of the format no one here wrote: for data of one block, of one full hash block, of one past
//! it (a second level) and of a real erofs image, `veritysetup format` with the same salt and
//! UUID writes exactly our hash device and prints our root hash; `veritysetup verify` accepts
//! our tree and refuses it once one data byte is changed.

use std::path::Path;
use std::process::Command;

use edgeward_tests::{required_peer_missing, scratch};
use edgeward_verity::{HashTree, Salt, Superblock, BLOCK_SIZE};

const UUID: &str = "6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a10";

fn uuid_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    hex::decode_to_slice(UUID.replace('-', ""), &mut bytes).expect("UUID");
    bytes
}

fn available(tool: &str, package: &str) -> bool {
    let found = Command::new(tool).arg("--version").output().is_ok();
    if !found {
        required_peer_missing(&format!(
            "{tool} is not installed (Debian {package}; run scripts/setup)"
        ));
    }
    found
}

fn veritysetup(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("veritysetup")
        .args(args)
        .output()
        .expect("veritysetup runs")
}

/// Formats `data` with veritysetup and with our code; returns veritysetup's root hash.
fn compare(dir: &Path, name: &str, data: &[u8], salt: &Salt) -> String {
    let data_file = dir.join(format!("{name}.data"));
    let hash_file = dir.join(format!("{name}.hash"));
    std::fs::write(&data_file, data).expect("data");
    let output = veritysetup(&[
        "format".as_ref(),
        data_file.as_os_str(),
        hash_file.as_os_str(),
        format!("--salt={}", salt.to_hex()).as_ref(),
        format!("--uuid={UUID}").as_ref(),
    ]);
    assert!(output.status.success(), "veritysetup format: {output:?}");
    let printed = String::from_utf8_lossy(&output.stdout);
    let root = printed
        .lines()
        .find_map(|line| line.strip_prefix("Root hash:"))
        .expect("a root hash line")
        .trim()
        .to_owned();
    let tree = HashTree::of(data, salt.clone()).expect("our tree");
    assert_eq!(tree.root().to_hex(), root, "{name}: root hash");
    let theirs = std::fs::read(&hash_file).expect("hash device");
    let ours = tree.hash_device(uuid_bytes());
    assert_eq!(ours.len(), theirs.len(), "{name}: hash device length");
    assert!(ours == theirs, "{name}: hash device bytes differ");
    assert_eq!(
        Superblock::parse(&theirs).expect("their superblock reads"),
        tree.superblock(uuid_bytes())
    );
    HashTree::verify(data, &theirs[BLOCK_SIZE..], salt, &tree.root()).expect("their tree verifies");
    root
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 56) as u8
        })
        .collect()
}

#[test]
fn our_hash_trees_are_veritysetups_byte_for_byte() {
    if !available("veritysetup", "cryptsetup-bin") {
        return;
    }
    let dir = scratch("verity-format");
    let salt = Salt::new(pseudo_random(32, 1)).expect("salt");
    for (name, blocks) in [
        ("one", 1),
        ("full", 128),
        ("two-levels", 129),
        ("three-levels", 128 * 128 + 1),
    ] {
        compare(
            &dir,
            name,
            &pseudo_random(blocks * BLOCK_SIZE, blocks as u64),
            &salt,
        );
    }
    // An empty salt is written as `-`.
    compare(
        &dir,
        "unsalted",
        &pseudo_random(5 * BLOCK_SIZE, 5),
        &Salt::new(Vec::new()).expect("salt"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn veritysetup_verifies_our_tree_and_refuses_a_changed_byte() {
    if !available("veritysetup", "cryptsetup-bin") || !available("mkfs.erofs", "erofs-utils") {
        return;
    }
    let dir = scratch("verity-erofs");
    let content = dir.join("content");
    std::fs::create_dir_all(content.join("bin")).expect("content");
    std::fs::write(content.join("bin/tool"), pseudo_random(300_000, 9)).expect("file");
    std::fs::write(content.join("README"), b"a workload's files\n").expect("file");
    let image = dir.join("image.erofs");
    let made = Command::new("mkfs.erofs")
        .args(["--quiet", "-T0", "--all-root", "-U", UUID])
        .arg(&image)
        .arg(&content)
        .status()
        .expect("mkfs.erofs runs");
    assert!(made.success());
    let data = std::fs::read(&image).expect("image");
    let salt = Salt::new(pseudo_random(32, 2)).expect("salt");
    let tree = HashTree::of(&data, salt.clone()).expect("tree");
    let hash_file = dir.join("image.hash");
    std::fs::write(&hash_file, tree.hash_device(uuid_bytes())).expect("hash device");
    let verify = |data_file: &Path| {
        veritysetup(&[
            "verify".as_ref(),
            data_file.as_os_str(),
            hash_file.as_os_str(),
            tree.root().to_hex().as_ref(),
        ])
    };
    let accepted = verify(&image);
    assert!(
        accepted.status.success(),
        "veritysetup verify: {accepted:?}"
    );
    let mut altered = data.clone();
    altered[data.len() / 2] ^= 0x01;
    let altered_file = dir.join("altered.erofs");
    std::fs::write(&altered_file, &altered).expect("altered image");
    let refused = verify(&altered_file);
    assert!(
        !refused.status.success(),
        "a changed byte must fail verification"
    );
    // It names the 4 KiB block the changed byte is in.
    let block_start = data.len() / 2 / BLOCK_SIZE * BLOCK_SIZE;
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains(&format!("Verification failed at position {block_start}.")),
        "veritysetup says where: {refused:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
