//! Reading a set's source: a `users` list as the spec holds it, a group through the tenant's
//! client — only when the tenant lets the set's namespace read it, and only when a resync is
//! due (what was read is kept between passes, with when).

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use super::super::memory::{SetMemory, SourceRead as Read};
use super::super::reconciler::Reconciler;
use crate::api::{GroupRef, OneDriveSiteSet, OneDriveTenant, SetReason, parse_duration};
use crate::m365::TenantClient;
use crate::plan::site_set::{SetProblem, may_read};

/// The resync interval's bounds (the CRD's too): a shorter one would spend the tenant's shared
/// Graph budget on one set.
const SHORTEST_RESYNC: SignedDuration = SignedDuration::from_mins(1);
const LONGEST_RESYNC: SignedDuration = SignedDuration::from_hours(168);
/// How long a failed group read waits before the next (unless Microsoft said when).
const RETRY_FAILED_READ: SignedDuration = SignedDuration::from_secs(60);

impl Reconciler {
    /// The set's users: from its spec, or from its group (read again when due).
    pub(super) async fn read_source(
        &self,
        set: &OneDriveSiteSet,
        tenant: &OneDriveTenant,
        memory: &mut SetMemory,
        now: Timestamp,
    ) -> Read {
        let generation = set.metadata.generation;
        if let Some(users) = &set.spec.source.users {
            // A list is read on every change of the spec: its time is when this generation was
            // first synced, so an unchanged set writes nothing.
            if memory.generation != generation || memory.read.is_none() {
                memory.generation = generation;
                memory.read = Some(Ok((users.clone().into(), now)));
            }
            return memory.read.clone().expect("just set");
        }
        let Some(group) = &set.spec.source.group else {
            return Err(SetProblem::new(
                SetReason::InvalidSpec,
                "spec.source sets neither group nor users",
                true,
            ));
        };
        let namespace = set.namespace().unwrap_or_default();
        may_read(&tenant.spec.group_sources, &tenant.name_any(), &namespace, group)?;
        let interval = parse_duration("spec.resyncInterval", &set.spec.resync_interval)
            .map_err(|e| SetProblem::new(SetReason::InvalidSpec, e, true))?
            .clamp(SHORTEST_RESYNC, LONGEST_RESYNC);
        let due = memory.generation != generation
            || memory.read.is_none()
            || memory.next_read.is_none_or(|t| now >= t);
        if due {
            let read = self.read_group(tenant, group, now).await;
            // A failure a person must fix is not asked again before the next resync.
            memory.next_read = Some(match &read {
                Ok(_) => now + interval,
                Err((_, Some(retry))) => *retry,
                Err((problem, None)) if problem.stalled => now + interval,
                Err(_) => now + RETRY_FAILED_READ,
            });
            memory.generation = generation;
            memory.read = Some(read.map_err(|(p, _)| p));
        }
        memory.read.clone().expect("read above or before")
    }

    /// `group`'s members, read now; a failure carries when to try again, if Microsoft said.
    async fn read_group(
        &self,
        tenant: &OneDriveTenant,
        group: &GroupRef,
        now: Timestamp,
    ) -> Result<(Arc<[String]>, Timestamp), (SetProblem, Option<Timestamp>)> {
        // The tenant's own condition says what is wrong with its credentials; the set, readable
        // in its namespace, only points there.
        let client: Arc<TenantClient> = self.tenant_client(tenant).await.map_err(|e| {
            let message = format!(
                "the OneDriveTenant {} cannot reach Microsoft 365 ({}): see its Ready condition",
                tenant.name_any(),
                e.reason()
            );
            (SetProblem::new(SetReason::SourceUnavailable, message, e.needs_person()), None)
        })?;
        match client.group_members(group).await {
            Ok(users) => Ok((users.into(), now)),
            Err(e) => {
                // The message names the group as the set does, and Graph's status and code.
                Err((SetProblem::new(e.reason(), e.to_string(), e.needs_person()), e.retry_at()))
            }
        }
    }
}
