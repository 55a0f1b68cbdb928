//! The device side of TPM 2.0 attestation through tss-esapi: the EK (RSA-2048 or ECC P-256)
//! and its certificate, an AK under it, ActivateCredential, quotes (also in the file formats of
//! tpm2-tools, so an independent tool can check them), the device key certified by the AK, and
//! key blobs that reload the same keys after a restart.
//!
//! The TPM is always real (a device or swtpm through the TCTI); handles are flushed on every
//! path out.

use std::str::FromStr;

use rsa::pkcs8::{EncodePublicKey, LineEnding};
use thiserror::Error;
use tss_esapi::abstraction::{ak, ek, AsymmetricAlgorithmSelection};
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, SignatureSchemeAlgorithm};
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::structures::{
    Data, PcrSelectionListBuilder, PcrSlot, Public, PublicBuilder, SignatureScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum TpmError {
    #[error("TCTI {tcti:?} is not usable: {reason} (expected device:/dev/tpmrm0 or swtpm:host=H,port=P)")]
    Tcti { tcti: String, reason: String },
    #[error("the TPM refused {operation}: {source}")]
    Tpm {
        operation: &'static str,
        source: tss_esapi::Error,
    },
    #[error("PCR selection {0:?} is not BANK:N,N,… with a SHA bank and PCRs 0-23")]
    Selection(String),
    #[error("the nonce must be 1 to 64 bytes, got {0}")]
    Nonce(usize),
    #[error("the AK public key cannot be exported: {0}")]
    PublicKey(String),
    #[error("EK kind {0:?} is not rsa or ecc")]
    EkKind(String),
    #[error("the TPM answered unexpectedly: {0}")]
    Unexpected(String),
}

/// A verifier's nonce, bound into the quote as qualifying data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nonce(Vec<u8>);

impl Nonce {
    pub fn new(bytes: Vec<u8>) -> Result<Self, TpmError> {
        if bytes.is_empty() || bytes.len() > 64 {
            return Err(TpmError::Nonce(bytes.len()));
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The PCRs of one bank to quote, e.g. `sha256:0,1,2,3,4,5,6,7`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub bank: HashingAlgorithm,
    pub pcrs: Vec<u8>,
}

impl FromStr for PcrSelection {
    type Err = TpmError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || TpmError::Selection(text.to_owned());
        let (bank, list) = text.split_once(':').ok_or_else(error)?;
        let bank = match bank {
            "sha1" => HashingAlgorithm::Sha1,
            "sha256" => HashingAlgorithm::Sha256,
            "sha384" => HashingAlgorithm::Sha384,
            _ => return Err(error()),
        };
        let mut pcrs: Vec<u8> = list
            .split(',')
            .map(|pcr| pcr.trim().parse::<u8>().ok().filter(|pcr| *pcr <= 23))
            .collect::<Option<_>>()
            .ok_or_else(error)?;
        pcrs.sort_unstable();
        pcrs.dedup();
        if pcrs.is_empty() {
            return Err(error());
        }
        Ok(Self { bank, pcrs })
    }
}

fn slot(pcr: u8) -> Option<PcrSlot> {
    PcrSlot::try_from(1u32 << pcr).ok()
}

/// A quote and what is needed to check it.
#[derive(Debug, Clone)]
pub struct Quote {
    /// `TPMS_ATTEST`, marshalled (tpm2-tools' `quote.msg`).
    pub attest: Vec<u8>,
    /// `TPMT_SIGNATURE`, marshalled (tpm2-tools' `quote.sig`).
    pub signature: Vec<u8>,
    pub selection: PcrSelection,
    /// The quoted PCRs' values, in selection order.
    pub pcr_values: Vec<Vec<u8>>,
    /// The AK's public key, SubjectPublicKeyInfo PEM.
    pub ak_public_pem: String,
}

fn tpm<T>(operation: &'static str, result: tss_esapi::Result<T>) -> Result<T, TpmError> {
    result.map_err(|source| TpmError::Tpm { operation, source })
}

/// Opens the TPM named by a TCTI string.
pub fn open(tcti: &str) -> Result<Context, TpmError> {
    let name = TctiNameConf::from_str(tcti).map_err(|error| TpmError::Tcti {
        tcti: tcti.to_owned(),
        reason: error.to_string(),
    })?;
    Context::new(name).map_err(|error| TpmError::Tcti {
        tcti: tcti.to_owned(),
        reason: error.to_string(),
    })
}

fn rsa_public_pem(public: &Public) -> Result<String, TpmError> {
    let Public::Rsa {
        unique, parameters, ..
    } = public
    else {
        return Err(TpmError::PublicKey("the AK is not an RSA key".into()));
    };
    let exponent = match parameters.exponent().value() {
        0 => 65_537,
        other => other,
    };
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(unique.value()),
        rsa::BigUint::from(exponent),
    )
    .map_err(|error| TpmError::PublicKey(error.to_string()))?;
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|error| TpmError::PublicKey(error.to_string()))
}

fn flush(context: &mut Context, handles: &[KeyHandle]) {
    for handle in handles {
        let _ = context.flush_context((*handle).into());
    }
}

/// Reads the PCRs of `selection`, in its order.
pub fn read_pcrs(
    context: &mut Context,
    selection: &PcrSelection,
) -> Result<Vec<Vec<u8>>, TpmError> {
    let slots: Vec<PcrSlot> = selection
        .pcrs
        .iter()
        .map(|pcr| slot(*pcr).ok_or_else(|| TpmError::Selection(format!("PCR {pcr}"))))
        .collect::<Result<_, _>>()?;
    // PCR_Read returns at most eight digests at a time.
    let mut values = Vec::with_capacity(slots.len());
    for chunk in slots.chunks(8) {
        let list = tpm(
            "PCR selection",
            PcrSelectionListBuilder::new()
                .with_selection(selection.bank, chunk)
                .build(),
        )?;
        let (_, _, digests) = tpm("PCR read", context.pcr_read(list))?;
        values.extend(digests.value().iter().map(|digest| digest.value().to_vec()));
    }
    Ok(values)
}

/// Quotes `selection` with `nonce`, signed by a fresh RSA-2048 AK under the RSA EK, which are
/// flushed afterwards.
pub fn quote(
    context: &mut Context,
    nonce: &Nonce,
    selection: &PcrSelection,
) -> Result<Quote, TpmError> {
    let keys = create_attestation_keys(context, EkKind::Rsa)?;
    let result = quote_with(context, &keys, nonce, selection);
    keys.flush(context);
    result
}

/// Quotes `selection` with `nonce`, signed by the loaded AK of `keys`.
pub fn quote_with(
    context: &mut Context,
    keys: &AttestationKeys,
    nonce: &Nonce,
    selection: &PcrSelection,
) -> Result<Quote, TpmError> {
    let slots: Vec<PcrSlot> = selection
        .pcrs
        .iter()
        .map(|pcr| slot(*pcr).ok_or_else(|| TpmError::Selection(format!("PCR {pcr}"))))
        .collect::<Result<_, _>>()?;
    let list = tpm(
        "PCR selection",
        PcrSelectionListBuilder::new()
            .with_selection(selection.bank, &slots)
            .build(),
    )?;
    let data = tpm("nonce", Data::try_from(nonce.as_bytes().to_vec()))?;
    let (attest, signature) = tpm(
        "quote",
        context.execute_with_nullauth_session(|context| {
            context.quote(keys.ak, data, SignatureScheme::Null, list.clone())
        }),
    )?;
    let pcr_values = read_pcrs(context, selection)?;
    Ok(Quote {
        attest: tpm("marshalling TPMS_ATTEST", attest.marshall())?,
        signature: tpm("marshalling TPMT_SIGNATURE", signature.marshall())?,
        selection: selection.clone(),
        pcr_values,
        ak_public_pem: keys.ak_public_pem.clone(),
    })
}

/// The PCR values file of `tpm2_quote -o` / `tpm2_checkquote -f`: tpm2-tools' in-memory
/// `TPML_PCR_SELECTION` (little-endian, 16 eight-byte selections), a u32 count of
/// `TPML_DIGEST`s, and each as a u32 count and eight (u16 size, 64-byte buffer) digests.
pub fn tpm2_tools_pcrs_file(selection: &PcrSelection, values: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut select = [0u8; 4];
    for pcr in &selection.pcrs {
        select[usize::from(*pcr / 8)] |= 1 << (pcr % 8);
    }
    for index in 0..16 {
        if index == 0 {
            out.extend_from_slice(&u16::from(selection.bank).to_le_bytes());
            out.push(3);
            out.extend_from_slice(&select);
            out.push(0);
        } else {
            out.extend_from_slice(&[0; 8]);
        }
    }
    let lists: Vec<&[Vec<u8>]> = values.chunks(8).collect();
    out.extend_from_slice(&(lists.len() as u32).to_le_bytes());
    for list in lists {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for index in 0..8 {
            let digest = list.get(index).map_or(&[][..], Vec::as_slice);
            out.extend_from_slice(&(digest.len() as u16).to_le_bytes());
            let mut buffer = [0u8; 64];
            buffer[..digest.len().min(64)].copy_from_slice(&digest[..digest.len().min(64)]);
            out.extend_from_slice(&buffer);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_selections_and_refuses_nonsense() {
        let selection: PcrSelection = "sha256:7,0,1,1".parse().expect("valid");
        assert_eq!(selection.pcrs, vec![0, 1, 7]);
        for bad in ["sha256", "md5:0", "sha256:24", "sha256:", "sha256:a"] {
            assert!(bad.parse::<PcrSelection>().is_err(), "{bad}");
        }
        assert!(Nonce::new(vec![]).is_err());
        assert!(Nonce::new(vec![0; 65]).is_err());
    }

    #[test]
    fn writes_the_pcrs_file_layout_of_tpm2_tools() {
        let selection: PcrSelection = "sha256:0,1,2".parse().expect("valid");
        let file = tpm2_tools_pcrs_file(&selection, &[vec![0; 32], vec![1; 32], vec![2; 32]]);
        // As written by tpm2_quote -o for sha256:0,1,2 (668 bytes).
        assert_eq!(file.len(), 668);
        assert_eq!(&file[..12], &[1, 0, 0, 0, 0x0b, 0, 3, 7, 0, 0, 0, 0]);
        assert_eq!(&file[0x84..0x8e], &[1, 0, 0, 0, 3, 0, 0, 0, 0x20, 0]);
    }
}

pub use crate::credential::EkKind;

impl EkKind {
    /// The NV index where manufacturers (and swtpm_setup) store this EK's certificate.
    pub fn certificate_index(self) -> u32 {
        match self {
            Self::Rsa => RSA_EK_CERTIFICATE_INDEX,
            Self::Ecc => ECC_EK_CERTIFICATE_INDEX,
        }
    }

    fn selection(self) -> AsymmetricAlgorithmSelection {
        match self {
            Self::Rsa => AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
            Self::Ecc => AsymmetricAlgorithmSelection::Ecc(
                tss_esapi::interface_types::ecc::EccCurve::NistP256,
            ),
        }
    }
}

impl FromStr for EkKind {
    type Err = TpmError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "rsa" => Ok(Self::Rsa),
            "ecc" => Ok(Self::Ecc),
            other => Err(TpmError::EkKind(other.to_owned())),
        }
    }
}

pub use crate::credential::EkPublic;

/// A key made by the TPM, in the form that reloads it: the marshalled `TPMT_PUBLIC` and the
/// `TPM2B_PRIVATE` buffer, which only the TPM that made it (under the same parent) can load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyBlob {
    pub public: Vec<u8>,
    pub private: Vec<u8>,
}

/// The EK and an AK under it, loaded; flush with [`AttestationKeys::flush`].
#[derive(Debug)]
pub struct AttestationKeys {
    pub ek: KeyHandle,
    pub ak: KeyHandle,
    pub ek_public: EkPublic,
    /// The AK's name (SHA-256), which the credential is bound to.
    pub ak_name: Vec<u8>,
    pub ak_public_pem: String,
    /// The AK as a blob, to reload it after a restart instead of making a new one.
    pub ak_blob: KeyBlob,
}

impl AttestationKeys {
    pub fn flush(self, context: &mut Context) {
        flush(context, &[self.ak, self.ek]);
    }
}

fn ek_public(context: &mut Context, ek: KeyHandle) -> Result<EkPublic, TpmError> {
    let (public, _, _) = tpm("EK read", context.read_public(ek))?;
    match &public {
        Public::Rsa { unique, .. } => EkPublic::rsa(unique.value())
            .map_err(|error| TpmError::PublicKey(format!("the TPM's EK: {error}"))),
        Public::Ecc { unique, .. } => EkPublic::ecc(unique.x().value(), unique.y().value())
            .map_err(|error| TpmError::PublicKey(format!("the TPM's EK: {error}"))),
        _ => Err(TpmError::PublicKey("the EK is neither RSA nor ECC".into())),
    }
}

/// The agent's keys (AK, storage root key, device key) have an empty auth value: dictionary-attack
/// protection guards nothing for them and would only count against them every unorderly
/// shutdown (TPM 2.0 Part 1, DA and non-orderly shutdown), so that a few power cuts would lock
/// the appliance out of its own keys. They are made with noDA.
struct NoDictionaryAttackLockout;

impl tss_esapi::abstraction::KeyCustomization for NoDictionaryAttackLockout {
    fn attributes(
        &self,
        attributes: tss_esapi::attributes::ObjectAttributesBuilder,
    ) -> tss_esapi::attributes::ObjectAttributesBuilder {
        attributes.with_no_da(true)
    }
}

/// Creates the EK of `kind` (the same key every time: it is derived from the TPM's endorsement
/// seed) and an RSA-2048 restricted signing AK under it, both loaded.
pub fn create_attestation_keys(
    context: &mut Context,
    kind: EkKind,
) -> Result<AttestationKeys, TpmError> {
    attestation_keys(context, kind, None)
}

/// Creates the EK of `kind` and loads the AK saved from an earlier [`create_attestation_keys`].
/// Fails when the blob was not made under this TPM's EK.
pub fn load_attestation_keys(
    context: &mut Context,
    kind: EkKind,
    ak: &KeyBlob,
) -> Result<AttestationKeys, TpmError> {
    attestation_keys(context, kind, Some(ak))
}

fn attestation_keys(
    context: &mut Context,
    kind: EkKind,
    saved: Option<&KeyBlob>,
) -> Result<AttestationKeys, TpmError> {
    use tss_esapi::structures::Private;
    use tss_esapi::traits::UnMarshall;
    let ek = tpm(
        "EK creation",
        ek::create_ek_object_2(context, kind.selection(), None),
    )?;
    let result = (|| {
        let ek_public = ek_public(context, ek)?;
        let (public, private) = match saved {
            Some(blob) => (
                tpm("AK public blob", Public::unmarshall(&blob.public))?,
                tpm("AK private blob", Private::try_from(blob.private.clone()))?,
            ),
            None => {
                let created = tpm(
                    "AK creation",
                    ak::create_ak_2(
                        context,
                        ek,
                        HashingAlgorithm::Sha256,
                        AsymmetricAlgorithmSelection::Rsa(RsaKeyBits::Rsa2048),
                        SignatureSchemeAlgorithm::RsaSsa,
                        None,
                        NoDictionaryAttackLockout,
                    ),
                )?;
                (created.out_public, created.out_private)
            }
        };
        let ak_public_pem = rsa_public_pem(&public)?;
        let ak_blob = KeyBlob {
            public: tpm("marshalling the AK", public.marshall())?,
            private: private.value().to_vec(),
        };
        let ak_handle = tpm("AK load", ak::load_ak(context, ek, None, private, public))?;
        let name = context
            .read_public(ak_handle)
            .map(|(_, name, _)| name.value().to_vec());
        match name {
            Ok(ak_name) => Ok(AttestationKeys {
                ek,
                ak: ak_handle,
                ek_public,
                ak_name,
                ak_public_pem,
                ak_blob,
            }),
            Err(source) => {
                flush(context, &[ak_handle]);
                Err(TpmError::Tpm {
                    operation: "AK read",
                    source,
                })
            }
        }
    })();
    if result.is_err() {
        flush(context, &[ek]);
    }
    result
}

/// Flushes transient objects and sessions a crashed process left loaded. A TPM reached without
/// a resource manager (swtpm over TCP, /dev/tpm0) keeps them until it resets, and has only a
/// few slots (swtpm: three objects, three sessions), so an agent killed while it signed would
/// otherwise lock the next one out; through /dev/tpmrm0 this finds nothing. Returns how many
/// were flushed.
pub fn flush_leftover_objects(context: &mut Context) -> Result<usize, TpmError> {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::handles::TpmHandle;
    use tss_esapi::structures::CapabilityData;
    use tss_esapi::WrapperErrorKind;
    const TRANSIENT_FIRST: u32 = 0x8000_0000;
    // TPM_HT_LOADED_SESSION: the HMAC and policy sessions loaded now.
    const LOADED_SESSION_FIRST: u32 = 0x0200_0000;
    let mut flushed = 0;
    for first in [TRANSIENT_FIRST, LOADED_SESSION_FIRST] {
        let (data, _) = tpm(
            "listing loaded objects and sessions",
            context.get_capability(CapabilityType::Handles, first, 64),
        )?;
        let CapabilityData::Handles(handles) = data else {
            continue;
        };
        for handle in handles.into_inner() {
            let leftover = matches!(
                handle,
                TpmHandle::Transient(_) | TpmHandle::HmacSession(_) | TpmHandle::PolicySession(_)
            );
            if !leftover {
                continue;
            }
            let object =
                context.execute_without_session(|context| context.tr_from_tpm_public(handle));
            let Ok(object) = object else { continue };
            match context.flush_context(object) {
                Ok(()) => flushed += 1,
                // The TPM flushed it; tss-esapi's own bookkeeping does not know a session
                // handle it did not start and says so afterwards.
                Err(tss_esapi::Error::WrapperError(WrapperErrorKind::InvalidHandleState)) => {
                    flushed += 1
                }
                Err(_) => {}
            }
        }
    }
    Ok(flushed)
}

/// TPM2_ActivateCredential: recovers the secret of a [`crate::credential::make_credential`]
/// challenge, which works only in the TPM holding the EK and only for the AK it was made for.
pub fn activate_credential(
    context: &mut Context,
    keys: &AttestationKeys,
    id_object: &[u8],
    encrypted_secret: &[u8],
) -> Result<Vec<u8>, TpmError> {
    use tss_esapi::attributes::SessionAttributesBuilder;
    use tss_esapi::constants::SessionType;
    use tss_esapi::handles::{AuthHandle, SessionHandle};
    use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
    use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};

    let blob = tpm("credential blob", IdObject::try_from(id_object.to_vec()))?;
    let secret = tpm(
        "encrypted secret",
        EncryptedSecret::try_from(encrypted_secret.to_vec()),
    )?;
    // Using the EK takes a policy session satisfied by PolicySecret(endorsement).
    let session = tpm(
        "policy session",
        context.start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        ),
    )?
    .ok_or_else(|| TpmError::PublicKey("the TPM returned no session".into()))?;
    let (attributes, mask) = SessionAttributesBuilder::new()
        .with_decrypt(true)
        .with_encrypt(true)
        .build();
    let result = (|| {
        tpm(
            "session attributes",
            context.tr_sess_set_attributes(session, attributes, mask),
        )?;
        let policy = tpm("policy session", PolicySession::try_from(session))?;
        tpm(
            "PolicySecret(endorsement)",
            context.execute_with_nullauth_session(|context| {
                context.policy_secret(
                    policy,
                    AuthHandle::Endorsement,
                    Default::default(),
                    Default::default(),
                    Default::default(),
                    None,
                )
            }),
        )?;
        let recovered = tpm(
            "ActivateCredential",
            context.execute_with_sessions(
                (Some(AuthSession::Password), Some(session), None),
                |context| context.activate_credential(keys.ak, keys.ek, blob, secret),
            ),
        )?;
        Ok(recovered.value().to_vec())
    })();
    let _ = context.flush_context(SessionHandle::from(session).into());
    result
}

/// The NV index where TPM manufacturers (and swtpm_setup) store the RSA-2048 EK certificate.
pub const RSA_EK_CERTIFICATE_INDEX: u32 = 0x01C0_0002;
/// The NV index of the ECC NIST P-256 EK certificate.
pub const ECC_EK_CERTIFICATE_INDEX: u32 = 0x01C0_000A;

/// Reads the certificate (DER) of the EK of `kind` from NV.
pub fn read_ek_certificate(context: &mut Context, kind: EkKind) -> Result<Vec<u8>, TpmError> {
    tpm(
        "reading the EK certificate from NV",
        ek::retrieve_ek_pubcert(context, kind.selection()),
    )
}

/// The device key: an ECC P-256 signing key made in the TPM (fixedTPM, fixedParent, sign only),
/// under a storage root key in the owner hierarchy, usable only through its PCR policy (no
/// userWithAuth): the TPM signs with it only while PCRs [`DEVICE_KEY_PCRS`] hold the values
/// they had when it was made ([`crate::key_policy`]). Its private part never leaves the TPM
/// unencrypted; `private` is the TPM-wrapped blob that reloads it after a restart.
#[derive(Debug)]
pub struct DeviceKey {
    /// The loaded key (its parent is flushed once it is loaded: a loaded key signs without it,
    /// and TPMs have few object slots).
    pub key: KeyHandle,
    /// Marshalled `TPMT_PUBLIC`, what the verifier checks the attributes and policy of.
    pub public: Vec<u8>,
    /// The `TPM2B_PRIVATE` buffer, wrapped by the SRK.
    pub private: Vec<u8>,
    /// The key's authPolicy: [`pcr_policy_digest`] of the PCRs it was made in.
    pub policy: Vec<u8>,
}

impl DeviceKey {
    pub fn flush(self, context: &mut Context) {
        flush(context, &[self.key]);
    }

    /// The key as a blob, to reload it after a restart.
    pub fn blob(&self) -> KeyBlob {
        KeyBlob {
            public: self.public.clone(),
            private: self.private.clone(),
        }
    }
}

use crate::key_policy::pcr_policy_digest;
pub use crate::key_policy::DEVICE_KEY_PCRS;

/// The PCRs the device key is bound to, read now: (index, SHA-256 value), ascending.
pub fn device_key_pcr_values(context: &mut Context) -> Result<Vec<(u8, [u8; 32])>, TpmError> {
    let selection = PcrSelection {
        bank: HashingAlgorithm::Sha256,
        pcrs: DEVICE_KEY_PCRS.to_vec(),
    };
    let values = read_pcrs(context, &selection)?;
    DEVICE_KEY_PCRS
        .iter()
        .zip(values)
        .map(|(pcr, value)| {
            <[u8; 32]>::try_from(value.as_slice())
                .map(|value| (*pcr, value))
                .map_err(|_| TpmError::Unexpected(format!("PCR {pcr} is not a SHA-256 value")))
        })
        .collect()
}

/// The policy a device key made now would have: whether a saved key still works in this boot.
pub fn current_device_key_policy(context: &mut Context) -> Result<[u8; 32], TpmError> {
    Ok(pcr_policy_digest(&device_key_pcr_values(context)?))
}

/// Creates the storage root key and the device key under it, bound to the PCRs as they are now,
/// and loads the device key. Needs two free object slots (a TPM without a resource manager has
/// three: create the device key before loading the EK and AK).
pub fn create_device_key(context: &mut Context) -> Result<DeviceKey, TpmError> {
    device_key(context, None)
}

/// Loads a device key saved from [`create_device_key`] (the storage root key is derived from
/// the owner seed, so it is the same after a restart). It loads in any boot, but signs only in
/// one whose PCRs match its policy.
pub fn load_device_key(context: &mut Context, saved: &KeyBlob) -> Result<DeviceKey, TpmError> {
    device_key(context, Some(saved))
}

/// The storage root key: the TCG template's RSA-2048 restricted decryption key (as
/// `create_restricted_decryption_rsa_public` makes it) with noDA, see
/// [`NoDictionaryAttackLockout`]. The SRK is derived from the owner seed and the template, so the
/// same template gives the same key after every restart.
pub fn storage_root_template() -> tss_esapi::Result<Public> {
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::PublicAlgorithm;
    use tss_esapi::structures::{
        PublicKeyRsa, PublicRsaParametersBuilder, RsaExponent, RsaScheme, SymmetricDefinitionObject,
    };
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_no_da(true)
        .with_decrypt(true)
        .with_sign_encrypt(false)
        .with_restricted(true)
        .build()?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Rsa)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_rsa_parameters(
            PublicRsaParametersBuilder::new()
                .with_symmetric(SymmetricDefinitionObject::AES_128_CFB)
                .with_scheme(RsaScheme::Null)
                .with_key_bits(RsaKeyBits::Rsa2048)
                .with_exponent(RsaExponent::default())
                .with_is_signing_key(false)
                .with_is_decryption_key(true)
                .with_restricted(true)
                .build()?,
        )
        .with_rsa_unique_identifier(PublicKeyRsa::default())
        .build()
}

/// The device key's commands authorise with its PCR policy (sign) or the empty password
/// (load, certify), never an HMAC session: fewer sessions to leak in a TPM without a resource
/// manager (swtpm over TCP has three) when an agent is killed mid-command.
fn device_key(context: &mut Context, saved: Option<&KeyBlob>) -> Result<DeviceKey, TpmError> {
    use tss_esapi::attributes::ObjectAttributesBuilder;
    use tss_esapi::interface_types::algorithm::PublicAlgorithm;
    use tss_esapi::interface_types::ecc::EccCurve;
    use tss_esapi::interface_types::resource_handles::Hierarchy;
    use tss_esapi::structures::{
        Digest, EccPoint, EccScheme, HashScheme, Private, PublicEccParametersBuilder,
    };
    use tss_esapi::traits::UnMarshall;

    let srk_public = tpm("SRK template", storage_root_template())?;
    let srk = tpm(
        "SRK creation",
        context.execute_with_session(
            Some(tss_esapi::interface_types::session_handles::AuthSession::Password),
            |context| context.create_primary(Hierarchy::Owner, srk_public, None, None, None, None),
        ),
    )?
    .key_handle;
    let result = (|| {
        let (public, private) = match saved {
            Some(blob) => (
                tpm("device key public blob", Public::unmarshall(&blob.public))?,
                tpm(
                    "device key private blob",
                    Private::try_from(blob.private.clone()),
                )?,
            ),
            None => {
                let policy = current_device_key_policy(context)?;
                let attributes = tpm(
                    "device key attributes",
                    ObjectAttributesBuilder::new()
                        .with_fixed_tpm(true)
                        .with_fixed_parent(true)
                        .with_sensitive_data_origin(true)
                        // No password opens it: only its policy (the PCRs of this boot).
                        .with_user_with_auth(false)
                        .with_no_da(true)
                        .with_decrypt(false)
                        .with_sign_encrypt(true)
                        .with_restricted(false)
                        .build(),
                )?;
                let parameters = tpm(
                    "device key parameters",
                    PublicEccParametersBuilder::new_unrestricted_signing_key(
                        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                        EccCurve::NistP256,
                    )
                    .build(),
                )?;
                let key_public = tpm(
                    "device key template",
                    PublicBuilder::new()
                        .with_public_algorithm(PublicAlgorithm::Ecc)
                        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
                        .with_object_attributes(attributes)
                        .with_auth_policy(tpm("policy digest", Digest::try_from(policy.to_vec()))?)
                        .with_ecc_parameters(parameters)
                        .with_ecc_unique_identifier(EccPoint::default())
                        .build(),
                )?;
                let created = tpm(
                    "device key creation",
                    context.execute_with_session(
                        Some(tss_esapi::interface_types::session_handles::AuthSession::Password),
                        |context| context.create(srk, key_public, None, None, None, None),
                    ),
                )?;
                (created.out_public, created.out_private)
            }
        };
        let policy = match &public {
            Public::Ecc { auth_policy, .. } => auth_policy.value().to_vec(),
            _ => {
                return Err(TpmError::Unexpected(
                    "the device key blob is not an ECC key".into(),
                ))
            }
        };
        let marshalled = tpm("marshalling the device key", public.marshall())?;
        let private_bytes = private.value().to_vec();
        let key = tpm(
            "device key load",
            context.execute_with_session(
                Some(tss_esapi::interface_types::session_handles::AuthSession::Password),
                |context| context.load(srk, private, public),
            ),
        )?;
        Ok(DeviceKey {
            key,
            public: marshalled,
            private: private_bytes,
            policy,
        })
    })();
    flush(context, &[srk]);
    result
}

/// TPM2_Certify: the AK attests that `key` lives in this TPM, with the verifier's nonce.
/// Returns the marshalled `TPMS_ATTEST` and `TPMT_SIGNATURE`.
pub fn certify(
    context: &mut Context,
    keys: &AttestationKeys,
    key: &DeviceKey,
    nonce: &Nonce,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    use tss_esapi::interface_types::session_handles::AuthSession;
    let data = tpm("nonce", Data::try_from(nonce.as_bytes().to_vec()))?;
    let (attest, signature) = tpm(
        "certify",
        context.execute_with_sessions(
            (
                Some(AuthSession::Password),
                Some(AuthSession::Password),
                None,
            ),
            |context| context.certify(key.key.into(), keys.ak, data, SignatureScheme::Null),
        ),
    )?;
    Ok((
        tpm("marshalling TPMS_ATTEST", attest.marshall())?,
        tpm("marshalling TPMT_SIGNATURE", signature.marshall())?,
    ))
}

/// Extends SHA-256 digests into PCRs, in order: what firmware does while it measures a boot.
/// Used to reproduce a recorded boot's PCRs in a software TPM.
pub fn extend_pcrs(context: &mut Context, extends: &[(u8, [u8; 32])]) -> Result<(), TpmError> {
    use tss_esapi::handles::PcrHandle;
    use tss_esapi::structures::{Digest, DigestValues};
    use PcrHandle::*;
    const HANDLES: [PcrHandle; 24] = [
        Pcr0, Pcr1, Pcr2, Pcr3, Pcr4, Pcr5, Pcr6, Pcr7, Pcr8, Pcr9, Pcr10, Pcr11, Pcr12, Pcr13,
        Pcr14, Pcr15, Pcr16, Pcr17, Pcr18, Pcr19, Pcr20, Pcr21, Pcr22, Pcr23,
    ];
    for (pcr, digest) in extends {
        let handle = *HANDLES
            .get(usize::from(*pcr))
            .ok_or_else(|| TpmError::Selection(format!("PCR {pcr}")))?;
        let mut values = DigestValues::new();
        values.set(
            HashingAlgorithm::Sha256,
            tpm("digest", Digest::try_from(digest.to_vec()))?,
        );
        tpm(
            "PCR extend",
            context.execute_with_nullauth_session(|context| context.pcr_extend(handle, values)),
        )?;
    }
    Ok(())
}

/// Signs a SHA-256 digest with the device key (ECDSA P-256 in the TPM) and returns the
/// signature as DER `Ecdsa-Sig-Value`, what CMS and TLS carry. The digest is computed outside
/// the TPM, so the null hash-check ticket is enough: the key is not restricted. The key's
/// policy is satisfied in a policy session (TPM2_PolicyPCR over its PCRs), which the TPM
/// refuses when the PCRs are not those the key was made in: then this fails with
/// [`TpmError::Tpm`] on "sign" (TPM_RC_POLICY_FAIL).
pub fn sign_digest(
    context: &mut Context,
    key: &DeviceKey,
    digest: &[u8; 32],
) -> Result<Vec<u8>, TpmError> {
    use tss_esapi::constants::tss::{TPM2_RH_NULL, TPM2_ST_HASHCHECK};
    use tss_esapi::constants::SessionType;
    use tss_esapi::handles::SessionHandle;
    use tss_esapi::interface_types::session_handles::PolicySession;
    use tss_esapi::structures::{Digest, Signature, SymmetricDefinition};
    use tss_esapi::tss2_esys::TPMT_TK_HASHCHECK;
    let validation = tpm(
        "null hash-check ticket",
        TPMT_TK_HASHCHECK {
            tag: TPM2_ST_HASHCHECK,
            hierarchy: TPM2_RH_NULL,
            digest: Default::default(),
        }
        .try_into(),
    )?;
    let digest = tpm("digest", Digest::try_from(digest.to_vec()))?;
    let slots: Vec<PcrSlot> = DEVICE_KEY_PCRS
        .iter()
        .filter_map(|pcr| slot(*pcr))
        .collect();
    let pcrs = tpm(
        "PCR selection",
        PcrSelectionListBuilder::new()
            .with_selection(HashingAlgorithm::Sha256, &slots)
            .build(),
    )?;
    let session = tpm(
        "policy session",
        context.start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::Null,
            HashingAlgorithm::Sha256,
        ),
    )?
    .ok_or_else(|| TpmError::Unexpected("the TPM returned no session".into()))?;
    let signature = (|| {
        let policy = tpm("policy session", PolicySession::try_from(session))?;
        tpm(
            "PolicyPCR",
            context.execute_without_session(|context| {
                context.policy_pcr(policy, Digest::default(), pcrs)
            }),
        )?;
        tpm(
            "sign",
            context.execute_with_session(Some(session), |context| {
                context.sign(key.key, digest, SignatureScheme::Null, validation)
            }),
        )
    })();
    // The session is used up by the sign (continueSession clear), or must go on failure.
    let _ = context.flush_context(SessionHandle::from(session).into());
    let signature = signature?;
    let Signature::EcDsa(signature) = signature else {
        return Err(TpmError::Unexpected(
            "the device key answered with a non-ECDSA signature".into(),
        ));
    };
    let scalar = |parameter: &tss_esapi::structures::EccParameter| {
        let bytes = parameter.value();
        let mut padded = [0u8; 32];
        match bytes.len() {
            0..=32 => {
                padded[32 - bytes.len()..].copy_from_slice(bytes);
                Ok(padded)
            }
            length => Err(TpmError::Unexpected(format!(
                "a P-256 signature scalar of {length} bytes"
            ))),
        }
    };
    let r = scalar(signature.signature_r())?;
    let s = scalar(signature.signature_s())?;
    let signature = p256::ecdsa::Signature::from_scalars(r, s)
        .map_err(|error| TpmError::Unexpected(format!("signature scalars: {error}")))?;
    Ok(signature.to_der().as_bytes().to_vec())
}
