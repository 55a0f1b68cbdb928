//! The device-mapper table line of a verity target: what `dmsetup create` takes, what the
//! kernel's `dm-mod.create=` takes on the command line, and what the agent hands the kernel
//! through device-mapper's ioctls.

use crate::{HashTree, RootHash, Salt, BLOCK_SIZE};

/// What the kernel does when a block does not match its hash. Either way the bytes are never
/// handed to a reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnCorruption {
    /// The read fails with EIO and the kernel logs the block (the target's default).
    FailRead,
    /// The kernel panics: for a root whose reader cannot go on without the block.
    Panic,
}

/// A verity target over a data device and the hash device holding its tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerityTarget {
    /// The device with the data: a path (`/dev/vda3`), `major:minor` or, on the kernel
    /// command line, `PARTUUID=…`.
    pub data_device: String,
    pub hash_device: String,
    /// Where the tree starts on the hash device, in 4096-byte blocks: one past the superblock
    /// where [`HashTree::hash_device`] was placed.
    pub hash_start_block: u64,
    pub on_corruption: OnCorruption,
}

impl VerityTarget {
    /// The target's parameters for `tree` (the part after `verity`).
    pub fn parameters(&self, tree: &HashTree) -> String {
        self.parameters_for(tree.data_blocks(), &tree.root(), tree.salt())
    }

    /// The parameters for a tree known by its seal (a signed manifest's root hash, salt and
    /// block count) rather than built here.
    pub fn parameters_for(&self, data_blocks: u64, root: &RootHash, salt: &Salt) -> String {
        let mut line = format!(
            "1 {} {} {BLOCK_SIZE} {BLOCK_SIZE} {data_blocks} {} sha256 {root} {}",
            self.data_device,
            self.hash_device,
            self.hash_start_block,
            salt.to_hex()
        );
        if self.on_corruption == OnCorruption::Panic {
            line.push_str(" 1 panic_on_corruption");
        }
        line
    }

    /// The whole table line: start sector, length in 512-byte sectors, `verity`, parameters.
    pub fn table(&self, tree: &HashTree) -> String {
        self.table_for(tree.data_blocks(), &tree.root(), tree.salt())
    }

    /// The table line for a sealed tree.
    pub fn table_for(&self, data_blocks: u64, root: &RootHash, salt: &Salt) -> String {
        format!(
            "0 {} verity {}",
            data_blocks * (BLOCK_SIZE as u64 / 512),
            self.parameters_for(data_blocks, root, salt)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Salt;

    #[test]
    fn the_table_names_every_parameter_the_kernel_needs() {
        let data = vec![0u8; 3 * BLOCK_SIZE];
        let tree = HashTree::of(&data, Salt::new(vec![0x11; 4]).expect("salt")).expect("tree");
        let target = VerityTarget {
            data_device: "PARTUUID=6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a06".into(),
            hash_device: "PARTUUID=6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a06".into(),
            hash_start_block: 4,
            on_corruption: OnCorruption::Panic,
        };
        assert_eq!(
            target.table(&tree),
            format!(
                "0 24 verity 1 PARTUUID=6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a06 \
                 PARTUUID=6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a06 4096 4096 3 4 sha256 {} 11111111 \
                 1 panic_on_corruption",
                tree.root()
            )
        );
    }
}
