//! The appliance's configuration counter: a TPM NV counter holding the serial of the newest
//! device configuration the appliance has run (the judgement is `edgeward_config::rollback`).
//! An NV counter only goes up; one defined anew (after someone undefined ours with the owner's
//! authorisation) starts at the highest value any counter of the TPM ever held, so no one can
//! wind it back short of replacing the TPM, which changes the device's identity.
//!
//! The index is in the owner's range of TCG's handle registry (0x01800000–0x01BFFFFF), made
//! with an empty authorisation value: anyone who can send commands to the TPM can increment it
//! (that makes the current configuration refused, a denial of service that any root already
//! has), none can lower it.
//!
//! Its commands use password sessions with the empty authorisation, not HMAC sessions: an HMAC
//! session with neither salt nor bind and an empty authorisation protects nothing from someone
//! on the TPM's bus (its keys come from nonces that cross the bus), and each one costs two fresh
//! random nonces, which tpm2-tss 3.2 draws through a new OpenSSL library context every time
//! (0.4 s of the appliance's boot under TCG, before the network is up: docs/benchmarks.md).

use tss_esapi::attributes::NvIndexAttributesBuilder;
use tss_esapi::constants::NvIndexType;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::NvPublicBuilder;
use tss_esapi::Context;

use crate::tpm::TpmError;

/// The counter's NV index.
pub const CONFIG_COUNTER_INDEX: u32 = 0x0180_0E01;

fn tpm<T>(operation: &'static str, result: tss_esapi::Result<T>) -> Result<T, TpmError> {
    result.map_err(|source| TpmError::Tpm { operation, source })
}

fn index() -> Result<NvIndexTpmHandle, TpmError> {
    tpm(
        "the configuration counter's handle",
        NvIndexTpmHandle::new(CONFIG_COUNTER_INDEX),
    )
}

/// The counter's ESYS handle if the index is defined, checked to be a counter.
fn open(context: &mut Context) -> Result<Option<(NvIndexHandle, bool)>, TpmError> {
    let defined = tpm(
        "listing NV indices",
        tss_esapi::abstraction::nv::list(context),
    )?
    .into_iter()
    .find(|(public, _)| u32::from(public.nv_index()) == CONFIG_COUNTER_INDEX);
    let Some((public, _)) = defined else {
        return Ok(None);
    };
    let attributes = public.attributes();
    if !matches!(attributes.index_type(), Ok(NvIndexType::Counter)) {
        return Err(TpmError::Unexpected(format!(
            "NV index {CONFIG_COUNTER_INDEX:#010x} is not a counter: it is not Edgeward's \
             configuration counter (another program's index at our handle?)"
        )));
    }
    let tpm_handle = TpmHandle::NvIndex(index()?);
    let handle = tpm(
        "opening the configuration counter",
        context
            .execute_without_session(|context| context.tr_from_tpm_public(tpm_handle))
            .map(NvIndexHandle::from),
    )?;
    Ok(Some((handle, attributes.written())))
}

/// The counter's value; `None` while it is not defined or was never incremented (an appliance
/// that has run no configuration yet).
pub fn read(context: &mut Context) -> Result<Option<u64>, TpmError> {
    let Some((handle, written)) = open(context)? else {
        return Ok(None);
    };
    let value = if written {
        let bytes = tpm(
            "reading the configuration counter",
            context.execute_with_session(Some(AuthSession::Password), |context| {
                context.nv_read(NvAuth::NvIndex(handle), handle, 8, 0)
            }),
        )?;
        let bytes: [u8; 8] = bytes.value().try_into().map_err(|_| {
            TpmError::Unexpected("the configuration counter did not read as 8 bytes".into())
        })?;
        Some(u64::from_be_bytes(bytes))
    } else {
        None
    };
    let _ = context.tr_close(&mut handle.into());
    Ok(value)
}

/// Increments the counter, defining it first if need be, and returns its new value. The first
/// increment of a new counter gives one more than the highest value any counter of this TPM
/// ever held.
pub fn increment(context: &mut Context) -> Result<u64, TpmError> {
    let handle = match open(context)? {
        Some((handle, _)) => handle,
        None => {
            let attributes = tpm(
                "the configuration counter's attributes",
                NvIndexAttributesBuilder::new()
                    .with_nv_index_type(NvIndexType::Counter)
                    .with_auth_write(true)
                    .with_auth_read(true)
                    .with_owner_read(true)
                    .with_no_da(true)
                    .build(),
            )?;
            let public = tpm(
                "the configuration counter's public area",
                NvPublicBuilder::new()
                    .with_nv_index(index()?)
                    .with_index_name_algorithm(HashingAlgorithm::Sha256)
                    .with_index_attributes(attributes)
                    .with_data_area_size(8)
                    .build(),
            )?;
            tpm(
                "defining the configuration counter (the owner hierarchy's authorisation)",
                context.execute_with_session(Some(AuthSession::Password), |context| {
                    context.nv_define_space(Provision::Owner, None, public)
                }),
            )?
        }
    };
    let incremented = tpm(
        "incrementing the configuration counter",
        context.execute_with_session(Some(AuthSession::Password), |context| {
            context.nv_increment(NvAuth::NvIndex(handle), handle)
        }),
    );
    let _ = context.tr_close(&mut handle.into());
    incremented?;
    read(context)?.ok_or_else(|| {
        TpmError::Unexpected(
            "the configuration counter reads as unwritten after an increment".into(),
        )
    })
}
