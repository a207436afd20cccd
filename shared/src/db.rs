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
    let options = connect_options(settings)?;
    let name = options.get_database().unwrap_or("postgres").to_owned();
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options.database("postgres"))
        .await
        .context("cannot connect to the postgres maintenance database")?;
    let exists: bool =
        sqlx::query_scalar("select exists(select 1 from pg_database where datname = $1)")
            .bind(&name)
            .fetch_one(&admin)
            .await?;
    if !exists {
        // Identifiers cannot be bound as parameters; quote it the way Postgres does.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(&format!("create database {quoted}"))
            .execute(&admin)
            .await?;
    }
    admin.close().await;
    Ok(())
}

pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("database migration failed")
}
