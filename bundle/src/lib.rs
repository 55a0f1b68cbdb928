//! The signed bundle: one file that carries a read-only file system image (erofs), its
//! dm-verity hash tree and a manifest signed by the operator, whose signature covers the
//! tree's root hash and so every byte of the image. Workloads travel in it today; image updates
//! will use the same format with another kind, which is why the writer (`edgeward workload
//! pack` and `sign`) and the reader (the appliance) both use this crate and nothing else.
//!
//! The layout (all offsets and lengths little-endian, every part 4096-byte aligned so the image
//! and the tree can be handed to a loop device and dm-verity as they lie):
//!
//! | offset | length | part |
//! |---:|---:|---|
//! | 0 | 4096 | [`Header`]: magic `EWBUNDLE`, format 1, kind, the parts' lengths, signed flag |
//! | 4096 | manifest, rounded up to 4096 | the manifest (TOML), zero-padded |
//! | then | 4096 | the signature block: 64 bytes of Ed25519, zeros while unsigned |
//! | then | image length | the erofs image |
//! | then | hash length | the verity hash device: superblock, then the tree |
//!
//! The offsets are not stored: they follow from the lengths, and a reader refuses a header
//! whose lengths do not give exactly the file's size. The header itself is not signed; nothing
//! in it is trusted beyond the layout, which the signed manifest repeats (image and tree sizes).
//!
//! What is signed (docs/bundle-format.md): Ed25519 over `"edgeward-bundle-v1\0"`, the kind as
//! four little-endian bytes, and the manifest's exact bytes. The manifest names the verity root
//! hash, salt and block count; dm-verity refuses, at read time, every block of the image that
//! does not hash up to that root.
#![forbid(unsafe_code)]

mod header;
pub mod signature;
pub mod workload;

pub use header::{Header, Kind, Layout, BLOCK, HEADER_LEN, MAX_MANIFEST_LEN};

/// What is wrong with a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("not an Edgeward bundle (it starts {seen:02x?}, not \"EWBUNDLE\")")]
    NotABundle { seen: [u8; 8] },
    #[error("the bundle is {len} bytes, shorter than its {HEADER_LEN}-byte header")]
    Truncated { len: u64 },
    #[error("bundle format {seen} is not one this appliance reads (format 1)")]
    Format { seen: u32 },
    #[error("bundle kind {seen} is unknown (1 is a workload)")]
    UnknownKind { seen: u32 },
    #[error("a {expected} bundle was expected, this one is a {seen}")]
    WrongKind { expected: Kind, seen: Kind },
    #[error("the bundle's header is malformed: {0}")]
    Header(String),
    #[error("the bundle is {len} bytes, its header describes {expected}")]
    Size { len: u64, expected: u64 },
    #[error("the bundle is not signed (edgeward workload sign)")]
    Unsigned,
    #[error(
        "the bundle's signature does not verify with the trusted key: it was signed with another \
         key, or its manifest was altered after signing"
    )]
    BadSignature,
    #[error("the trusted key is not an Ed25519 public key: {0}")]
    BadKey(String),
    #[error("the manifest is not UTF-8 TOML: {0}")]
    ManifestSyntax(String),
    #[error("the manifest is invalid: {0}")]
    Manifest(String),
    #[error("the manifest and the bundle disagree: {0}")]
    Mismatch(String),
    #[error("the image: {0}")]
    Image(String),
}
