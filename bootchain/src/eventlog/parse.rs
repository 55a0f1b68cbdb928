//! The record layouts (TCG PC Client PFP §10.2, go-attestation `attest/eventlog.go` as a second
//! reading).

use super::EventLogError;

/// A PCR index, 0–23.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PcrIndex(u32);

impl PcrIndex {
    pub const MAX: u32 = 23;

    pub fn new(index: u32) -> Option<Self> {
        (index <= Self::MAX).then_some(Self(index))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for PcrIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A TPM hash algorithm (TPM_ALG_ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgorithm {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
    Sm3_256,
    Other(u16),
}

impl HashAlgorithm {
    pub fn from_id(id: u16) -> Self {
        match id {
            0x0004 => Self::Sha1,
            0x000B => Self::Sha256,
            0x000C => Self::Sha384,
            0x000D => Self::Sha512,
            0x0012 => Self::Sm3_256,
            other => Self::Other(other),
        }
    }

    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3_256 => 0x0012,
            Self::Other(id) => id,
        }
    }

    /// The bank's name as tpm2-tools and our JSON write it.
    pub fn name(self) -> String {
        match self {
            Self::Sha1 => "sha1".into(),
            Self::Sha256 => "sha256".into(),
            Self::Sha384 => "sha384".into(),
            Self::Sha512 => "sha512".into(),
            Self::Sm3_256 => "sm3_256".into(),
            Self::Other(id) => format!("alg_{id:#06x}"),
        }
    }
}

/// One digest of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub algorithm: HashAlgorithm,
    pub bytes: Vec<u8>,
}

/// An event type (TCG PC Client PFP Table 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType(pub u32);

impl EventType {
    pub const PREBOOT_CERT: Self = Self(0x0);
    pub const POST_CODE: Self = Self(0x1);
    pub const NO_ACTION: Self = Self(0x3);
    pub const SEPARATOR: Self = Self(0x4);
    pub const ACTION: Self = Self(0x5);
    pub const EVENT_TAG: Self = Self(0x6);
    pub const S_CRTM_CONTENTS: Self = Self(0x7);
    pub const S_CRTM_VERSION: Self = Self(0x8);
    pub const CPU_MICROCODE: Self = Self(0x9);
    pub const PLATFORM_CONFIG_FLAGS: Self = Self(0xA);
    pub const TABLE_OF_DEVICES: Self = Self(0xB);
    pub const COMPACT_HASH: Self = Self(0xC);
    pub const IPL: Self = Self(0xD);
    pub const IPL_PARTITION_DATA: Self = Self(0xE);
    pub const NONHOST_CODE: Self = Self(0xF);
    pub const NONHOST_CONFIG: Self = Self(0x10);
    pub const NONHOST_INFO: Self = Self(0x11);
    pub const OMIT_BOOT_DEVICE_EVENTS: Self = Self(0x12);
    pub const EFI_VARIABLE_DRIVER_CONFIG: Self = Self(0x8000_0001);
    pub const EFI_VARIABLE_BOOT: Self = Self(0x8000_0002);
    pub const EFI_BOOT_SERVICES_APPLICATION: Self = Self(0x8000_0003);
    pub const EFI_BOOT_SERVICES_DRIVER: Self = Self(0x8000_0004);
    pub const EFI_RUNTIME_SERVICES_DRIVER: Self = Self(0x8000_0005);
    pub const EFI_GPT_EVENT: Self = Self(0x8000_0006);
    pub const EFI_ACTION: Self = Self(0x8000_0007);
    pub const EFI_PLATFORM_FIRMWARE_BLOB: Self = Self(0x8000_0008);
    pub const EFI_HANDOFF_TABLES: Self = Self(0x8000_0009);
    pub const EFI_PLATFORM_FIRMWARE_BLOB2: Self = Self(0x8000_000A);
    pub const EFI_HANDOFF_TABLES2: Self = Self(0x8000_000B);
    pub const EFI_VARIABLE_BOOT2: Self = Self(0x8000_000C);
    pub const EFI_HCRTM_EVENT: Self = Self(0x8000_0010);
    pub const EFI_VARIABLE_AUTHORITY: Self = Self(0x8000_00E0);
    pub const EFI_SPDM_FIRMWARE_BLOB: Self = Self(0x8000_00E1);
    pub const EFI_SPDM_FIRMWARE_CONFIG: Self = Self(0x8000_00E2);

    pub fn name(self) -> String {
        let name = match self {
            Self::PREBOOT_CERT => "EV_PREBOOT_CERT",
            Self::POST_CODE => "EV_POST_CODE",
            Self::NO_ACTION => "EV_NO_ACTION",
            Self::SEPARATOR => "EV_SEPARATOR",
            Self::ACTION => "EV_ACTION",
            Self::EVENT_TAG => "EV_EVENT_TAG",
            Self::S_CRTM_CONTENTS => "EV_S_CRTM_CONTENTS",
            Self::S_CRTM_VERSION => "EV_S_CRTM_VERSION",
            Self::CPU_MICROCODE => "EV_CPU_MICROCODE",
            Self::PLATFORM_CONFIG_FLAGS => "EV_PLATFORM_CONFIG_FLAGS",
            Self::TABLE_OF_DEVICES => "EV_TABLE_OF_DEVICES",
            Self::COMPACT_HASH => "EV_COMPACT_HASH",
            Self::IPL => "EV_IPL",
            Self::IPL_PARTITION_DATA => "EV_IPL_PARTITION_DATA",
            Self::NONHOST_CODE => "EV_NONHOST_CODE",
            Self::NONHOST_CONFIG => "EV_NONHOST_CONFIG",
            Self::NONHOST_INFO => "EV_NONHOST_INFO",
            Self::OMIT_BOOT_DEVICE_EVENTS => "EV_OMIT_BOOT_DEVICE_EVENTS",
            Self::EFI_VARIABLE_DRIVER_CONFIG => "EV_EFI_VARIABLE_DRIVER_CONFIG",
            Self::EFI_VARIABLE_BOOT => "EV_EFI_VARIABLE_BOOT",
            Self::EFI_BOOT_SERVICES_APPLICATION => "EV_EFI_BOOT_SERVICES_APPLICATION",
            Self::EFI_BOOT_SERVICES_DRIVER => "EV_EFI_BOOT_SERVICES_DRIVER",
            Self::EFI_RUNTIME_SERVICES_DRIVER => "EV_EFI_RUNTIME_SERVICES_DRIVER",
            Self::EFI_GPT_EVENT => "EV_EFI_GPT_EVENT",
            Self::EFI_ACTION => "EV_EFI_ACTION",
            Self::EFI_PLATFORM_FIRMWARE_BLOB => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
            Self::EFI_HANDOFF_TABLES => "EV_EFI_HANDOFF_TABLES",
            Self::EFI_PLATFORM_FIRMWARE_BLOB2 => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
            Self::EFI_HANDOFF_TABLES2 => "EV_EFI_HANDOFF_TABLES2",
            Self::EFI_VARIABLE_BOOT2 => "EV_EFI_VARIABLE_BOOT2",
            Self::EFI_HCRTM_EVENT => "EV_EFI_HCRTM_EVENT",
            Self::EFI_VARIABLE_AUTHORITY => "EV_EFI_VARIABLE_AUTHORITY",
            Self::EFI_SPDM_FIRMWARE_BLOB => "EV_EFI_SPDM_FIRMWARE_BLOB",
            Self::EFI_SPDM_FIRMWARE_CONFIG => "EV_EFI_SPDM_FIRMWARE_CONFIG",
            Self(other) => return format!("EV_UNKNOWN_{other:#010x}"),
        };
        name.into()
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position in the log, 0 for the first record.
    pub index: usize,
    /// Byte offset of the record in the log.
    pub offset: usize,
    pub pcr: PcrIndex,
    pub event_type: EventType,
    pub digests: Vec<Digest>,
    pub data: Vec<u8>,
}

impl Event {
    pub fn digest(&self, algorithm: HashAlgorithm) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|digest| digest.algorithm == algorithm)
            .map(|digest| digest.bytes.as_slice())
    }
}

/// The Spec ID event (`TCG_EfiSpecIDEvent`) that opens a crypto-agile log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecId {
    pub platform_class: u32,
    pub version: (u8, u8, u8),
    pub uintn_size: u8,
    /// The banks the log carries, with their digest sizes.
    pub algorithms: Vec<(HashAlgorithm, u16)>,
    pub vendor_info: Vec<u8>,
}

/// A record with PCR index 0xFFFFFFFF: logged, never extended into any PCR. Windows appends
/// such records (in the SHA-1 layout) to crypto-agile logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmeasuredRecord {
    pub offset: usize,
    pub event_type: EventType,
    pub data: Vec<u8>,
}

/// A parsed event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventLog {
    /// `None` for a legacy log whose every record is SHA-1 `TCG_PCR_EVENT`.
    pub spec_id: Option<SpecId>,
    /// Every record after the first (for a legacy log, every record).
    pub events: Vec<Event>,
    /// Records that no PCR holds.
    pub unmeasured: Vec<UnmeasuredRecord>,
}

impl EventLog {
    /// The banks whose digests the log carries.
    pub fn algorithms(&self) -> Vec<HashAlgorithm> {
        match &self.spec_id {
            Some(spec) => spec
                .algorithms
                .iter()
                .map(|(algorithm, _)| *algorithm)
                .collect(),
            None => vec![HashAlgorithm::Sha1],
        }
    }
}

const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const SPEC_ID_SIGNATURE_LEGACY: &[u8; 16] = b"Spec ID Event00\0";

struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    event: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], EventLogError> {
        let available = self.bytes.len() - self.position;
        if count > available {
            return Err(EventLogError::Truncated {
                event: self.event,
                offset: self.position,
                needed: count,
                available,
            });
        }
        let slice = &self.bytes[self.position..self.position + count];
        self.position += count;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, EventLogError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, EventLogError> {
        let bytes = self.take(2)?;
        Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
    }

    fn u32(&mut self) -> Result<u32, EventLogError> {
        let bytes = self.take(4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn done(&self) -> bool {
        self.position >= self.bytes.len()
    }
}

fn pcr(reader: &Reader<'_>, offset: usize, index: u32) -> Result<PcrIndex, EventLogError> {
    PcrIndex::new(index).ok_or(EventLogError::PcrOutOfRange {
        event: reader.event,
        offset,
        pcr: index,
    })
}

/// Reads a record with PCR index 0xFFFFFFFF, if the next one is such, in the SHA-1 layout.
fn read_unmeasured(reader: &mut Reader<'_>) -> Result<Option<UnmeasuredRecord>, EventLogError> {
    let start = reader.position;
    if reader.bytes.get(start..start + 4) != Some(&[0xFF; 4]) {
        return Ok(None);
    }
    reader.take(4)?;
    let event_type = EventType(reader.u32()?);
    reader.take(20)?;
    let size = reader.u32()? as usize;
    let data = reader.take(size)?.to_vec();
    Ok(Some(UnmeasuredRecord {
        offset: start,
        event_type,
        data,
    }))
}

/// Reads a SHA-1-format `TCG_PCR_EVENT`.
fn read_sha1_event(reader: &mut Reader<'_>) -> Result<Event, EventLogError> {
    let offset = reader.position;
    let index = reader.u32()?;
    let event_type = EventType(reader.u32()?);
    let digest = reader.take(20)?.to_vec();
    let size = reader.u32()? as usize;
    let data = reader.take(size)?.to_vec();
    Ok(Event {
        index: reader.event,
        offset,
        pcr: pcr(reader, offset, index)?,
        event_type,
        digests: vec![Digest {
            algorithm: HashAlgorithm::Sha1,
            bytes: digest,
        }],
        data,
    })
}

/// Reads a crypto-agile `TCG_PCR_EVENT2`.
fn read_agile_event(reader: &mut Reader<'_>, spec: &SpecId) -> Result<Event, EventLogError> {
    let offset = reader.position;
    let index = reader.u32()?;
    let event_type = EventType(reader.u32()?);
    let count = reader.u32()?;
    if count as usize > spec.algorithms.len() {
        return Err(EventLogError::TooManyDigests {
            event: reader.event,
            offset,
            count,
            listed: spec.algorithms.len(),
        });
    }
    let mut digests = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = reader.u16()?;
        let algorithm = HashAlgorithm::from_id(id);
        let size = spec
            .algorithms
            .iter()
            .find(|(listed, _)| *listed == algorithm)
            .map(|(_, size)| *size)
            .ok_or(EventLogError::UnknownAlgorithm {
                event: reader.event,
                offset,
                algorithm: id,
            })?;
        digests.push(Digest {
            algorithm,
            bytes: reader.take(usize::from(size))?.to_vec(),
        });
    }
    let size = reader.u32()? as usize;
    let data = reader.take(size)?.to_vec();
    Ok(Event {
        index: reader.event,
        offset,
        pcr: pcr(reader, offset, index)?,
        event_type,
        digests,
        data,
    })
}

fn parse_spec_id(data: &[u8]) -> Result<SpecId, EventLogError> {
    let bad = |reason| EventLogError::BadSpecId { reason };
    let mut reader = Reader {
        bytes: data,
        position: 16,
        event: 0,
    };
    let platform_class = reader.u32().map_err(|_| bad("header truncated"))?;
    let minor = reader.u8().map_err(|_| bad("header truncated"))?;
    let major = reader.u8().map_err(|_| bad("header truncated"))?;
    let errata = reader.u8().map_err(|_| bad("header truncated"))?;
    let uintn_size = reader.u8().map_err(|_| bad("header truncated"))?;
    let count = reader.u32().map_err(|_| bad("header truncated"))?;
    if count == 0 {
        return Err(bad("no hash algorithm listed"));
    }
    if count as usize > (data.len() - reader.position) / 4 {
        return Err(bad("more algorithms listed than bytes for them"));
    }
    let mut algorithms = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = reader.u16().map_err(|_| bad("algorithm table truncated"))?;
        let size = reader.u16().map_err(|_| bad("algorithm table truncated"))?;
        let algorithm = HashAlgorithm::from_id(id);
        let expected = match algorithm {
            HashAlgorithm::Sha1 => Some(20),
            HashAlgorithm::Sha256 | HashAlgorithm::Sm3_256 => Some(32),
            HashAlgorithm::Sha384 => Some(48),
            HashAlgorithm::Sha512 => Some(64),
            HashAlgorithm::Other(_) => None,
        };
        if expected.is_some_and(|expected| expected != size) {
            return Err(bad(
                "a known algorithm is listed with the wrong digest size",
            ));
        }
        if algorithms.iter().any(|(listed, _)| *listed == algorithm) {
            return Err(bad("an algorithm is listed twice"));
        }
        algorithms.push((algorithm, size));
    }
    let vendor_size = reader.u8().map_err(|_| bad("vendor info size missing"))?;
    let vendor_info = reader
        .take(usize::from(vendor_size))
        .map_err(|_| bad("vendor info truncated"))?
        .to_vec();
    Ok(SpecId {
        platform_class,
        version: (major, minor, errata),
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// Parses a whole event log.
pub fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    let mut reader = Reader {
        bytes,
        position: 0,
        event: 0,
    };
    let first = read_sha1_event(&mut reader)?;
    let is_agile =
        first.event_type == EventType::NO_ACTION && first.data.starts_with(SPEC_ID_SIGNATURE);
    let mut events = Vec::new();
    let spec_id = if is_agile {
        Some(parse_spec_id(&first.data)?)
    } else {
        // A legacy SHA-1 log starts with a measurement (or the TPM 1.2 Spec ID event); a first
        // EV_NO_ACTION that is no Spec ID event means the log's beginning is missing.
        if first.event_type == EventType::NO_ACTION
            && !first.data.starts_with(SPEC_ID_SIGNATURE_LEGACY)
        {
            return Err(EventLogError::MissingSpecId);
        }
        events.push(first);
        None
    };
    let mut unmeasured = Vec::new();
    while !reader.done() {
        reader.event += 1;
        if let Some(record) = read_unmeasured(&mut reader)? {
            unmeasured.push(record);
            continue;
        }
        let event = match &spec_id {
            Some(spec) => read_agile_event(&mut reader, spec)?,
            None => read_sha1_event(&mut reader)?,
        };
        events.push(event);
    }
    Ok(EventLog {
        spec_id,
        events,
        unmeasured,
    })
}
