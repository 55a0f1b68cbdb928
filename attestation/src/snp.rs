//! AMD SEV-SNP attestation reports: the 1184-byte report a guest obtains through
//! `/dev/sev-guest`, signed by the chip's VCEK, whose certificate chains to the ASK and ARK AMD
//! publishes per product (Milan, Genoa, Turin; bundled in the `sev` crate).
//!
//! The signature is checked over the report's bytes as received (SHA-384 of bytes 0x000–0x29F,
//! ECDSA P-384), not over a re-encoding of the parsed fields, and every reserved byte of the
//! signature block must be zero: so any altered byte of the report is refused. The VCEK is bound
//! to the report it signed: AMD derives a VCEK per chip and TCB, and names both in its
//! certificate (the SPL extensions 1.3.6.1.4.1.3704.1.3.x and the hardware ID 1.3.6.1.4.1.3704.1.4),
//! so its TCB must be the report's `reported_tcb` and its hardware ID the report's `chip_id`
//! (AMD's VCEK specification). The report's version, signature algorithm and VMPL are checked
//! too.

use p384::ecdsa::signature::hazmat::PrehashVerifier;
use p384::ecdsa::{Signature, VerifyingKey};
use sev::certs::snp::{builtin, ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use sev::parser::ByteParser;
use sha2::{Digest as _, Sha384};
use thiserror::Error;

/// Size of an attestation report.
pub const REPORT_LEN: usize = 0x4A0;
const SIGNED_LEN: usize = 0x2A0;

/// Why evidence could not even be examined.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SnpError {
    #[error(
        "the report is {actual} bytes; an SEV-SNP report is {REPORT_LEN} (or 2368 hex digits)"
    )]
    ReportLength { actual: usize },
    #[error("the report does not parse: {0}")]
    ReportUnreadable(String),
    #[error("the VCEK certificate does not parse: {0}")]
    VcekUnreadable(String),
    #[error("the certificate chain file does not parse: {0}")]
    ChainUnreadable(String),
    #[error(
        "this machine is not an SEV-SNP guest: {0} (only a confidential VM has /dev/sev-guest)"
    )]
    NotAGuest(String),
    #[error("the AMD secure processor refused the report request: {0}")]
    Firmware(String),
    #[error("REPORT_DATA holds at most 64 bytes, got {0}")]
    ReportData(usize),
}

/// What a guest sends the verifier: the raw report and, when the host provides it in the
/// extended report, the chip's VCEK certificate (DER), so that the verifier never needs AMD's KDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestEvidence {
    pub report: Vec<u8>,
    pub vcek: Option<Vec<u8>>,
}

/// The guest side: asks the AMD secure processor, through `/dev/sev-guest`, for a report whose
/// REPORT_DATA is `report_data` (the verifier's nonce, zero-padded to 64 bytes), at VMPL 0.
pub fn request_guest_report(report_data: &[u8]) -> Result<GuestEvidence, SnpError> {
    use sev::firmware::host::CertType;
    if report_data.len() > 64 {
        return Err(SnpError::ReportData(report_data.len()));
    }
    let mut data = [0u8; 64];
    data[..report_data.len()].copy_from_slice(report_data);
    let mut firmware = sev::firmware::guest::Firmware::open()
        .map_err(|error| SnpError::NotAGuest(format!("/dev/sev-guest: {error}")))?;
    match firmware.get_ext_report(None, Some(data), Some(0)) {
        Ok((report, certificates)) => {
            let vcek = certificates.and_then(|entries| {
                entries
                    .into_iter()
                    .find(|entry| entry.cert_type == CertType::VCEK)
                    .map(|entry| entry.data)
            });
            Ok(GuestEvidence { report, vcek })
        }
        // Hosts that keep no certificates answer the extended request with an error; the plain
        // report still proves everything once the VCEK is fetched for its chip and TCB.
        Err(_) => firmware
            .get_report(None, Some(data), Some(0))
            .map(|report| GuestEvidence { report, vcek: None })
            .map_err(|error| SnpError::Firmware(error.to_string())),
    }
}

/// A processor generation with its AMD root (ARK) and signing key (ASK).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    Milan,
    Genoa,
    Turin,
}

impl Product {
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    fn bundled(self) -> std::io::Result<ca::Chain> {
        let (ark, ask) = match self {
            Product::Milan => (builtin::milan::ark()?, builtin::milan::ask()?),
            Product::Genoa => (builtin::genoa::ark()?, builtin::genoa::ask()?),
            Product::Turin => (builtin::turin::ark()?, builtin::turin::ask()?),
        };
        Ok(ca::Chain { ark, ask })
    }
}

/// The minimum TCB (security version numbers) a report must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinimumTcb {
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl std::str::FromStr for MinimumTcb {
    type Err = String;

    /// `BOOTLOADER:TEE:SNP:MICROCODE`, e.g. `3:0:8:115`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<u8> = text
            .split(':')
            .map(|part| {
                part.parse::<u8>()
                    .map_err(|_| format!("{part:?} is not 0-255"))
            })
            .collect::<Result<_, _>>()?;
        match parts[..] {
            [bootloader, tee, snp, microcode] => Ok(Self {
                bootloader,
                tee,
                snp,
                microcode,
            }),
            _ => Err("expected BOOTLOADER:TEE:SNP:MICROCODE".into()),
        }
    }
}

/// What the verifier requires of a report beyond its signature. `None` means the check is
/// skipped, and the appraisal says so.
#[derive(Debug, Clone, Default)]
pub struct SnpPolicy {
    /// REPORT_DATA must equal this: the verifier's nonce, bound by the guest.
    pub report_data: Option<[u8; 64]>,
    /// The launch measurement of the guest image.
    pub measurement: Option<[u8; 48]>,
    pub minimum_tcb: Option<MinimumTcb>,
    /// Accept guests whose policy allows debugging (their memory is readable by the host).
    pub allow_debug: bool,
    /// The VMPL the report must come from: 0, the guest's most privileged level, unless the
    /// guest runs under a paravisor that is trusted to request it from another.
    pub vmpl: u32,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    Passed(String),
    Failed(String),
    Skipped(String),
}

/// Everything the appraisal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpAppraisal {
    /// The product whose AMD root the VCEK chains to, if any.
    pub product: Option<Product>,
    pub checks: Vec<(&'static str, Check)>,
}

impl SnpAppraisal {
    /// Whether every check passed or was explicitly skipped.
    pub fn accepted(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|(_, check)| matches!(check, Check::Failed(_)))
    }

    pub fn failures(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.checks.iter().filter_map(|(name, check)| match check {
            Check::Failed(reason) => Some((*name, reason.as_str())),
            _ => None,
        })
    }
}

/// Reads a report given as raw bytes or as hex text (whitespace ignored).
pub fn read_report(bytes: &[u8]) -> Result<Vec<u8>, SnpError> {
    if bytes.len() == REPORT_LEN {
        return Ok(bytes.to_vec());
    }
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|byte| !byte.is_ascii_whitespace())
        .collect();
    match hex::decode(&text) {
        Ok(raw) if raw.len() == REPORT_LEN => Ok(raw),
        Ok(raw) => Err(SnpError::ReportLength { actual: raw.len() }),
        Err(_) => Err(SnpError::ReportLength {
            actual: bytes.len(),
        }),
    }
}

/// The ASK and ARK of a chain file (PEM, ASK first, as AMD's KDS serves `cert_chain`).
pub fn read_chain(pem_bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), SnpError> {
    let blocks =
        pem::parse_many(pem_bytes).map_err(|error| SnpError::ChainUnreadable(error.to_string()))?;
    match &blocks[..] {
        [ask, ark] => Ok((ask.contents().to_vec(), ark.contents().to_vec())),
        other => Err(SnpError::ChainUnreadable(format!(
            "expected two certificates (ASK, ARK), found {}",
            other.len()
        ))),
    }
}

/// A 72-byte little-endian signature component as the 48-byte big-endian scalar P-384 uses;
/// `None` if its unused upper bytes are not zero.
fn scalar(component: &[u8]) -> Option<[u8; 48]> {
    if component[48..].iter().any(|byte| *byte != 0) {
        return None;
    }
    let mut out = [0u8; 48];
    for (index, byte) in component[..48].iter().enumerate() {
        out[47 - index] = *byte;
    }
    Some(out)
}

fn check_signature(raw: &[u8], vcek: &Certificate) -> Check {
    let block = &raw[SIGNED_LEN..];
    let (Some(r), Some(s)) = (scalar(&block[..72]), scalar(&block[72..144])) else {
        return Check::Failed("the signature's unused bytes are not zero".into());
    };
    if block[144..].iter().any(|byte| *byte != 0) {
        return Check::Failed("the reserved bytes after the signature are not zero".into());
    }
    let Ok(signature) = Signature::from_scalars(r, s) else {
        return Check::Failed("the signature is not a valid P-384 signature".into());
    };
    let Ok(key) = VerifyingKey::from_sec1_bytes(vcek.public_key_sec1()) else {
        return Check::Failed("the VCEK does not hold a P-384 public key".into());
    };
    let digest = Sha384::digest(&raw[..SIGNED_LEN]);
    match key.verify_prehash(&digest, &signature) {
        Ok(()) => Check::Passed("signed by the VCEK".into()),
        Err(_) => Check::Failed("the VCEK's signature does not match the report".into()),
    }
}

/// Appraises a report (1184 raw bytes) with the chip's VCEK (DER) and, optionally, the ASK and
/// ARK it was served with, against `policy`.
pub fn appraise(
    raw: &[u8],
    vcek_der: &[u8],
    chain: Option<(&[u8], &[u8])>,
    policy: &SnpPolicy,
) -> Result<SnpAppraisal, SnpError> {
    if raw.len() != REPORT_LEN {
        return Err(SnpError::ReportLength { actual: raw.len() });
    }
    let report = AttestationReport::from_bytes(raw)
        .map_err(|error| SnpError::ReportUnreadable(error.to_string()))?;
    let vcek = Certificate::from_der(vcek_der)
        .map_err(|error| SnpError::VcekUnreadable(error.to_string()))?;
    let mut checks = Vec::new();

    // The VCEK must chain to a bundled AMD root; a supplied chain may bring a newer ASK but
    // never its own root.
    let mut product = None;
    for candidate in Product::ALL {
        let Ok(bundled) = candidate.bundled() else {
            continue;
        };
        let ca = match chain {
            Some((ask, ark)) => {
                let same_root = bundled.ark.to_der().is_ok_and(|der| der == ark);
                let Ok(ask) = Certificate::from_der(ask) else {
                    continue;
                };
                if !same_root {
                    continue;
                }
                ca::Chain {
                    ark: bundled.ark,
                    ask,
                }
            }
            None => bundled,
        };
        let full = Chain {
            ca,
            vek: vcek.clone(),
        };
        if full.verify().is_ok() {
            product = Some(candidate);
            break;
        }
    }
    checks.push((
        "vcek_chain",
        match product {
            Some(product) => Check::Passed(format!("VCEK chains to AMD's {} ARK", product.name())),
            None => Check::Failed(
                "the VCEK does not chain to any bundled AMD root (Milan, Genoa, Turin)".into(),
            ),
        },
    ));
    checks.push(("signature", check_signature(raw, &vcek)));
    checks.push((
        "report_version",
        if SUPPORTED_VERSIONS.contains(&report.version) {
            Check::Passed(format!("report version {}", report.version))
        } else {
            Check::Failed(format!(
                "report version {} is not one this verifier reads ({SUPPORTED_VERSIONS:?})",
                report.version
            ))
        },
    ));
    checks.push((
        "signature_algorithm",
        if report.sig_algo == ECDSA_P384_SHA384 {
            Check::Passed("ECDSA P-384 with SHA-384".into())
        } else {
            Check::Failed(format!(
                "signature algorithm {} is not ECDSA P-384 with SHA-384 (1)",
                report.sig_algo
            ))
        },
    ));
    checks.push((
        "vmpl",
        if report.vmpl == policy.vmpl {
            Check::Passed(format!("requested at VMPL {}", report.vmpl))
        } else {
            Check::Failed(format!(
                "requested at VMPL {}, the policy requires VMPL {}",
                report.vmpl, policy.vmpl
            ))
        },
    ));
    let vcek_fields = VcekFields::read(vcek_der);
    let reported = &report.reported_tcb;
    checks.push((
        "vcek_tcb",
        match &vcek_fields {
            Ok(fields) => compare_tcb(
                fields,
                &ReportedTcb {
                    fmc: reported.fmc,
                    bootloader: reported.bootloader,
                    tee: reported.tee,
                    snp: reported.snp,
                    microcode: reported.microcode,
                },
            ),
            Err(reason) => Check::Failed(reason.clone()),
        },
    ));
    checks.push((
        "chip_id",
        match &vcek_fields {
            Ok(fields) => compare_chip(&fields.hardware_id, &report.chip_id),
            Err(reason) => Check::Failed(reason.clone()),
        },
    ));

    checks.push((
        "debug",
        if !report.policy.debug_allowed() {
            Check::Passed("guest policy forbids debugging".into())
        } else if policy.allow_debug {
            Check::Skipped("guest policy allows debugging, accepted by policy".into())
        } else {
            Check::Failed("guest policy allows debugging: the host can read its memory".into())
        },
    ));
    checks.push((
        "report_data",
        match &policy.report_data {
            Some(expected) if expected == &report.report_data => {
                Check::Passed("REPORT_DATA binds the verifier's nonce".into())
            }
            Some(expected) => Check::Failed(format!(
                "REPORT_DATA is {}, expected {}",
                hex::encode(report.report_data),
                hex::encode(expected)
            )),
            None => Check::Skipped("no nonce given: freshness not checked".into()),
        },
    ));
    checks.push((
        "measurement",
        match &policy.measurement {
            Some(expected) if expected == &report.measurement => {
                Check::Passed("launch measurement as released".into())
            }
            Some(expected) => Check::Failed(format!(
                "measurement is {}, expected {}",
                hex::encode(report.measurement),
                hex::encode(expected)
            )),
            None => Check::Skipped(format!(
                "no measurement given (the report's is {})",
                hex::encode(report.measurement)
            )),
        },
    ));
    let tcb = report.reported_tcb;
    checks.push((
        "tcb",
        match policy.minimum_tcb {
            Some(minimum) => {
                let below: Vec<String> = [
                    ("bootloader", tcb.bootloader, minimum.bootloader),
                    ("tee", tcb.tee, minimum.tee),
                    ("snp", tcb.snp, minimum.snp),
                    ("microcode", tcb.microcode, minimum.microcode),
                ]
                .iter()
                .filter(|(_, have, need)| have < need)
                .map(|(name, have, need)| format!("{name} {have} < {need}"))
                .collect();
                if below.is_empty() {
                    Check::Passed("reported TCB at or above the minimum".into())
                } else {
                    Check::Failed(format!(
                        "reported TCB below the minimum: {}",
                        below.join(", ")
                    ))
                }
            }
            None => Check::Skipped(format!(
                "no minimum TCB given (reported {}:{}:{}:{})",
                tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
            )),
        },
    ));
    Ok(SnpAppraisal { product, checks })
}

/// The report versions this verifier reads (SNP ABI 1.51 to 1.58).
pub const SUPPORTED_VERSIONS: [u32; 4] = [2, 3, 4, 5];
/// SIGNATURE_ALGO: ECDSA P-384 with SHA-384.
const ECDSA_P384_SHA384: u32 = 1;

/// What AMD's VCEK certificate says of the chip and TCB it was derived for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcekFields {
    /// The firmware SPLs: FMC (Turin and later), bootloader, TEE, SNP, microcode.
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
    /// hwID: the chip ID (64 bytes up to Genoa, 8 from Turin).
    pub hardware_id: Vec<u8>,
}

/// The report's `reported_tcb`, as the VCEK must name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportedTcb {
    pub fmc: Option<u8>,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

const AMD_SPL: &str = "1.3.6.1.4.1.3704.1.3.";
const AMD_HWID: &str = "1.3.6.1.4.1.3704.1.4";

/// A DER INTEGER 0-255, as the SPL extensions hold their value.
fn small_integer(bytes: &[u8]) -> Option<u8> {
    match bytes {
        [0x02, 0x01, value] if *value < 0x80 => Some(*value),
        [0x02, 0x02, 0x00, value] if *value >= 0x80 => Some(*value),
        _ => None,
    }
}

impl VcekFields {
    /// Reads the SPL and hardware-ID extensions of a VCEK certificate (DER). Every one of
    /// bootloader, TEE, SNP and microcode must be there, and the hardware ID.
    pub fn read(vcek_der: &[u8]) -> Result<Self, String> {
        use x509_parser::prelude::FromDer as _;
        let (_, certificate) = x509_parser::certificate::X509Certificate::from_der(vcek_der)
            .map_err(|error| format!("the VCEK does not parse: {error}"))?;
        let mut spl = [None; 10];
        let mut hardware_id = None;
        for extension in certificate.extensions() {
            let oid = extension.oid.to_id_string();
            if oid == AMD_HWID {
                hardware_id = Some(extension.value.to_vec());
            } else if let Some(index) = oid
                .strip_prefix(AMD_SPL)
                .and_then(|index| index.parse::<usize>().ok())
                .filter(|index| *index < spl.len())
            {
                spl[index] = Some(small_integer(extension.value).ok_or_else(|| {
                    format!("the VCEK's SPL extension {oid} is not a small integer")
                })?);
            }
        }
        let need = |index: usize, name: &str| {
            spl[index].ok_or_else(|| format!("the VCEK names no {name} SPL ({AMD_SPL}{index})"))
        };
        Ok(Self {
            fmc: spl[9],
            bootloader: need(1, "bootloader")?,
            tee: need(2, "TEE")?,
            snp: need(3, "SNP")?,
            microcode: need(8, "microcode")?,
            hardware_id: hardware_id
                .ok_or_else(|| format!("the VCEK names no hardware ID ({AMD_HWID})"))?,
        })
    }
}

/// The VCEK was derived for exactly the TCB the report says it was made at.
pub fn compare_tcb(vcek: &VcekFields, reported: &ReportedTcb) -> Check {
    let differences: Vec<String> = [
        ("fmc", vcek.fmc, reported.fmc),
        (
            "bootloader",
            Some(vcek.bootloader),
            Some(reported.bootloader),
        ),
        ("tee", Some(vcek.tee), Some(reported.tee)),
        ("snp", Some(vcek.snp), Some(reported.snp)),
        ("microcode", Some(vcek.microcode), Some(reported.microcode)),
    ]
    .iter()
    .filter(|(_, certified, reported)| certified != reported)
    .map(|(name, certified, reported)| {
        let show = |value: &Option<u8>| value.map_or("none".into(), |value| value.to_string());
        format!(
            "{name} {} in the VCEK, {} in the report",
            show(certified),
            show(reported)
        )
    })
    .collect();
    if differences.is_empty() {
        Check::Passed("the VCEK was derived for the reported TCB".into())
    } else {
        Check::Failed(format!(
            "the VCEK is for another TCB than the report's: {}",
            differences.join(", ")
        ))
    }
}

/// The VCEK's hardware ID is the report's chip ID (the full 64 bytes, or the first 8 for a
/// chip whose VCEK carries 8); a masked (all-zero) chip ID binds nothing.
pub fn compare_chip(hardware_id: &[u8], chip_id: &[u8; 64]) -> Check {
    if chip_id.iter().all(|byte| *byte == 0) {
        return Check::Failed(
            "the report's chip ID is masked (MASK_CHIP_ID): it cannot be bound to the VCEK".into(),
        );
    }
    let same = match hardware_id.len() {
        64 => hardware_id == chip_id.as_slice(),
        8 => hardware_id == &chip_id[..8],
        _ => false,
    };
    if same {
        Check::Passed("the VCEK is this chip's".into())
    } else {
        Check::Failed(format!(
            "the VCEK is for chip {}, the report is from chip {}",
            hex::encode(hardware_id),
            hex::encode(chip_id)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> VcekFields {
        VcekFields {
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
            hardware_id: vec![7; 64],
        }
    }

    #[test]
    fn the_vcek_must_be_the_reported_tcbs_and_the_chips() {
        let reported = ReportedTcb {
            fmc: None,
            bootloader: 3,
            tee: 0,
            snp: 8,
            microcode: 115,
        };
        assert!(matches!(
            compare_tcb(&fields(), &reported),
            Check::Passed(_)
        ));
        for (field, older) in [
            (
                "bootloader",
                ReportedTcb {
                    bootloader: 2,
                    ..reported
                },
            ),
            ("snp", ReportedTcb { snp: 9, ..reported }),
            (
                "microcode",
                ReportedTcb {
                    microcode: 114,
                    ..reported
                },
            ),
            (
                "fmc",
                ReportedTcb {
                    fmc: Some(1),
                    ..reported
                },
            ),
        ] {
            match compare_tcb(&fields(), &older) {
                Check::Failed(reason) => assert!(reason.contains(field), "{reason}"),
                other => panic!("{field}: {other:?}"),
            }
        }
        let chip = [7u8; 64];
        assert!(matches!(
            compare_chip(&fields().hardware_id, &chip),
            Check::Passed(_)
        ));
        let mut other = chip;
        other[63] = 8;
        assert!(matches!(
            compare_chip(&fields().hardware_id, &other),
            Check::Failed(_)
        ));
        assert!(matches!(compare_chip(&[7; 8], &chip), Check::Passed(_)));
        assert!(matches!(compare_chip(&[7; 8], &[0; 64]), Check::Failed(_)));
        assert!(matches!(compare_chip(&[7; 12], &chip), Check::Failed(_)));
        assert_eq!(small_integer(&[0x02, 0x01, 0x73]), Some(115));
        assert_eq!(small_integer(&[0x02, 0x02, 0x00, 0xD5]), Some(213));
        assert_eq!(small_integer(&[0x04, 0x01, 0x73]), None);
    }

    #[test]
    fn reads_hex_or_raw_reports_and_refuses_other_sizes() {
        let raw = vec![0u8; REPORT_LEN];
        assert_eq!(read_report(&raw).expect("raw"), raw);
        let text = format!("{}\n", hex::encode(&raw));
        assert_eq!(read_report(text.as_bytes()).expect("hex"), raw);
        assert_eq!(
            read_report(&[0u8; 10]),
            Err(SnpError::ReportLength { actual: 10 })
        );
        assert!("3:0:8:115".parse::<MinimumTcb>().is_ok());
        assert!("3:0:8".parse::<MinimumTcb>().is_err());
    }
}
