//! The policy that binds the device key to the boot it was certified in: TPM2_PolicyPCR over the
//! PCRs that identify the released image (the Secure Boot state and keys, the UKI the firmware
//! loaded, the UKI's sections, the initrd, the command line and sysext PCRs that must stay
//! empty). The device creates its key with this policy's digest as its authPolicy and without
//! userWithAuth, so the TPM signs with it only while those PCRs hold the values they had then;
//! the verifier certifies the key only when that digest is the one its accepted quote gives.
//! Booted into anything else, the same TPM refuses to sign: a stolen disk or a rebooted device
//! cannot use the key. Decision record: docs/decisions/0021.
//!
//! The digest is computed here from PCR values (TPM 2.0 Part 3, TPM2_PolicyPCR), without a TPM,
//! because both sides need it: the device to build its key's template, the verifier to check it.

use sha2::{Digest as _, Sha256};

/// The SHA-256 PCRs the device key is bound to: 4 (the UKI's Authenticode hash), 7 (Secure Boot
/// state and the db entry that verified it), 9 (the initrd the kernel loaded), 11 (the UKI's
/// sections), 12 and 13 (command line, credentials and system extensions: empty in a released
/// boot). Anything measured after boot (IMA in 10, workloads later) goes to PCRs outside it.
pub const DEVICE_KEY_PCRS: [u8; 6] = [4, 7, 9, 11, 12, 13];

const TPM_CC_POLICY_PCR: u32 = 0x0000_017F;
const TPM_ALG_SHA256: u16 = 0x000B;

/// The marshalled `TPML_PCR_SELECTION` of the SHA-256 bank with `pcrs` (0-23) selected.
pub fn pcr_selection(pcrs: impl IntoIterator<Item = u8>) -> [u8; 10] {
    let mut bitmap = [0u8; 3];
    for pcr in pcrs {
        let pcr = usize::from(pcr.min(23));
        bitmap[pcr / 8] |= 1 << (pcr % 8);
    }
    let mut out = [0u8; 10];
    out[..4].copy_from_slice(&1u32.to_be_bytes());
    out[4..6].copy_from_slice(&TPM_ALG_SHA256.to_be_bytes());
    out[6] = 3;
    out[7..].copy_from_slice(&bitmap);
    out
}

/// The policy digest of one TPM2_PolicyPCR, from an empty policy, over `values` (PCR index and
/// SHA-256 value, ascending by index): `H(0³² ‖ TPM_CC_PolicyPCR ‖ TPML_PCR_SELECTION ‖
/// H(values in order))`.
pub fn pcr_policy_digest(values: &[(u8, [u8; 32])]) -> [u8; 32] {
    let mut pcr_digest = Sha256::new();
    for (_, value) in values {
        pcr_digest.update(value);
    }
    let mut policy = Sha256::new();
    policy.update([0u8; 32]);
    policy.update(TPM_CC_POLICY_PCR.to_be_bytes());
    policy.update(pcr_selection(values.iter().map(|(pcr, _)| *pcr)));
    policy.update(pcr_digest.finalize());
    policy.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_selection_is_the_sha256_bank_with_a_three_byte_bitmap() {
        assert_eq!(
            hex::encode(pcr_selection(DEVICE_KEY_PCRS)),
            // count 1, sha256, 3 bytes: PCRs 4 and 7 | 9 and 11, 12 and 13 | none.
            "00000001000b03903a00"
        );
    }

    #[test]
    fn the_digest_depends_on_every_value_and_on_which_pcrs() {
        let values: Vec<(u8, [u8; 32])> =
            DEVICE_KEY_PCRS.iter().map(|pcr| (*pcr, [0; 32])).collect();
        let digest = pcr_policy_digest(&values);
        let mut other = values.clone();
        other[3].1[0] = 1;
        assert_ne!(pcr_policy_digest(&other), digest);
        let mut moved = values.clone();
        moved[0].0 = 5;
        assert_ne!(pcr_policy_digest(&moved), digest);
    }
}
