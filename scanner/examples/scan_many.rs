//! Scans many skill folders in one process and prints one JSON report per line, in order: the
//! evaluation's fast path (`eval/run.py --batch`), the same engine and rule pack as `sigma scan`
//! on a directory without a category, without a process start per skill.
//!
//!     cargo run --release -p sigma-scanner --example scan_many -- DIR...

use std::io::Write;
use std::path::Path;

use sigma_scanner::report::ScanRequest;
use sigma_scanner::{RulePack, Source, unpack};

fn main() {
    let pack = RulePack::builtin();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for dir in std::env::args().skip(1) {
        let limits = unpack::ANALYSIS_CAPS;
        let unpacked = unpack::read_dir_for_scan(Path::new(&dir), &limits);
        let report = sigma_scanner::scan(ScanRequest {
            category: None,
            files: unpacked.files,
            over_limits: unpacked.over_limits,
            limits,
            source: Some(Source::Directory { path: dir.clone() }),
            pack,
        });
        let line =
            serde_json::to_string(&report.to_json_with_digests()).expect("report serialises");
        writeln!(out, "{line}").expect("stdout");
    }
}
