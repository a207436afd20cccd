//! `sigma keygen`: a new Ed25519 signing key for certificates.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use sigma_shared::attestation::{Keyring, generate_private_key_pem};

#[derive(Args)]
pub struct KeygenArgs {
    /// The signing key directory (`signing.key_dir`).
    #[arg(long)]
    dir: PathBuf,
    /// File name without `.pem`; make it active with `signing.active_key = NAME`.
    #[arg(long)]
    name: String,
}

/// Writes `DIR/NAME.pem` (mode 0600) and returns the new key's id. Refuses to overwrite.
pub fn write_new_key(dir: &Path, name: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
        "key names use letters, digits, '-', '_' and '.'"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{name}.pem"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    std::io::Write::write_all(&mut file, generate_private_key_pem()?.as_bytes())?;
    let ring = Keyring::load(dir, Some(name))?;
    let id = ring
        .key_set()
        .keys
        .iter()
        .find(|k| k.status == "active")
        .map(|k| k.key_id.clone())
        .context("the new key did not load")?;
    Ok(id)
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let id = write_new_key(&args.dir, &args.name)?;
    println!(
        "wrote {}/{}.pem (key id {id})",
        args.dir.display(),
        args.name
    );
    println!(
        "sign with it: SIGMA__SIGNING__KEY_DIR={} SIGMA__SIGNING__ACTIVE_KEY={}",
        args.dir.display(),
        args.name
    );
    println!(
        "to retire an old key, keep only its public half: openssl pkey -in OLD.pem -pubout -out OLD.pub.pem && rm OLD.pem"
    );
    Ok(())
}
