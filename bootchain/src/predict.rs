//! Predicts, from image artifacts alone, the SHA-256 PCR values that a device booting the image
//! under OVMF with Secure Boot on will quote. Each function cites the line of docs/boot-chain.md
//! it implements; the recipes were verified against live boots (../shared/reference/
//! measured-boot.md §1.3).

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};
use thiserror::Error;

use serde::{Deserialize, Serialize};

use crate::eventlog::EventType;
use crate::pe::{PeError, PeImage};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PredictError {
    #[error("the UKI is not a readable PE image: {0}")]
    Pe(#[from] PeError),
    #[error("the UKI has no {0} section")]
    MissingSection(&'static str),
    #[error("the .cmdline section is not UTF-8")]
    CmdlineNotUtf8,
}

/// The GUID of EFI global variables (SecureBoot, PK, KEK).
pub const EFI_GLOBAL_VARIABLE: [u8; 16] = guid(
    0x8be4df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// The GUID of the image security databases (db, dbx).
pub const EFI_IMAGE_SECURITY_DATABASE: [u8; 16] = guid(
    0xd719b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
const EFI_CERT_X509: [u8; 16] = guid(
    0xa5c059a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);
const EFI_CERT_SHA256: [u8; 16] = guid(
    0xc1c41626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// The owner virt-fw-vars gives its placeholder dbx entry.
const VIRT_FW_DBX_OWNER: [u8; 16] = guid(
    0xa0baa8a3,
    0x041d,
    0x48a8,
    [0xbc, 0x87, 0xc3, 0x6d, 0x12, 0x1b, 0x5e, 0x3d],
);

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn extend_all(digests: &[[u8; 32]]) -> [u8; 32] {
    digests.iter().fold([0u8; 32], |pcr, digest| {
        let mut hasher = Sha256::new();
        hasher.update(pcr);
        hasher.update(digest);
        hasher.finalize().into()
    })
}

/// The Secure Boot configuration enrolled into the firmware.
#[derive(Debug, Clone)]
pub struct SecureBootKeys {
    /// Owner GUID, UEFI byte layout.
    pub owner: [u8; 16],
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
}

/// `UEFI_VARIABLE_DATA`: VariableName GUID, name length in UTF-16 units, data length, name, data.
pub fn uefi_variable_data(vendor: &[u8; 16], name: &str, data: &[u8]) -> Vec<u8> {
    let name: Vec<u16> = name.encode_utf16().collect();
    let mut out = Vec::with_capacity(32 + 2 * name.len() + data.len());
    out.extend_from_slice(vendor);
    out.extend_from_slice(&(name.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for unit in name {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// `EFI_SIGNATURE_LIST` with one entry.
pub fn signature_list(kind: &[u8; 16], owner: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let signature_size = 16 + data.len() as u32;
    let mut out = Vec::with_capacity(28 + signature_size as usize);
    out.extend_from_slice(kind);
    out.extend_from_slice(&(28 + signature_size).to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&signature_size.to_le_bytes());
    out.extend_from_slice(owner);
    out.extend_from_slice(data);
    out
}

/// One event a PCR is expected to receive, in order: what the verifier compares a device's log
/// with, so that a refusal can name the first event that differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpectedEvent {
    /// The TCG event type's name (`EV_EFI_ACTION`, …).
    #[serde(rename = "type")]
    pub event_type: String,
    /// SHA-256 digest extended into the PCR, hex.
    pub digest: String,
    /// What the event measures, for people reading a refusal.
    pub what: String,
}

impl ExpectedEvent {
    fn new(event_type: EventType, digest: [u8; 32], what: impl Into<String>) -> Self {
        Self {
            event_type: event_type.name(),
            digest: hex::encode(digest),
            what: what.into(),
        }
    }
}

/// The PCR value a sequence of expected events produces.
pub fn fold(events: &[ExpectedEvent]) -> Option<[u8; 32]> {
    let digests: Vec<[u8; 32]> = events
        .iter()
        .map(|event| hex::decode(&event.digest).ok()?.try_into().ok())
        .collect::<Option<_>>()?;
    Some(extend_all(&digests))
}

/// PCR 4 (docs/boot-chain.md, "PCR 4"): the boot-option action, the separator, the signed UKI.
pub fn pcr4_events(signed_uki: &[u8]) -> Result<Vec<ExpectedEvent>, PredictError> {
    let image = PeImage::parse(signed_uki)?;
    Ok(vec![
        ExpectedEvent::new(
            EventType::EFI_ACTION,
            sha256(b"Calling EFI Application from Boot Option"),
            "boot option action",
        ),
        ExpectedEvent::new(EventType::SEPARATOR, sha256(&[0; 4]), "separator"),
        ExpectedEvent::new(
            EventType::EFI_BOOT_SERVICES_APPLICATION,
            image.authenticode_sha256()?,
            "the signed UKI (Authenticode SHA-256)",
        ),
    ])
}

/// PCR 4's value.
pub fn pcr4(signed_uki: &[u8]) -> Result<[u8; 32], PredictError> {
    let events = pcr4_events(signed_uki)?;
    Ok(fold(&events).unwrap_or_default())
}

/// PCR 7 (docs/boot-chain.md, "PCR 7"): SecureBoot, PK, KEK, db, the placeholder dbx, the
/// separator, then the db certificate that verified the UKI.
pub fn pcr7_events(keys: &SecureBootKeys) -> Vec<ExpectedEvent> {
    let x509 = |der: &[u8]| signature_list(&EFI_CERT_X509, &keys.owner, der);
    let dbx = signature_list(&EFI_CERT_SHA256, &VIRT_FW_DBX_OWNER, &sha256(b""));
    let mut authority = keys.owner.to_vec();
    authority.extend_from_slice(&keys.db);
    let config = |vendor: &[u8; 16], name: &str, data: &[u8]| {
        ExpectedEvent::new(
            EventType::EFI_VARIABLE_DRIVER_CONFIG,
            sha256(&uefi_variable_data(vendor, name, data)),
            format!("Secure Boot variable {name}"),
        )
    };
    vec![
        config(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]),
        config(&EFI_GLOBAL_VARIABLE, "PK", &x509(&keys.pk)),
        config(&EFI_GLOBAL_VARIABLE, "KEK", &x509(&keys.kek)),
        config(&EFI_IMAGE_SECURITY_DATABASE, "db", &x509(&keys.db)),
        config(&EFI_IMAGE_SECURITY_DATABASE, "dbx", &dbx),
        ExpectedEvent::new(EventType::SEPARATOR, sha256(&[0; 4]), "separator"),
        ExpectedEvent::new(
            EventType::EFI_VARIABLE_AUTHORITY,
            sha256(&uefi_variable_data(
                &EFI_IMAGE_SECURITY_DATABASE,
                "db",
                &authority,
            )),
            "the db certificate that verified the UKI",
        ),
    ]
}

/// PCR 7's value.
pub fn pcr7(keys: &SecureBootKeys) -> [u8; 32] {
    fold(&pcr7_events(keys)).unwrap_or_default()
}

/// The command line as the kernel's EFI stub measures it: control characters become spaces and
/// trailing spaces are dropped (Linux 6.1 `efi-stub-helper.c`).
pub fn mangle_cmdline(cmdline: &str) -> String {
    let spaced: String = cmdline
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.trim_end_matches(' ').to_owned()
}

/// PCR 9 (docs/boot-chain.md, "PCR 9"): the UTF-16LE command line with its NUL, then the initrd
/// when the UKI carries one (the appliance kernel's image has none: its root is a verity
/// partition, decision 0035; the kernel's EFI stub measures an initrd only when it loads one).
pub fn pcr9_events(cmdline: &str, initrd: Option<&[u8]>) -> Vec<ExpectedEvent> {
    let mangled = mangle_cmdline(cmdline);
    let mut utf16: Vec<u8> = mangled.encode_utf16().flat_map(u16::to_le_bytes).collect();
    utf16.extend_from_slice(&[0, 0]);
    let mut events = vec![ExpectedEvent::new(
        EventType::EVENT_TAG,
        sha256(&utf16),
        format!("kernel command line {mangled:?}"),
    )];
    if let Some(initrd) = initrd {
        events.push(ExpectedEvent::new(
            EventType::EVENT_TAG,
            sha256(initrd),
            "the initrd",
        ));
    }
    events
}

/// PCR 9's value.
pub fn pcr9(cmdline: &str, initrd: Option<&[u8]>) -> [u8; 32] {
    fold(&pcr9_events(cmdline, initrd)).unwrap_or_default()
}

/// The sections systemd-stub 252 measures into PCR 11, in its order.
pub const PCR11_SECTIONS: [&str; 7] = [
    ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
];

/// PCR 11 (docs/boot-chain.md, "PCR 11"): for each present section, its name with a NUL, then
/// its contents.
pub fn pcr11_events(uki: &PeImage<'_>) -> Result<Vec<ExpectedEvent>, PredictError> {
    let mut events = Vec::new();
    for name in PCR11_SECTIONS {
        let Some(contents) = uki.section(name) else {
            continue;
        };
        let contents = contents?;
        if contents.is_empty() {
            continue;
        }
        let mut label = name.as_bytes().to_vec();
        label.push(0);
        events.push(ExpectedEvent::new(
            EventType::IPL,
            sha256(&label),
            format!("UKI section name {name}"),
        ));
        events.push(ExpectedEvent::new(
            EventType::IPL,
            sha256(contents),
            format!("UKI section {name}"),
        ));
    }
    Ok(events)
}

/// PCR 11's value.
pub fn pcr11(uki: &PeImage<'_>) -> Result<[u8; 32], PredictError> {
    Ok(fold(&pcr11_events(uki)?).unwrap_or_default())
}

/// Every PCR the verifier checks, predicted from the signed UKI and the enrolled keys, as the
/// events each receives (PCR 12 and 13 receive none).
pub fn predict_events(
    signed_uki: &[u8],
    keys: &SecureBootKeys,
) -> Result<BTreeMap<u32, Vec<ExpectedEvent>>, PredictError> {
    let uki = PeImage::parse(signed_uki)?;
    let cmdline = uki
        .section(".cmdline")
        .ok_or(PredictError::MissingSection(".cmdline"))??;
    let cmdline = std::str::from_utf8(cmdline).map_err(|_| PredictError::CmdlineNotUtf8)?;
    let initrd = uki
        .section(".initrd")
        .transpose()?
        .filter(|initrd| !initrd.is_empty());
    let mut pcrs = BTreeMap::new();
    pcrs.insert(4, pcr4_events(signed_uki)?);
    pcrs.insert(7, pcr7_events(keys));
    pcrs.insert(9, pcr9_events(cmdline, initrd));
    pcrs.insert(11, pcr11_events(&uki)?);
    // systemd-stub 252 measures into PCR 12 and 13 only what comes from outside the signed UKI
    // (overriding command lines, credentials, system extensions): they must stay zero.
    pcrs.insert(12, Vec::new());
    pcrs.insert(13, Vec::new());
    Ok(pcrs)
}

/// Every PCR the verifier checks, predicted: the values of [`predict_events`] (zero for a PCR
/// without events).
pub fn predict(
    signed_uki: &[u8],
    keys: &SecureBootKeys,
) -> Result<BTreeMap<u32, [u8; 32]>, PredictError> {
    Ok(predict_events(signed_uki, keys)?
        .into_iter()
        .map(|(pcr, events)| (pcr, fold(&events).unwrap_or_default()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_mangled_as_the_kernel_stub_does() {
        assert_eq!(
            mangle_cmdline("console=ttyS0 quiet\n"),
            "console=ttyS0 quiet"
        );
        assert_eq!(mangle_cmdline("a\tb  "), "a b");
    }

    #[test]
    fn signature_lists_and_variables_have_the_uefi_layout() {
        let list = signature_list(&EFI_CERT_SHA256, &VIRT_FW_DBX_OWNER, &sha256(b""));
        assert_eq!(list.len(), 76, "the placeholder dbx is 76 bytes");
        let variable = uefi_variable_data(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
        assert_eq!(variable.len(), 16 + 8 + 8 + 20 + 1);
        assert_eq!(&variable[..4], &[0x61, 0xdf, 0xe4, 0x8b]);
    }
}
