//! A PE image from untrusted bytes: section table, section contents and the Authenticode digest,
//! as PCR prediction reads a UKI.
#![no_main]

use edgeward_bootchain::pe::PeImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(image) = PeImage::parse(data) {
        let _ = image.authenticode_sha256();
        for name in [".linux", ".osrel", ".cmdline", ".initrd"] {
            let _ = image.section(name);
        }
    }
});
