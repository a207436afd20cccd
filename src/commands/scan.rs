//! `sigma scan`: the sandbox engine offline, on a directory or an archive, with no servers.
//!
//! Exit codes: 0 the scan ran and nothing reached `--fail-on` (or `--fail-on never`); 1 the risk
//! level reached `--fail-on` or the bundle is blocked (a hostile or over-limit archive, a
//! submission rule); 2 nothing was scanned: the path does not exist or cannot be read, it is a
//! file that is not a zip, tar or tar.gz archive or is a corrupt one, or the rule pack or the
//! arguments are invalid. Nothing is printed on stdout then, only the reason on stderr.
//!
//! `--format json` is the whole report plus a `digests` object: `bundle`, `skill_md_sha256`
//! (LF-normalised), `archive_sha256` for an archive, and `files` (path → SHA-256).

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, ValueEnum};
use sigma_scanner::report::{RiskLevel, ScanRequest, Source};
use sigma_scanner::{RulePack, unpack};
use sigma_shared::Settings;
use sigma_shared::domain::{Category, Sha256Hex};

#[derive(Args)]
pub struct ScanArgs {
    /// A skill directory, or a zip / tar / tar.gz archive.
    path: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
    /// Exit 1 when the risk level is at least this (`never` always exits 0 after a scan).
    #[arg(long, value_enum, default_value = "high")]
    fail_on: FailOn,
    /// The submission category (`SKILL`, `SKILL_CODE`, ...); inferred from the files when absent.
    #[arg(long)]
    category: Option<String>,
    /// A rule pack file to use instead of the built-in one.
    #[arg(long)]
    rules: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailOn {
    Low,
    Medium,
    High,
    Critical,
    Never,
}

/// Runs the scan and returns the process exit code.
pub fn run(settings: &Settings, args: ScanArgs) -> i32 {
    match scan(settings, args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("sigma scan: {e:#}");
            2
        }
    }
}

fn scan(settings: &Settings, args: ScanArgs) -> anyhow::Result<i32> {
    let custom;
    let pack = match &args.rules {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
            custom = RulePack::parse(&text)?;
            &custom
        }
        None => RulePack::builtin(),
    };
    let category: Option<Category> = args
        .category
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|e: String| anyhow::anyhow!(e))?;
    // With a category the scan judges a submission under that category's limits; without one it
    // is an analysis of whatever the skill is, under generous safety caps only.
    let limits = match category {
        Some(c) => settings.sandbox.limits_for(c),
        None => unpack::ANALYSIS_CAPS,
    };
    let metadata = std::fs::metadata(&args.path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.path.display()))?;
    let display = args.path.display().to_string();
    let (unpacked, source) = if metadata.is_dir() {
        (
            unpack::read_dir_for_scan(&args.path, &limits),
            Source::Directory { path: display },
        )
    } else {
        let bytes =
            std::fs::read(&args.path).map_err(|e| anyhow::anyhow!("cannot read {display}: {e}"))?;
        let sha256 = Sha256Hex::of(&bytes).to_string();
        (
            unpack::unpack_for_scan(&bytes, &limits),
            Source::Archive {
                path: display,
                sha256,
            },
        )
    };
    // Unreadable input was never scanned: exit 2, not a "blocked" report (exit 1).
    if let Err(e) = &unpacked.files
        && e.is_unreadable()
    {
        anyhow::bail!("cannot read {}: {e}", args.path.display());
    }
    let report = sigma_scanner::scan(ScanRequest {
        category,
        files: unpacked.files,
        over_limits: unpacked.over_limits,
        limits,
        source: Some(source),
        pack,
    });
    let rendered = match args.format {
        Format::Text => sigma_scanner::sarif::to_text(&report),
        Format::Json => serde_json::to_string_pretty(&report.to_json_with_digests())? + "\n",
        Format::Sarif => {
            serde_json::to_string_pretty(&sigma_scanner::sarif::to_sarif(&report, pack))? + "\n"
        }
    };
    std::io::stdout().write_all(rendered.as_bytes())?;
    let threshold = match args.fail_on {
        FailOn::Never => return Ok(0),
        FailOn::Low => RiskLevel::Low,
        FailOn::Medium => RiskLevel::Medium,
        FailOn::High => RiskLevel::High,
        FailOn::Critical => RiskLevel::Critical,
    };
    Ok(i32::from(report.blocked || report.risk_level >= threshold))
}
