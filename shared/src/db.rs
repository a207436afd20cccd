//! PostgreSQL pool and the embedded migrations.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseSettings;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

pub fn connect_options(settings: &DatabaseSettings) -> anyhow::Result<PgConnectOptions> {
    PgConnectOptions::from_str(settings.url.expose_secret()).context("invalid database url")
}

pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    PgPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(connect_options(settings)?)
        .await
        .context("cannot connect to PostgreSQL")
}

/// Creates the database named in the settings when it does not exist (local runs and tests).
pub async fn create_database_if_missing(settings: &DatabaseSettings) -> anyhow::Result<()> {
    use sqlx::migrate::MigrateDatabase;
    let url = settings.url.expose_secret();
    if !sqlx::Postgres::database_exists(url)
        .await
        .context("cannot reach PostgreSQL to check the database")?
    {
        match sqlx::Postgres::create_database(url).await {
            Ok(()) => {}
            // Another process (a second `sigma` command starting alongside) made it first.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("cannot create the database"),
        }
    }
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("database migration failed")
}
