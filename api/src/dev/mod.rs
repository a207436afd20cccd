//! Developer plane: email login and portal sessions, drafts, dry-runs and manifests, quotes,
//! payment intents and credits, submissions and their progress, support. One module per
//! resource; the router is their union.

pub mod account;
pub mod checkout;
pub mod disputes;
pub mod drafts;
pub mod dry_run;
pub mod login;
pub mod login_page;
pub mod manifest;
pub mod owned;
pub mod payment_intents;
pub mod quotes;
pub mod sites;
pub mod submission_views;
pub mod submissions;
pub mod support;
pub mod upload;

use utoipa_axum::router::OpenApiRouter;

use crate::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(login::router())
        .merge(account::router())
        .merge(drafts::router())
        .merge(manifest::routes())
        .merge(dry_run::routes())
        .merge(quotes::router())
        .merge(payment_intents::router())
        .merge(checkout::router())
        .merge(support::router())
        .merge(submissions::router())
        .merge(submission_views::router())
        .merge(disputes::router())
        .merge(sites::router())
}
