//! Building skill bundles in memory, including hostile ones.

use std::io::Write;

pub const SKILL_MD: &str = "---\nname: weather-forecast\nversion: 1.0.0\ndescription: Looks up the forecast.\nexternalCalls:\n  - https://api.open-meteo.com/v1/forecast\n---\n# Weather\nAsk which city, then run forecast.py and summarise the next three days.\n";
pub const FORECAST_PY: &str = "import urllib.request\nurllib.request.urlopen('https://api.open-meteo.com/v1/forecast?latitude=1&longitude=2')\n";

pub fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Raw name bytes, so hostile paths such as `../x` can be built.
        header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, *data).expect("append");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

pub fn zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut writer = ::zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (path, data) in entries {
        writer
            .start_file(*path, ::zip::write::SimpleFileOptions::default())
            .expect("zip entry");
        writer.write_all(data).expect("zip write");
    }
    writer.finish().expect("zip").into_inner()
}

/// A clean, ordinary skill.
pub fn weather_skill() -> Vec<u8> {
    tar_gz(&[
        ("SKILL.md", SKILL_MD.as_bytes()),
        ("forecast.py", FORECAST_PY.as_bytes()),
    ])
}

/// The same skill with a distinct byte so its content address differs.
pub fn weather_skill_variant(n: usize) -> Vec<u8> {
    let md = format!("{SKILL_MD}\n<!-- build {n} -->\n");
    tar_gz(&[
        ("SKILL.md", md.as_bytes()),
        ("forecast.py", FORECAST_PY.as_bytes()),
    ])
}
