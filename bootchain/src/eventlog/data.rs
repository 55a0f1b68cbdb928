//! The structures inside event data that a reader of the log wants to see: UEFI variables,
//! image loads, tagged events and action strings (TCG PC Client PFP §10.4, UEFI 2.x).

use super::parse::{Event, EventType};

/// A UEFI GUID as it is stored: little-endian first three fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

/// `UEFI_VARIABLE_DATA`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UefiVariable {
    pub vendor: Guid,
    pub name: String,
    pub data: Vec<u8>,
}

/// One entry of an `EFI_SIGNATURE_LIST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    /// `EFI_CERT_X509_GUID`, `EFI_CERT_SHA256_GUID`, …
    pub kind: Guid,
    pub owner: Guid,
    /// A DER certificate or a hash, as `kind` says.
    pub data: Vec<u8>,
}

/// The GUID of X.509 certificate entries.
pub const EFI_CERT_X509: Guid = Guid([
    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72,
]);
/// The GUID of SHA-256 hash entries.
pub const EFI_CERT_SHA256: Guid = Guid([
    0x26, 0x16, 0xc4, 0xc1, 0x4c, 0x50, 0x92, 0x40, 0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28,
]);

/// Parses a sequence of `EFI_SIGNATURE_LIST`s (the value of PK, KEK, db, dbx) into its entries.
/// `None` when the lists are malformed.
pub fn signature_lists(mut data: &[u8]) -> Option<Vec<SignatureEntry>> {
    let u32_at = |bytes: &[u8], offset: usize| -> Option<u32> {
        Some(u32::from_le_bytes(
            bytes.get(offset..offset + 4)?.try_into().ok()?,
        ))
    };
    let mut entries = Vec::new();
    while !data.is_empty() {
        let kind = Guid(data.get(..16)?.try_into().ok()?);
        let list_size = u32_at(data, 16)? as usize;
        let header_size = u32_at(data, 20)? as usize;
        let signature_size = u32_at(data, 24)? as usize;
        if signature_size < 16 || list_size < 28 {
            return None;
        }
        let list = data.get(..list_size)?;
        let body = list.get(28usize.checked_add(header_size)?..)?;
        if body.len() % signature_size != 0 {
            return None;
        }
        for signature in body.chunks_exact(signature_size) {
            entries.push(SignatureEntry {
                kind,
                owner: Guid(signature[..16].try_into().ok()?),
                data: signature[16..].to_vec(),
            });
        }
        data = &data[list_size..];
    }
    Some(entries)
}

/// What an event's data says, as far as it has a known structure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventData {
    Variable(UefiVariable),
    /// `UEFI_IMAGE_LOAD_EVENT`: where an image was loaded; the digest is its Authenticode hash.
    ImageLoad {
        address: u64,
        length: u64,
        link_address: u64,
        device_path: Vec<u8>,
    },
    /// `TCG_PCClientTaggedEvent`.
    Tagged {
        tag: u32,
        data: Vec<u8>,
    },
    /// Printable text (actions, EV_IPL descriptions, firmware versions).
    Text(String),
    Separator(Vec<u8>),
    /// Anything else, or data that does not parse as its type says.
    Raw(Vec<u8>),
}

fn u64_at(data: &[u8], offset: usize) -> Option<u64> {
    let bytes: [u8; 8] = data.get(offset..offset + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

fn variable(data: &[u8]) -> Option<UefiVariable> {
    let vendor = Guid(data.get(..16)?.try_into().ok()?);
    let name_chars = usize::try_from(u64_at(data, 16)?).ok()?;
    let data_len = usize::try_from(u64_at(data, 24)?).ok()?;
    let name_end = 32usize.checked_add(name_chars.checked_mul(2)?)?;
    let name_units: Vec<u16> = data
        .get(32..name_end)?
        .chunks_exact(2)
        .map(|unit| u16::from_le_bytes([unit[0], unit[1]]))
        .collect();
    let value = data.get(name_end..name_end.checked_add(data_len)?)?;
    Some(UefiVariable {
        vendor,
        name: String::from_utf16_lossy(&name_units),
        data: value.to_vec(),
    })
}

fn text(data: &[u8]) -> Option<String> {
    // ASCII or UTF-8, maybe NUL-terminated (actions, EV_IPL descriptions).
    let narrow = data.strip_suffix(&[0]).unwrap_or(data);
    if let Ok(text) = std::str::from_utf8(narrow) {
        if !text.is_empty()
            && text
                .chars()
                .all(|c| !c.is_control() || c == '\n' || c == '\t')
        {
            return Some(text.to_owned());
        }
    }
    // UTF-16LE, maybe NUL-terminated (firmware versions). Only plain ASCII content counts:
    // binary data read as UTF-16 is otherwise "text" in some script.
    if data.len() >= 2 && data.len().is_multiple_of(2) {
        let units: Vec<u16> = data
            .chunks_exact(2)
            .map(|unit| u16::from_le_bytes([unit[0], unit[1]]))
            .collect();
        let text = String::from_utf16(&units).ok()?;
        let text = text.trim_end_matches('\0');
        if !text.is_empty() && text.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Some(text.to_owned());
        }
    }
    None
}

impl EventData {
    /// Interprets an event's data by its type; what does not parse is [`EventData::Raw`].
    pub fn of(event: &Event) -> Self {
        let data = &event.data;
        let parsed = match event.event_type {
            EventType::EFI_VARIABLE_DRIVER_CONFIG
            | EventType::EFI_VARIABLE_BOOT
            | EventType::EFI_VARIABLE_BOOT2
            | EventType::EFI_VARIABLE_AUTHORITY => variable(data).map(Self::Variable),
            EventType::EFI_BOOT_SERVICES_APPLICATION
            | EventType::EFI_BOOT_SERVICES_DRIVER
            | EventType::EFI_RUNTIME_SERVICES_DRIVER => (|| {
                let address = u64_at(data, 0)?;
                let length = u64_at(data, 8)?;
                let link_address = u64_at(data, 16)?;
                let path_len = usize::try_from(u64_at(data, 24)?).ok()?;
                let device_path = data.get(32..32usize.checked_add(path_len)?)?.to_vec();
                Some(Self::ImageLoad {
                    address,
                    length,
                    link_address,
                    device_path,
                })
            })(),
            EventType::EVENT_TAG => (|| {
                let tag = u32::from_le_bytes(data.get(..4)?.try_into().ok()?);
                let size = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?) as usize;
                Some(Self::Tagged {
                    tag,
                    data: data.get(8..8usize.checked_add(size)?)?.to_vec(),
                })
            })(),
            EventType::SEPARATOR => Some(Self::Separator(data.clone())),
            _ => text(data).map(Self::Text),
        };
        parsed.unwrap_or_else(|| Self::Raw(data.clone()))
    }

    /// A one-line description for `edgeward eventlog show`.
    pub fn describe(&self) -> String {
        match self {
            Self::Variable(variable) => {
                let mut line = format!(
                    "{}:{} ({} bytes)",
                    variable.vendor,
                    variable.name,
                    variable.data.len()
                );
                let is_list = ["PK", "KEK", "db", "dbx"].contains(&variable.name.as_str());
                if let Some(entries) = signature_lists(&variable.data).filter(|_| is_list) {
                    let kinds: Vec<String> = entries
                        .iter()
                        .map(|entry| match entry.kind {
                            EFI_CERT_X509 => format!("x509 {} bytes", entry.data.len()),
                            EFI_CERT_SHA256 => format!("sha256 {}", hex::encode(&entry.data)),
                            other => format!("{other} {} bytes", entry.data.len()),
                        })
                        .collect();
                    line.push_str(&format!(" [{}]", kinds.join("; ")));
                }
                line
            }
            Self::ImageLoad {
                address, length, ..
            } => format!("image at {address:#x}, {length} bytes"),
            Self::Tagged { tag, data } => match text(data) {
                Some(text) => format!("tag {tag:#010x} {text:?}"),
                None => format!("tag {tag:#010x} ({} bytes)", data.len()),
            },
            Self::Text(text) => format!("{text:?}"),
            Self::Separator(data) => format!("separator {}", hex::encode(data)),
            Self::Raw(data) if data.len() <= 32 => hex::encode(data),
            Self::Raw(data) => format!("{}… ({} bytes)", hex::encode(&data[..32]), data.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_signature_lists_and_refuses_malformed_ones() {
        let mut list = EFI_CERT_SHA256.0.to_vec();
        list.extend_from_slice(&(28u32 + 48).to_le_bytes());
        list.extend_from_slice(&0u32.to_le_bytes());
        list.extend_from_slice(&48u32.to_le_bytes());
        list.extend_from_slice(&[7; 16]);
        list.extend_from_slice(&[9; 32]);
        let entries = signature_lists(&list).expect("well formed");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].kind, EFI_CERT_SHA256);
        assert_eq!(entries[0].data, vec![9; 32]);
        assert_eq!(
            EFI_CERT_X509.to_string(),
            "a5c059a1-94e4-4aa7-87b5-ab155c2bf072"
        );
        assert!(signature_lists(&list[..40]).is_none());
    }
}
