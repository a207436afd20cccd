//! What happens to a certificate after issuance, as activities of the ops queue: the renewal
//! sweep's page of due certificates and each renewal's steps (reminder, charge, outcome, expiry),
//! and the model-tier sync that keeps the council's validators on models that exist.

pub mod disputes;
pub mod flags;
pub mod models;
pub mod monitor;
pub mod renewal;
mod rounds;
pub mod sites;

use std::sync::Arc;

use temporalio_macros::activities;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use crate::{Deps, retryable};
use disputes::{DisputeConclusion, DisputeDecided, DisputeOpened, DisputeRef, FreshRound};
use flags::{
    FlagApplied, FlagNotice, FlagStep, ReauditOutcome, ReauditSubmission, StatusChange,
    StatusChanged, StrandedFlag,
};
use models::ModelSyncReport;
use monitor::{CheckKey, CheckOutcome, DueChecks, MonitorPage};
use serde::{Deserialize, Serialize};
use sigma_shared::domain::FlagStatus;
use sites::SiteCheck;

/// A flag and its workflow, as the flag's steps name them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FlagRef {
    pub flag_id: String,
    pub certificate_id: String,
    pub workflow_id: String,
}

/// The `attempt`-th re-audit a flag's workflow orders (from 1).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReauditStart {
    pub flag: FlagRef,
    pub attempt: u32,
}
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

    /// Ties the flag to its workflow; answers where the flag stands.
    #[activity(name = "lifecycle.open_flag")]
    pub async fn open_flag(
        self: Arc<Self>,
        _ctx: ActivityContext,
        flag: FlagRef,
    ) -> Result<FlagStatus, ActivityError> {
        flags::open(&self.deps, &flag.flag_id, &flag.workflow_id)
            .await
            .map_err(retryable)
    }

    #[activity(name = "lifecycle.flag_overdue")]
    pub async fn flag_overdue(
        self: Arc<Self>,
        _ctx: ActivityContext,
        flag: FlagRef,
    ) -> Result<(), ActivityError> {
        flags::mark_overdue(&self.deps, &flag.flag_id)
            .await
            .map_err(retryable)
    }

    /// Records an operator's move of a flag (UPHELD suspends the certificate with it).
    #[activity(name = "lifecycle.apply_flag_move")]
    pub async fn apply_flag_move(
        self: Arc<Self>,
        _ctx: ActivityContext,
        step: FlagStep,
    ) -> Result<FlagApplied, ActivityError> {
        flags::apply(&self.deps, &step).await.map_err(retryable)
    }

    /// Records the re-audit's submission (free, the certificate's stored bytes).
    #[activity(name = "lifecycle.start_reaudit")]
    pub async fn start_reaudit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        start: ReauditStart,
    ) -> Result<ReauditSubmission, ActivityError> {
        let flag = &start.flag;
        flags::start_reaudit(
            &self.deps,
            &flag.flag_id,
            &flag.certificate_id,
            start.attempt,
        )
        .await
        .map_err(retryable)
    }

    /// Keeps, suspends or revokes the certificate after its re-audit.
    #[activity(name = "lifecycle.conclude_reaudit")]
    pub async fn conclude_reaudit(
        self: Arc<Self>,
        _ctx: ActivityContext,
        outcome: ReauditOutcome,
    ) -> Result<FlagApplied, ActivityError> {
        flags::conclude_reaudit(&self.deps, &outcome)
            .await
            .map_err(retryable)
    }

    /// Emails the certificate's developer what a flag did; once per flag and kind.
    #[activity(name = "lifecycle.notify_flag")]
    pub async fn notify_flag(
        self: Arc<Self>,
        _ctx: ActivityContext,
        notice: FlagNotice,
    ) -> Result<(), ActivityError> {
        flags::notify(&self.deps, &notice).await.map_err(retryable)
    }

    /// An operator's change of a certificate's status, and the developer's email about it.
    #[activity(name = "lifecycle.change_certificate_status")]
    pub async fn change_certificate_status(
        self: Arc<Self>,
        _ctx: ActivityContext,
        change: StatusChange,
    ) -> Result<StatusChanged, ActivityError> {
        flags::change_status(&self.deps, &change)
            .await
            .map_err(retryable)
    }

    /// Flags whose workflow never started, for the reconciler.
    #[activity(name = "lifecycle.stranded_flags")]
    pub async fn stranded_flags(
        self: Arc<Self>,
        _ctx: ActivityContext,
        limit: u32,
    ) -> Result<Vec<StrandedFlag>, ActivityError> {
        flags::stranded(&self.deps, limit).await.map_err(retryable)
    }

    /// The flag's triage deadline as configured now.
    #[activity(name = "lifecycle.flag_policy")]
    pub async fn flag_policy(
        self: Arc<Self>,
        _ctx: ActivityContext,
        _input: (),
    ) -> Result<u64, ActivityError> {
        Ok(self.deps.settings.ops.flag_triage_deadline_secs)
    }

    /// Acknowledges a dispute to its developer and alerts the operators.
    #[activity(name = "lifecycle.open_dispute")]
    pub async fn open_dispute(
        self: Arc<Self>,
        _ctx: ActivityContext,
        dispute: DisputeRef,
    ) -> Result<DisputeOpened, ActivityError> {
        disputes::open(&self.deps, &dispute)
            .await
            .map_err(retryable)
    }

    /// Tells the operators a disputed suspension is past its decision deadline.
    #[activity(name = "lifecycle.dispute_overdue")]
    pub async fn dispute_overdue(
        self: Arc<Self>,
        _ctx: ActivityContext,
        dispute: DisputeRef,
    ) -> Result<(), ActivityError> {
        disputes::overdue(&self.deps, &dispute)
            .await
            .map_err(retryable)
    }

    #[activity(name = "lifecycle.decide_dispute")]
    pub async fn decide_dispute(
        self: Arc<Self>,
        _ctx: ActivityContext,
        decided: DisputeDecided,
    ) -> Result<(), ActivityError> {
        disputes::decide(&self.deps, &decided)
            .await
            .map_err(retryable)
    }

    /// Records the fresh round an overturned dispute runs.
    #[activity(name = "lifecycle.dispute_round")]
    pub async fn dispute_round(
        self: Arc<Self>,
        _ctx: ActivityContext,
        dispute: DisputeRef,
    ) -> Result<FreshRound, ActivityError> {
        disputes::fresh_round(&self.deps, &dispute)
            .await
            .map_err(retryable)
    }

    #[activity(name = "lifecycle.conclude_dispute")]
    pub async fn conclude_dispute(
        self: Arc<Self>,
        _ctx: ActivityContext,
        conclusion: DisputeConclusion,
    ) -> Result<(), ActivityError> {
        disputes::conclude(&self.deps, &conclusion)
            .await
            .map_err(retryable)
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

    /// One page of monitors whose next check is due, on valid certificates.
    #[activity(name = "lifecycle.due_monitors")]
    pub async fn due_monitors(
        self: Arc<Self>,
        _ctx: ActivityContext,
        page: MonitorPage,
    ) -> Result<DueChecks, ActivityError> {
        monitor::due(&self.deps, page).await.map_err(retryable)
    }

    /// One monitor check: probes, source drift, site; recorded once, anomalies flagged.
    #[activity(name = "lifecycle.run_monitor_check")]
    pub async fn run_monitor_check(
        self: Arc<Self>,
        _ctx: ActivityContext,
        key: CheckKey,
    ) -> Result<CheckOutcome, ActivityError> {
        monitor::run_check(&self.deps, key).await.map_err(retryable)
    }

    /// One attempt at finding a site's verification token.
    #[activity(name = "lifecycle.check_site")]
    pub async fn check_site(
        self: Arc<Self>,
        _ctx: ActivityContext,
        site_id: String,
    ) -> Result<SiteCheck, ActivityError> {
        sites::check(&self.deps, &site_id).await.map_err(retryable)
    }

    /// Every attempt failed: the verification request ends FAILED.
    #[activity(name = "lifecycle.fail_site")]
    pub async fn fail_site(
        self: Arc<Self>,
        _ctx: ActivityContext,
        site_id: String,
    ) -> Result<(), ActivityError> {
        sites::fail(&self.deps, &site_id).await.map_err(retryable)
    }
}
