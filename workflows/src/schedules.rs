//! The Ops worker's periodic jobs as Temporal Schedules, created or updated by
//! `sigma temporal-setup` (and so `sigma setup` and `sigma dev`). Ids are stable and readable
//! (`sigma-renewal-sweep` under the deployment's task-queue prefix), overlapping firings are
//! skipped, and every scheduled run carries an execution timeout, a retry policy, a memo and the
//! `SigmaJob` search attribute. The typed schedule API cannot set those on the started workflow,
//! so this speaks the raw RPC. Updating keeps the schedule's state: a schedule an operator paused
//! in the Web UI stays paused.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sigma_activities::queues::QueueNames;
use sigma_shared::Settings;
use temporalio_client::Client;
use temporalio_client::grpc::WorkflowService;
use temporalio_client::tonic::{Code, IntoRequest};
use temporalio_common::WorkflowDefinition;
use temporalio_common::protos::temporal::api::common::v1::{
    Memo, Payload, Payloads, RetryPolicy, WorkflowType,
};
use temporalio_common::protos::temporal::api::enums::v1::ScheduleOverlapPolicy;
use temporalio_common::protos::temporal::api::schedule::v1::{
    IntervalSpec, Schedule, ScheduleAction, SchedulePolicies, ScheduleSpec, ScheduleState,
    schedule_action::Action,
};
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflow::v1::NewWorkflowExecutionInfo;
use temporalio_common::protos::temporal::api::workflowservice::v1::{
    CreateScheduleRequest, DescribeScheduleRequest, UpdateScheduleRequest,
};
use temporalio_common::search_attributes::SearchAttributes;

use crate::lifecycle::{
    ModelSyncWorkflow, MonitorSweepInput, MonitorSweepWorkflow, ReconcileWorkflow,
    RenewalSweepInput, RenewalSweepWorkflow,
};
use crate::search;

/// One periodic job.
pub struct Job {
    /// Short name: the schedule id is `{prefix}sigma-{name}`; also the `SigmaJob` attribute.
    pub name: &'static str,
    pub description: &'static str,
    workflow_type: String,
    input: Payload,
    every: Duration,
}

impl Job {
    fn new<W: WorkflowDefinition>(
        name: &'static str,
        description: &'static str,
        workflow: W,
        input: &impl Serialize,
        every_secs: u64,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            name,
            description,
            workflow_type: workflow.name().to_owned(),
            input: json_payload(input)?,
            every: Duration::from_secs(every_secs.max(1)),
        })
    }
}

/// The jobs this deployment schedules.
pub fn jobs(settings: &Settings) -> anyhow::Result<Vec<Job>> {
    let ops = &settings.ops;
    Ok(vec![
        Job::new(
            "renewal-sweep",
            "Starts one renewal workflow per certificate due within the reminder lead",
            RenewalSweepWorkflow::run,
            &RenewalSweepInput::default(),
            ops.renewal_sweep_interval_secs,
        )?,
        Job::new(
            "monitor-sweep",
            "Starts one check workflow per monitored certificate whose next check is due",
            MonitorSweepWorkflow::run,
            &MonitorSweepInput::default(),
            ops.monitor_sweep_interval_secs,
        )?,
        Job::new(
            "model-tier-sync",
            "Lists every validator provider's models; pauses and resumes validators to match",
            ModelSyncWorkflow::run,
            &(),
            ops.model_sync_interval_secs,
        )?,
        Job::new(
            "reconciler",
            "Starts the workflows of recorded work whose workflow never started (flags)",
            ReconcileWorkflow::run,
            &(),
            ops.reconcile_interval_secs,
        )?,
    ])
}

/// `{prefix}sigma-{name}`.
pub fn schedule_id(settings: &Settings, name: &str) -> String {
    format!("{}sigma-{name}", settings.temporal.task_queue_prefix)
}

/// What `ensure_schedules` did to one schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    Created,
    Updated,
}

/// Creates each job's schedule, or updates it to the current settings (keeping its paused
/// state and notes). Safe to run any number of times, from several processes at once.
pub async fn ensure_schedules(
    client: &Client,
    settings: &Settings,
) -> anyhow::Result<Vec<(String, Ensured)>> {
    let mut done = Vec::new();
    for job in jobs(settings)? {
        let id = schedule_id(settings, job.name);
        let ensured = ensure(client, settings, &id, &job)
            .await
            .with_context(|| format!("cannot create or update schedule {id}"))?;
        done.push((id, ensured));
    }
    Ok(done)
}

fn json_payload(value: &impl Serialize) -> anyhow::Result<Payload> {
    Ok(Payload {
        metadata: HashMap::from([("encoding".to_owned(), b"json/plain".to_vec())]),
        data: serde_json::to_vec(value)?,
        ..Default::default()
    })
}

fn schedule(settings: &Settings, id: &str, job: &Job) -> anyhow::Result<Schedule> {
    let ops = &settings.ops;
    let queue = QueueNames::new(settings.temporal.task_queue_prefix.clone()).ops();
    let memo = Memo {
        fields: HashMap::from([
            ("job".to_owned(), json_payload(&job.name)?),
            ("description".to_owned(), json_payload(&job.description)?),
        ]),
    };
    let attributes = SearchAttributes::new([search::JOB.value_set(job.name.to_owned())]);
    let run = NewWorkflowExecutionInfo {
        // The server appends the firing time: `sigma-renewal-sweep-2026-12-07T21:00:00Z`.
        workflow_id: id.to_owned(),
        workflow_type: Some(WorkflowType {
            name: job.workflow_type.clone(),
        }),
        task_queue: Some(TaskQueue {
            name: queue,
            ..Default::default()
        }),
        input: Some(Payloads {
            payloads: vec![job.input.clone()],
        }),
        workflow_execution_timeout: Duration::from_secs(ops.scheduled_run_timeout_secs)
            .try_into()
            .ok(),
        retry_policy: Some(RetryPolicy {
            initial_interval: Duration::from_secs(10).try_into().ok(),
            backoff_coefficient: 2.0,
            maximum_interval: Duration::from_secs(300).try_into().ok(),
            maximum_attempts: 3,
            ..Default::default()
        }),
        memo: Some(memo),
        search_attributes: Some(attributes.into_proto()),
        ..Default::default()
    };
    Ok(Schedule {
        spec: Some(ScheduleSpec {
            interval: vec![IntervalSpec {
                interval: job.every.try_into().ok(),
                phase: None,
            }],
            ..Default::default()
        }),
        action: Some(ScheduleAction {
            action: Some(Action::StartWorkflow(run)),
        }),
        policies: Some(SchedulePolicies {
            overlap_policy: ScheduleOverlapPolicy::Skip as i32,
            // A firing missed while the server was down runs once when it is back (within a day).
            catchup_window: Duration::from_secs(24 * 3600).try_into().ok(),
            ..Default::default()
        }),
        state: Some(ScheduleState {
            notes: job.description.to_owned(),
            ..Default::default()
        }),
    })
}

async fn ensure(
    client: &Client,
    settings: &Settings,
    id: &str,
    job: &Job,
) -> anyhow::Result<Ensured> {
    let namespace = settings.temporal.namespace.clone();
    let mut raw = client.clone();
    let wanted = schedule(settings, id, job)?;
    let described = WorkflowService::describe_schedule(
        &mut raw,
        DescribeScheduleRequest {
            namespace: namespace.clone(),
            schedule_id: id.to_owned(),
        }
        .into_request(),
    )
    .await;
    match described {
        Ok(current) => {
            let current = current.into_inner();
            let mut schedule = wanted;
            // An operator's pause (and its note) survives a setup run.
            if let Some(state) = current.schedule.and_then(|s| s.state) {
                schedule.state = Some(state);
            }
            WorkflowService::update_schedule(
                &mut raw,
                UpdateScheduleRequest {
                    namespace,
                    schedule_id: id.to_owned(),
                    schedule: Some(schedule),
                    conflict_token: current.conflict_token,
                    identity: "sigma-setup".to_owned(),
                    request_id: format!("sigma-setup-{id}-{}", unique_suffix()),
                    ..Default::default()
                }
                .into_request(),
            )
            .await
            .context("update failed")?;
            Ok(Ensured::Updated)
        }
        Err(status) if status.code() == Code::NotFound => {
            let created = WorkflowService::create_schedule(
                &mut raw,
                CreateScheduleRequest {
                    namespace,
                    schedule_id: id.to_owned(),
                    schedule: Some(wanted),
                    identity: "sigma-setup".to_owned(),
                    request_id: format!("sigma-setup-{id}"),
                    ..Default::default()
                }
                .into_request(),
            )
            .await;
            match created {
                Ok(_) => Ok(Ensured::Created),
                // Another process created it between our describe and create.
                Err(status) if status.code() == Code::AlreadyExists => Ok(Ensured::Updated),
                Err(status) => Err(status).context("create failed"),
            }
        }
        Err(status) => Err(status).context("describe failed"),
    }
}

/// Distinguishes one update request from the next (the server deduplicates by request id).
fn unique_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}
