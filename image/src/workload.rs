//! The operator's side of workload bundles (`edgeward workload pack` and `sign`): a directory
//! becomes an erofs image with the mount points the appliance's sandbox needs, packed with its
//! dm-verity tree and manifest by `edgeward-bundle`; signing writes the signature into the file.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::Path;

use edgeward_bundle::workload::{self, WorkloadDraft};
use edgeward_bundle::{BundleError, Header, HEADER_LEN};

use crate::build::BuildError;
use crate::keys::{read_ed25519_key, KeyError};
use crate::tool::io;

/// The erofs UUID of every workload image: fixed, so that packing repeats.
const EROFS_UUID: &str = "6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2b02";

/// Where the sandbox mounts its own file systems over the read-only image: they must exist in
/// it, since nothing can be made in an erofs image once it is built.
pub const MOUNT_POINTS: [&str; 4] = ["dev", "proc", "run", "tmp"];

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Io(#[from] crate::IoError),
    #[error("{0}")]
    Input(String),
}

/// Copies `from` into `to` (files with their permission bits, directories, symbolic links as
/// they are); anything else (devices, sockets) is refused: a workload brings files, not nodes.
fn copy_tree(from: &Path, to: &Path) -> Result<(), WorkloadError> {
    use std::os::unix::fs::PermissionsExt as _;
    let context = |path: &Path| format!("cannot copy {}", path.display());
    io(context(to), std::fs::create_dir_all(to))?;
    let mut entries: Vec<_> = io(context(from), std::fs::read_dir(from))?
        .collect::<Result<_, _>>()
        .map_err(|source| crate::IoError {
            what: context(from),
            source,
        })?;
    entries.sort_by_key(std::fs::DirEntry::file_name);
    for entry in entries {
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = io(context(&source), entry.file_type())?;
        if kind.is_dir() {
            copy_tree(&source, &target)?;
        } else if kind.is_symlink() {
            let link = io(context(&source), std::fs::read_link(&source))?;
            io(context(&target), std::os::unix::fs::symlink(link, &target))?;
        } else if kind.is_file() {
            io(context(&source), std::fs::copy(&source, &target))?;
            let mode = io(context(&source), entry.metadata())?.permissions().mode() & 0o755;
            io(
                context(&target),
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)),
            )?;
        } else {
            return Err(WorkloadError::Input(format!(
                "{} is neither a file, a directory nor a link",
                source.display()
            )));
        }
    }
    Ok(())
}

/// Packs `dir` into an unsigned bundle at `out`. The command must be an executable file in
/// `dir`; `work` is a scratch directory.
pub fn pack(
    dir: &Path,
    draft: &WorkloadDraft,
    out: &Path,
    work: &Path,
) -> Result<u64, WorkloadError> {
    use std::os::unix::fs::PermissionsExt as _;
    let command = dir.join(draft.command.trim_start_matches('/'));
    let executable = std::fs::metadata(&command)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    if !executable {
        return Err(WorkloadError::Input(format!(
            "the command {} is not an executable file in {} ({} is not)",
            draft.command,
            dir.display(),
            command.display()
        )));
    }
    let tree = work.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    copy_tree(dir, &tree)?;
    for point in MOUNT_POINTS {
        io(
            format!("cannot make the mount point /{point}"),
            std::fs::create_dir_all(tree.join(point)),
        )?;
    }
    let image = crate::erofs::make(&tree, &work.join("image.erofs"), EROFS_UUID)?;
    let _ = std::fs::remove_dir_all(&tree);
    let bundle = workload::pack(draft, &image)?;
    io(
        format!("cannot write {}", out.display()),
        std::fs::write(out, &bundle),
    )?;
    Ok(bundle.len() as u64)
}

/// Signs the bundle at `path` in place with the Ed25519 key at `key` (the workload key of
/// `edgeward keys init`).
pub fn sign(path: &Path, key: &Path) -> Result<(), WorkloadError> {
    let key = read_ed25519_key(key)?;
    let context = || format!("cannot sign {}", path.display());
    let mut file = io(
        context(),
        std::fs::File::options().read(true).write(true).open(path),
    )?;
    let len = io(context(), file.metadata())?.len();
    let mut header = vec![0u8; HEADER_LEN.min(len as usize)];
    io(context(), file.read_exact(&mut header))?;
    let front_len = workload::front_len(&Header::parse(&header, len)?);
    let mut front = vec![0u8; front_len as usize];
    io(context(), file.seek(SeekFrom::Start(0)))?;
    io(context(), file.read_exact(&mut front))?;
    for (at, bytes) in workload::sign(&front, len, &key)? {
        io(context(), file.seek(SeekFrom::Start(at)))?;
        io(context(), file.write_all(&bytes))?;
    }
    io(context(), file.sync_all())?;
    Ok(())
}
