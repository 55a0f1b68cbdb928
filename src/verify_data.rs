//! `edgeward verify-data DIR`: for every block file in a store laid out like the platform's
//! bucket, recompute the digest from the Parquet file and check its time-stamp token and its
//! device signature, the device's certificate judged at the token's time
//! (`edgeward_proof::block`); one line per block, `ok` or the reason. The signer must be the
//! device whose topic the block was recorded under. Proofs the recorder kept aside (conflicting
//! or invalid, `aside/`) are counted and named, never used.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use edgeward_measurement::block::BlockHasher;
use edgeward_proof::block::{verify_proofs, ProofAnchors};

use crate::proof_trust::ProofTrustArgs;

#[derive(Args)]
pub struct VerifyDataArgs {
    /// The store (the bucket's root, holding data/).
    store: PathBuf,
    #[command(flatten)]
    trust: ProofTrustArgs,
}

/// Every block file of `store`, in path order.
pub fn block_files(store: &Path) -> Result<Vec<PathBuf>> {
    let measurements = store.join("data/measurements");
    let mut files = Vec::new();
    if measurements.is_dir() {
        parquet_files(&measurements, &mut files)?;
    }
    Ok(files)
}

fn parquet_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .collect::<Result<_, _>>()?;
    entries.sort_by_key(|entry| entry.path());
    for entry in entries {
        let path = entry.path();
        if path.is_dir() {
            parquet_files(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|extension| extension == "parquet")
        {
            out.push(path);
        }
    }
    Ok(())
}

pub fn run(args: VerifyDataArgs) -> Result<bool> {
    check_store(&args.store, &args.trust.load()?)
}

/// Checks every block of `store` and prints a line for each; true when all verified.
pub fn check_store(store: &Path, anchors: &ProofAnchors) -> Result<bool> {
    let files = block_files(store)?;
    let mut good = 0usize;
    for file in &files {
        let name = file
            .strip_prefix(store)
            .unwrap_or(file)
            .display()
            .to_string();
        match verify_block(store, file, anchors) {
            Ok(line) => {
                good += 1;
                println!("{name}: ok {line}");
            }
            Err(error) => println!("{name}: FAIL {error:#}"),
        }
    }
    println!("{good} of {} blocks verified", files.len());
    let aside = aside_files(store)?;
    if !aside.is_empty() {
        println!(
            "{} proofs or blocks the recorder kept aside (not used): {}",
            aside.len(),
            aside.join(", ")
        );
    }
    Ok(good == files.len() && !files.is_empty())
}

/// What the recorder kept aside, relative to the store.
fn aside_files(store: &Path) -> Result<Vec<String>> {
    let root = store.join(edgeward_platform::store::ASIDE);
    if !root.is_dir() {
        return Ok(Vec::new());
    }
    let mut stack = vec![root];
    let mut found = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_none_or(|extension| extension != "reason")
            {
                found.push(
                    path.strip_prefix(store)
                        .unwrap_or(&path)
                        .display()
                        .to_string(),
                );
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Verifies one block file of `store` against its proofs there: a summary line, or why not.
pub fn verify_block(store: &Path, file: &Path, anchors: &ProofAnchors) -> Result<String> {
    let measurements = store.join("data/measurements");
    let samples = edgeward_platform::parquet_block::decode_block(std::fs::read(file)?)
        .context("not a block file")?;
    let mut hasher = BlockHasher::new();
    for sample in &samples {
        hasher.push(sample);
    }
    let closed = hasher.finish().context("the block has no samples")?;
    let hex = closed.digest.hex_upper();
    // data/measurements/<location>/<device>/<point>/<file>: the device level must be the signer.
    let device = file
        .strip_prefix(&measurements)
        .ok()
        .and_then(|relative| relative.iter().nth(1))
        .and_then(|device| device.to_str())
        .context("the file is not under <location>/<device>/<point>")?;
    let tsr = store.join(edgeward_platform::store::token_path(&closed.digest.0));
    let tsr =
        std::fs::read(&tsr).with_context(|| format!("no time-stamp token for digest {hex}"))?;
    let p7s = store.join(edgeward_platform::store::signature_path(&closed.digest.0));
    let p7s =
        std::fs::read(&p7s).with_context(|| format!("no device signature for digest {hex}"))?;
    let verified = verify_proofs(&closed.digest.0, &tsr, &p7s, anchors, device)
        .with_context(|| format!("the proofs for {hex}"))?;
    Ok(format!(
        "samples={} digest={hex} tsa_time={} device={device}",
        samples.len(),
        verified.timestamp.gen_time
    ))
}
