//! The appliance's root file tree as a list of entries, and its newc ("070701") cpio archive for
//! an initramfs: deterministic (entries in the order given, inode numbers counted from 1, owner
//! root, mtime 0), so the same inputs give the same bytes and therefore the same PCR 9 and PCR
//! 11. The same list becomes the verity root's erofs image (`rootfs.rs`).
//!
//! Written here because the layout is 110 bytes of ASCII hex per entry and the crates that exist
//! either stream from the filesystem (taking its timestamps and owners) or are unmaintained.

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Directory,
    File { contents: Vec<u8>, executable: bool },
    Symlink { target: String },
}

/// One archive member; `path` has no leading slash (`init`, `lib/x86_64-linux-gnu/libc.so.6`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub kind: EntryKind,
}

/// Builds an archive in memory.
#[derive(Debug, Default)]
pub struct Archive {
    entries: Vec<Entry>,
}

impl Archive {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory and, first, any parents not yet added.
    pub fn directory(&mut self, path: &str) {
        let mut prefix = String::new();
        for part in path
            .trim_matches('/')
            .split('/')
            .filter(|part| !part.is_empty())
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.entries.iter().any(|entry| entry.path == prefix) {
                self.entries.push(Entry {
                    path: prefix.clone(),
                    kind: EntryKind::Directory,
                });
            }
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((parent, _)) = path.trim_matches('/').rsplit_once('/') {
            self.directory(parent);
        }
    }

    pub fn file(&mut self, path: &str, contents: Vec<u8>, executable: bool) {
        self.parent(path);
        self.entries.push(Entry {
            path: path.trim_matches('/').to_owned(),
            kind: EntryKind::File {
                contents,
                executable,
            },
        });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.entries.push(Entry {
            path: path.trim_matches('/').to_owned(),
            kind: EntryKind::Symlink {
                target: target.to_owned(),
            },
        });
    }

    /// The entries in the order given, every parent directory before what it holds.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn contains(&self, path: &str) -> bool {
        let path = path.trim_matches('/');
        self.entries.iter().any(|entry| entry.path == path)
    }

    /// The archive bytes, ending with the `TRAILER!!!` entry.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for (index, entry) in self.entries.iter().enumerate() {
            let (mode, data): (u32, &[u8]) = match &entry.kind {
                EntryKind::Directory => (0o040_755, &[]),
                EntryKind::File {
                    contents,
                    executable,
                } => (if *executable { 0o100_755 } else { 0o100_644 }, contents),
                EntryKind::Symlink { target } => (0o120_777, target.as_bytes()),
            };
            let links = if entry.kind == EntryKind::Directory {
                2
            } else {
                1
            };
            write_entry(&mut out, index as u32 + 1, mode, links, &entry.path, data);
        }
        write_entry(&mut out, 0, 0, 1, "TRAILER!!!", &[]);
        out
    }
}

fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

fn write_entry(out: &mut Vec<u8>, inode: u32, mode: u32, links: u32, path: &str, data: &[u8]) {
    let fields = [
        inode,
        mode,
        0,
        0,
        links,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        path.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_newc_that_cpio_lists() {
        let mut archive = Archive::new();
        archive.file("init", b"#!/bin/sh\n".to_vec(), true);
        archive.file("lib/x86_64-linux-gnu/libc.so.6", vec![1, 2, 3], false);
        archive.symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld.so");
        let bytes = archive.to_bytes();
        assert_eq!(bytes, archive.to_bytes(), "deterministic");
        assert!(bytes.len().is_multiple_of(4));
        let listing = std::process::Command::new("cpio")
            .args(["-t", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child.stdin.take().expect("piped").write_all(&bytes)?;
                child.wait_with_output()
            });
        match listing {
            Ok(output) => {
                let names = String::from_utf8_lossy(&output.stdout).into_owned();
                let names: Vec<&str> = names.lines().collect();
                assert_eq!(
                    names,
                    [
                        "init",
                        "lib",
                        "lib/x86_64-linux-gnu",
                        "lib/x86_64-linux-gnu/libc.so.6",
                        "lib64",
                        "lib64/ld-linux-x86-64.so.2"
                    ]
                );
            }
            Err(error) => eprintln!("skipping the cpio cross-check: {error}"),
        }
    }
}
