//! A tenant's progress: the users and batches left and when the last batch should be done.
//!
//! Each geo sends one batch at a time and the next one as soon as the previous one's last user
//! has a site, so its batches follow each other about one batch duration apart: the duration its
//! last batch took, measured enqueue to the look that found the last user's site (which is when
//! the next batch goes out). A geo with a batch in flight ends
//! `enqueuedAt + (1 + ⌈pending / batchSize⌉) × duration`; the tenant ends with its last geo.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{GeoStatus, TenantProgress};
use crate::plan::{after, whole_second};

/// The tenant's progress from its geos' lines. `None` when no user has work left.
pub fn progress(geos: &[GeoStatus], batch_size: i32, now: Timestamp) -> Option<TenantProgress> {
    let batch_size = batch_size.max(1);
    let mut out = TenantProgress::default();
    let mut end = Some(now);
    for g in geos {
        let queued = (g.users.pending.max(0) + batch_size - 1) / batch_size;
        let in_flight = g.current_batch.as_ref();
        out.users_left += g.users.pending.max(0) + g.users.provisioning.max(0);
        out.batches_left += queued + i32::from(in_flight.is_some());
        if queued == 0 && in_flight.is_none() {
            continue;
        }
        let geo_end = g.last_batch_seconds.filter(|s| *s > 0).map(|secs| {
            let duration = SignedDuration::from_secs(secs);
            // A batch that takes longer than the last one ends no earlier than now.
            let first = in_flight.map_or(now, |b| after(b.enqueued_at.0, duration).max(now));
            after(first, duration.checked_mul(queued).unwrap_or(SignedDuration::MAX))
        });
        end = end.zip(geo_end).map(|(a, b)| a.max(b));
    }
    if out.users_left == 0 && out.batches_left == 0 {
        return None;
    }
    // Nothing estimated while a geo with work left has no batch duration yet.
    out.estimated_completion = end.filter(|_| out.batches_left > 0).map(|t| Time(whole_second(t)));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BatchStatus, UserCounts};

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + secs).unwrap()
    }

    fn geo(pending: i32, provisioning: i32, in_flight_since: Option<i64>, last: Option<i64>) -> GeoStatus {
        GeoStatus {
            users: UserCounts { pending, provisioning, ..UserCounts::default() },
            current_batch: in_flight_since.map(|s| BatchStatus {
                id: 1,
                users: vec!["a@contoso.com".into()],
                size: 1,
                last_user: "a@contoso.com".into(),
                enqueued_at: Time(t(s)),
                sent: true,
                users_record: None,
            }),
            last_batch_seconds: last,
            ..GeoStatus::default()
        }
    }

    #[test]
    fn the_queue_follows_the_batch_in_flight_one_duration_apart() {
        // 450 waiting = 3 batches of 200 after the one in flight (sent at 100, batches take 600 s).
        let p = progress(&[geo(450, 200, Some(100), Some(600))], 200, t(400)).unwrap();
        assert_eq!((p.users_left, p.batches_left), (650, 4));
        assert_eq!(p.estimated_completion, Some(Time(t(100 + 600 + 3 * 600))));
        // The estimate holds through the batch: no rewrite of the status every cycle.
        assert_eq!(progress(&[geo(450, 200, Some(100), Some(600))], 200, t(650)).unwrap(), p);
    }

    #[test]
    fn a_batch_slower_than_the_last_ends_no_earlier_than_now() {
        let p = progress(&[geo(200, 200, Some(100), Some(600))], 200, t(1000)).unwrap();
        assert_eq!(p.estimated_completion, Some(Time(t(1000 + 600))));
    }

    #[test]
    fn no_estimate_before_a_batch_has_completed_and_nothing_once_done() {
        let p = progress(&[geo(300, 200, Some(100), None)], 200, t(200)).unwrap();
        assert_eq!((p.users_left, p.batches_left, p.estimated_completion), (500, 3, None));
        assert_eq!(progress(&[geo(0, 0, None, Some(600))], 200, t(200)), None);
        // Stragglers (provisioning, their batch over) are work left but no batch.
        let p = progress(&[geo(0, 3, None, Some(600))], 200, t(200)).unwrap();
        assert_eq!((p.users_left, p.batches_left, p.estimated_completion), (3, 0, None));
    }

    #[test]
    fn a_multi_geo_tenant_ends_with_its_slowest_geo() {
        let geos = [geo(0, 200, Some(0), Some(600)), geo(400, 200, Some(100), Some(900))];
        let p = progress(&geos, 200, t(300)).unwrap();
        assert_eq!(p.batches_left, 4);
        assert_eq!(p.estimated_completion, Some(Time(t(100 + 900 + 2 * 900))));
        // One geo without a duration yet: no estimate for the tenant.
        let geos = [geo(0, 200, Some(0), Some(600)), geo(400, 200, Some(100), None)];
        assert_eq!(progress(&geos, 200, t(300)).unwrap().estimated_completion, None);
    }
}
