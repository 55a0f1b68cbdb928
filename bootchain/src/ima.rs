//! The kernel's IMA measurement list (`/sys/kernel/security/ima/binary_runtime_measurements`)
//! and what it extends into the SHA-256 PCRs.
//!
//! IMA measures into PCR 10 after the firmware log ends, so the firmware log never explains
//! PCR 10; this list does. The image sets no IMA policy; Debian's kernel under Secure Boot
//! applies its architecture policy, so the list holds the `boot_aggregate` and an entry for
//! every kernel module loaded. Each entry in the binary list is, in the kernel's byte order (x86 is
//! little-endian, and that is the only order read here): the PCR (u32), the template's SHA-1
//! digest (20 bytes, all zero for a violation), the template name's length (u32) and the name,
//! then for every template but the legacy `ima` one the template data's length (u32) and the
//! data, itself a sequence of fields each written as u32 length and bytes.
//!
//! For the SHA-256 bank, Linux (5.x and later, `ima_calc_field_array_hash`) extends SHA-256
//! over the template data as listed (every field's length and bytes), and all `0xff` bytes for
//! a violation. The legacy `ima` template hashes its fields without lengths and its list has no
//! data length; it is refused rather than guessed.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

/// Longest template name accepted: the kernel's own limit (`IMA_TEMPLATE_NAME_LEN_MAX`).
const MAX_NAME: usize = 15;
/// Longest template data accepted in one entry; the kernel caps a file name at PATH_MAX and a
/// signature or buffer field far below this.
const MAX_DATA: usize = 1 << 20;

/// Why a measurement list was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImaError {
    #[error("the IMA list ends inside entry {entry} ({what})")]
    Truncated { entry: usize, what: &'static str },
    #[error("IMA entry {entry} names PCR {pcr}, outside 0-23")]
    Pcr { entry: usize, pcr: u32 },
    #[error("IMA entry {entry} has a template name of {length} bytes (at most {MAX_NAME})")]
    NameLength { entry: usize, length: u32 },
    #[error("IMA entry {entry} has {length} bytes of template data (at most {MAX_DATA})")]
    DataLength { entry: usize, length: u32 },
    #[error(
        "IMA entry {entry} uses the legacy \"ima\" template, which this reader does not replay"
    )]
    LegacyTemplate { entry: usize },
    #[error("IMA entry {entry}'s template name is not text")]
    Name { entry: usize },
}

/// One measurement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImaEntry {
    pub pcr: u32,
    /// The SHA-1 template digest as listed; all zero marks a violation.
    pub sha1: [u8; 20],
    /// `ima-ng`, `ima-sig`, `ima-buf`, …
    pub template: String,
    /// The template data: its fields, each as u32 length and bytes.
    pub data: Vec<u8>,
}

impl ImaEntry {
    /// A violation: a file measured while open for writing (or the reverse).
    pub fn is_violation(&self) -> bool {
        self.sha1 == [0; 20]
    }

    /// What this entry extends into its SHA-256 PCR.
    pub fn sha256_extend(&self) -> [u8; 32] {
        if self.is_violation() {
            [0xff; 32]
        } else {
            Sha256::digest(&self.data).into()
        }
    }

    /// The name in the entry's file-name field (`n-ng`, the second field of `ima-ng`, `ima-sig`
    /// and `ima-buf`): `boot_aggregate` for the first entry.
    pub fn name(&self) -> Option<&str> {
        let mut fields = Fields(&self.data);
        fields.next()?;
        let name = fields.next()?;
        std::str::from_utf8(name.strip_suffix(&[0]).unwrap_or(name)).ok()
    }
}

/// The fields of template data: u32 length, bytes.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (length, rest) = self.0.split_first_chunk::<4>()?;
        let length = u32::from_le_bytes(*length) as usize;
        let field = rest.get(..length)?;
        self.0 = &rest[length..];
        Some(field)
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    entry: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize, what: &'static str) -> Result<&'a [u8], ImaError> {
        if self.bytes.len() < count {
            return Err(ImaError::Truncated {
                entry: self.entry,
                what,
            });
        }
        let (taken, rest) = self.bytes.split_at(count);
        self.bytes = rest;
        Ok(taken)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, ImaError> {
        let bytes = self.take(4, what)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

/// Parses a binary measurement list.
pub fn parse(bytes: &[u8]) -> Result<Vec<ImaEntry>, ImaError> {
    let mut reader = Reader { bytes, entry: 0 };
    let mut entries = Vec::new();
    while !reader.bytes.is_empty() {
        let entry = reader.entry;
        let pcr = reader.u32("PCR")?;
        if pcr > 23 {
            return Err(ImaError::Pcr { entry, pcr });
        }
        let mut sha1 = [0u8; 20];
        sha1.copy_from_slice(reader.take(20, "template digest")?);
        let name_length = reader.u32("template name length")?;
        if name_length as usize > MAX_NAME {
            return Err(ImaError::NameLength {
                entry,
                length: name_length,
            });
        }
        let template = std::str::from_utf8(reader.take(name_length as usize, "template name")?)
            .map_err(|_| ImaError::Name { entry })?
            .to_owned();
        if template == "ima" {
            return Err(ImaError::LegacyTemplate { entry });
        }
        let data_length = reader.u32("template data length")?;
        if data_length as usize > MAX_DATA {
            return Err(ImaError::DataLength {
                entry,
                length: data_length,
            });
        }
        let data = reader.take(data_length as usize, "template data")?.to_vec();
        entries.push(ImaEntry {
            pcr,
            sha1,
            template,
            data,
        });
        reader.entry += 1;
    }
    Ok(entries)
}

/// The SHA-256 PCRs the list produces from zero, by index (only those it extends).
pub fn replay_sha256(entries: &[ImaEntry]) -> BTreeMap<u32, [u8; 32]> {
    let mut pcrs: BTreeMap<u32, [u8; 32]> = BTreeMap::new();
    for entry in entries {
        let pcr = pcrs.entry(entry.pcr).or_insert([0; 32]);
        let mut hasher = Sha256::new();
        hasher.update(*pcr);
        hasher.update(entry.sha256_extend());
        *pcr = hasher.finalize().into();
    }
    pcrs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(bytes: &[u8]) -> Vec<u8> {
        let mut out = (bytes.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(bytes);
        out
    }

    /// An entry as the kernel lists it, with `data` as template data.
    fn listed(pcr: u32, sha1: [u8; 20], template: &str, data: &[u8]) -> Vec<u8> {
        let mut out = pcr.to_le_bytes().to_vec();
        out.extend_from_slice(&sha1);
        out.extend_from_slice(&field(template.as_bytes()));
        out.extend_from_slice(&field(data));
        out
    }

    fn boot_aggregate_data() -> Vec<u8> {
        let mut digest = b"sha256:\0".to_vec();
        digest.extend_from_slice(&[0x5a; 32]);
        [field(&digest), field(b"boot_aggregate\0")].concat()
    }

    #[test]
    fn the_boot_aggregate_replays_as_sha256_of_its_template_data() {
        let data = boot_aggregate_data();
        let list = listed(10, [1; 20], "ima-ng", &data);
        let entries = parse(&list).expect("parses");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].name(), Some("boot_aggregate"));
        let replayed = replay_sha256(&entries);
        let expected: [u8; 32] =
            Sha256::digest([[0u8; 32].as_slice(), &Sha256::digest(&data)].concat()).into();
        assert_eq!(replayed.get(&10), Some(&expected));
        assert_eq!(replayed.len(), 1, "only PCR 10 is extended");
    }

    #[test]
    fn a_violation_extends_all_ones() {
        let list = listed(10, [0; 20], "ima-ng", &boot_aggregate_data());
        let entries = parse(&list).expect("parses");
        assert!(entries[0].is_violation());
        let expected: [u8; 32] = Sha256::digest([[0u8; 32], [0xff; 32]].concat()).into();
        assert_eq!(replay_sha256(&entries).get(&10), Some(&expected));
    }

    #[test]
    fn damaged_lists_are_refused_with_the_entry_named() {
        let good = listed(10, [1; 20], "ima-ng", &boot_aggregate_data());
        let two = [good.clone(), good.clone()].concat();
        assert_eq!(
            parse(&two[..two.len() - 3]),
            Err(ImaError::Truncated {
                entry: 1,
                what: "template data"
            })
        );
        assert_eq!(
            parse(&listed(24, [1; 20], "ima-ng", b"")),
            Err(ImaError::Pcr { entry: 0, pcr: 24 })
        );
        assert_eq!(
            parse(&listed(10, [1; 20], "ima", b"")),
            Err(ImaError::LegacyTemplate { entry: 0 })
        );
        let mut huge = listed(10, [1; 20], "ima-ng", b"");
        let at = huge.len() - 4;
        huge[at..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(parse(&huge), Err(ImaError::DataLength { .. })));
        assert_eq!(parse(&[]), Ok(Vec::new()));
    }
}
