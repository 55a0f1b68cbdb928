//! dm-verity hash trees in the on-disk format of cryptsetup's `veritysetup format` (hash
//! format 1, SHA-256), built and checked from bytes, with no I/O: the image build writes the
//! appliance's root and the workload bundles with it, the agent reads a bundle's superblock
//! with it, and the kernel's dm-verity target checks every block as it is read.
//!
//! Written here rather than taken from a crate: the crates that exist either shell out to
//! veritysetup or are one-off parts of larger projects; the format is small and is proven
//! byte for byte against `veritysetup format` in this crate's tests.
//!
//! The format (cryptsetup `lib/verity/verity_hash.c`, the kernel's
//! `Documentation/admin-guide/device-mapper/verity.rst`):
//! - every data block's digest is `SHA-256(salt ‖ block)` (format 1 puts the salt first);
//! - digests are packed 128 to a 4096-byte hash block (each slot 32 bytes, the power of two
//!   at or above the digest size), the block's tail zero;
//! - each level's blocks are hashed the same way into the level above, until a level is one
//!   block; the root hash is the digest of that block (of the one data block, when there is
//!   only one, and then there is no tree);
//! - on disk the levels go root-most first, after a 512-byte superblock padded to a hash block.

#![forbid(unsafe_code)]

mod superblock;
mod table;
mod tree;

pub use superblock::{Superblock, SUPERBLOCK_LEN};
pub use table::{OnCorruption, VerityTarget};
pub use tree::{HashTree, TreeBuilder};

use std::fmt;

/// The only block size this crate writes and accepts for data and hashes: the page size, which
/// the kernel needs for both and which erofs uses.
pub const BLOCK_SIZE: usize = 4096;

/// SHA-256 digest bytes.
pub const DIGEST_LEN: usize = 32;

/// The most salt the superblock holds.
pub const MAX_SALT_LEN: usize = 256;

/// A salt: prepended to every block before hashing, so that two trees over the same data
/// differ. Fixed per build (not random) so that an image builds to the same bytes each time.
#[derive(Clone, PartialEq, Eq)]
pub struct Salt(Vec<u8>);

impl Salt {
    /// A salt of at most [`MAX_SALT_LEN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Self, VerityError> {
        if bytes.len() > MAX_SALT_LEN {
            return Err(VerityError::SaltTooLong { len: bytes.len() });
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Lower-case hex, as the verity table and veritysetup take it (`-` for no salt).
    pub fn to_hex(&self) -> String {
        if self.0.is_empty() {
            "-".to_owned()
        } else {
            hex::encode(&self.0)
        }
    }
}

impl fmt::Debug for Salt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Salt({})", self.to_hex())
    }
}

/// The root of a hash tree: what a signature or a measured command line must cover, since it
/// decides every block.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RootHash(pub [u8; DIGEST_LEN]);

impl RootHash {
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From 64 hex digits.
    pub fn from_hex(text: &str) -> Result<Self, VerityError> {
        let mut bytes = [0u8; DIGEST_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| VerityError::BadRootHash {
            text: text.chars().take(80).collect(),
        })?;
        Ok(Self(bytes))
    }
}

impl fmt::Debug for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootHash({})", self.to_hex())
    }
}

impl fmt::Display for RootHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// What is wrong with a tree, a superblock or the data given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerityError {
    #[error("a verity salt holds at most {MAX_SALT_LEN} bytes, not {len}")]
    SaltTooLong { len: usize },
    #[error("{text:?} is not a root hash (64 hex digits)")]
    BadRootHash { text: String },
    #[error("the data is {len} bytes, not a whole number of {BLOCK_SIZE}-byte blocks")]
    PartialBlock { len: u64 },
    #[error("there is no data to protect (zero blocks)")]
    NoData,
    #[error("the verity superblock is {len} bytes, it needs {SUPERBLOCK_LEN}")]
    SuperblockTruncated { len: usize },
    #[error("no verity superblock here (signature {seen:02x?})")]
    NotASuperblock { seen: [u8; 8] },
    #[error("verity superblock {field} is {seen}, only {expected} is read here")]
    Unsupported {
        field: &'static str,
        expected: String,
        seen: String,
    },
    #[error("the verity superblock's salt is {len} bytes, more than the {MAX_SALT_LEN} it holds")]
    SuperblockSalt { len: usize },
    #[error("the hash tree is {len} bytes, {expected} expected for {data_blocks} data blocks")]
    TreeSize {
        len: usize,
        expected: usize,
        data_blocks: u64,
    },
    #[error("data block {block} does not match its hash")]
    DataBlock { block: u64 },
    #[error("hash block {block} of level {level} does not match its hash")]
    HashBlock { level: usize, block: u64 },
    #[error("the root hash is {seen}, {expected} expected")]
    RootMismatch { expected: RootHash, seen: RootHash },
}
