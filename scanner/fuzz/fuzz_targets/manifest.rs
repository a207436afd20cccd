//! SKILL.md front matter and dependency files from arbitrary text: parse errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sigma_scanner::{deps, manifest};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = manifest::parse(&text);
    let mut parsed = deps::Parsed::default();
    deps::parse_requirements("requirements.txt", &text, &mut parsed);
    deps::parse_package_json("package.json", &text, &mut parsed);
    deps::parse_npmrc(".npmrc", &text, &mut parsed);
});
