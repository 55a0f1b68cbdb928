//! Device keys that the agent would never make, for tests of the verifier's refusals: a P-256
//! signing key under the storage root key with any policy digest, or with none (userWithAuth
//! set, usable with the empty password in any boot, as agents before the PCR binding made it).

use edgeward_attestation::tpm::DeviceKey;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{
    Digest, EccPoint, EccScheme, HashScheme, PublicBuilder, PublicEccParametersBuilder,
};
use tss_esapi::traits::Marshall as _;
use tss_esapi::Context;

/// A P-256 signing key made in the TPM (fixedTPM, fixedParent), loaded, with `policy` as its
/// authPolicy and userWithAuth clear, or with no policy and userWithAuth set.
pub fn signing_key(context: &mut Context, policy: Option<[u8; 32]>) -> DeviceKey {
    let srk_public = edgeward_attestation::tpm::storage_root_template().expect("SRK template");
    let srk = context
        .execute_with_session(Some(AuthSession::Password), |context| {
            context.create_primary(Hierarchy::Owner, srk_public, None, None, None, None)
        })
        .expect("SRK")
        .key_handle;
    let attributes = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(policy.is_none())
        .with_no_da(true)
        .with_decrypt(false)
        .with_sign_encrypt(true)
        .with_restricted(false)
        .build()
        .expect("attributes");
    let mut template = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attributes)
        .with_ecc_parameters(
            PublicEccParametersBuilder::new_unrestricted_signing_key(
                EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
                EccCurve::NistP256,
            )
            .build()
            .expect("parameters"),
        )
        .with_ecc_unique_identifier(EccPoint::default());
    if let Some(policy) = policy {
        template = template.with_auth_policy(Digest::try_from(policy.to_vec()).expect("digest"));
    }
    let template = template.build().expect("template");
    let created = context
        .execute_with_session(Some(AuthSession::Password), |context| {
            context.create(srk, template, None, None, None, None)
        })
        .expect("key");
    let public = created.out_public.marshall().expect("marshal");
    let private = created.out_private.value().to_vec();
    let key = context
        .execute_with_session(Some(AuthSession::Password), |context| {
            context.load(srk, created.out_private, created.out_public)
        })
        .expect("loads");
    context.flush_context(srk.into()).expect("flush SRK");
    DeviceKey {
        key,
        public,
        private,
        policy: policy.map(|policy| policy.to_vec()).unwrap_or_default(),
    }
}
