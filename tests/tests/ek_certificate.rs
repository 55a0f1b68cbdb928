//! EK certificates from a provisioned TPM (swtpm_setup with swtpm's local CA as the
//! "manufacturer"): read from NV 0x01C00002 (RSA) and 0x01C0000A (ECC), verified to the configured root, and refused when
//! the root is unknown, the certificate belongs to another TPM, or it was altered.

use std::path::Path;
use std::time::SystemTime;

use edgeward_attestation::ek_certificate::{verify_ek_certificate, EkCertificateError};
use edgeward_attestation::tpm::{create_attestation_keys, open, read_ek_certificate, EkKind};
use edgeward_tests::swtpm::{EccManufacturer, Manufacturer, Swtpm};

fn pem_file(path: &Path) -> Vec<u8> {
    let text = std::fs::read(path).expect("CA certificate is readable");
    pem::parse(text).expect("PEM").contents().to_vec()
}

#[test]
fn rsa_ek_certificates_chain_to_the_manufacturer_root_and_nothing_else() {
    ek_certificates_chain_to_the_manufacturer_root_and_nothing_else(EkKind::Rsa);
}

#[test]
fn ecc_ek_certificates_chain_to_the_manufacturer_root_and_nothing_else() {
    ek_certificates_chain_to_the_manufacturer_root_and_nothing_else(EkKind::Ecc);
}

fn ek_certificates_chain_to_the_manufacturer_root_and_nothing_else(kind: EkKind) {
    let Some(device) = Swtpm::start_provisioned() else {
        return;
    };
    let Some(other) = Swtpm::start_provisioned() else {
        return;
    };
    // swtpm's local CA certifies RSA EKs; a P-256 EK is certified by an openssl "vendor".
    let ecc_vendor;
    let manufacturer = match kind {
        EkKind::Rsa => Manufacturer::swtpm_localca(),
        EkKind::Ecc => {
            ecc_vendor = EccManufacturer::new();
            ecc_vendor.certify_ek(&device);
            ecc_vendor.certify_ek(&other);
            ecc_vendor.ca.clone()
        }
    };
    let (root, issuer) = manufacturer.der();
    let now = SystemTime::now();

    let mut context = open(&device.tcti()).expect("swtpm opens");
    let certificate = read_ek_certificate(&mut context, kind).expect("an EK certificate in NV");
    let keys = create_attestation_keys(&mut context, kind).expect("EK and AK");
    let path = verify_ek_certificate(
        &certificate,
        std::slice::from_ref(&issuer),
        std::slice::from_ref(&root),
        &keys.ek_public,
        now,
    )
    .expect("the EK certificate chains to the local CA");
    assert_eq!(path.len(), 3, "EK, issuer, root: {path:?}");

    // Without the intermediate, or with only a foreign root, the issuer is unknown.
    assert!(matches!(
        verify_ek_certificate(
            &certificate,
            &[],
            std::slice::from_ref(&root),
            &keys.ek_public,
            now
        ),
        Err(EkCertificateError::UnknownIssuer { .. })
    ));
    // A foreign CA that even carries the real issuer's name: its key did not sign the EK. (Names
    // are matched on their encoding, so openssl's UTF8String CN may not even match swtpm's; either
    // way it is refused.)
    let scratch = std::env::temp_dir().join(format!(
        "edgeward-foreign-ca-{}-{kind:?}",
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).expect("dir");
    let status = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=swtpm-localca", "-keyout"])
        .arg(scratch.join("key.pem"))
        .arg("-out")
        .arg(scratch.join("cert.pem"))
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let impostor = pem_file(&scratch.join("cert.pem"));
    let _ = std::fs::remove_dir_all(&scratch);
    let result = verify_ek_certificate(&certificate, &[], &[impostor], &keys.ek_public, now);
    assert!(
        matches!(
            result,
            Err(EkCertificateError::BadSignature { .. } | EkCertificateError::UnknownIssuer { .. })
        ),
        "an impostor CA with the issuer's name: {result:?}"
    );

    // Another TPM's (genuine) EK certificate does not certify this TPM's EK.
    let mut other_context = open(&other.tcti()).expect("swtpm opens");
    let other_certificate =
        read_ek_certificate(&mut other_context, kind).expect("an EK certificate");
    assert_eq!(
        verify_ek_certificate(
            &other_certificate,
            std::slice::from_ref(&issuer),
            std::slice::from_ref(&root),
            &keys.ek_public,
            now
        ),
        Err(EkCertificateError::KeyMismatch)
    );

    // An altered byte in the signed part breaks the signature (or the parse).
    let mut altered = certificate.clone();
    let index = altered.len() / 3;
    altered[index] ^= 0x01;
    assert!(verify_ek_certificate(&altered, &[issuer], &[root], &keys.ek_public, now).is_err());
    keys.flush(&mut context);
}
