//! What an ELF file needs at run time: its interpreter and the shared libraries named by its
//! DT_NEEDED entries, found the way the dynamic loader finds them; and, for kernel modules, the
//! modules named in their `.modinfo` `depends=`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use goblin::elf::Elf;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ElfError {
    #[error("cannot read {path}", path = .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not an ELF file: {reason}", path = .path.display())]
    NotElf { path: PathBuf, reason: String },
    #[error("{library} (needed by {by}) is in none of {searched}", by = .by.display())]
    LibraryNotFound {
        library: String,
        by: PathBuf,
        searched: String,
    },
}

/// The loader's default search path on Debian x86-64.
pub const LIBRARY_DIRS: [&str; 4] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib",
];

fn read(path: &Path) -> Result<Vec<u8>, ElfError> {
    std::fs::read(path).map_err(|source| ElfError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Every file `binary` needs to run (interpreter and libraries, transitively), as absolute
/// paths, sorted.
pub fn runtime_closure(binary: &Path) -> Result<BTreeSet<PathBuf>, ElfError> {
    let mut needed = BTreeSet::new();
    let mut queue = vec![binary.to_owned()];
    while let Some(path) = queue.pop() {
        let bytes = read(&path)?;
        let elf = Elf::parse(&bytes).map_err(|error| ElfError::NotElf {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        if let Some(interpreter) = elf.interpreter {
            let interpreter = PathBuf::from(interpreter);
            if needed.insert(interpreter.clone()) {
                queue.push(interpreter);
            }
        }
        for library in &elf.libraries {
            let found = LIBRARY_DIRS
                .iter()
                .map(|dir| Path::new(dir).join(library))
                .find(|candidate| candidate.is_file())
                .ok_or_else(|| ElfError::LibraryNotFound {
                    library: (*library).to_owned(),
                    by: path.clone(),
                    searched: LIBRARY_DIRS.join(", "),
                })?;
            if needed.insert(found.clone()) {
                queue.push(found);
            }
        }
    }
    Ok(needed)
}

/// The `depends=` list of a kernel module's `.modinfo` section.
pub fn module_dependencies(module: &Path) -> Result<Vec<String>, ElfError> {
    let bytes = read(module)?;
    let elf = Elf::parse(&bytes).map_err(|error| ElfError::NotElf {
        path: module.to_owned(),
        reason: error.to_string(),
    })?;
    let Some(section) = elf
        .section_headers
        .iter()
        .find(|section| elf.shdr_strtab.get_at(section.sh_name) == Some(".modinfo"))
    else {
        return Ok(Vec::new());
    };
    let start = section.sh_offset as usize;
    let end = start.saturating_add(section.sh_size as usize);
    let Some(info) = bytes.get(start..end) else {
        return Err(ElfError::NotElf {
            path: module.to_owned(),
            reason: ".modinfo lies outside the file".into(),
        });
    };
    Ok(info
        .split(|byte| *byte == 0)
        .filter_map(|entry| entry.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_loader_and_libc_of_a_system_binary() {
        let closure = runtime_closure(Path::new("/bin/ls")).expect("ls is a dynamic ELF");
        assert!(closure
            .iter()
            .any(|path| path.to_string_lossy().contains("ld-linux-x86-64")));
        assert!(closure
            .iter()
            .any(|path| path.file_name().is_some_and(|name| name == "libc.so.6")));
    }

    #[test]
    fn refuses_what_is_not_elf() {
        assert!(matches!(
            runtime_closure(Path::new("/etc/hostname")),
            Err(ElfError::NotElf { .. }) | Err(ElfError::Read { .. })
        ));
    }
}
