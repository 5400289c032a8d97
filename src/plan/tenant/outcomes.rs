//! What sending means. The controller sends each recorded batch and reports how it went
//! ([`Sent`]); these decide what the pipelines and the cycle then say. The order stays the
//! controller's to keep: every new batch is recorded (unsent) before any request goes out, and a
//! batch is marked sent as soon as SharePoint accepted it, before the next geo's is sent.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Stand, TenantPlan};
use crate::api::BatchStatus;
use crate::plan::{TenantProblem, whole_second};

/// One geo's batch to send: the pipeline's index, and whether an earlier process recorded it
/// (and may have sent it already).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ToSend {
    pub geo: usize,
    pub resend: bool,
}

/// How sending one geo's batch ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Sent {
    Accepted,
    /// Not sent, or not known to have arrived: stays recorded and unsent, sent again later
    /// (enqueueing is idempotent on the service).
    Kept(SendFailure),
    /// SharePoint definitely refused it: nothing was enqueued.
    Refused(SendFailure),
}

/// Why a send did not go through.
#[derive(Clone, Debug, PartialEq)]
pub struct SendFailure {
    pub problem: TenantProblem,
    /// Microsoft asked to wait until then.
    pub throttled_until: Option<Timestamp>,
    /// The geo's admin host could not be reached: that geo alone is held up.
    pub unreachable: bool,
}

/// Whether the other geos' batches are still sent after `failure`: throttling and a refused
/// token concern every geo (one app, one set of limits); an unreachable host holds up its geo.
pub fn keeps_sending(failure: Option<&SendFailure>) -> bool {
    failure.is_none_or(|f| f.unreachable)
}

/// The failure the cycle reports: one that concerns every geo over an unreachable host.
pub fn worse(so_far: Option<SendFailure>, next: SendFailure) -> Option<SendFailure> {
    match so_far {
        Some(f) if !f.unreachable => Some(f),
        _ => Some(next),
    }
}

/// Puts what `plan` says of every geo into the pipelines — a batch that finished is gone (and its
/// duration learnt), a new one is recorded unsent — and returns the geos to send. What the
/// pipelines then hold is what the controller records before sending.
pub fn record(plan: &TenantPlan, stand: &mut Stand) -> Vec<ToSend> {
    stand.last_batch_id = stand.last_batch_id.max(plan.last_batch_id());
    let mut out = Vec::new();
    for (g, (pipeline, p)) in stand.pipelines.iter_mut().zip(&plan.geos).enumerate() {
        pipeline.batch = p.batch.clone();
        if let Some(d) = p.batch_duration {
            pipeline.last_batch_seconds = Some(d.as_secs());
        }
        if let Some(e) = &p.enqueue {
            pipeline.batch = Some(BatchStatus { sent: false, ..e.batch.clone() });
            out.push(ToSend { geo: g, resend: e.resend });
        }
    }
    out
}

/// One geo's send happened: accepted (sent; a batch an earlier process recorded starts its
/// provisioning clock now), kept (stays as recorded) or refused (gone).
pub fn after_sent(stand: &mut Stand, to: ToSend, sent: &Sent, now: Timestamp) {
    let batch = &mut stand.pipelines[to.geo].batch;
    match sent {
        Sent::Accepted => {
            if let Some(b) = batch.as_mut() {
                b.sent = true;
                if to.resend {
                    b.enqueued_at = Time(whole_second(now));
                }
            }
        }
        Sent::Kept(_) => {}
        Sent::Refused(_) => *batch = None,
    }
}

/// The cycle after a failed send: Microsoft's wait, or the problem. Returns until when a refusal
/// is remembered (the same credentials are not asked again for ten minutes). The caller plans
/// again (the users of an unsent batch say so) and keeps what the first plan finished
/// ([`with_finished`]).
pub fn after_failure(stand: &mut Stand, failure: SendFailure, now: Timestamp) -> Option<Timestamp> {
    match failure.throttled_until {
        Some(until) => {
            stand.throttled_until = Some(until);
            None
        }
        None if failure.unreachable => {
            stand.problem = Some(failure.problem);
            None
        }
        None => {
            stand.problem = Some(failure.problem);
            now.checked_add(SignedDuration::from_mins(10)).ok()
        }
    }
}

/// The plan once every send went through: each enqueued geo's batch as sent.
pub fn with_sent(mut plan: TenantPlan, stand: &Stand) -> TenantPlan {
    for (p, pipeline) in plan.geos.iter_mut().zip(&stand.pipelines) {
        if p.enqueue.is_some() {
            p.batch = pipeline.batch.clone();
        }
    }
    plan
}

/// A plan made again after a failed send, keeping what finished before the send.
pub fn with_finished(mut again: TenantPlan, first: &TenantPlan) -> TenantPlan {
    for (a, p) in again.geos.iter_mut().zip(&first.geos) {
        a.finished = a.finished.clone().or(p.finished.clone());
        a.batch_duration = a.batch_duration.or(p.batch_duration);
    }
    again
}
