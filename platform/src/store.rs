//! Where the platform's bucket keeps what the recorder files (SEGuRo's layout, relative to the
//! store's root), and where Edgeward's recorder puts what it will not file there:
//!
//! - `data/measurements/<location>/<device>/<point>/<time>.parquet`, one file per block;
//! - `data/signatures/tsr/<DIGEST HEX>.sha256.tsr`, the TSA's response;
//! - `data/signatures/sig/<DIGEST HEX>.sha256.p7s`, the device's block signature;
//! - `aside/<the path it would have had>.<content hash>`, with a `.reason` beside it: a proof
//!   that conflicts with the one already filed for its digest, or one that does not verify, or
//!   a block file that would replace a different one. Nothing filed is ever replaced.
//!
//! Paths only; no I/O.

use sha2::{Digest as _, Sha256};

/// Time-stamp tokens, by block digest.
pub const TOKENS: &str = "data/signatures/tsr";
/// Device block signatures, by block digest.
pub const SIGNATURES: &str = "data/signatures/sig";
/// What the recorder kept aside.
pub const ASIDE: &str = "aside";

/// `data/signatures/tsr/<DIGEST>.sha256.tsr`.
pub fn token_path(digest: &[u8; 32]) -> String {
    format!("{TOKENS}/{}.sha256.tsr", hex::encode_upper(digest))
}

/// `data/signatures/sig/<DIGEST>.sha256.p7s`.
pub fn signature_path(digest: &[u8; 32]) -> String {
    format!("{SIGNATURES}/{}.sha256.p7s", hex::encode_upper(digest))
}

/// Where `content`, which would have gone to `canonical` (a store-relative path), is kept
/// aside: under `aside/`, the same path with the first 16 hex digits of the content's SHA-256
/// added, so that each distinct content has its own name.
pub fn aside_path(canonical: &str, content: &[u8]) -> String {
    let hash = hex::encode(Sha256::digest(content));
    format!("{ASIDE}/{canonical}.{}", &hash[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proofs_are_named_by_digest_and_aside_by_content() {
        let digest = [0xAB; 32];
        assert_eq!(
            token_path(&digest),
            format!("data/signatures/tsr/{}.sha256.tsr", "AB".repeat(32))
        );
        assert!(signature_path(&digest).ends_with(".sha256.p7s"));
        let one = aside_path(&token_path(&digest), b"one");
        let two = aside_path(&token_path(&digest), b"two");
        assert!(one.starts_with("aside/data/signatures/tsr/"));
        assert_ne!(one, two);
    }
}
