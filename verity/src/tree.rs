//! Building a hash tree from data, and checking data against one.

use sha2::{Digest, Sha256};

use crate::{RootHash, Salt, Superblock, VerityError, BLOCK_SIZE, DIGEST_LEN};

/// Digests per hash block: 4096 / 32.
const FANOUT: usize = BLOCK_SIZE / DIGEST_LEN;

fn salted(salt: &Salt, block: &[u8]) -> [u8; DIGEST_LEN] {
    let mut hasher = Sha256::new();
    hasher.update(salt.as_bytes());
    hasher.update(block);
    hasher.finalize().into()
}

/// Packs digests into zero-padded hash blocks.
fn pack(digests: &[[u8; DIGEST_LEN]]) -> Vec<u8> {
    let blocks = digests.len().div_ceil(FANOUT);
    let mut level = vec![0u8; blocks * BLOCK_SIZE];
    for (slot, digest) in level.chunks_exact_mut(DIGEST_LEN).zip(digests) {
        slot.copy_from_slice(digest);
    }
    level
}

/// The number of hash blocks of each level, level 0 (the data's digests) first, for
/// `data_blocks` blocks of data: none when there is one data block.
fn level_blocks(data_blocks: u64) -> Vec<u64> {
    let mut levels = Vec::new();
    let mut below = data_blocks;
    while below > 1 {
        below = below.div_ceil(FANOUT as u64);
        levels.push(below);
    }
    levels
}

/// A finished tree over some data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashTree {
    salt: Salt,
    data_blocks: u64,
    root: RootHash,
    /// Hash blocks, level 0 first (the on-disk order is the reverse).
    levels: Vec<Vec<u8>>,
}

impl HashTree {
    /// The tree over `data`, a whole number of blocks.
    pub fn of(data: &[u8], salt: Salt) -> Result<Self, VerityError> {
        let mut builder = TreeBuilder::new(salt);
        builder.update(data);
        builder.finish()
    }

    pub fn root(&self) -> RootHash {
        self.root
    }

    pub fn salt(&self) -> &Salt {
        &self.salt
    }

    pub fn data_blocks(&self) -> u64 {
        self.data_blocks
    }

    /// The bytes the data occupies, which the verity device exposes.
    pub fn data_len(&self) -> u64 {
        self.data_blocks * BLOCK_SIZE as u64
    }

    /// The hash blocks as they lie on disk, the level nearest the root first.
    pub fn tree_bytes(&self) -> Vec<u8> {
        self.levels.iter().rev().flatten().copied().collect()
    }

    /// How long the on-disk tree is for `data_blocks` blocks of data.
    pub fn tree_len(data_blocks: u64) -> u64 {
        level_blocks(data_blocks).iter().sum::<u64>() * BLOCK_SIZE as u64
    }

    /// The superblock veritysetup writes for this tree.
    pub fn superblock(&self, uuid: [u8; 16]) -> Superblock {
        Superblock {
            uuid,
            data_blocks: self.data_blocks,
            salt: self.salt.clone(),
        }
    }

    /// What `veritysetup format --uuid=UUID --salt=SALT` writes to its hash device: the
    /// superblock, zeros to the next hash block, then the tree. The tree starts one block in,
    /// which is the table's `hash_start_block` (counted from where this is placed).
    pub fn hash_device(&self, uuid: [u8; 16]) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(BLOCK_SIZE + self.levels.iter().map(Vec::len).sum::<usize>());
        bytes.extend_from_slice(&self.superblock(uuid).to_bytes());
        bytes.resize(BLOCK_SIZE, 0);
        bytes.extend(self.tree_bytes());
        bytes
    }

    /// Checks `data` and the on-disk `tree` (as [`HashTree::tree_bytes`] lays it out) against
    /// `root`, level by level: the first block that does not match is named. What the kernel
    /// does block by block as they are read, done here for all of them at once (the image
    /// build checks what it wrote; tests and fuzzing check the reader).
    pub fn verify(
        data: &[u8],
        tree: &[u8],
        salt: &Salt,
        root: &RootHash,
    ) -> Result<(), VerityError> {
        if !data.len().is_multiple_of(BLOCK_SIZE) {
            return Err(VerityError::PartialBlock {
                len: data.len() as u64,
            });
        }
        let data_blocks = (data.len() / BLOCK_SIZE) as u64;
        if data_blocks == 0 {
            return Err(VerityError::NoData);
        }
        let counts = level_blocks(data_blocks);
        let expected = counts.iter().sum::<u64>() as usize * BLOCK_SIZE;
        if tree.len() != expected {
            return Err(VerityError::TreeSize {
                len: tree.len(),
                expected,
                data_blocks,
            });
        }
        // The on-disk levels, root-most first, split back into level 0 first.
        let mut levels: Vec<&[u8]> = Vec::with_capacity(counts.len());
        let mut rest = tree;
        for count in counts.iter().rev() {
            let (level, after) = rest.split_at(*count as usize * BLOCK_SIZE);
            levels.push(level);
            rest = after;
        }
        levels.reverse();
        let top = levels.last().copied().unwrap_or(data);
        let seen = RootHash(salted(salt, top));
        if seen != *root {
            return Err(VerityError::RootMismatch {
                expected: *root,
                seen,
            });
        }
        // From the root down, each level's blocks against their slots in the level above, so
        // that the first mismatch found is the block that was changed, not one below it.
        for above_index in (0..levels.len()).rev() {
            let above = levels[above_index];
            let below = if above_index == 0 {
                data
            } else {
                levels[above_index - 1]
            };
            for (index, block) in below.chunks_exact(BLOCK_SIZE).enumerate() {
                let slot = &above[index * DIGEST_LEN..(index + 1) * DIGEST_LEN];
                if salted(salt, block) != slot {
                    return Err(if above_index == 0 {
                        VerityError::DataBlock {
                            block: index as u64,
                        }
                    } else {
                        VerityError::HashBlock {
                            level: above_index - 1,
                            block: index as u64,
                        }
                    });
                }
            }
            // A slot past the last digest must be zero: the format pads with zeros, and a tree
            // with something else there is not the one that was signed.
            let used = below.len() / BLOCK_SIZE * DIGEST_LEN;
            if above[used..].iter().any(|byte| *byte != 0) {
                return Err(VerityError::HashBlock {
                    level: above_index,
                    block: (used / BLOCK_SIZE) as u64,
                });
            }
        }
        Ok(())
    }
}

/// A tree built as the data streams by, in pieces of any size: only the data blocks' digests
/// are kept (32 bytes per 4 KiB).
#[derive(Debug)]
pub struct TreeBuilder {
    salt: Salt,
    digests: Vec<[u8; DIGEST_LEN]>,
    partial: Vec<u8>,
}

impl TreeBuilder {
    pub fn new(salt: Salt) -> Self {
        Self {
            salt,
            digests: Vec::new(),
            partial: Vec::with_capacity(BLOCK_SIZE),
        }
    }

    /// Takes the next bytes of the data.
    pub fn update(&mut self, mut bytes: &[u8]) {
        if !self.partial.is_empty() {
            let take = (BLOCK_SIZE - self.partial.len()).min(bytes.len());
            self.partial.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.partial.len() < BLOCK_SIZE {
                return;
            }
            self.digests.push(salted(&self.salt, &self.partial));
            self.partial.clear();
        }
        let mut blocks = bytes.chunks_exact(BLOCK_SIZE);
        for block in &mut blocks {
            self.digests.push(salted(&self.salt, block));
        }
        self.partial.extend_from_slice(blocks.remainder());
    }

    /// The tree, once all the data has been given.
    pub fn finish(self) -> Result<HashTree, VerityError> {
        let data_blocks = self.digests.len() as u64;
        if !self.partial.is_empty() {
            return Err(VerityError::PartialBlock {
                len: data_blocks * BLOCK_SIZE as u64 + self.partial.len() as u64,
            });
        }
        let Some(first) = self.digests.first().copied() else {
            return Err(VerityError::NoData);
        };
        let mut levels = Vec::new();
        let mut digests = self.digests;
        while digests.len() > 1 {
            let level = pack(&digests);
            digests = level
                .chunks_exact(BLOCK_SIZE)
                .map(|block| salted(&self.salt, block))
                .collect();
            levels.push(level);
        }
        // One data block: its own digest is the root, and there is no tree.
        let root = RootHash(digests.first().copied().unwrap_or(first));
        Ok(HashTree {
            salt: self.salt,
            data_blocks,
            root,
            levels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn salt() -> Salt {
        Salt::new(vec![0x5a; 32]).expect("salt")
    }

    fn data(blocks: usize) -> Vec<u8> {
        (0..blocks * BLOCK_SIZE)
            .map(|i| (i * 7 % 251) as u8)
            .collect()
    }

    #[test]
    fn one_block_has_no_tree_and_its_digest_is_the_root() {
        let tree = HashTree::of(&data(1), salt()).expect("tree");
        assert!(tree.tree_bytes().is_empty());
        assert_eq!(tree.root().0, salted(&salt(), &data(1)));
        HashTree::verify(&data(1), &[], &salt(), &tree.root()).expect("verifies");
    }

    #[test]
    fn levels_grow_at_each_power_of_the_fanout() {
        assert_eq!(level_blocks(2), vec![1]);
        assert_eq!(level_blocks(128), vec![1]);
        assert_eq!(level_blocks(129), vec![2, 1]);
        assert_eq!(level_blocks(128 * 128 + 1), vec![129, 2, 1]);
        assert_eq!(HashTree::tree_len(129), 3 * BLOCK_SIZE as u64);
    }

    #[test]
    fn streaming_in_odd_pieces_builds_the_same_tree() {
        let bytes = data(300);
        let whole = HashTree::of(&bytes, salt()).expect("tree");
        let mut builder = TreeBuilder::new(salt());
        for piece in bytes.chunks(1000) {
            builder.update(piece);
        }
        assert_eq!(builder.finish().expect("tree"), whole);
    }

    #[test]
    fn the_root_depends_on_the_salt() {
        let bytes = data(3);
        let other = Salt::new(vec![1; 32]).expect("salt");
        assert_ne!(
            HashTree::of(&bytes, salt()).expect("tree").root(),
            HashTree::of(&bytes, other).expect("tree").root()
        );
    }

    #[test]
    fn a_changed_data_block_is_named() {
        let mut bytes = data(200);
        let tree = HashTree::of(&bytes, salt()).expect("tree");
        bytes[150 * BLOCK_SIZE + 17] ^= 1;
        assert_eq!(
            HashTree::verify(&bytes, &tree.tree_bytes(), &salt(), &tree.root()),
            Err(VerityError::DataBlock { block: 150 })
        );
    }

    #[test]
    fn a_changed_hash_block_or_root_is_refused() {
        let bytes = data(200);
        let tree = HashTree::of(&bytes, salt()).expect("tree");
        let mut on_disk = tree.tree_bytes();
        // Root-most level first: its one block, then level 0's two blocks.
        on_disk[BLOCK_SIZE + 5] ^= 1;
        assert!(matches!(
            HashTree::verify(&bytes, &on_disk, &salt(), &tree.root()),
            Err(VerityError::HashBlock { level: 0, block: 0 })
        ));
        let mut top_changed = tree.tree_bytes();
        top_changed[3] ^= 1;
        assert!(matches!(
            HashTree::verify(&bytes, &top_changed, &salt(), &tree.root()),
            Err(VerityError::RootMismatch { .. })
        ));
        let mut padding_changed = tree.tree_bytes();
        let last = padding_changed.len() - 1;
        padding_changed[last] = 1;
        assert!(matches!(
            HashTree::verify(&bytes, &padding_changed, &salt(), &tree.root()),
            Err(VerityError::HashBlock { .. })
        ));
    }

    #[test]
    fn partial_blocks_and_no_data_are_refused() {
        assert_eq!(
            HashTree::of(&[0u8; 100], salt()),
            Err(VerityError::PartialBlock { len: 100 })
        );
        assert_eq!(HashTree::of(&[], salt()), Err(VerityError::NoData));
        assert!(matches!(
            HashTree::verify(&data(2), &[0u8; 10], &salt(), &RootHash([0; 32])),
            Err(VerityError::TreeSize { .. })
        ));
    }
}
