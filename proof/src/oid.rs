//! The object identifiers the proofs use. const-oid's database lacks the RFC 3161 and ESS ones,
//! so all are spelled here, where they can be checked against the RFCs in one place.

use der::asn1::ObjectIdentifier as Oid;

pub const DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.1");
pub const SIGNED_DATA: Oid = Oid::new_unwrap("1.2.840.113549.1.7.2");
pub const CONTENT_TYPE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.3");
pub const MESSAGE_DIGEST: Oid = Oid::new_unwrap("1.2.840.113549.1.9.4");
pub const SIGNING_TIME: Oid = Oid::new_unwrap("1.2.840.113549.1.9.5");
/// id-ct-TSTInfo (RFC 3161).
pub const TST_INFO: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.1.4");
/// id-aa-signingCertificate (RFC 2634) and -V2 (RFC 5035).
pub const SIGNING_CERTIFICATE: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.12");
pub const SIGNING_CERTIFICATE_V2: Oid = Oid::new_unwrap("1.2.840.113549.1.9.16.2.47");
pub const SHA256: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.1");
pub const SHA384: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.2");
pub const SHA512: Oid = Oid::new_unwrap("2.16.840.1.101.3.4.2.3");
pub const ECDSA_SHA256: Oid = Oid::new_unwrap("1.2.840.10045.4.3.2");
pub const ECDSA_SHA384: Oid = Oid::new_unwrap("1.2.840.10045.4.3.3");
pub const RSA_ENCRYPTION: Oid = Oid::new_unwrap("1.2.840.113549.1.1.1");
pub const RSA_SHA256: Oid = Oid::new_unwrap("1.2.840.113549.1.1.11");
pub const RSA_SHA384: Oid = Oid::new_unwrap("1.2.840.113549.1.1.12");
pub const RSA_SHA512: Oid = Oid::new_unwrap("1.2.840.113549.1.1.13");
/// The sigstore timestamp server's policy, which the platform's TSA answers with; ours too.
pub const SIGSTORE_TSA_POLICY: Oid = Oid::new_unwrap("1.3.6.1.4.1.57264.2");

/// Key algorithms and curves as x509-parser spells them.
pub const EC_KEY: &str = "1.2.840.10045.2.1";
pub const RSA_KEY: &str = "1.2.840.113549.1.1.1";
pub const P256: &str = "1.2.840.10045.3.1.7";
pub const P384: &str = "1.3.132.0.34";
