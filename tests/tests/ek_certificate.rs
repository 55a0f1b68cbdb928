//! EK certificates from a provisioned TPM (swtpm_setup with swtpm's local CA as the
//! "manufacturer"): read from NV 0x01C00002 (RSA) and 0x01C0000A (ECC), verified to the
//! configured root, and refused when the root is unknown, the certificate belongs to another
//! TPM, or it was altered; and the TCG EK Credential Profile's shape, on chains an openssl
//! "vendor" makes: issuers that are not CAs or may not sign certificates, path lengths
//! exceeded, EK certificates without (or with another) extended key usage, a CA or the wrong key
//! usage, each refused with its reason, and the documented EKU exception.

use std::path::Path;
use std::time::SystemTime;

use edgeward_attestation::ek_certificate::{verify_ek_certificate, EkCertificateError, EkRoots};
use edgeward_attestation::tpm::{create_attestation_keys, open, read_ek_certificate, EkKind};
use edgeward_tests::swtpm::{Manufacturer, Swtpm, Vendor, VendorProfile};

fn roots(root: &[u8]) -> EkRoots {
    EkRoots {
        roots: vec![root.to_vec()],
        without_eku: Vec::new(),
    }
}

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
            ecc_vendor = Vendor::new();
            ecc_vendor.certify_ek(&device, EkKind::Ecc);
            ecc_vendor.certify_ek(&other, EkKind::Ecc);
            ecc_vendor.ca.clone()
        }
    };
    let (root, issuer) = manufacturer.der();
    let now = SystemTime::now();

    let mut context = open(&device.tcti()).expect("swtpm opens");
    let certificate = read_ek_certificate(&mut context, kind).expect("an EK certificate in NV");
    let keys = create_attestation_keys(&mut context, kind).expect("EK and AK");
    let verified = verify_ek_certificate(
        &certificate,
        std::slice::from_ref(&issuer),
        &roots(&root),
        &keys.ek_public,
        now,
    )
    .expect("the EK certificate chains to the local CA");
    assert_eq!(verified.path.len(), 3, "EK, issuer, root: {verified:?}");
    assert!(
        !verified.eku_exception,
        "swtpm's and the vendor's EK certificates carry tcg-kp-EKCertificate"
    );

    // Without the intermediate, or with only a foreign root, the issuer is unknown.
    assert!(matches!(
        verify_ek_certificate(&certificate, &[], &roots(&root), &keys.ek_public, now),
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
    let result = verify_ek_certificate(&certificate, &[], &roots(&impostor), &keys.ek_public, now);
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
            &roots(&root),
            &keys.ek_public,
            now
        ),
        Err(EkCertificateError::KeyMismatch)
    );

    // An altered byte in the signed part breaks the signature (or the parse).
    let mut altered = certificate.clone();
    let index = altered.len() / 3;
    altered[index] ^= 0x01;
    assert!(
        verify_ek_certificate(&altered, &[issuer], &roots(&root), &keys.ek_public, now).is_err()
    );
    keys.flush(&mut context);
}

/// Verifies an EK certificate `vendor` issued for `tpm` with `extensions`.
fn verify_from(
    vendor: &Vendor,
    tpm: &Swtpm,
    kind: EkKind,
    extensions: &str,
    without_eku: bool,
) -> Result<edgeward_attestation::ek_certificate::VerifiedEk, EkCertificateError> {
    let certificate = vendor.issue_ek(tpm, kind, extensions);
    let (root, issuer) = vendor.ca.der();
    let mut context = open(&tpm.tcti()).expect("swtpm opens");
    let keys = create_attestation_keys(&mut context, kind).expect("EK and AK");
    let ek = keys.ek_public.clone();
    keys.flush(&mut context);
    let trusted = EkRoots {
        roots: vec![root.clone()],
        without_eku: if without_eku { vec![root] } else { Vec::new() },
    };
    verify_ek_certificate(&certificate, &[issuer], &trusted, &ek, SystemTime::now())
}

#[test]
fn ek_chains_have_the_shape_the_tcg_profile_gives_them() {
    let Some(tpm) = Swtpm::start() else { return };
    let profile = VendorProfile::default();
    let good = Vendor::new();
    for kind in [EkKind::Rsa, EkKind::Ecc] {
        let verified =
            verify_from(&good, &tpm, kind, &profile.ek, false).expect("a profile-conformant chain");
        assert!(!verified.eku_exception);
    }

    // An issuing CA whose certificate says it is not a CA, or may not sign certificates.
    let not_a_ca = Vendor::with(&VendorProfile {
        intermediate: "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,keyCertSign\n".into(),
        ..profile.clone()
    });
    let refused = verify_from(&not_a_ca, &tpm, EkKind::Rsa, &profile.ek, false);
    assert!(
        matches!(&refused, Err(EkCertificateError::NotACa { reason, .. }) if reason.contains("cA false")),
        "{refused:?}"
    );
    eprintln!("refused as expected: {}", refused.expect_err("refused"));
    let no_cert_sign = Vendor::with(&VendorProfile {
        intermediate: "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,digitalSignature\n"
            .into(),
        ..profile.clone()
    });
    let refused = verify_from(&no_cert_sign, &tpm, EkKind::Rsa, &profile.ek, false);
    assert!(
        matches!(&refused, Err(EkCertificateError::NotACa { reason, .. }) if reason.contains("keyCertSign")),
        "{refused:?}"
    );
    eprintln!("refused as expected: {}", refused.expect_err("refused"));
    let no_constraints = Vendor::with(&VendorProfile {
        intermediate: "keyUsage=critical,keyCertSign\n".into(),
        ..profile.clone()
    });
    let refused = verify_from(&no_constraints, &tpm, EkKind::Rsa, &profile.ek, false);
    assert!(
        matches!(&refused, Err(EkCertificateError::NotACa { reason, .. }) if reason.contains("no basicConstraints")),
        "{refused:?}"
    );

    // A root that allows no CA below it, above an issuing CA.
    let short = Vendor::with(&VendorProfile {
        root: "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign\n".into(),
        ..profile.clone()
    });
    let refused = verify_from(&short, &tpm, EkKind::Rsa, &profile.ek, false);
    assert!(
        matches!(
            &refused,
            Err(EkCertificateError::PathLength {
                allowed: 0,
                below: 1,
                ..
            })
        ),
        "{refused:?}"
    );
    eprintln!("refused as expected: {}", refused.expect_err("refused"));

    // EK certificates: without the EK extended key usage, with another one, a CA, or a key
    // usage that does not fit the EK.
    let no_eku = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{usage}\n";
    let refused = verify_from(&good, &tpm, EkKind::Ecc, no_eku, false);
    assert_eq!(
        refused,
        Err(EkCertificateError::ExtendedKeyUsage {
            found: "(none)".into()
        })
    );
    eprintln!("refused as expected: {}", refused.expect_err("refused"));
    // The documented exception: this root's EK certificates may lack it; the result says so.
    let excepted = verify_from(&good, &tpm, EkKind::Ecc, no_eku, true).expect("the exception");
    assert!(excepted.eku_exception);
    let client = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,{usage}\n\
                  extendedKeyUsage=clientAuth\n";
    let refused = verify_from(&good, &tpm, EkKind::Ecc, client, true);
    assert_eq!(
        refused,
        Err(EkCertificateError::ExtendedKeyUsage {
            found: "[clientAuth]".into()
        }),
        "another EKU is never excepted"
    );
    let ca = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,{usage}\n\
              extendedKeyUsage=2.23.133.8.1\n";
    assert_eq!(
        verify_from(&good, &tpm, EkKind::Rsa, ca, false),
        Err(EkCertificateError::EkIsCa)
    );
    let signing = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                   extendedKeyUsage=2.23.133.8.1\n";
    assert_eq!(
        verify_from(&good, &tpm, EkKind::Ecc, signing, false),
        Err(EkCertificateError::KeyUsage {
            needed: "keyAgreement"
        })
    );
    assert_eq!(
        verify_from(&good, &tpm, EkKind::Rsa, signing, false),
        Err(EkCertificateError::KeyUsage {
            needed: "keyEncipherment"
        })
    );
}
