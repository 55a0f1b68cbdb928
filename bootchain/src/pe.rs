//! Just enough of the PE/COFF format to predict what firmware and systemd-stub measure: the
//! section table (to read a UKI's `.linux`, `.cmdline`, … as the stub hashes them) and the
//! Authenticode digest (what OVMF extends into PCR 4 for an image it starts).
//!
//! Written here because the digest must follow edk2's exact byte ranges (including data after
//! the last section, as sbsign's 8-byte padding leaves it), and the crates that compute it either
//! cannot read the section data we also need or pull in a full PE toolkit.

use sha2::{Digest as _, Sha256};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeError {
    #[error("not a PE image: {0}")]
    NotPe(&'static str),
    #[error("PE structure points outside the file: {0}")]
    OutOfBounds(&'static str),
    #[error("the certificate table does not sit at the end of the file")]
    CertificateTableNotAtEnd,
    #[error("section {0} is larger in memory than in the file, which no measured UKI section is")]
    SectionLargerThanData(String),
}

/// One section header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub virtual_size: u32,
    pub virtual_address: u32,
    pub raw_size: u32,
    pub raw_offset: u32,
}

/// A parsed PE image over its bytes.
#[derive(Debug)]
pub struct PeImage<'a> {
    bytes: &'a [u8],
    pub sections: Vec<Section>,
    checksum_offset: usize,
    certificate_entry_offset: usize,
    size_of_headers: usize,
    /// (file offset, size) of the certificate table, if the image is signed.
    certificate_table: Option<(usize, usize)>,
}

fn u16_at(bytes: &[u8], offset: usize, what: &'static str) -> Result<u16, PeError> {
    let slice = bytes
        .get(offset..offset + 2)
        .ok_or(PeError::OutOfBounds(what))?;
    Ok(u16::from_le_bytes([slice[0], slice[1]]))
}

fn u32_at(bytes: &[u8], offset: usize, what: &'static str) -> Result<u32, PeError> {
    let slice = bytes
        .get(offset..offset + 4)
        .ok_or(PeError::OutOfBounds(what))?;
    Ok(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

impl<'a> PeImage<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, PeError> {
        if bytes.get(..2) != Some(b"MZ") {
            return Err(PeError::NotPe("no MZ header"));
        }
        let pe = u32_at(bytes, 0x3C, "e_lfanew")? as usize;
        if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
            return Err(PeError::NotPe("no PE signature"));
        }
        let coff = pe + 4;
        let section_count = usize::from(u16_at(bytes, coff + 2, "NumberOfSections")?);
        let optional_size = usize::from(u16_at(bytes, coff + 16, "SizeOfOptionalHeader")?);
        let optional = coff + 20;
        let magic = u16_at(bytes, optional, "optional header magic")?;
        // PE32 keeps BaseOfData, PE32+ has a 64-bit ImageBase: the data directories move.
        let (directories, pe32_plus) = match magic {
            0x10B => (optional + 96, false),
            0x20B => (optional + 112, true),
            _ => return Err(PeError::NotPe("unknown optional header magic")),
        };
        let _ = pe32_plus;
        let checksum_offset = optional + 64;
        let size_of_headers = u32_at(bytes, optional + 60, "SizeOfHeaders")? as usize;
        let directory_count = u32_at(bytes, directories - 4, "NumberOfRvaAndSizes")? as usize;
        let certificate_entry_offset = directories + 4 * 8;
        let certificate_table = if directory_count > 4 {
            let offset = u32_at(bytes, certificate_entry_offset, "certificate table")? as usize;
            let size = u32_at(bytes, certificate_entry_offset + 4, "certificate table")? as usize;
            (size > 0).then_some((offset, size))
        } else {
            None
        };
        if let Some((offset, size)) = certificate_table {
            if offset.checked_add(size) != Some(bytes.len()) {
                return Err(PeError::CertificateTableNotAtEnd);
            }
        }
        let table = optional + optional_size;
        let mut sections = Vec::with_capacity(section_count);
        for index in 0..section_count {
            let header = table + index * 40;
            let raw_name = bytes
                .get(header..header + 8)
                .ok_or(PeError::OutOfBounds("section table"))?;
            let name_len = raw_name.iter().position(|byte| *byte == 0).unwrap_or(8);
            sections.push(Section {
                name: String::from_utf8_lossy(&raw_name[..name_len]).into_owned(),
                virtual_size: u32_at(bytes, header + 8, "section table")?,
                virtual_address: u32_at(bytes, header + 12, "section table")?,
                raw_size: u32_at(bytes, header + 16, "section table")?,
                raw_offset: u32_at(bytes, header + 20, "section table")?,
            });
        }
        if size_of_headers > bytes.len() || certificate_entry_offset + 8 > size_of_headers {
            return Err(PeError::OutOfBounds("SizeOfHeaders"));
        }
        Ok(Self {
            bytes,
            sections,
            checksum_offset,
            certificate_entry_offset,
            size_of_headers,
            certificate_table,
        })
    }

    /// A section's contents as loaded: its first VirtualSize bytes, which is what systemd-stub
    /// hashes. Sections whose VirtualSize exceeds their file data are refused: the build never
    /// makes one, and zero-filling an attacker's VirtualSize would allocate up to 4 GiB.
    pub fn section(&self, name: &str) -> Option<Result<&'a [u8], PeError>> {
        let section = self.sections.iter().find(|section| section.name == name)?;
        if section.virtual_size > section.raw_size {
            return Some(Err(PeError::SectionLargerThanData(section.name.clone())));
        }
        let start = section.raw_offset as usize;
        let bytes: &'a [u8] = self.bytes;
        Some(
            start
                .checked_add(section.virtual_size as usize)
                .and_then(|end| bytes.get(start..end))
                .ok_or(PeError::OutOfBounds("section data")),
        )
    }

    /// The Authenticode SHA-256 digest, over the ranges edk2 hashes: the headers without the
    /// checksum and the certificate-table entry, the sections in file order, then anything after
    /// them except the certificate table.
    pub fn authenticode_sha256(&self) -> Result<[u8; 32], PeError> {
        let bytes = self.bytes;
        let mut hasher = Sha256::new();
        hasher.update(&bytes[..self.checksum_offset]);
        hasher.update(&bytes[self.checksum_offset + 4..self.certificate_entry_offset]);
        hasher.update(&bytes[self.certificate_entry_offset + 8..self.size_of_headers]);
        let mut sections: Vec<&Section> = self
            .sections
            .iter()
            .filter(|section| section.raw_size > 0)
            .collect();
        sections.sort_by_key(|section| section.raw_offset);
        let mut hashed_end = self.size_of_headers;
        for section in sections {
            let start = section.raw_offset as usize;
            let end = start
                .checked_add(section.raw_size as usize)
                .ok_or(PeError::OutOfBounds("section data"))?;
            hasher.update(
                bytes
                    .get(start..end)
                    .ok_or(PeError::OutOfBounds("section data"))?,
            );
            hashed_end = hashed_end.max(end);
        }
        let end = self
            .certificate_table
            .map_or(bytes.len(), |(offset, _)| offset);
        if end > hashed_end {
            hasher.update(&bytes[hashed_end..end]);
        }
        Ok(hasher.finalize().into())
    }
}
