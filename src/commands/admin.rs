//! Administrative commands: accounts, tokens, validators and operator decisions from the shell.

use anyhow::Context;
use clap::Subcommand;
use sigma_activities::types::OperatorDecision;
use sigma_api::auth::{developer_token, operator_token};
use sigma_shared::Settings;
use sigma_shared::domain::{Outcome, SubmissionId};
use sigma_workflows::SubmissionWorkflow;
use sqlx::PgPool;
use temporalio_client::WorkflowExecuteUpdateOptions;

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Developer accounts and their API tokens.
    #[command(subcommand)]
    Developer(DeveloperCommand),
    /// Operator accounts and their console tokens.
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The audit council's validators.
    #[command(subcommand)]
    Validator(ValidatorCommand),
    /// Operator actions on submissions.
    #[command(subcommand)]
    Submission(SubmissionCommand),
}

#[derive(Subcommand)]
pub enum DeveloperCommand {
    /// Create the account if needed and print a new API token (shown once).
    CreateToken {
        #[arg(long)]
        email: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "cli")]
        label: String,
    },
}

#[derive(Subcommand)]
pub enum OperatorCommand {
    /// Create the operator if needed and print a new console token (shown once).
    CreateToken {
        #[arg(long)]
        name: String,
    },
    /// Set the operator's console password (creating the operator if needed). The password is
    /// read from the environment variable named by `--password-env`, or generated and printed.
    CreateLogin {
        #[arg(long)]
        name: String,
        #[arg(long)]
        password_env: Option<String>,
    },
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
pub enum ValidatorCommand {
    /// Add or update a validator.
    Upsert {
        #[arg(long)]
        id: String,
        #[arg(long)]
        model: String,
        /// OpenAI-compatible base URL, e.g. http://127.0.0.1:8091/v1
        #[arg(long)]
        provider_url: String,
        /// Environment variable that holds the provider's API key on the audit workers.
        #[arg(long)]
        api_key_env: Option<String>,
        /// `json_schema` (OpenAI style) or `json_object_schema` (llama.cpp style).
        #[arg(long, default_value = "json_schema")]
        response_format: String,
        #[arg(long, default_value_t = 1.0)]
        weight: f64,
        #[arg(long)]
        name: Option<String>,
        /// Mark the validator inactive instead of active.
        #[arg(long)]
        inactive: bool,
        #[command(flatten)]
        standing: Standing,
    },
    List,
}

#[derive(Subcommand)]
pub enum SubmissionCommand {
    /// Decide an escalated submission (APPROVED or REJECTED).
    Decide {
        id: String,
        #[arg(long)]
        decision: String,
        #[arg(long)]
        reason: String,
        #[arg(long)]
        operator: String,
    },
}

impl AdminCommand {
    pub async fn run(self, settings: Settings) -> anyhow::Result<()> {
        let db = sigma_shared::db::connect(&settings.database).await?;
        match self {
            AdminCommand::Developer(DeveloperCommand::CreateToken { email, name, label }) => {
                println!(
                    "{}",
                    developer_token(&db, &email, name.as_deref(), &label).await?
                );
            }
            AdminCommand::Operator(OperatorCommand::CreateToken { name }) => {
                println!("{}", operator_token(&db, &name).await?);
            }
            AdminCommand::Operator(OperatorCommand::CreateLogin { name, password_env }) => {
                let (password, generated) = match password_env {
                    Some(var) => (
                        std::env::var(&var).with_context(|| format!("{var} is not set"))?,
                        false,
                    ),
                    None => (sigma_api::auth::random_password(), true),
                };
                sigma_api::auth::operator_login(&db, &name, &password).await?;
                if generated {
                    println!("{password}");
                } else {
                    eprintln!("console password of {name} set");
                }
            }
            AdminCommand::Validator(ValidatorCommand::Upsert {
                standing,
                id,
                model,
                provider_url,
                api_key_env,
                response_format,
                weight,
                name,
                inactive,
            }) => {
                upsert_validator(
                    &db,
                    &ValidatorSpec {
                        id,
                        name,
                        model,
                        provider_url,
                        api_key_env,
                        response_format,
                        weight,
                        active: !inactive,
                        standing,
                    },
                )
                .await?;
                println!("validator saved");
            }
            AdminCommand::Validator(ValidatorCommand::List) => {
                let rows = sqlx::query!("select validator_id, model, model_family, provider_url, response_format, weight, stake, reputation, audit_accuracy, status, active, sigma_eligible from validator order by validator_id")
                    .fetch_all(&db)
                    .await?;
                for r in rows {
                    let effective =
                        settings
                            .council
                            .effective_weight(&sigma_shared::council::Standing {
                                weight: r.weight,
                                stake: r.stake,
                                reputation: r.reputation,
                                audit_accuracy: r.audit_accuracy,
                            });
                    println!(
                        "{}\t{}\t{}\t{}\t{}\tweight={} effective={effective:.3} stake={} reputation={} accuracy={:.3}\t{} {}{}",
                        r.validator_id,
                        r.model,
                        r.model_family.as_deref().unwrap_or("-"),
                        r.provider_url,
                        r.response_format,
                        r.weight,
                        r.stake,
                        r.reputation,
                        r.audit_accuracy,
                        r.status,
                        if r.active { "active" } else { "inactive" },
                        if r.sigma_eligible {
                            ""
                        } else {
                            " not-eligible"
                        },
                    );
                }
            }
            AdminCommand::Submission(SubmissionCommand::Decide {
                id,
                decision,
                reason,
                operator,
            }) => {
                let id = SubmissionId::parse(&id).map_err(anyhow::Error::msg)?;
                let decision: Outcome = decision.parse().map_err(anyhow::Error::msg)?;
                let client =
                    sigma_workflows::worker::connect(&settings.temporal, &super::identity("cli"))
                        .await?;
                let progress = client
                    .get_workflow_handle::<SubmissionWorkflow>(id.workflow_id())
                    .execute_update(
                        SubmissionWorkflow::decide,
                        OperatorDecision {
                            decision,
                            reason,
                            decided_by: operator,
                            operator_id: None,
                        },
                        WorkflowExecuteUpdateOptions::default(),
                    )
                    .await
                    .context("the workflow refused the decision")?;
                println!("{}", serde_json::to_string_pretty(&progress)?);
            }
        }
        Ok(())
    }
}

pub struct ValidatorSpec {
    pub id: String,
    pub name: Option<String>,
    pub model: String,
    pub provider_url: String,
    pub api_key_env: Option<String>,
    pub response_format: String,
    pub weight: f64,
    pub active: bool,
    pub standing: Standing,
}

/// Who runs a validator and how much the council trusts it (see `shared/src/council.rs`).
#[derive(clap::Args, Clone, Debug)]
pub struct Standing {
    #[arg(long)]
    pub owner: Option<String>,
    /// Model family (`llama`, `qwen`, `gpt`, ...): panels prefer mixing families.
    #[arg(long)]
    pub family: Option<String>,
    #[arg(long, default_value_t = 0.0)]
    pub stake: f64,
    /// 0–1.
    #[arg(long, default_value_t = 0.5)]
    pub reputation: f64,
    /// ACTIVE, PAUSED, SUSPENDED or RETIRED; only ACTIVE validators sit on panels.
    #[arg(long, default_value = "ACTIVE")]
    pub status: String,
    /// Not SIGMA-eligible: never on a panel, and its plugins are not injected.
    #[arg(long)]
    pub not_eligible: bool,
    /// USD per million prompt and completion tokens, for the usage ledger.
    #[arg(long, default_value_t = 0.0)]
    pub price_in: f64,
    #[arg(long, default_value_t = 0.0)]
    pub price_out: f64,
    /// The provider rejects a `seed` field: send none.
    #[arg(long)]
    pub no_seed: bool,
}

impl Default for Standing {
    fn default() -> Self {
        Self {
            owner: None,
            family: None,
            stake: 0.0,
            reputation: 0.5,
            status: "ACTIVE".into(),
            not_eligible: false,
            price_in: 0.0,
            price_out: 0.0,
            no_seed: false,
        }
    }
}

pub async fn upsert_validator(db: &PgPool, v: &ValidatorSpec) -> anyhow::Result<()> {
    sqlx::query!(
        r#"insert into validator (validator_id, display_name, model, provider_url, api_key_env, response_format, weight, active,
               owner, model_family, stake, reputation, status, sigma_eligible, price_in_per_mtok, price_out_per_mtok, sends_seed)
           values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
           on conflict (validator_id) do update set display_name = excluded.display_name, model = excluded.model,
               provider_url = excluded.provider_url, api_key_env = excluded.api_key_env,
               response_format = excluded.response_format, weight = excluded.weight, active = excluded.active,
               owner = excluded.owner, model_family = excluded.model_family, stake = excluded.stake,
               reputation = excluded.reputation, status = excluded.status, sigma_eligible = excluded.sigma_eligible,
               -- An operator setting the status takes it over from model-tier sync.
               paused_by = null, paused_reason = null,
               price_in_per_mtok = excluded.price_in_per_mtok, price_out_per_mtok = excluded.price_out_per_mtok,
               sends_seed = excluded.sends_seed"#,
        v.id,
        v.name.clone().unwrap_or_else(|| v.id.clone()),
        v.model,
        v.provider_url,
        v.api_key_env,
        v.response_format,
        v.weight,
        v.active,
        v.standing.owner,
        v.standing.family,
        v.standing.stake,
        v.standing.reputation,
        v.standing.status,
        !v.standing.not_eligible,
        v.standing.price_in,
        v.standing.price_out,
        !v.standing.no_seed,
    )
    .execute(db)
    .await
    .context("cannot save the validator (response format json_schema or json_object_schema; weight > 0; stake and prices >= 0; reputation 0-1; status ACTIVE, PAUSED, SUSPENDED or RETIRED)")?;
    Ok(())
}
