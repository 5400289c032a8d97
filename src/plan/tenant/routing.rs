//! Multi-Geo routing: which geo's pipeline a user belongs to. The controller's batches
//! ([`partition`]) and the tenant client's profile reads route a user's preferred location with
//! the one rule [`route`]; only a user kept in a batch of another geo (their location changed in
//! flight) has their profile read where their location now points.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::api::BatchStatus;
use crate::plan::users::key_of;
use crate::plan::{DataLocation, DesiredSite, Observations, UserKey};

/// The geo (index into `locations`, the central geo's first) of each site's user, in the order of
/// `sites`. All sites of one user land in one geo:
/// 1. a user named in a geo's in-flight batch stays there until it ends — a user whose preferred
///    location changed meanwhile is re-routed after, never in two batches at once;
/// 2. else their preferred data location as last read ([`route`]);
/// 3. else the geo a status of theirs names (what was decided before a restart);
/// 4. else the central geo.
///
/// `locations` holds "" for a geo that takes no new users (one removed while its batch is in flight).
pub fn partition(
    sites: &[DesiredSite],
    observed: &Observations,
    batches: &[Option<&BatchStatus>],
    locations: &[&str],
) -> Vec<usize> {
    let mut in_batch: HashMap<Cow<str>, usize> = HashMap::new();
    for (g, b) in batches.iter().enumerate() {
        for u in b.iter().flat_map(|b| &b.users) {
            in_batch.entry(Cow::Owned(UserKey::new(u).as_str().to_string())).or_insert(g);
        }
    }
    let mut decided: HashMap<Cow<str>, usize> = HashMap::with_capacity(sites.len());
    for site in sites {
        let key = key_of(&site.user);
        if decided.contains_key(key.as_ref()) {
            continue;
        }
        let by_location = match observed.get(key.as_ref()).map(|o| &o.location) {
            Some(DataLocation::Preferred(code)) => Some(route(Some(code), locations)),
            Some(DataLocation::Unset) => Some(0),
            _ => None,
        };
        let by_status = || {
            let geo = site.status.as_deref()?.geo.as_deref()?;
            Some(route(Some(geo), locations))
        };
        // Undecided: a later site of the same user may still name a geo.
        if let Some(g) = in_batch.get(key.as_ref()).copied().or(by_location).or_else(by_status) {
            decided.insert(key, g);
        }
    }
    sites.iter().map(|s| decided.get(key_of(&s.user).as_ref()).copied().unwrap_or(0)).collect()
}

/// The index (into `locations`, the central geo's first) of the geo a user's OneDrive is created
/// in: their preferred data location when the tenant has that geo, else the central geo
/// (Microsoft's rule, `reference/m365-protocol.md` §8).
pub fn route(preferred: Option<&str>, locations: &[&str]) -> usize {
    preferred
        .filter(|p| !p.is_empty())
        .and_then(|p| locations.iter().position(|l| !l.is_empty() && l.eq_ignore_ascii_case(p)))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::OneDriveSiteStatus;
    use crate::plan::{Observation, Observed, SiteKey};

    const GEOS: [&str; 3] = ["NAM", "EUR", "APC"];

    fn site(name: &str, user: &str, geo: Option<&str>) -> DesiredSite<'static> {
        DesiredSite {
            key: SiteKey { namespace: "ns".into(), name: name.to_string().into() },
            user: user.to_string().into(),
            created: Timestamp::UNIX_EPOCH,
            generation: 1,
            status: geo.map(|g| OneDriveSiteStatus { geo: Some(g.into()), ..Default::default() }.into()),
            declares_settings: false,
            retry: None,
        }
    }

    fn located(location: DataLocation) -> Observed {
        Observed::located(None, Timestamp::UNIX_EPOCH, Observation::NoSite, location)
    }

    fn batch(users: &[&str]) -> BatchStatus {
        BatchStatus {
            id: 1,
            users: users.iter().map(|u| u.to_string()).collect(),
            size: users.len() as i32,
            last_user: users.last().unwrap().to_string(),
            enqueued_at: Time(Timestamp::UNIX_EPOCH),
            sent: true,
            users_record: None,
        }
    }

    #[test]
    fn a_user_stays_with_their_geos_batch_and_moves_once_it_ends() {
        let sites = [site("a", "A@contoso.com", None), site("b", "b@contoso.com", None)];
        // Alice was sent through EUR; her preferred location has since become APC.
        let observed = Observations::from_iter([
            (UserKey::new("a@contoso.com"), located(DataLocation::Preferred("APC".into()))),
            (UserKey::new("b@contoso.com"), located(DataLocation::Unset)),
        ]);
        let in_flight = batch(&["a@contoso.com"]);
        assert_eq!(partition(&sites, &observed, &[None, Some(&in_flight), None], &GEOS), vec![1, 0]);
        assert_eq!(partition(&sites, &observed, &[None, None, None], &GEOS), vec![2, 0]);
    }

    #[test]
    fn without_a_lookup_the_status_decides_and_all_sites_of_a_user_go_together() {
        let sites = [
            site("new", "c@contoso.com", None),
            site("old", "C@contoso.com", Some("APC")),
            site("x", "d@contoso.com", Some("JPN")),
            site("y", "e@contoso.com", None),
        ];
        let routes = partition(&sites, &Observations::default(), &[None, None, None], &GEOS);
        assert_eq!(routes, vec![2, 2, 0, 0]);
        // A geo that left the tenant (its location blanked) takes nobody new.
        assert_eq!(
            partition(&sites[..2], &Observations::default(), &[None, None, None], &["NAM", "EUR", ""]),
            vec![0, 0]
        );
    }

    #[test]
    fn users_go_to_their_preferred_geo_or_else_the_central_one() {
        let geos = ["NAM", "APC", "EUR"];
        assert_eq!(route(Some("EUR"), &geos), 2);
        assert_eq!(route(Some("eur"), &geos), 2);
        assert_eq!(route(Some("NAM"), &geos), 0);
        // A location the tenant does not have, or none: the central geo.
        assert_eq!(route(Some("JPN"), &geos), 0);
        assert_eq!(route(None, &geos), 0);
        // A single-geo tenant has one unnamed geo.
        assert_eq!(route(Some("EUR"), &[""]), 0);
    }
}
