//! A verity hash device from outside (a workload bundle's, or a root partition someone wrote):
//! the superblock is read from the input's first 512 bytes, then the rest is split into data
//! blocks and a tree and checked against a root hash taken from the input. Never a panic, and
//! whatever verifies must be what our own builder makes of the same data.
#![no_main]

use edgeward_verity::{HashTree, RootHash, Salt, Superblock, BLOCK_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Superblock::parse(data);
    let Some((&blocks, rest)) = data.split_first() else {
        return;
    };
    if rest.len() < 32 {
        return;
    }
    let (root, rest) = rest.split_at(32);
    let mut root_bytes = [0u8; 32];
    root_bytes.copy_from_slice(root);
    let split = (usize::from(blocks % 8) * BLOCK_SIZE).min(rest.len());
    let (data_part, tree) = rest.split_at(split);
    let Ok(salt) = Salt::new(vec![0x5a; 4]) else {
        return;
    };
    if HashTree::verify(data_part, tree, &salt, &RootHash(root_bytes)).is_ok() {
        let built = HashTree::of(data_part, salt).expect("verified data builds");
        assert_eq!(built.root(), RootHash(root_bytes));
        assert_eq!(built.tree_bytes(), tree);
    }
});
