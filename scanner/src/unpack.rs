//! Safe unpacking of skill bundles, entirely in memory: nothing from an archive is ever written to
//! disk, so nothing can land outside a private directory or be left behind. Limits are enforced on
//! the bytes actually read while streaming, never on sizes an archive declares about itself, and
//! the decompressor itself is capped so headers the tar reader buffers cannot exhaust memory.

use std::io::Read;
use std::path::Path;

use sigma_shared::config::SandboxLimits;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleFormat {
    Zip,
    TarGz,
    Tar,
}

impl BundleFormat {
    /// Recognised by content (magic bytes), not by file name.
    pub fn sniff(bytes: &[u8]) -> Option<Self> {
        if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
            Some(Self::Zip)
        } else if bytes.starts_with(&[0x1f, 0x8b]) {
            Some(Self::TarGz)
        } else if bytes.len() >= 262 && &bytes[257..262] == b"ustar" {
            Some(Self::Tar)
        } else {
            None
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Zip => "zip",
            Self::TarGz => "tar.gz",
            Self::Tar => "tar",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleFile {
    /// Relative, `/`-separated. Files found inside a nested archive are named
    /// `outer.zip!/inner/path`; they are scanned but are not part of the bundle digest.
    pub path: String,
    pub bytes: Vec<u8>,
    /// How many archives deep the file sits: 0 for the bundle's own files.
    pub depth: u32,
}

impl BundleFile {
    pub fn new(path: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            bytes: bytes.into(),
            depth: 0,
        }
    }
}

/// Why a bundle cannot be analysed. The message is shown to the developer as the rejection reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UnpackError {
    #[error("not a zip, tar or tar.gz archive")]
    UnknownFormat,
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error(
        "unsafe path `{0}`: absolute paths, `..` components, control characters and non-UTF-8 names are not allowed"
    )]
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
    #[error("`{0}` nests archives deeper than the {1}-level limit")]
    NestedTooDeep(String, u32),
    #[error("cannot read `{0}`: {1}")]
    Io(String, String),
}

impl UnpackError {
    /// A submission limit was exceeded: a policy rejection, not a sign of hostility. The bundle
    /// can still be analysed under [`ANALYSIS_CAPS`] so the report shows what it contains.
    pub fn is_policy(&self) -> bool {
        matches!(
            self,
            Self::TooManyFiles(_) | Self::FileTooLarge { .. } | Self::TotalTooLarge(_)
        )
    }

    /// The input could not be read at all (not an archive, a corrupt one, an I/O error): nothing
    /// was analysed, which is neither a verdict nor a policy rejection.
    pub fn is_unreadable(&self) -> bool {
        matches!(self, Self::UnknownFormat | Self::Corrupt(_) | Self::Io(..))
    }

    /// The archive itself is hostile: it tries to escape, link or smuggle special files.
    pub fn is_hostile(&self) -> bool {
        matches!(
            self,
            Self::UnsafePath(_) | Self::Link(_) | Self::SpecialFile(_) | Self::NestedTooDeep(..)
        )
    }
}

/// Safety caps for analysing a bundle that broke the submission limits: large enough for any
/// real skill, small enough that a bomb is still stopped.
pub const ANALYSIS_CAPS: SandboxLimits = SandboxLimits {
    max_files: 5_000,
    max_total_bytes: 64 * 1024 * 1024,
    max_file_bytes: 16 * 1024 * 1024,
    max_nested_depth: 2,
};

/// Files to scan and, when the submission limits were exceeded, which one: the bundle is then
/// read again under [`ANALYSIS_CAPS`] so the report still shows what it contains.
pub struct ForScan {
    pub files: Result<Vec<BundleFile>, UnpackError>,
    pub over_limits: Option<UnpackError>,
}

pub fn unpack_for_scan(bytes: &[u8], limits: &SandboxLimits) -> ForScan {
    for_scan(limits, |l| unpack(bytes, l))
}

pub fn read_dir_for_scan(root: &Path, limits: &SandboxLimits) -> ForScan {
    for_scan(limits, |l| read_dir(root, l))
}

fn for_scan(
    limits: &SandboxLimits,
    read: impl Fn(&SandboxLimits) -> Result<Vec<BundleFile>, UnpackError>,
) -> ForScan {
    match read(limits) {
        Err(e) if e.is_policy() => ForScan {
            files: read(&SandboxLimits {
                max_nested_depth: limits.max_nested_depth,
                ..ANALYSIS_CAPS
            }),
            over_limits: Some(e),
        },
        files => ForScan {
            files,
            over_limits: None,
        },
    }
}

/// Unpacks a bundle's own files (no nested expansion), sorted by path.
pub fn unpack(bytes: &[u8], limits: &SandboxLimits) -> Result<Vec<BundleFile>, UnpackError> {
    let mut sink = Sink::new(limits);
    read_archive(bytes, "", 0, &mut sink)?;
    sink.finish()
}

/// A nested archive that could not be opened; reported as a finding, not a rejection, because the
/// reviewers can still judge an opaque blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedProblem {
    pub path: String,
    pub reason: String,
}

/// Opens every archive among `files` (by content) down to `limits.max_nested_depth`, returning the
/// files found inside. Everything counts against the same file and byte budget as the bundle, so a
/// nested bomb is stopped like a top-level one. An archive deeper than the limit is refused.
pub fn expand_nested(
    files: &[BundleFile],
    limits: &SandboxLimits,
) -> Result<(Vec<BundleFile>, Vec<NestedProblem>), UnpackError> {
    let mut sink = Sink::new(limits);
    sink.count = files.len();
    sink.total = files.iter().map(|f| f.bytes.len() as u64).sum();
    let mut problems = Vec::new();
    let mut queue: Vec<BundleFile> = files
        .iter()
        .filter(|f| BundleFormat::sniff(&f.bytes).is_some())
        .cloned()
        .collect();
    while let Some(archive) = queue.pop() {
        let depth = archive.depth + 1;
        if depth > limits.max_nested_depth {
            return Err(UnpackError::NestedTooDeep(
                archive.path,
                limits.max_nested_depth,
            ));
        }
        let before = sink.files.len();
        let prefix = format!("{}!/", archive.path);
        match read_archive(&archive.bytes, &prefix, depth, &mut sink) {
            Ok(()) => {}
            // Budget errors stop everything; a merely unreadable inner archive is a finding.
            Err(e @ UnpackError::Corrupt(_)) | Err(e @ UnpackError::UnknownFormat) => {
                sink.files.truncate(before);
                problems.push(NestedProblem {
                    path: archive.path.clone(),
                    reason: e.to_string(),
                });
                continue;
            }
            Err(e) => return Err(e),
        }
        queue.extend(
            sink.files[before..]
                .iter()
                .filter(|f| BundleFormat::sniff(&f.bytes).is_some())
                .cloned(),
        );
    }
    Ok((sink.finish()?, problems))
}

/// Reads a local directory as a bundle, without following links. A `.git` directory at the root
/// is skipped: it is the checkout's metadata, not the skill. Names that are not UTF-8 or contain
/// a backslash are refused, as control characters are: the bundle digest must be reproducible
/// with `sha256sum` over the very same names, and archives would read a backslash as a
/// separator.
pub fn read_dir(root: &Path, limits: &SandboxLimits) -> Result<Vec<BundleFile>, UnpackError> {
    let mut sink = Sink::new(limits);
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| !(e.depth() == 1 && e.file_name() == ".git"));
    for entry in walker {
        let entry =
            entry.map_err(|e| UnpackError::Io(root.display().to_string(), e.to_string()))?;
        let relative_path = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let relative = relative_path.to_string_lossy().into_owned();
        let kind = entry.file_type();
        if kind.is_dir() {
            continue;
        }
        if relative_path.to_str().is_none() || relative.contains('\\') {
            return Err(UnpackError::UnsafePath(relative));
        }
        if kind.is_symlink() {
            return Err(UnpackError::Link(relative));
        }
        if !kind.is_file() {
            return Err(UnpackError::SpecialFile(relative));
        }
        let mut file = std::fs::File::open(entry.path())
            .map_err(|e| UnpackError::Io(relative.clone(), e.to_string()))?;
        sink.add(&relative, "", 0, &mut file)?;
    }
    sink.finish()
}

/// Git hosts wrap an archive of a commit in one top-level folder (`repo-<ref>/`); the skill is
/// what is inside it.
pub fn strip_single_root(files: Vec<BundleFile>) -> Vec<BundleFile> {
    let Some(first) = files.first() else {
        return files;
    };
    let Some((root, _)) = first.path.split_once('/') else {
        return files;
    };
    let prefix = format!("{root}/");
    if !files.iter().all(|f| f.path.starts_with(&prefix)) {
        return files;
    }
    files
        .into_iter()
        .map(|f| BundleFile {
            path: f.path[prefix.len()..].to_owned(),
            ..f
        })
        .collect()
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
        BundleFormat::TarGz | BundleFormat::Tar => {
            let inflated = std::rc::Rc::new(std::cell::Cell::new(0u64));
            let inner: Box<dyn Read> = if format == BundleFormat::TarGz {
                Box::new(flate2::read::GzDecoder::new(bytes))
            } else {
                Box::new(bytes)
            };
            let counted = Counting {
                inner: inner.take(inflate_cap),
                read: inflated.clone(),
            };
            let mut archive = tar::Archive::new(counted);
            let entries = archive.entries().map_err(|e| corrupt(&e))?;
            for entry in entries {
                let result = entry.and_then(|mut e| std::io::copy(&mut e, &mut std::io::sink()));
                if let Err(e) = result {
                    // Hitting the cap looks like truncation: readable so far, and the sandbox
                    // will refuse the archive by its limits.
                    if inflated.get() >= inflate_cap {
                        break;
                    }
                    return Err(corrupt(&e));
                }
            }
        }
    }
    Ok(format)
}

struct Counting<R> {
    inner: R,
    read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.set(self.read.get() + n as u64);
        Ok(n)
    }
}

struct Sink<'a> {
    limits: &'a SandboxLimits,
    files: Vec<BundleFile>,
    count: usize,
    total: u64,
}

impl<'a> Sink<'a> {
    fn new(limits: &'a SandboxLimits) -> Self {
        Self {
            limits,
            files: Vec::new(),
            count: 0,
            total: 0,
        }
    }

    fn add(
        &mut self,
        raw_path: &str,
        prefix: &str,
        depth: u32,
        reader: &mut dyn Read,
    ) -> Result<(), UnpackError> {
        let path = safe_path(raw_path)?;
        if path.is_empty() {
            return Err(UnpackError::UnsafePath(raw_path.to_owned()));
        }
        let path = format!("{prefix}{path}");
        if self.count >= self.limits.max_files {
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
        self.count += 1;
        self.files.push(BundleFile { path, bytes, depth });
        Ok(())
    }

    fn finish(self) -> Result<Vec<BundleFile>, UnpackError> {
        let mut files = self.files;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        for pair in files.windows(2) {
            if pair[0].path == pair[1].path {
                return Err(UnpackError::Duplicate(pair[0].path.clone()));
            }
        }
        Ok(files)
    }
}

/// Normalises an archive path to a relative, forward-slash path (empty for the root itself),
/// refusing anything that could escape the bundle root.
fn safe_path(raw: &str) -> Result<String, UnpackError> {
    let unsafe_path = || UnpackError::UnsafePath(raw.to_owned());
    let unified = raw.replace('\\', "/");
    // Control characters (newlines above all) would make paths ambiguous in the bundle digest's
    // `sha256sum` lines and in the reviewers' prompt; `!/` is reserved for nested archive paths.
    if unified.starts_with('/')
        || unified.chars().any(char::is_control)
        || unified.chars().nth(1) == Some(':')
        || unified.contains("!/")
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

fn read_archive(
    bytes: &[u8],
    prefix: &str,
    depth: u32,
    sink: &mut Sink<'_>,
) -> Result<(), UnpackError> {
    match BundleFormat::sniff(bytes).ok_or(UnpackError::UnknownFormat)? {
        BundleFormat::Zip => read_zip(bytes, prefix, depth, sink),
        BundleFormat::TarGz => read_tar(flate2::read::GzDecoder::new(bytes), prefix, depth, sink),
        BundleFormat::Tar => read_tar(bytes, prefix, depth, sink),
    }
}

fn read_zip(
    bytes: &[u8],
    prefix: &str,
    depth: u32,
    sink: &mut Sink<'_>,
) -> Result<(), UnpackError> {
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
        sink.add(&name, prefix, depth, &mut file)?;
    }
    Ok(())
}

fn read_tar(
    reader: impl Read,
    prefix: &str,
    depth: u32,
    sink: &mut Sink<'_>,
) -> Result<(), UnpackError> {
    use tar::EntryType;
    let corrupt = |e: std::io::Error| UnpackError::Corrupt(e.to_string());
    // The tar reader buffers PAX and GNU long-name headers whole; cap the inflated stream so a
    // header bomb cannot exhaust memory. Regular entries are capped again by the sink.
    let cap = sink.limits.max_total_bytes.saturating_mul(4) + (1 << 20);
    let mut archive = tar::Archive::new(reader.take(cap));
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        // A name that is not UTF-8 would be renamed by a lossy decoding (two names could even
        // become one): refused, like control characters.
        let name = match String::from_utf8(entry.path_bytes().into_owned()) {
            Ok(name) => name,
            Err(e) => {
                return Err(UnpackError::UnsafePath(
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                ));
            }
        };
        match entry.header().entry_type() {
            EntryType::Regular | EntryType::Continuous => {
                sink.add(&name, prefix, depth, &mut entry)?
            }
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

/// The bundle digest, reproducible with standard tools on a directory (or an unpacked archive):
///
/// ```text
/// (cd DIR && find . -path ./.git -prune -o -type f -printf '%P\n' | LC_ALL=C sort \
///   | xargs -r -d '\n' sha256sum --) | sha256sum
/// ```
///
/// i.e. SHA-256 over the `sha256sum` lines (`<hex>  <path>\n`) of every file, sorted by path bytes.
/// Only the bundle's own files count, never the contents of nested archives; a root `.git` is
/// skipped by [`read_dir`], hence the `-prune`. The two agree on every bundle this crate accepts:
/// names with control characters (which `sha256sum` would escape), backslashes (escaped too) or
/// bytes that are not UTF-8 are refused when reading a directory; in archives a backslash is a
/// path separator and non-UTF-8 tar names are refused.
pub fn bundle_digest(files: &[BundleFile]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted: Vec<&BundleFile> = files.iter().filter(|f| f.depth == 0).collect();
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
        max_nested_depth: 2,
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
        assert_eq!(
            check_readable(&tar_gz(&[("a", b"x")]), 1 << 20),
            Ok(BundleFormat::TarGz)
        );
    }

    #[test]
    fn nested_archives_are_opened_to_the_depth_limit() {
        let inner = zip_of(&[("payload.py", b"exec(x)")]);
        let middle = zip_of(&[("inner.zip", &inner)]);
        let limits = SandboxLimits {
            max_files: 10,
            max_total_bytes: 10_000,
            max_file_bytes: 5_000,
            max_nested_depth: 2,
        };
        let files = unpack(&zip_of(&[("SKILL.md", b"hi"), ("m.zip", &middle)]), &limits).unwrap();
        let (nested, problems) = expand_nested(&files, &limits).unwrap();
        let paths: Vec<_> = nested.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["m.zip!/inner.zip", "m.zip!/inner.zip!/payload.py"]);
        assert_eq!(nested[1].depth, 2);
        assert!(problems.is_empty());
        let shallow = SandboxLimits {
            max_nested_depth: 1,
            ..limits
        };
        assert!(matches!(
            expand_nested(&files, &shallow),
            Err(UnpackError::NestedTooDeep(..))
        ));
        // A corrupt inner archive is a problem to report, not a rejection.
        let broken = vec![BundleFile::new("x.zip", b"PK\x03\x04broken".to_vec())];
        let (none, problems) = expand_nested(&broken, &limits).unwrap();
        assert!(none.is_empty());
        assert_eq!(problems[0].path, "x.zip");
        // Nested contents share the bundle's byte budget: a nested bomb is stopped.
        let bomb = zip_of(&[("bomb", &vec![0u8; 1_000_000])]);
        let files = vec![BundleFile::new("b.zip", bomb)];
        assert!(matches!(
            expand_nested(&files, &limits),
            Err(UnpackError::FileTooLarge { .. })
        ));
    }

    #[test]
    fn plain_tar_directories_and_git_roots() {
        let gz = tar_gz(&[("repo-abc/SKILL.md", b"a"), ("repo-abc/src/x.py", b"b")]);
        let mut plain = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut plain)
            .unwrap();
        assert_eq!(BundleFormat::sniff(&plain), Some(BundleFormat::Tar));
        let files = strip_single_root(unpack(&plain, &LIMITS).unwrap());
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["SKILL.md", "src/x.py"]);

        let dir = std::env::temp_dir().join(format!("sigma-unpack-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".git")).unwrap();
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join(".git/HEAD"), "ref").unwrap();
        std::fs::write(dir.join("SKILL.md"), "a").unwrap();
        std::fs::write(dir.join("src/x.py"), "b").unwrap();
        let read = read_dir(&dir, &LIMITS).unwrap();
        let paths: Vec<_> = read.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["SKILL.md", "src/x.py"]);
        std::os::unix::fs::symlink("/etc/passwd", dir.join("link")).unwrap();
        assert_eq!(
            read_dir(&dir, &LIMITS).unwrap_err(),
            UnpackError::Link("link".into())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_the_digest_command_would_spell_differently_are_refused() {
        use std::os::unix::ffi::OsStrExt;
        let dir = std::env::temp_dir().join(format!("sigma-unpack-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("SKILL.md"), "a").unwrap();
        std::fs::write(dir.join("with space.md"), "b").unwrap();
        assert_eq!(read_dir(&dir, &LIMITS).unwrap().len(), 2);
        // `sha256sum` escapes a backslash in its output line; archives read it as a separator.
        std::fs::write(dir.join("a\\b.md"), "c").unwrap();
        assert_eq!(
            read_dir(&dir, &LIMITS).unwrap_err(),
            UnpackError::UnsafePath("a\\b.md".into())
        );
        std::fs::remove_file(dir.join("a\\b.md")).unwrap();
        // Latin-1 bytes: a lossy decoding would rename the file.
        let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.md");
        std::fs::write(dir.join(latin1), "d").unwrap();
        assert!(matches!(
            read_dir(&dir, &LIMITS),
            Err(UnpackError::UnsafePath(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();

        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.as_old_mut().name[..7].copy_from_slice(b"caf\xe9.md");
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        assert!(matches!(
            unpack(&bytes, &LIMITS),
            Err(UnpackError::UnsafePath(_))
        ));
    }

    #[test]
    fn bundle_digest_matches_sha256sum_lines() {
        use sha2::{Digest, Sha256};
        let files = vec![
            BundleFile::new("b", b"2".to_vec()),
            BundleFile::new("a", b"1".to_vec()),
            // Nested archive contents are scanned but never part of the digest.
            BundleFile {
                path: "z.zip!/c".into(),
                bytes: b"3".to_vec(),
                depth: 1,
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

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: SandboxLimits = SandboxLimits {
        max_files: 8,
        max_total_bytes: 4096,
        max_file_bytes: 1024,
        max_nested_depth: 2,
    };

    proptest! {
        /// Arbitrary bytes never panic the unpacker, and whatever it accepts respects the limits
        /// and contains only safe, relative paths.
        #[test]
        fn arbitrary_bytes_are_refused_or_safe(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(files) = unpack(&bytes, &LIMITS) {
                prop_assert!(files.len() <= LIMITS.max_files);
                for f in &files {
                    prop_assert!(!f.path.starts_with('/') && !f.path.split('/').any(|p| p == ".."));
                }
            }
        }

        /// Any set of safe entries round-trips through zip and tar.gz, with the same digest.
        #[test]
        fn safe_entries_round_trip(entries in proptest::collection::btree_map("[a-z]{1,8}(/[a-z]{1,8})?", proptest::collection::vec(any::<u8>(), 0..200), 1..6)) {
            let entries: Vec<(String, Vec<u8>)> = entries.into_iter().collect();
            // A name that is also a directory prefix of another is not a valid tree.
            prop_assume!(!entries.iter().any(|(a, _)| entries.iter().any(|(b, _)| b.starts_with(&format!("{a}/")))));
            let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
            for (path, data) in &entries {
                use std::io::Write;
                zip.start_file(path.as_str(), zip::write::SimpleFileOptions::default()).unwrap();
                zip.write_all(data).unwrap();
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                tar.append_data(&mut header, path, &data[..]).unwrap();
            }
            let zip = zip.finish().unwrap().into_inner();
            let tar = tar.into_inner().unwrap().finish().unwrap();
            let a = unpack(&zip, &LIMITS).unwrap();
            let b = unpack(&tar, &LIMITS).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(a.len(), entries.len());
            prop_assert_eq!(bundle_digest(&a), bundle_digest(&b));
        }
    }
}
