//! Temporal connection, namespace setup and the worker for each task queue.

use std::collections::HashMap;
use std::future::Future;

use anyhow::Context;
use sigma_activities::Deps;
use sigma_activities::audit::AuditActivities;
use sigma_activities::intake::IntakeActivities;
use sigma_activities::lifecycle::LifecycleActivities;
use sigma_activities::ops::OpsActivities;
use sigma_activities::portal::PortalActivities;
use sigma_activities::queues::QueueNames;
use sigma_activities::sandbox::SandboxActivities;
use sigma_activities::verdict::VerdictActivities;
use sigma_shared::config::TemporalSettings;
use temporalio_client::grpc::OperatorService;
use temporalio_client::tonic::IntoRequest;
use temporalio_client::{Client, ClientOptions, Connection, ConnectionOptions, Url};
use temporalio_common::protos::temporal::api::enums::v1::IndexedValueType;
use temporalio_common::protos::temporal::api::operatorservice::v1::{
    AddSearchAttributesRequest, ListSearchAttributesRequest,
};
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::search;
use crate::{
    CertificateStatusWorkflow, DisputeWorkflow, DraftCheckWorkflow, FlagWorkflow, ManifestWorkflow,
    ModelSyncWorkflow, MonitorCheckWorkflow, MonitorSweepWorkflow, ReconcileWorkflow,
    RenewalSweepWorkflow, RenewalWorkflow, SiteVerificationWorkflow, SubmissionWorkflow,
    SupportEmailWorkflow,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Queue {
    Sandbox,
    Audit,
    Ops,
}

impl Queue {
    pub const ALL: [Queue; 3] = [Queue::Sandbox, Queue::Audit, Queue::Ops];
    /// This queue's task queue name under the deployment's prefix.
    pub fn task_queue(self, settings: &TemporalSettings) -> String {
        let names = QueueNames::new(settings.task_queue_prefix.clone());
        match self {
            Queue::Sandbox => names.sandbox(),
            Queue::Audit => names.audit(),
            Queue::Ops => names.ops(),
        }
    }
}

pub async fn connect(settings: &TemporalSettings, identity: &str) -> anyhow::Result<Client> {
    let url = Url::parse(&settings.address)
        .with_context(|| format!("invalid temporal.address {}", settings.address))?;
    let connection = Connection::connect(
        ConnectionOptions::new(url)
            .identity(identity.to_owned())
            .build(),
    )
    .await
    .with_context(|| format!("cannot reach Temporal at {}", settings.address))?;
    Ok(Client::new(
        connection,
        ClientOptions::new(settings.namespace.clone()).build(),
    )?)
}

/// Registers SIGMA's custom search attributes on the namespace; harmless when they exist.
pub async fn ensure_search_attributes(client: &Client, namespace: &str) -> anyhow::Result<()> {
    let mut raw = client.clone();
    let existing = OperatorService::list_search_attributes(
        &mut raw,
        ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }
        .into_request(),
    )
    .await
    .context("cannot list search attributes")?
    .into_inner();
    let missing: HashMap<String, i32> = search::KEYWORDS
        .iter()
        .filter(|name| !existing.custom_attributes.contains_key(**name))
        .map(|name| (name.to_string(), IndexedValueType::Keyword as i32))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let added = OperatorService::add_search_attributes(
        &mut raw,
        AddSearchAttributesRequest {
            search_attributes: missing,
            namespace: namespace.to_owned(),
        }
        .into_request(),
    )
    .await;
    let Err(status) = added else { return Ok(()) };
    // Another process (a second worker, a parallel test) may have added them first: the server
    // then refuses ours, and a fresh list shows them all.
    let now = OperatorService::list_search_attributes(
        &mut raw,
        ListSearchAttributesRequest {
            namespace: namespace.to_owned(),
        }
        .into_request(),
    )
    .await
    .context("cannot list search attributes")?
    .into_inner();
    if search::KEYWORDS
        .iter()
        .all(|name| now.custom_attributes.contains_key(*name))
    {
        return Ok(());
    }
    Err(status).context("cannot add search attributes")
}

/// How long a stopping worker lets in-flight activities finish before cancelling them; a
/// cancelled activity is retried by another worker, so stopping never loses work.
pub const GRACEFUL_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

pub fn worker_options(queue: Queue, deps: Deps) -> anyhow::Result<WorkerOptions> {
    let builder = WorkerOptions::new(queue.task_queue(&deps.settings.temporal))
        .graceful_shutdown_period(GRACEFUL_SHUTDOWN);
    Ok(match queue {
        Queue::Sandbox => builder
            .register_activities(SandboxActivities::new(deps.clone()))
            .register_activities(PortalActivities::new(deps))
            .build(),
        Queue::Audit => builder
            .register_activities(AuditActivities::new(deps.clone()))
            .register_activities(PortalActivities::new(deps))
            .build(),
        Queue::Ops => builder
            .register_workflow::<SubmissionWorkflow>()?
            .register_workflow::<DraftCheckWorkflow>()?
            .register_workflow::<ManifestWorkflow>()?
            .register_workflow::<SupportEmailWorkflow>()?
            .register_workflow::<RenewalSweepWorkflow>()?
            .register_workflow::<RenewalWorkflow>()?
            .register_workflow::<ModelSyncWorkflow>()?
            .register_workflow::<FlagWorkflow>()?
            .register_workflow::<CertificateStatusWorkflow>()?
            .register_workflow::<ReconcileWorkflow>()?
            .register_workflow::<DisputeWorkflow>()?
            .register_workflow::<MonitorSweepWorkflow>()?
            .register_workflow::<MonitorCheckWorkflow>()?
            .register_workflow::<SiteVerificationWorkflow>()?
            .register_activities(IntakeActivities::new(deps.clone()))
            .register_activities(LifecycleActivities::new(deps.clone()))
            .register_activities(OpsActivities::new(deps.clone()))
            .register_activities(VerdictActivities::new(deps.clone()))
            .register_activities(PortalActivities::new(deps))
            .build(),
    })
}

/// Runs one task queue's worker until `shutdown` resolves. The worker future is `!Send`, so
/// this runs on the caller's task.
pub async fn run(
    client: Client,
    queue: Queue,
    deps: Deps,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let runtime = Runtime::from_current_tokio(Default::default())?;
    let task_queue = queue.task_queue(&deps.settings.temporal);
    let mut worker = Worker::new(&runtime, client, worker_options(queue, deps)?)?;
    let stop = worker.shutdown_handle();
    tracing::info!(queue = %task_queue, "worker polling");
    let running = worker.run();
    tokio::pin!(running);
    let result = tokio::select! {
        result = &mut running => result,
        () = shutdown => {
            stop();
            running.await
        }
    };
    result.with_context(|| format!("worker for queue {task_queue} failed"))
}

/// Runs several queues' workers on this task until `stop` turns true.
pub async fn run_all(
    client: Client,
    queues: Vec<Queue>,
    deps: Deps,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        !queues.contains(&Queue::Ops) || deps.keys.can_sign(),
        "the ops queue issues certificates and needs a signing key: set signing.key_dir and \
         signing.active_key (SIGMA__SIGNING__KEY_DIR, SIGMA__SIGNING__ACTIVE_KEY); `sigma keygen` makes one"
    );
    let runs = queues.into_iter().map(|queue| {
        let mut stop = stop.clone();
        run(client.clone(), queue, deps.clone(), async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    });
    for result in futures::future::join_all(runs).await {
        result?;
    }
    Ok(())
}
