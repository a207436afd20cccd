//! The manifest assistant: a model proposes the manifest of a draft's SKILL.md, the schema
//! decides, the backend injects the source (workflow `manifest:{generation}`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use sigma_activities::portal::{ManifestInput, ManifestOutcome};
use sigma_workflows::ManifestWorkflow;
use sqlx::types::Uuid;
use temporalio_client::WorkflowIdReusePolicy;
use temporalio_client::errors::WorkflowStartError;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::drafts::OwnedDraft;
use super::drafts::frozen;
use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

use super::dry_run::{WAIT, engine_unavailable, run_once, still_running};

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(generate_manifest, get_manifest))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestPreview {
    pub draft_id: String,
    /// The revision the manifest was generated from.
    pub revision: i32,
    /// True while the draft is still at that revision.
    pub current: bool,
    /// Always true: the manifest is shown as generated, never edited by hand.
    pub locked: bool,
    #[schema(value_type = Object)]
    pub manifest: serde_json::Value,
}

/// Generate the manifest from the draft's SKILL.md: an LLM proposes it, the manifest schema
/// validates it, the backend injects the source metadata. Rate-limited per developer; repeated
/// abusive input locks the assistant (Support can lift it).
#[utoipa::path(post, path = "/drafts/{id}/manifest", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ManifestPreview),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 422, description = "The input was refused (no SKILL.md, no front matter, prompt injection)", body = ErrorBody),
        (status = 423, description = "The assistant is locked for this developer", body = ErrorBody),
        (status = 429, body = ErrorBody),
        (status = 502, description = "The assistant's answer failed the manifest schema", body = ErrorBody)))]
#[tracing::instrument(name = "generate_manifest", skip_all, fields(draft_id = %owned.item.draft_id))]
async fn generate_manifest(
    State(state): State<AppState>,
    owned: OwnedDraft,
) -> ApiResult<Json<ManifestPreview>> {
    let OwnedDraft {
        developer,
        item: draft,
    } = owned;
    let id = draft.draft_id;
    if draft.submission_id.is_some() {
        return Err(frozen());
    }
    let category = draft.category()?;
    if !category.has_skill() {
        // The draft's category, not the request, rules it out.
        return Err(ApiError::conflict(
            "no_manifest_for_category",
            format!("{category} submissions have no SKILL.md to generate a manifest from"),
        ));
    }
    // The developer's row is locked while counting and recording, so concurrent calls cannot
    // pass the hourly limit together.
    let mut tx = state.db.begin().await?;
    let account = sqlx::query!(
        r#"select manifest_locked_at,
               (select count(*) from manifest_generation g where g.developer_id = d.developer_id
                  and g.created_at > now() - interval '1 hour') as "recent!"
           from developer d where developer_id = $1 for update"#,
        developer.developer_id
    )
    .fetch_one(&mut *tx)
    .await?;
    if account.manifest_locked_at.is_some() {
        return Err(locked());
    }
    // A generation still running for this revision is joined (a client that timed out collects
    // its result), not started again.
    let pending = sqlx::query_scalar!(
        r#"select generation_id from manifest_generation
           where draft_id = $1 and revision = $2 and status = 'PENDING' and created_at > now() - interval '10 minutes'
           order by created_at desc limit 1"#,
        id,
        draft.revision
    )
    .fetch_optional(&mut *tx)
    .await?;
    let (generation_id, fresh) = match pending {
        Some(generation_id) => {
            tx.rollback().await?;
            (generation_id, false)
        }
        None => {
            if account.recent >= state.settings.portal.manifests_per_hour {
                return Err(ApiError::RateLimited {
                    detail: "too many manifest generations this hour".into(),
                    retry_after_secs: 600,
                });
            }
            let generation_id = Uuid::new_v4();
            sqlx::query!(
                r#"insert into manifest_generation (generation_id, draft_id, developer_id, revision, status)
                   values ($1, $2, $3, $4, 'PENDING')"#,
                generation_id,
                id,
                developer.developer_id,
                draft.revision
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            (generation_id, true)
        }
    };
    // Started here either way: a joined generation whose first request has not started its
    // workflow yet is started now (the id makes it one run); a finished one just answers.
    let input = ManifestInput {
        generation_id: generation_id.to_string(),
        draft_id: id.to_string(),
        revision: draft.revision,
    };
    let options = run_once(
        &state,
        &format!("manifest:{generation_id}"),
        format!("manifest for draft {id} revision {}", draft.revision),
        WorkflowIdReusePolicy::RejectDuplicate,
    );
    match state
        .temporal
        .start_workflow(ManifestWorkflow::run, input, options)
        .await
    {
        Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
        Err(e) => {
            if fresh {
                sqlx::query!(
                    "delete from manifest_generation where generation_id = $1",
                    generation_id
                )
                .execute(&state.db)
                .await?;
            }
            return Err(engine_unavailable(e));
        }
    }
    let handle = state
        .temporal
        .get_workflow_handle::<ManifestWorkflow>(format!("manifest:{generation_id}"));
    let outcome: ManifestOutcome = match tokio::time::timeout(
        WAIT,
        handle.get_result(Default::default()),
    )
    .await
    {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            let draft_left = sqlx::query_scalar!(
                r#"select exists(select 1 from draft where draft_id = $1) as "e!""#,
                id
            )
            .fetch_one(&state.db)
            .await?;
            if !draft_left {
                // Deleted while the assistant worked on it: not the assistant's failure.
                return Err(ApiError::not_found("draft"));
            }
            // Every retry of the assistant failed: visible, and not the developer's fault.
            tracing::error!(error = %e, "manifest workflow failed");
            sqlx::query!(
                    "update manifest_generation set status = 'FAILED', detail = 'assistant unavailable', finished_at = now() where generation_id = $1 and status = 'PENDING'",
                    generation_id
                )
                .execute(&state.db)
                .await?;
            return Err(ApiError::bad_gateway(
                "assistant_unavailable",
                "the manifest assistant could not be reached; try again later",
            ));
        }
        Err(_) => return Err(still_running()),
    };
    let detail = || {
        outcome
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.code, p.detail))
            .collect::<Vec<_>>()
            .join("; ")
    };
    match outcome.status.as_str() {
        "ACCEPTED" => Ok(Json(ManifestPreview {
            draft_id: id.to_string(),
            revision: draft.revision,
            current: true,
            locked: true,
            manifest: outcome.manifest.unwrap_or_default(),
        })),
        "GONE" => Err(ApiError::not_found("draft")),
        "ABUSIVE" if outcome.locked => Err(locked()),
        "ABUSIVE" => Err(ApiError::unprocessable("input_refused", detail())),
        "REFUSED" => Err(ApiError::unprocessable("unusable_input", detail())),
        "INVALID" => Err(ApiError::bad_gateway("manifest_invalid", detail())),
        _ => Err(ApiError::conflict("manifest_not_generated", detail())),
    }
}

fn locked() -> ApiError {
    ApiError::new(
        StatusCode::LOCKED,
        "manifest_assistant_locked",
        "the manifest assistant is locked for this account after repeated abusive input; contact Support",
    )
}

/// The locked manifest preview of the draft.
#[utoipa::path(get, path = "/drafts/{id}/manifest", tag = "developer", security(("developer_session" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ManifestPreview), (status = 404, description = "No draft, or no manifest yet", body = ErrorBody)))]
async fn get_manifest(
    OwnedDraft { item: draft, .. }: OwnedDraft,
) -> ApiResult<Json<ManifestPreview>> {
    let id = draft.draft_id;
    let (Some(manifest), Some(revision)) = (draft.manifest, draft.manifest_revision) else {
        return Err(ApiError::not_found("manifest"));
    };
    Ok(Json(ManifestPreview {
        draft_id: id.to_string(),
        revision,
        current: revision == draft.revision,
        locked: true,
        manifest,
    }))
}
