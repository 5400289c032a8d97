//! Each geo's pipeline: its admin host, the one batch it has in flight, how long its batches
//! take. Resumed from the tenant's status every cycle; a single-geo tenant has one.

use jiff::SignedDuration;

use crate::api::{BatchStatus, GeoStatus, OneDriveTenantStatus, UserCounts};

/// A geo the Microsoft client routes to (discovered or declared): where its users go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoTarget {
    /// `dataLocationCode` (NAM, EUR, ...); empty for a single-geo tenant's geo.
    pub location: String,
    pub admin_url: String,
    pub central: bool,
}

/// One geo's pipeline as a cycle holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Pipeline {
    pub location: String,
    pub admin_url: String,
    pub central: bool,
    /// Takes no new users: the geo left the tenant's geos while its batch was in flight.
    pub retired: bool,
    /// The geo's batch in flight: the one place a cycle keeps it.
    pub batch: Option<BatchStatus>,
    pub last_batch_seconds: Option<i64>,
}

impl Pipeline {
    /// The label written into its users' statuses (none for a single-geo tenant's geo).
    pub(super) fn label(&self) -> Option<&str> {
        (!self.location.is_empty()).then_some(self.location.as_str())
    }

    pub(super) fn typical_batch(&self) -> Option<SignedDuration> {
        self.last_batch_seconds.map(|s| SignedDuration::from_secs(s.clamp(0, 30 * 24 * 3600)))
    }

    pub fn name(&self) -> &str {
        geo_name(&self.location)
    }
}

/// A geo's name in messages and metric labels: its location, `central` for a single-geo
/// tenant's only geo (whose location is empty).
pub fn geo_name(location: &str) -> &str {
    if location.is_empty() { "central" } else { location }
}

/// The pipelines of a tenant with `geos` (the central geo first), resuming what its status
/// records: each geo's batch (see [`recorded`]). A batch recorded by a version before Multi-Geo
/// (`status.currentBatch`) is the central geo's. A recorded geo that is no longer one of the
/// tenant's keeps its pipeline until its batch ends, so no batch is ever lost.
pub fn pipelines(geos: &[GeoTarget], status: &OneDriveTenantStatus) -> Vec<Pipeline> {
    let mut taken = vec![false; status.geos.len()];
    let mut out: Vec<Pipeline> = geos
        .iter()
        .map(|g| {
            let r = recorded(g, status, &mut taken);
            // After a downgrade and another upgrade both may be there: the newer is in flight.
            let legacy = status.current_batch.clone().filter(|_| g.central);
            let batch = match (r.and_then(|r| r.current_batch.clone()), legacy) {
                (Some(a), Some(b)) => Some(if b.id > a.id { b } else { a }),
                (a, b) => a.or(b),
            };
            let legacy_seconds = if g.central { status.last_batch_seconds } else { None };
            Pipeline {
                location: g.location.clone(),
                admin_url: g.admin_url.clone(),
                central: g.central,
                retired: false,
                batch,
                last_batch_seconds: r.and_then(|r| r.last_batch_seconds).or(legacy_seconds),
            }
        })
        .collect();
    for (r, taken) in status.geos.iter().zip(taken) {
        if let (false, Some(batch)) = (taken, &r.current_batch) {
            out.push(Pipeline {
                location: r.location.clone(),
                admin_url: r.admin_url.clone(),
                central: false,
                retired: true,
                batch: Some(batch.clone()),
                last_batch_seconds: r.last_batch_seconds,
            });
        }
    }
    out
}

/// Each pipeline's line of the tenant status (a geo no longer the tenant's only while its batch
/// is in flight), with the users and last batch duration `line` gives it.
pub fn geo_lines(
    pipelines: &[Pipeline],
    line: impl Fn(usize, &Pipeline) -> (UserCounts, Option<i64>),
) -> Vec<GeoStatus> {
    pipelines
        .iter()
        .enumerate()
        .filter(|(_, p)| !p.retired || p.batch.is_some())
        .map(|(g, p)| {
            let (users, last_batch_seconds) = line(g, p);
            GeoStatus {
                location: p.location.clone(),
                central: p.central,
                admin_url: p.admin_url.clone(),
                current_batch: p.batch.clone(),
                last_batch_seconds,
                users,
            }
        })
        .collect()
}

/// The lines a batch record writes: the pipelines as they stand, each geo's users as the status
/// last counted them.
pub fn recorded_lines(pipelines: &[Pipeline], previous: &[GeoStatus]) -> Vec<GeoStatus> {
    geo_lines(pipelines, |_, p| {
        let before = previous.iter().find(|g| g.admin_url.eq_ignore_ascii_case(&p.admin_url));
        (before.map(|g| g.users.clone()).unwrap_or_default(), p.last_batch_seconds)
    })
}

/// The recorded line of geo `g`: the one with its admin host, else the one with its location (the
/// host was edited: one geo never has two batches in flight), else the central line for the
/// central geo. Each line serves one geo at most.
fn recorded<'s>(
    g: &GeoTarget,
    status: &'s OneDriveTenantStatus,
    taken: &mut [bool],
) -> Option<&'s GeoStatus> {
    let lines = &status.geos;
    let free: Vec<usize> = (0..lines.len()).filter(|&i| !taken[i]).collect();
    let i = free
        .iter()
        .copied()
        .find(|&i| lines[i].admin_url.eq_ignore_ascii_case(&g.admin_url))
        .or_else(|| free.iter().copied().find(|&i| !g.location.is_empty() && lines[i].location == g.location))
        .or_else(|| free.iter().copied().find(|&i| g.central && lines[i].central))?;
    taken[i] = true;
    Some(&lines[i])
}

/// The pipelines as the status records them, for a cycle that could not learn the geos (no
/// client): nothing is sent then, but the status keeps saying what is in flight where.
pub fn recorded_pipelines(central_admin_url: &str, status: &OneDriveTenantStatus) -> Vec<Pipeline> {
    let geos: Vec<GeoTarget> = if status.geos.is_empty() {
        vec![GeoTarget { location: String::new(), admin_url: central_admin_url.to_string(), central: true }]
    } else {
        status
            .geos
            .iter()
            .map(|g| GeoTarget {
                location: g.location.clone(),
                admin_url: g.admin_url.clone(),
                central: g.central,
            })
            .collect()
    };
    pipelines(&geos, status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn batch(id: i64, users: &[&str]) -> BatchStatus {
        BatchStatus {
            id,
            users: users.iter().map(|u| u.to_string()).collect(),
            size: users.len() as i32,
            last_user: users.last().unwrap().to_string(),
            enqueued_at: Time(jiff::Timestamp::UNIX_EPOCH),
            sent: true,
            users_record: None,
        }
    }

    fn geo(location: &str, admin_url: &str, central: bool) -> GeoTarget {
        GeoTarget { location: location.into(), admin_url: admin_url.into(), central }
    }

    #[test]
    fn a_batch_recorded_before_multi_geo_is_the_central_geos() {
        let status = OneDriveTenantStatus {
            current_batch: Some(batch(7, &["a@x.com"])),
            last_batch_seconds: Some(900),
            ..Default::default()
        };
        let p =
            pipelines(&[geo("NAM", "https://c-admin", true), geo("EUR", "https://e-admin", false)], &status);
        assert_eq!(p[0].batch.as_ref().map(|b| b.id), Some(7));
        assert_eq!(p[0].last_batch_seconds, Some(900));
        assert_eq!(p[1].batch, None);
        assert_eq!(p[1].last_batch_seconds, None);
    }

    #[test]
    fn an_edited_admin_host_keeps_its_geos_batch_and_the_newer_of_two_central_batches_wins() {
        let status = OneDriveTenantStatus {
            geos: vec![
                GeoStatus {
                    location: "NAM".into(),
                    central: true,
                    admin_url: "https://old-admin".into(),
                    current_batch: Some(batch(3, &["a@x.com"])),
                    ..Default::default()
                },
                GeoStatus {
                    location: "EUR".into(),
                    admin_url: "https://eur-old-admin".into(),
                    current_batch: Some(batch(5, &["b@x.com"])),
                    ..Default::default()
                },
            ],
            current_batch: Some(batch(6, &["c@x.com"])),
            ..Default::default()
        };
        let p = pipelines(
            &[geo("NAM", "https://new-admin", true), geo("EUR", "https://eur-new-admin", false)],
            &status,
        );
        let view: Vec<(&str, bool, Option<i64>)> =
            p.iter().map(|p| (p.admin_url.as_str(), p.retired, p.batch.as_ref().map(|b| b.id))).collect();
        assert_eq!(
            view,
            vec![("https://new-admin", false, Some(6)), ("https://eur-new-admin", false, Some(5))]
        );
    }

    #[test]
    fn each_geo_resumes_its_own_batch_and_a_gone_geo_keeps_its_batch_until_it_ends() {
        let status = OneDriveTenantStatus {
            geos: vec![
                GeoStatus {
                    location: "NAM".into(),
                    central: true,
                    admin_url: "https://c-admin".into(),
                    current_batch: Some(batch(3, &["a@x.com"])),
                    ..Default::default()
                },
                GeoStatus {
                    location: "APC".into(),
                    admin_url: "https://a-admin".into(),
                    current_batch: Some(batch(4, &["b@x.com"])),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let p =
            pipelines(&[geo("NAM", "https://c-admin", true), geo("EUR", "https://e-admin", false)], &status);
        let view: Vec<(&str, bool, Option<i64>)> =
            p.iter().map(|p| (p.location.as_str(), p.retired, p.batch.as_ref().map(|b| b.id))).collect();
        assert_eq!(view, vec![("NAM", false, Some(3)), ("EUR", false, None), ("APC", true, Some(4))]);
    }
}
