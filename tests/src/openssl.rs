//! The `openssl` command line as an independent peer: it makes the PKI our code must trust,
//! answers and checks RFC 3161 requests, and verifies CMS signatures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `openssl ARGS` in `dir`; panics with its stderr when it fails.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    let output = try_openssl(dir, args);
    assert!(
        output.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `openssl ARGS` in `dir` and returns what happened, success or not.
pub fn try_openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (scripts/setup installs it)")
}

/// Key kinds for [`Pki`].
#[derive(Debug, Clone, Copy)]
pub enum KeyKind {
    P256,
    Rsa2048,
}

/// A key made by openssl in `dir/<name>.key` (PEM); also `<name>.pk8` (PKCS#8 DER).
pub fn key(dir: &Path, name: &str, kind: KeyKind) -> PathBuf {
    let key = format!("{name}.key");
    match kind {
        KeyKind::P256 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                &key,
            ],
        ),
        KeyKind::Rsa2048 => openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key,
            ],
        ),
    };
    openssl(
        dir,
        &[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            &key,
            "-outform",
            "DER",
            "-out",
            &format!("{name}.pk8"),
        ],
    );
    dir.join(key)
}

/// A self-signed CA `dir/<name>.crt` with key `dir/<name>.key`.
pub fn root_ca(dir: &Path, name: &str, subject: &str) -> PathBuf {
    key(dir, name, KeyKind::P256);
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &format!("{name}.crt"),
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// A certificate `dir/<name>.crt` for a new key of `kind`, issued by the CA `ca`, with the
/// extensions given in openssl's extension-file syntax (one per line).
pub fn leaf(
    dir: &Path,
    name: &str,
    kind: KeyKind,
    subject: &str,
    ca: &str,
    extensions: &str,
) -> PathBuf {
    key(dir, name, kind);
    std::fs::write(dir.join(format!("{name}.ext")), extensions).expect("write extensions");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{name}.key"),
            "-subj",
            subject,
            "-out",
            &format!("{name}.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-set_serial",
            &format!("0x{:016x}", rand_serial()),
            "-days",
            "365",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
    dir.join(format!("{name}.crt"))
}

fn rand_serial() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) >> 1
}

/// The DER of the first certificate in a PEM file.
pub fn der(path: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(path).expect("PEM file");
    pem::parse(text).expect("PEM").into_contents()
}

/// An `openssl ts -reply` configuration for the TSA `name` (certificate and key in `dir`).
pub fn tsa_config(dir: &Path, name: &str) -> PathBuf {
    let config = format!(
        "[ tsa ]\ndefault_tsa = tsa_config1\n[ tsa_config1 ]\nserial = {dir}/{name}.serial\n\
         crypto_device = builtin\nsigner_cert = {dir}/{name}.crt\nsigner_key = {dir}/{name}.key\n\
         signer_digest = sha256\ndefault_policy = 1.2.3.4.1\ndigests = sha256, sha384, sha512\n\
         accuracy = secs:1\nordering = no\ntsa_name = no\ness_cert_id_chain = no\n\
         ess_cert_id_alg = sha256\n",
        dir = dir.display()
    );
    std::fs::write(dir.join(format!("{name}.serial")), "01\n").expect("serial");
    let path = dir.join(format!("{name}.cnf"));
    std::fs::write(&path, config).expect("config");
    path
}

/// Extensions of a TSA certificate as RFC 3161 wants them.
pub const TSA_EXTENSIONS: &str = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                                  extendedKeyUsage=critical,timeStamping\n";
