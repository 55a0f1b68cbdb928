//! The bundle's first block and the layout that follows from it.

use std::fmt;
use std::ops::Range;

use crate::BundleError;

/// The alignment of every part, and the size of the header and signature blocks.
pub const BLOCK: u64 = 4096;
pub const HEADER_LEN: usize = BLOCK as usize;
/// A manifest is a page of TOML; anything much larger is not one.
pub const MAX_MANIFEST_LEN: u64 = 64 * 1024;
const MAGIC: [u8; 8] = *b"EWBUNDLE";
const FORMAT: u32 = 1;

/// What a bundle carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An analytics or alerting program that the appliance runs isolated.
    Workload,
}

impl Kind {
    pub fn code(self) -> u32 {
        match self {
            Kind::Workload => 1,
        }
    }

    fn from_code(code: u32) -> Result<Self, BundleError> {
        match code {
            1 => Ok(Kind::Workload),
            seen => Err(BundleError::UnknownKind { seen }),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Workload => "workload",
        })
    }
}

/// The header: what the bundle is and how long its parts are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub manifest_len: u64,
    pub signed: bool,
    /// The erofs image, whole 4096-byte blocks.
    pub image_len: u64,
    /// The verity hash device: its superblock block, then the tree.
    pub hash_len: u64,
}

/// Where each part is, in bytes from the start of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub manifest: Range<u64>,
    pub signature: Range<u64>,
    pub image: Range<u64>,
    pub hash: Range<u64>,
    /// The file's length.
    pub total: u64,
}

fn round_up(len: u64) -> Option<u64> {
    len.checked_add(BLOCK - 1).map(|len| len / BLOCK * BLOCK)
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

impl Header {
    /// The parts' places; `None` when the lengths overflow (only a malformed header has such).
    fn try_layout(&self) -> Option<Layout> {
        let manifest_start = BLOCK;
        let signature_start = manifest_start.checked_add(round_up(self.manifest_len)?)?;
        let image_start = signature_start.checked_add(BLOCK)?;
        let hash_start = image_start.checked_add(self.image_len)?;
        let total = hash_start.checked_add(self.hash_len)?;
        Some(Layout {
            manifest: manifest_start..manifest_start + self.manifest_len,
            signature: signature_start..signature_start + 64,
            image: image_start..hash_start,
            hash: hash_start..total,
            total,
        })
    }

    /// The parts' places. A header from [`Header::parse`] always has one.
    pub fn layout(&self) -> Layout {
        self.try_layout().unwrap_or(Layout {
            manifest: 0..0,
            signature: 0..0,
            image: 0..0,
            hash: 0..0,
            total: 0,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_LEN];
        bytes[0..8].copy_from_slice(&MAGIC);
        bytes[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.kind.code().to_le_bytes());
        bytes[16..24].copy_from_slice(&self.manifest_len.to_le_bytes());
        bytes[24..28].copy_from_slice(&u32::from(self.signed).to_le_bytes());
        bytes[32..40].copy_from_slice(&self.image_len.to_le_bytes());
        bytes[40..48].copy_from_slice(&self.hash_len.to_le_bytes());
        bytes
    }

    /// Reads the header from the file's first bytes and checks it against the file's length.
    pub fn parse(bytes: &[u8], file_len: u64) -> Result<Self, BundleError> {
        let Some(bytes) = bytes.get(..HEADER_LEN) else {
            return Err(BundleError::Truncated {
                len: bytes.len() as u64,
            });
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[0..8]);
        if magic != MAGIC {
            return Err(BundleError::NotABundle { seen: magic });
        }
        let format = u32_at(bytes, 8);
        if format != FORMAT {
            return Err(BundleError::Format { seen: format });
        }
        let kind = Kind::from_code(u32_at(bytes, 12))?;
        let signed = match u32_at(bytes, 24) {
            0 => false,
            1 => true,
            seen => {
                return Err(BundleError::Header(format!(
                    "signed flag {seen}, not 0 or 1"
                )))
            }
        };
        if u32_at(bytes, 28) != 0 || bytes[48..].iter().any(|byte| *byte != 0) {
            return Err(BundleError::Header(
                "reserved bytes are not zero".to_owned(),
            ));
        }
        let header = Self {
            kind,
            manifest_len: u64_at(bytes, 16),
            signed,
            image_len: u64_at(bytes, 32),
            hash_len: u64_at(bytes, 40),
        };
        if header.manifest_len == 0 || header.manifest_len > MAX_MANIFEST_LEN {
            return Err(BundleError::Header(format!(
                "manifest length {} is not within 1 to {MAX_MANIFEST_LEN}",
                header.manifest_len
            )));
        }
        if header.image_len == 0 || !header.image_len.is_multiple_of(BLOCK) {
            return Err(BundleError::Header(format!(
                "image length {} is not a positive multiple of {BLOCK}",
                header.image_len
            )));
        }
        if header.hash_len < BLOCK || !header.hash_len.is_multiple_of(BLOCK) {
            return Err(BundleError::Header(format!(
                "hash device length {} is not a multiple of {BLOCK} with room for its superblock",
                header.hash_len
            )));
        }
        let layout = header
            .try_layout()
            .ok_or_else(|| BundleError::Header("the parts' lengths overflow".to_owned()))?;
        if layout.total != file_len {
            return Err(BundleError::Size {
                len: file_len,
                expected: layout.total,
            });
        }
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            kind: Kind::Workload,
            manifest_len: 700,
            signed: false,
            image_len: 3 * BLOCK,
            hash_len: 2 * BLOCK,
        }
    }

    #[test]
    fn the_layout_aligns_every_part() {
        let layout = header().layout();
        assert_eq!(layout.manifest, 4096..4796);
        assert_eq!(layout.signature, 8192..8256);
        assert_eq!(layout.image, 12288..24576);
        assert_eq!(layout.hash, 24576..32768);
        assert_eq!(layout.total, 32768);
    }

    #[test]
    fn a_header_reads_back_and_must_describe_the_whole_file() {
        let bytes = header().to_bytes();
        assert_eq!(Header::parse(&bytes, 32768), Ok(header()));
        assert_eq!(
            Header::parse(&bytes, 32769),
            Err(BundleError::Size {
                len: 32769,
                expected: 32768
            })
        );
    }

    #[test]
    fn foreign_and_malformed_headers_are_refused() {
        assert!(matches!(
            Header::parse(&[0u8; 4096], 4096),
            Err(BundleError::NotABundle { .. })
        ));
        assert_eq!(
            Header::parse(&[0u8; 10], 10),
            Err(BundleError::Truncated { len: 10 })
        );
        let mut later = header().to_bytes();
        later[8] = 2;
        assert_eq!(
            Header::parse(&later, 32768),
            Err(BundleError::Format { seen: 2 })
        );
        let mut other_kind = header().to_bytes();
        other_kind[12] = 9;
        assert_eq!(
            Header::parse(&other_kind, 32768),
            Err(BundleError::UnknownKind { seen: 9 })
        );
        let mut odd_image = header();
        odd_image.image_len = 100;
        assert!(matches!(
            Header::parse(&odd_image.to_bytes(), 32768),
            Err(BundleError::Header(_))
        ));
        let mut huge = header();
        huge.image_len = u64::MAX / BLOCK * BLOCK;
        assert!(matches!(
            Header::parse(&huge.to_bytes(), 32768),
            Err(BundleError::Header(_))
        ));
        let mut dirty = header().to_bytes();
        dirty[4000] = 1;
        assert!(matches!(
            Header::parse(&dirty, 32768),
            Err(BundleError::Header(_))
        ));
    }
}
