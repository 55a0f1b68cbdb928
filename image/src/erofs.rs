//! Read-only file system images with `mkfs.erofs` (erofs-utils), the same way for the
//! appliance's root and for workload bundles: uncompressed, every time 0 and every owner root,
//! no extended attributes, a fixed UUID, so that an image depends only on the tree it is made
//! from.

use std::path::Path;
use std::process::Command;

use edgeward_verity::BLOCK_SIZE;

use crate::build::BuildError;
use crate::tool::{io, run};

/// Makes `out` from the directory `tree` and returns its bytes: whole 4096-byte blocks.
pub fn make(tree: &Path, out: &Path, uuid: &str) -> Result<Vec<u8>, BuildError> {
    let _ = std::fs::remove_file(out);
    // Uncompressed: under TCG the kernel's LZ4 decompression cost more than the reads it saved
    // (docs/benchmarks.md). -x -1: no extended attributes, which would carry the build
    // machine's security labels into the image.
    run(
        Command::new("mkfs.erofs")
            .args(["--quiet", "-T0", "--all-root", "-x", "-1", "-U", uuid])
            .arg(out)
            .arg(tree),
        "erofs-utils (mkfs.erofs)",
    )?;
    let bytes = io("cannot read the erofs image", std::fs::read(out))?;
    if bytes.is_empty() || !bytes.len().is_multiple_of(BLOCK_SIZE) {
        return Err(BuildError::Input(format!(
            "mkfs.erofs wrote {} bytes, not whole {BLOCK_SIZE}-byte blocks",
            bytes.len()
        )));
    }
    Ok(bytes)
}
