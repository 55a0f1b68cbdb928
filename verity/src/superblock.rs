//! The 512-byte superblock `veritysetup format` writes at the start of the hash device
//! (cryptsetup `lib/verity/verity.c`, `struct verity_sb`), little-endian:
//!
//! | offset | size | field |
//! |---:|---:|---|
//! | 0 | 8 | signature `verity\0\0` |
//! | 8 | 4 | superblock version (1) |
//! | 12 | 4 | hash type (1: the salt first) |
//! | 16 | 16 | UUID |
//! | 32 | 32 | algorithm name, NUL-padded (`sha256`) |
//! | 64 | 4 | data block size |
//! | 68 | 4 | hash block size |
//! | 72 | 8 | data blocks |
//! | 80 | 2 | salt size |
//! | 82 | 6 | zero |
//! | 88 | 256 | salt, zero-padded |
//! | 344 | 168 | zero |
//!
//! The kernel never reads it (the table carries every parameter); it says what a hash device
//! was made for, and a reader checks it before trusting the table it derives.

use crate::{Salt, VerityError, BLOCK_SIZE, MAX_SALT_LEN};

pub const SUPERBLOCK_LEN: usize = 512;
const SIGNATURE: [u8; 8] = *b"verity\0\0";
const ALGORITHM: &str = "sha256";

/// The superblock of a hash device in format 1 with SHA-256 and 4096-byte blocks, the only one
/// this crate makes or reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    pub uuid: [u8; 16],
    pub data_blocks: u64,
    pub salt: Salt,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

impl Superblock {
    pub fn to_bytes(&self) -> [u8; SUPERBLOCK_LEN] {
        let mut bytes = [0u8; SUPERBLOCK_LEN];
        bytes[0..8].copy_from_slice(&SIGNATURE);
        bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        bytes[12..16].copy_from_slice(&1u32.to_le_bytes());
        bytes[16..32].copy_from_slice(&self.uuid);
        bytes[32..32 + ALGORITHM.len()].copy_from_slice(ALGORITHM.as_bytes());
        bytes[64..68].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        bytes[68..72].copy_from_slice(&(BLOCK_SIZE as u32).to_le_bytes());
        bytes[72..80].copy_from_slice(&self.data_blocks.to_le_bytes());
        let salt = self.salt.as_bytes();
        bytes[80..82].copy_from_slice(&(salt.len() as u16).to_le_bytes());
        bytes[88..88 + salt.len()].copy_from_slice(salt);
        bytes
    }

    /// Reads a superblock from the first bytes of a hash device; anything but format 1,
    /// SHA-256 and 4096-byte blocks is refused by name.
    pub fn parse(bytes: &[u8]) -> Result<Self, VerityError> {
        let Some(bytes) = bytes.get(..SUPERBLOCK_LEN) else {
            return Err(VerityError::SuperblockTruncated { len: bytes.len() });
        };
        let mut signature = [0u8; 8];
        signature.copy_from_slice(&bytes[0..8]);
        if signature != SIGNATURE {
            return Err(VerityError::NotASuperblock { seen: signature });
        }
        let unsupported = |field: &'static str, expected: &str, seen: String| {
            Err(VerityError::Unsupported {
                field,
                expected: expected.to_owned(),
                seen,
            })
        };
        let version = u32_at(bytes, 8);
        if version != 1 {
            return unsupported("version", "1", version.to_string());
        }
        let hash_type = u32_at(bytes, 12);
        if hash_type != 1 {
            return unsupported("hash type", "1", hash_type.to_string());
        }
        let name = &bytes[32..64];
        let name_len = name
            .iter()
            .position(|byte| *byte == 0)
            .unwrap_or(name.len());
        if &name[..name_len] != ALGORITHM.as_bytes() || name[name_len..].iter().any(|b| *b != 0) {
            return unsupported(
                "algorithm",
                ALGORITHM,
                String::from_utf8_lossy(&name[..name_len]).into_owned(),
            );
        }
        for (field, at) in [("data block size", 64), ("hash block size", 68)] {
            let size = u32_at(bytes, at);
            if size as usize != BLOCK_SIZE {
                return unsupported(field, "4096", size.to_string());
            }
        }
        let mut blocks = [0u8; 8];
        blocks.copy_from_slice(&bytes[72..80]);
        let data_blocks = u64::from_le_bytes(blocks);
        if data_blocks == 0 {
            return Err(VerityError::NoData);
        }
        let salt_len = u16::from_le_bytes([bytes[80], bytes[81]]) as usize;
        if salt_len > MAX_SALT_LEN {
            return Err(VerityError::SuperblockSalt { len: salt_len });
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&bytes[16..32]);
        Ok(Self {
            uuid,
            data_blocks,
            salt: Salt::new(bytes[88..88 + salt_len].to_vec())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn superblock() -> Superblock {
        Superblock {
            uuid: [7; 16],
            data_blocks: 12_345,
            salt: Salt::new(vec![0xab; 32]).expect("salt"),
        }
    }

    #[test]
    fn what_is_written_reads_back() {
        let bytes = superblock().to_bytes();
        assert_eq!(Superblock::parse(&bytes), Ok(superblock()));
    }

    #[test]
    fn other_formats_are_refused_by_name() {
        let mut other = superblock().to_bytes();
        other[32..38].copy_from_slice(b"sha1\0\0");
        assert!(matches!(
            Superblock::parse(&other),
            Err(VerityError::Unsupported {
                field: "algorithm",
                ..
            })
        ));
        let mut small = superblock().to_bytes();
        small[64..68].copy_from_slice(&512u32.to_le_bytes());
        assert!(matches!(
            Superblock::parse(&small),
            Err(VerityError::Unsupported {
                field: "data block size",
                ..
            })
        ));
        let mut chrome = superblock().to_bytes();
        chrome[12] = 0;
        assert!(matches!(
            Superblock::parse(&chrome),
            Err(VerityError::Unsupported {
                field: "hash type",
                ..
            })
        ));
    }

    #[test]
    fn short_foreign_and_oversalted_blocks_are_refused() {
        assert_eq!(
            Superblock::parse(&[0u8; 100]),
            Err(VerityError::SuperblockTruncated { len: 100 })
        );
        assert!(matches!(
            Superblock::parse(&[0u8; 512]),
            Err(VerityError::NotASuperblock { .. })
        ));
        let mut salty = superblock().to_bytes();
        salty[80..82].copy_from_slice(&300u16.to_le_bytes());
        assert_eq!(
            Superblock::parse(&salty),
            Err(VerityError::SuperblockSalt { len: 300 })
        );
    }
}
