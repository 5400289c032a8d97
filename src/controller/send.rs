//! The record and send phases. Every new batch is recorded in the tenant's status (`sent: false`,
//! its users first in the operator's namespace) before any request goes out, so a crash between
//! the two resends exactly what was recorded and never forms a batch twice; the record is
//! conditional on the tenant's resourceVersion, so of two processes only one ever records — and
//! sends — a batch. Sending only sends: each geo's batch goes to its admin host while this replica
//! surely leads, and what each send came to ([`Sent`]) is the planner's to read.

use kube::runtime::events::EventType;

use super::ControllerError;
use super::cycle::Context;
use super::memory::TenantMemory;
use super::reconciler::{CycleReport, Reconciler, problem_of};
use crate::api::{BatchStatus, EventReason};
use crate::m365::{M365Error, TenantClient};
use crate::plan::tenant::{
    Pipeline, SendFailure, Sent, Stand, ToSend, after_sent, keeps_sending, recorded_lines, worse,
};

impl Reconciler {
    /// Record: the users of every new batch in the operator's namespace, then every geo's line
    /// with the tenant's resourceVersion as this cycle read it as precondition (a Conflict ends
    /// the cycle before anything is sent).
    pub(super) async fn record(&self, cx: &Context<'_>, stand: &mut Stand) -> Result<(), ControllerError> {
        self.record_batches(cx.tenant, &mut stand.pipelines, cx.status.last_batch_id).await?;
        self.write_recorded(cx, stand, cx.tenant.metadata.resource_version.as_deref()).await
    }

    /// Writes every geo's line as the pipelines hold it.
    pub(super) async fn write_recorded(
        &self,
        cx: &Context<'_>,
        stand: &Stand,
        precondition: Option<&str>,
    ) -> Result<(), ControllerError> {
        let lines = recorded_lines(&stand.pipelines, &cx.status.geos);
        self.write_tenant_batches(cx.name, &lines, stand.last_batch_id, precondition).await
    }

    /// Send: the recorded batches, one geo after another; one SharePoint accepted is marked sent
    /// at once (a crash after that never sends it again). Returns the failure the cycle reports.
    pub(super) async fn send(
        &self,
        cx: &Context<'_>,
        to_send: &[ToSend],
        stand: &mut Stand,
        memory: &Option<TenantMemory>,
        report: &mut CycleReport,
    ) -> Result<Option<SendFailure>, ControllerError> {
        let client = memory.as_ref().expect("a plan with an enqueue has a client").client.clone();
        let mut failure = None;
        let mut accepted = Vec::new();
        for &to in to_send {
            if !keeps_sending(failure.as_ref()) {
                break;
            }
            // The one irreversible step: only while this replica surely leads. Otherwise the
            // batch stays recorded unsent, for the leader to send.
            if self.options.fence.as_ref().is_some_and(|f| !f.holds()) {
                return Err(ControllerError::LeaseLost);
            }
            let sent = send_one(&client, &stand.pipelines[to.geo], to.resend).await;
            after_sent(stand, to, &sent, cx.now);
            match sent {
                Sent::Accepted => {
                    self.write_recorded(cx, stand, None).await?;
                    accepted.push(to.geo);
                }
                Sent::Kept(f) | Sent::Refused(f) => failure = worse(failure, f),
            }
        }
        for g in accepted {
            let pipeline = &stand.pipelines[g];
            let batch = pipeline.batch.clone().expect("an accepted batch stays recorded");
            self.sent(cx, pipeline, &batch).await;
            report.enqueued.push(batch);
        }
        Ok(failure)
    }

    /// What a batch accepted by SharePoint is reported with: counts, never names (tenant Events
    /// are readable beyond the users' namespaces; the last user's own site says the next batch
    /// waits for it).
    async fn sent(&self, cx: &Context<'_>, pipeline: &Pipeline, batch: &BatchStatus) {
        self.options.metrics.batch(cx.name, batch.users.len());
        let geo = if pipeline.location.is_empty() {
            String::new()
        } else {
            format!(" in geo {} ({})", pipeline.location, pipeline.admin_url)
        };
        let method = cx.tenant.spec.enqueue_method;
        let note =
            format!("batch {} of {} users sent to SharePoint{geo} ({method:?})", batch.id, batch.users.len());
        self.event(cx.tenant, EventType::Normal, EventReason::BatchEnqueued.as_str(), note).await;
    }
}

/// Sends one geo's recorded batch. Throttled or unreachable, or a batch an earlier process may
/// have sent: kept, to be sent again (enqueueing is idempotent on the service); anything else
/// SharePoint said: refused.
async fn send_one(client: &TenantClient, pipeline: &Pipeline, resend: bool) -> Sent {
    let batch = pipeline.batch.as_ref().expect("recorded before it is sent");
    match client.enqueue_at(&pipeline.admin_url, &batch.users).await {
        Ok(()) => Sent::Accepted,
        Err(e) if matches!(e, M365Error::Throttled { .. } | M365Error::Unreachable(_)) || resend => {
            Sent::Kept(failure_of(&e))
        }
        Err(e) => Sent::Refused(failure_of(&e)),
    }
}

fn failure_of(e: &M365Error) -> SendFailure {
    SendFailure {
        problem: problem_of(e),
        throttled_until: match e {
            M365Error::Throttled { until, .. } => Some(*until),
            _ => None,
        },
        unreachable: matches!(e, M365Error::Unreachable(_)),
    }
}
