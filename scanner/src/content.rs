//! What a file is, judged by its content first and its name second: prose the agent reads, code
//! that runs, configuration, or an opaque binary. Text is decoded whatever its encoding, so a
//! payload cannot hide in UTF-16 or invalid UTF-8.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Markdown and plain text: instructions and documentation.
    Prose,
    /// Source code and scripts.
    Code,
    /// Manifests and configuration: JSON, YAML, TOML, requirements files.
    Config,
    /// Bytes that are not text.
    Binary,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    Utf8,
    Utf16,
    /// Not valid UTF-8; decoded lossily so it can still be scanned.
    Lossy,
}

#[derive(Clone, Debug)]
pub struct Classified {
    pub kind: FileKind,
    pub language: Option<&'static str>,
    pub text: Option<String>,
    pub encoding: Option<TextEncoding>,
    /// What the bytes are by magic number, when they are a known binary format.
    pub magic: Option<&'static str>,
    /// The extension promises text (or another type) and the content says otherwise.
    pub misleading_extension: bool,
}

pub fn extension(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The language by extension, then by shebang.
pub fn language(path: &str, text: Option<&str>) -> Option<&'static str> {
    let by_ext = match extension(path).as_str() {
        "py" | "pyw" | "pyi" => Some("python"),
        "js" | "mjs" | "cjs" | "jsx" => Some("javascript"),
        "ts" | "mts" | "cts" | "tsx" => Some("typescript"),
        "sh" | "bash" | "zsh" | "ksh" => Some("shell"),
        "ps1" | "psm1" => Some("powershell"),
        "bat" | "cmd" => Some("batch"),
        "rb" => Some("ruby"),
        "go" => Some("go"),
        "rs" => Some("rust"),
        "java" | "kt" => Some("jvm"),
        "php" => Some("php"),
        "pl" | "pm" => Some("perl"),
        "lua" => Some("lua"),
        "c" | "h" | "cc" | "cpp" | "hpp" => Some("c"),
        "cs" => Some("csharp"),
        "swift" => Some("swift"),
        "md" | "markdown" | "mdx" => Some("markdown"),
        "txt" | "rst" | "text" | "" => None,
        "json" | "jsonc" => Some("json"),
        "yaml" | "yml" => Some("yaml"),
        "toml" => Some("toml"),
        "ini" | "cfg" | "conf" | "env" => Some("ini"),
        "html" | "htm" => Some("html"),
        "svg" => Some("svg"),
        "xml" => Some("xml"),
        "sql" => Some("sql"),
        _ => None,
    };
    if by_ext.is_some() {
        return by_ext;
    }
    let name = file_name(path);
    if name == "Dockerfile" || name == "Makefile" {
        return Some("shell");
    }
    let first = text?.lines().next()?;
    let shebang = first.strip_prefix("#!")?;
    if shebang.contains("python") {
        Some("python")
    } else if shebang.contains("node") || shebang.contains("deno") || shebang.contains("bun") {
        Some("javascript")
    } else if shebang.contains("sh") {
        Some("shell")
    } else if shebang.contains("ruby") {
        Some("ruby")
    } else if shebang.contains("perl") {
        Some("perl")
    } else {
        None
    }
}

fn kind_of_text(path: &str, language: Option<&str>) -> FileKind {
    let name = file_name(path).to_ascii_lowercase();
    if name.starts_with("requirements") && name.ends_with(".txt") || name == ".npmrc" {
        return FileKind::Config;
    }
    match language {
        Some("markdown") => FileKind::Prose,
        Some("json" | "yaml" | "toml" | "ini" | "xml") => FileKind::Config,
        // HTML and SVG can carry script; scan them as code.
        Some(_) => FileKind::Code,
        None => FileKind::Prose,
    }
}

/// Extensions that promise text: a binary behind one of them is disguised.
fn promises_text(ext: &str) -> bool {
    matches!(
        ext,
        "md" | "txt"
            | "rst"
            | "py"
            | "js"
            | "mjs"
            | "cjs"
            | "ts"
            | "sh"
            | "bash"
            | "json"
            | "yaml"
            | "yml"
            | "toml"
            | "csv"
            | "html"
            | "css"
            | "svg"
            | "xml"
            | "rb"
            | "go"
            | "rs"
            | "ps1"
            | ""
    )
}

/// Extensions that promise a binary format: text behind one of them is disguised.
fn promises_binary(ext: &str) -> bool {
    matches!(
        ext,
        "png"
            | "jpg"
            | "jpeg"
            | "gif"
            | "webp"
            | "ico"
            | "bmp"
            | "pdf"
            | "zip"
            | "gz"
            | "tgz"
            | "exe"
            | "dll"
            | "so"
            | "dylib"
            | "bin"
            | "pyc"
            | "wasm"
            | "mp3"
            | "mp4"
            | "woff"
            | "woff2"
            | "ttf"
            | "otf"
    )
}

/// Which extensions a detected magic type may honestly carry.
fn extension_fits(magic: &infer::Type, ext: &str) -> bool {
    let expected = magic.extension();
    if ext == expected {
        return true;
    }
    let family: &[&str] = match expected {
        "jpg" => &["jpeg", "jpe"],
        "gz" => &["tgz", "gzip"],
        "zip" => &[
            "skill", "jar", "whl", "docx", "xlsx", "pptx", "apk", "nupkg", "vsix",
        ],
        "tif" => &["tiff"],
        "exe" | "dll" => &["exe", "dll", "sys", "msi"],
        "elf" => &["so", "o", "bin", "node"],
        "ttf" | "otf" | "woff" | "woff2" => &["ttf", "otf", "woff", "woff2"],
        "html" => &["htm", "html", "svg", "xml", "md"],
        "xml" => &["svg", "xml", "plist", "xsd", "xsl"],
        "mp4" => &["m4a", "m4v"],
        _ => &[],
    };
    family.contains(&ext)
}

pub fn classify(path: &str, bytes: &[u8]) -> Classified {
    let ext = extension(path);
    let magic = infer::get(bytes).filter(|t| {
        // infer recognises some text formats (html, xml, shell scripts); those stay text.
        !matches!(t.matcher_type(), infer::MatcherType::Text)
    });
    let decoded = decode_text(bytes);
    // Text wins over a magic match (PEM, shell and some signatures are printable); executables,
    // images and archives carry NUL bytes and never decode as text.
    let magic = magic.filter(|_| decoded.is_none());
    if let Some(t) = magic {
        // An image, archive, executable or document: opaque to a text scan.
        return Classified {
            kind: FileKind::Binary,
            language: None,
            text: None,
            encoding: None,
            magic: Some(t.extension()),
            misleading_extension: promises_text(&ext) || !extension_fits(&t, &ext),
        };
    }
    match decoded {
        Some((text, encoding)) => {
            let language = language(path, Some(&text));
            // Text behind a binary extension (a script named `logo.png`) is disguised: scan it
            // as code, whatever it claims to be.
            if promises_binary(&ext) {
                return Classified {
                    kind: FileKind::Code,
                    language,
                    text: Some(text),
                    encoding: Some(encoding),
                    magic: None,
                    misleading_extension: true,
                };
            }
            Classified {
                kind: kind_of_text(path, language),
                language,
                text: Some(text),
                encoding: Some(encoding),
                magic: None,
                misleading_extension: false,
            }
        }
        None => Classified {
            kind: FileKind::Binary,
            language: None,
            text: None,
            encoding: None,
            magic: python_bytecode(bytes).then_some("pyc"),
            misleading_extension: promises_text(&ext),
        },
    }
}

fn python_bytecode(bytes: &[u8]) -> bool {
    // CPython .pyc: a two-byte version tag followed by `\r\n`.
    bytes.len() >= 16 && bytes[2] == b'\r' && bytes[3] == b'\n'
}

/// Text by content: UTF-8 (BOM stripped), UTF-16 with a BOM, or bytes with no NUL in the first
/// 8 KB and mostly printable, decoded lossily.
pub fn decode_text(bytes: &[u8]) -> Option<(String, TextEncoding)> {
    if let Some(rest) = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF])
        && let Ok(text) = std::str::from_utf8(rest)
    {
        return Some((text.to_owned(), TextEncoding::Utf8));
    }
    for (bom, little) in [([0xFF, 0xFE], true), ([0xFE, 0xFF], false)] {
        if let Some(rest) = bytes.strip_prefix(&bom) {
            let units: Vec<u16> = rest
                .chunks_exact(2)
                .map(|c| {
                    if little {
                        u16::from_le_bytes([c[0], c[1]])
                    } else {
                        u16::from_be_bytes([c[0], c[1]])
                    }
                })
                .collect();
            return Some((String::from_utf16_lossy(&units), TextEncoding::Utf16));
        }
    }
    let head = &bytes[..bytes.len().min(8192)];
    if head.contains(&0) {
        return None;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) => Some((text.to_owned(), TextEncoding::Utf8)),
        Err(_) => {
            let controls = head
                .iter()
                .filter(|b| **b < 0x20 && !matches!(b, b'\n' | b'\r' | b'\t' | 0x0C | 0x1B))
                .count();
            // Legacy 8-bit text has few control bytes; compressed or random data has many.
            (controls * 20 < head.len().max(1)).then(|| {
                (
                    String::from_utf8_lossy(bytes).into_owned(),
                    TextEncoding::Lossy,
                )
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binaries_are_found_by_content_not_name() {
        let elf = b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00";
        let c = classify("notes.txt", elf);
        assert_eq!(c.kind, FileKind::Binary);
        assert!(c.misleading_extension);
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01";
        let c = classify("logo.png", png);
        assert_eq!(c.kind, FileKind::Binary);
        assert!(!c.misleading_extension);
        assert!(classify("logo.py", png).misleading_extension);
    }

    #[test]
    fn text_in_any_encoding_is_decoded() {
        let mut utf16 = vec![0xFF, 0xFE];
        for unit in "exec(1)".encode_utf16() {
            utf16.extend_from_slice(&unit.to_le_bytes());
        }
        let c = classify("a.py", &utf16);
        assert_eq!(c.text.as_deref(), Some("exec(1)"));
        assert_eq!(c.encoding, Some(TextEncoding::Utf16));
        let latin1 = b"caf\xe9 au lait\n";
        let c = classify("a.md", latin1);
        assert_eq!(c.kind, FileKind::Prose);
        assert_eq!(c.encoding, Some(TextEncoding::Lossy));
        assert_eq!(
            classify("run", b"#!/usr/bin/env python3\nprint(1)").language,
            Some("python")
        );
        assert_eq!(classify("requirements.txt", b"a==1").kind, FileKind::Config);
    }
}
