//! Safe unpacking of skill bundles, entirely in memory: nothing from an archive ever touches the
//! filesystem. Limits are enforced on the bytes actually read while streaming, never on sizes an
//! archive declares about itself.

use std::io::Read;

use sigma_shared::config::SandboxLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleFormat {
    Zip,
    TarGz,
}

impl BundleFormat {
    /// Recognised by content (magic bytes), not by file name.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            Some(Self::Zip)
        } else if bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Self::TarGz)
        } else {
            None
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zip => "zip",
            Self::TarGz => "tar.gz",
        }
    }
}

#[derive(Clone, Debug)]
pub struct BundleFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// Why a bundle cannot be analysed. The message is shown to the developer as the rejection reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    #[error("not a zip or tar.gz archive")]
    UnknownFormat,
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error("unsafe path `{0}`: absolute paths and `..` components are not allowed")]
    UnsafePath(String),
    #[error("`{0}` is a symbolic or hard link; links are not allowed in bundles")]
    Link(String),
    #[error("`{0}` is a device, fifo or other special file")]
    SpecialFile(String),
    #[error("too many files: more than {0}")]
    TooManyFiles(usize),
    #[error("`{path}` is larger than the {limit}-byte per-file limit")]
    FileTooLarge { path: String, limit: u64 },
    #[error("bundle content exceeds the {0}-byte total limit")]
    TotalTooLarge(u64),
    #[error("duplicate path `{0}`")]
    Duplicate(String),
}

pub fn unpack(bytes: &[u8], limits: &SandboxLimits) -> Result<Vec<BundleFile>, UnpackError> {
    let mut sink = Sink {
        limits,
        files: Vec::new(),
        total: 0,
    };
    match BundleFormat::sniff(bytes).ok_or(UnpackError::UnknownFormat)? {
        BundleFormat::Zip => unpack_zip(bytes, &mut sink)?,
        BundleFormat::TarGz => unpack_tar_gz(bytes, &mut sink)?,
    }
    let mut files = sink.files;
    files.sort_by(|a, b| a.path.cmp(&b.path));
    for pair in files.windows(2) {
        if pair[0].path == pair[1].path {
            return Err(UnpackError::Duplicate(pair[0].path.clone()));
        }
    }
    Ok(files)
}

/// Cheap check used at intake: is this a readable archive at all? Limits are the sandbox's job;
/// `inflate_cap` only bounds how much a hostile archive can make this check decompress.
pub fn check_readable(bytes: &[u8], inflate_cap: u64) -> Result<BundleFormat, UnpackError> {
    let corrupt = |e: &dyn std::fmt::Display| UnpackError::Corrupt(e.to_string());
    let format = BundleFormat::sniff(bytes).ok_or(UnpackError::UnknownFormat)?;
    match format {
        BundleFormat::Zip => {
            zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| corrupt(&e))?;
        }
        BundleFormat::TarGz => {
            let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
            let mut inflated = 0u64;
            for entry in archive.entries().map_err(|e| corrupt(&e))? {
                let entry = entry.map_err(|e| corrupt(&e))?;
                inflated += std::io::copy(
                    &mut entry.take(inflate_cap - inflated),
                    &mut std::io::sink(),
                )
                .map_err(|e| corrupt(&e))?;
                if inflated >= inflate_cap {
                    break; // Readable so far; the sandbox will refuse it by its limits.
                }
            }
        }
    }
    Ok(format)
}

struct Sink<'a> {
    limits: &'a SandboxLimits,
    files: Vec<BundleFile>,
    total: u64,
}

impl Sink<'_> {
    fn add(&mut self, raw_path: &str, reader: &mut dyn Read) -> Result<(), UnpackError> {
        let path = safe_path(raw_path)?;
        if path.is_empty() {
            return Err(UnpackError::UnsafePath(raw_path.to_owned()));
        }
        if self.files.len() >= self.limits.max_files {
            return Err(UnpackError::TooManyFiles(self.limits.max_files));
        }
        let mut bytes = Vec::new();
        // Read one byte past the limit: a file that fills it is exactly too large.
        reader
            .take(self.limits.max_file_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| UnpackError::Corrupt(e.to_string()))?;
        if bytes.len() as u64 > self.limits.max_file_bytes {
            return Err(UnpackError::FileTooLarge {
                path,
                limit: self.limits.max_file_bytes,
            });
        }
        self.total += bytes.len() as u64;
        if self.total > self.limits.max_total_bytes {
            return Err(UnpackError::TotalTooLarge(self.limits.max_total_bytes));
        }
        self.files.push(BundleFile { path, bytes });
        Ok(())
    }
}

/// Normalises an archive path to a relative, forward-slash path (empty for the root itself),
/// refusing anything that could escape the bundle root.
fn safe_path(raw: &str) -> Result<String, UnpackError> {
    let unsafe_path = || UnpackError::UnsafePath(raw.to_owned());
    let unified = raw.replace('\\', "/");
    // Control characters (newlines above all) would make paths ambiguous in the bundle digest's
    // `sha256sum` lines and in the reviewers' prompt.
    if unified.starts_with('/')
        || unified.chars().any(char::is_control)
        || unified.chars().nth(1) == Some(':')
    {
        return Err(unsafe_path());
    }
    let mut parts = Vec::new();
    for part in unified.split('/') {
        match part {
            "" | "." => {}
            ".." => return Err(unsafe_path()),
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

fn unpack_zip(bytes: &[u8], sink: &mut Sink<'_>) -> Result<(), UnpackError> {
    let corrupt = |e: zip::result::ZipError| UnpackError::Corrupt(e.to_string());
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(corrupt)?;
    for index in 0..archive.len() {
        let mut file = archive.by_index(index).map_err(corrupt)?;
        let name = file.name().map_err(corrupt)?.into_owned();
        if file.is_dir() {
            safe_path(&name)?;
            continue;
        }
        if file.is_symlink() {
            return Err(UnpackError::Link(name));
        }
        sink.add(&name, &mut file)?;
    }
    Ok(())
}

fn unpack_tar_gz(bytes: &[u8], sink: &mut Sink<'_>) -> Result<(), UnpackError> {
    use tar::EntryType;
    let corrupt = |e: std::io::Error| UnpackError::Corrupt(e.to_string());
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => sink.add(&name, &mut entry)?,
            EntryType::Directory => {
                safe_path(&name)?;
            }
            EntryType::Symlink | EntryType::Link => return Err(UnpackError::Link(name)),
            // PAX and GNU long-name headers are folded into the next entry by the tar crate.
            EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink => {}
            _ => return Err(UnpackError::SpecialFile(name)),
        }
    }
    Ok(())
}

/// The bundle digest, reproducible with standard tools:
/// `(cd DIR && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum) | sha256sum`
/// i.e. SHA-256 over the `sha256sum` lines (`<hex>  <path>\n`) of every file, sorted by path bytes.
pub fn bundle_digest(files: &[BundleFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&BundleFile> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut hasher = Sha256::new();
    for file in sorted {
        hasher.update(format!(
            "{}  {}\n",
            hex::encode(Sha256::digest(&file.bytes)),
            file.path
        ));
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const LIMITS: SandboxLimits = SandboxLimits {
        max_files: 3,
        max_total_bytes: 100,
        max_file_bytes: 60,
    };

    fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(if path.ends_with('/') {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            // set_path refuses `..`; write the raw name so we can test hostile archives.
            header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (path, data) in entries {
            writer
                .start_file(*path, zip::write::SimpleFileOptions::default())
                .unwrap();
            writer.write_all(data).unwrap();
        }
        writer.finish().unwrap().into_inner()
    }

    #[test]
    fn reads_both_formats_and_sorts_paths() {
        for bytes in [
            tar_gz(&[("./", b""), ("b.txt", b"b"), ("./a/SKILL.md", b"a")]),
            zip_of(&[("b.txt", b"b"), ("a/SKILL.md", b"a")]),
        ] {
            let files = unpack(&bytes, &LIMITS).unwrap();
            let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
            assert_eq!(paths, ["a/SKILL.md", "b.txt"]);
        }
    }

    #[test]
    fn refuses_traversal_absolute_and_links() {
        assert_eq!(
            unpack(&tar_gz(&[("../evil", b"x")]), &LIMITS).unwrap_err(),
            UnpackError::UnsafePath("../evil".into())
        );
        assert!(matches!(
            unpack(&zip_of(&[("/etc/passwd", b"x")]), &LIMITS),
            Err(UnpackError::UnsafePath(_))
        ));
        assert!(matches!(
            unpack(&zip_of(&[("a\\..\\..\\x", b"x")]), &LIMITS),
            Err(UnpackError::UnsafePath(_))
        ));
        // A newline in a name could forge a second `sha256sum` line in the bundle digest.
        assert!(matches!(
            unpack(&tar_gz(&[("b\n0000  c", b"x")]), &LIMITS),
            Err(UnpackError::UnsafePath(_))
        ));

        let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "link", "/etc/passwd")
            .unwrap();
        let bytes = builder.into_inner().unwrap().finish().unwrap();
        assert_eq!(
            unpack(&bytes, &LIMITS).unwrap_err(),
            UnpackError::Link("link".into())
        );
    }

    #[test]
    fn enforces_limits_on_bytes_read() {
        let big = vec![b'x'; 61];
        assert!(matches!(
            unpack(&tar_gz(&[("big", &big)]), &LIMITS),
            Err(UnpackError::FileTooLarge { .. })
        ));
        let fifty = vec![b'x'; 50];
        assert_eq!(
            unpack(
                &tar_gz(&[("a", &fifty), ("b", &fifty), ("c", b"x")]),
                &LIMITS
            )
            .unwrap_err(),
            UnpackError::TotalTooLarge(100)
        );
        assert_eq!(
            unpack(
                &zip_of(&[("a", b""), ("b", b""), ("c", b""), ("d", b"")]),
                &LIMITS
            )
            .unwrap_err(),
            UnpackError::TooManyFiles(3)
        );
        // A zip bomb: a tiny archive that inflates past the per-file cap is stopped while reading.
        let bomb = zip_of(&[("bomb", &vec![0u8; 1_000_000])]);
        assert!(bomb.len() < 5_000);
        assert!(matches!(
            unpack(&bomb, &LIMITS),
            Err(UnpackError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn corrupt_and_unknown_input_is_refused() {
        assert_eq!(
            check_readable(b"hello", 1024),
            Err(UnpackError::UnknownFormat)
        );
        // A gzip bomb is only inflated up to the cap, and still counts as readable.
        let bomb = tar_gz(&[("bomb", &vec![0u8; 2_000_000])]);
        assert_eq!(check_readable(&bomb, 1024), Ok(BundleFormat::TarGz));
        let mut truncated = tar_gz(&[("a", b"some content here")]);
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(
            check_readable(&truncated, 1 << 20),
            Err(UnpackError::Corrupt(_))
        ));
        assert!(matches!(
            check_readable(b"PK\x03\x04garbage", 1 << 20),
            Err(UnpackError::Corrupt(_))
        ));
    }

    #[test]
    fn bundle_digest_matches_sha256sum_lines() {
        use sha2::{Digest, Sha256};
        let files = vec![
            BundleFile {
                path: "b".into(),
                bytes: b"2".to_vec(),
            },
            BundleFile {
                path: "a".into(),
                bytes: b"1".to_vec(),
            },
        ];
        let lines = format!(
            "{}  a\n{}  b\n",
            hex::encode(Sha256::digest(b"1")),
            hex::encode(Sha256::digest(b"2"))
        );
        assert_eq!(
            bundle_digest(&files),
            hex::encode(Sha256::digest(lines.as_bytes()))
        );
    }
}
