//! What happens to a certificate after issuance, as activities of the ops queue: the renewal
//! sweep's page of due certificates and each renewal's steps (reminder, charge, outcome, expiry),
//! and the model-tier sync that keeps the council's validators on models that exist.

pub mod models;
pub mod renewal;

use std::sync::Arc;

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{Deps, retryable};
use models::ModelSyncReport;
use renewal::{
    DuePage, DueRenewals, RenewalCharge, RenewalEnd, RenewalKey, RenewalOpened, RenewalPolicy,
};

pub struct LifecycleActivities {
    deps: Deps,
}

impl LifecycleActivities {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

#[activities]
impl LifecycleActivities {
    /// The sweep's settings as this worker has them now (read once per scheduled run, so a
    /// configuration change reaches the next sweep without re-creating the schedule).
    #[activity(name = "lifecycle.renewal_policy")]
    pub async fn renewal_policy(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: (),
    ) -> Result<RenewalPolicy, ActivityError> {
        Ok(renewal::policy(&self.deps))
    }

    /// One page of certificates whose renewal is due within the reminder lead and has not begun.
    #[activity(name = "lifecycle.due_renewals")]
    pub async fn due_renewals(
        self: Arc<Self>,
        _ctx: ActivityContext,
        page: DuePage,
    ) -> Result<DueRenewals, ActivityError> {
        renewal::due(&self.deps, page).await.map_err(retryable)
    }

    /// Records the renewal and says whether the certificate still needs one.
    #[activity(name = "lifecycle.open_renewal")]
    pub async fn open_renewal(
        self: Arc<Self>,
        _ctx: ActivityContext,
        key: RenewalKey,
    ) -> Result<RenewalOpened, ActivityError> {
        renewal::open(&self.deps, &key).await.map_err(retryable)
    }

    /// Emails the developer that the certificate is due, with the price and their balance; once.
    #[activity(name = "lifecycle.remind_renewal")]
    pub async fn remind_renewal(
        self: Arc<Self>,
        _ctx: ActivityContext,
        key: RenewalKey,
    ) -> Result<(), ActivityError> {
        renewal::remind(&self.deps, &key).await.map_err(retryable)
    }

    /// Takes the renewal price and records the renewal's submission, in one transaction, once.
    #[activity(name = "lifecycle.charge_renewal")]
    pub async fn charge_renewal(
        self: Arc<Self>,
        _ctx: ActivityContext,
        key: RenewalKey,
    ) -> Result<RenewalCharge, ActivityError> {
        renewal::charge(&self.deps, &key).await.map_err(retryable)
    }

    /// Records how the renewal ended.
    #[activity(name = "lifecycle.finish_renewal")]
    pub async fn finish_renewal(
        self: Arc<Self>,
        _ctx: ActivityContext,
        end: RenewalEnd,
    ) -> Result<(), ActivityError> {
        renewal::finish(&self.deps, &end).await.map_err(retryable)
    }

    /// Lists every validator provider's models; pauses and resumes validators to match.
    #[activity(name = "lifecycle.sync_models")]
    pub async fn sync_models(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: (),
    ) -> Result<ModelSyncReport, ActivityError> {
        models::sync(&self.deps).await.map_err(retryable)
    }

    /// On its expiry date, an unrenewed certificate becomes EXPIRED and the developer is told.
    #[activity(name = "lifecycle.expire_certificate")]
    pub async fn expire_certificate(
        self: Arc<Self>,
        _ctx: ActivityContext,
        key: RenewalKey,
    ) -> Result<bool, ActivityError> {
        renewal::expire(&self.deps, &key).await.map_err(retryable)
    }
}
