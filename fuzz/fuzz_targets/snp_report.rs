//! SEV-SNP evidence from untrusted bytes: the report (raw or hex) and the VCEK certificate a
//! device sends, through parsing and appraisal, and the VCEK's TCB and chip extensions alone.
#![no_main]

use edgeward_attestation::snp::{appraise, read_chain, read_report, SnpPolicy, VcekFields};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_chain(data);
    let _ = VcekFields::read(data);
    if let Ok(report) = read_report(data) {
        let _ = appraise(&report, data, None, &SnpPolicy::default());
    }
    // A report-sized prefix with the rest offered as the VCEK.
    if data.len() > edgeward_attestation::snp::REPORT_LEN {
        let (report, vcek) = data.split_at(edgeward_attestation::snp::REPORT_LEN);
        let _ = appraise(report, vcek, None, &SnpPolicy::default());
    }
});
