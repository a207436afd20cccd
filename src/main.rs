//! `sigma`: one binary for every SIGMA process. See `sigma --help`.

mod commands;

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    commands::Cli::parse().run().await
}
