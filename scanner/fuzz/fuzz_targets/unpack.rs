//! Hostile archives: unpacking, nested expansion and the whole scan must never panic, hang or
//! exceed their limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigma_scanner::report::ScanRequest;
use sigma_scanner::{RulePack, unpack};
use sigma_shared::config::SandboxLimits;

const LIMITS: SandboxLimits = SandboxLimits {
    max_files: 50,
    max_total_bytes: 512 * 1024,
    max_file_bytes: 200 * 1024,
    max_nested_depth: 2,
};

fuzz_target!(|data: &[u8]| {
    let files = unpack::unpack(data, &LIMITS);
    if let Ok(files) = &files {
        assert!(files.len() <= LIMITS.max_files);
        assert!(files.iter().map(|f| f.bytes.len() as u64).sum::<u64>() <= LIMITS.max_total_bytes);
        assert!(
            files
                .iter()
                .all(|f| !f.path.starts_with('/') && !f.path.split('/').any(|p| p == ".."))
        );
    }
    let _ = unpack::check_readable(data, 1 << 20);
    let report = sigma_scanner::scan(ScanRequest {
        category: None,
        files,
        over_limits: None,
        limits: LIMITS,
        source: None,
        pack: RulePack::builtin(),
    });
    assert!(!report.blocked || !report.block_reasons.is_empty());
});
