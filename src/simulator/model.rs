//! The simulated tenant: a user directory and, per user, the personal-site state machine
//! Uninitialized → Enqueued (profile shows SPSSITEERROR) → Created, plus failure states.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// A user as configured (`--users FILE` entries, or generated).
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    pub upn: String,
    #[serde(default = "yes")]
    pub licensed: bool,
    #[serde(default = "yes")]
    pub sign_in_allowed: bool,
    /// The user already has a OneDrive.
    #[serde(default)]
    pub has_site: bool,
    /// Graph's `preferredDataLocation` (Multi-Geo), e.g. EUR; none by default. The user's OneDrive
    /// is created in that geo when the tenant has it, else in the central geo.
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "geo")]
    pub preferred_data_location: Option<String>,
    /// How Graph answers this user's drive lookup while they have no site.
    #[serde(default)]
    pub lookup_quirk: LookupQuirk,
    /// The `SPS-PersonalSiteInstantiationState` the timer job ends in after an enqueue, instead
    /// of 2 (Created): a 4096–4102 or 8192–8198 failure, or 1 to stay Enqueued forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_outcome: Option<i64>,
    /// The name the user signed in with when their OneDrive was created: its URL keeps that
    /// name after a rename (`…/personal/old_contoso_com`), so only the user's own drive lookup
    /// or profile links the site to them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

/// Drive-lookup answers seen in the field for users without a OneDrive, besides the documented
/// 404 `ResourceNotFound`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum LookupQuirk {
    /// 404 `ResourceNotFound` "User's mysite not found." (the documented answer).
    #[default]
    None,
    /// 400 `BadRequest` "Unable to retrieve user's mysite URL." (reported for licensed users whose
    /// OneDrive does not exist yet).
    MysiteBadRequest,
    /// 500 `UnknownError` with the same message (reported with several statuses).
    MysiteUnknownError,
    /// 500 `generalException` on every drive lookup, site or not (a broken user, for tests of
    /// `LookupFailing`: nothing documents what it means).
    Broken,
}

fn yes() -> bool {
    true
}

impl UserSpec {
    pub fn new(upn: impl Into<String>) -> UserSpec {
        UserSpec {
            upn: upn.into(),
            licensed: true,
            sign_in_allowed: true,
            has_site: false,
            preferred_data_location: None,
            lookup_quirk: LookupQuirk::None,
            profile_outcome: None,
            renamed_from: None,
        }
    }
}

/// `SPS-PersonalSiteInstantiationState` and what the profile shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SiteState {
    Uninitialized,
    /// Waiting for the timer job; `ready_at: None` never finishes (a stuck user).
    Enqueued {
        since: Timestamp,
        ready_at: Option<Timestamp>,
    },
    Created {
        url: String,
    },
    /// A failure code (4098 = UserNotLicensed).
    Failed(i64),
}

impl SiteState {
    pub fn code(&self) -> i64 {
        match self {
            SiteState::Uninitialized => 0,
            SiteState::Enqueued { .. } => 1,
            SiteState::Created { .. } => 2,
            SiteState::Failed(code) => *code,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SimUser {
    pub spec: UserSpec,
    pub id: String,
    pub site: SiteState,
    /// When the timer job created the site (`None`: before the simulator started).
    pub created_at: Option<Timestamp>,
    /// The site's collection administrators besides its owner (lower-case principal names).
    pub admins: std::collections::BTreeSet<String>,
    /// The site's storage quota in megabytes (SharePoint's default: 1 TB).
    pub quota_mb: i64,
}

/// A new OneDrive's quota: 1 TB, the default of most plans.
pub const DEFAULT_QUOTA_MB: i64 = 1_048_576;

impl UserSpec {
    /// The name the user's personal-site URL is made from.
    pub fn site_name(&self) -> &str {
        self.renamed_from.as_deref().unwrap_or(&self.upn)
    }
}

/// The directory and its sites. Time only moves through `now` arguments.
pub struct Tenant {
    users: BTreeMap<String, SimUser>,
    /// A personal site's name (`alice_contoso_com`) → its owner's key.
    by_site_name: std::collections::HashMap<String, String>,
    /// Base URL of personal sites, e.g. `http://127.0.0.1:18080/my`.
    my_base: String,
    provision_delay: SignedDuration,
    jitter: f64,
}

/// FNV-1a: a hash that is the same on every machine and Rust version (a seed must be).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3))
}

pub fn key(upn: &str) -> String {
    upn.trim().to_lowercase()
}

impl Tenant {
    pub fn new(
        users: Vec<UserSpec>,
        my_base: String,
        provision_delay: SignedDuration,
        jitter: f64,
    ) -> Tenant {
        let mut map = BTreeMap::new();
        let mut by_site_name = std::collections::HashMap::new();
        for (i, spec) in users.into_iter().enumerate() {
            by_site_name.insert(personal_space_name(spec.site_name()), key(&spec.upn));
            let site = if spec.has_site {
                SiteState::Created { url: personal_url(&my_base, spec.site_name()) }
            } else {
                SiteState::Uninitialized
            };
            let id = format!("{:08x}-0000-4000-8000-{:012x}", i + 1, i + 1);
            let admins = Default::default();
            map.insert(
                key(&spec.upn),
                SimUser { spec, id, site, created_at: None, admins, quota_mb: DEFAULT_QUOTA_MB },
            );
        }
        Tenant { users: map, by_site_name, my_base, provision_delay, jitter }
    }

    /// Advances a user's timer job to `now` and returns it.
    pub fn user(&mut self, upn: &str, now: Timestamp) -> Option<&SimUser> {
        let my_base = self.my_base.clone();
        let u = self.users.get_mut(&key(upn))?;
        if let SiteState::Enqueued { ready_at: Some(at), .. } = u.site
            && at <= now
        {
            // The timer job ends in the user's outcome: a failure state, or the site.
            u.site = match u.spec.profile_outcome {
                Some(code) if code >= 4096 => SiteState::Failed(code),
                _ => SiteState::Created { url: personal_url(&my_base, u.spec.site_name()) },
            };
            u.created_at = Some(at);
        }
        Some(u)
    }

    /// Asks for personal sites. Unknown users and users with a site are ignored silently, as
    /// the service does; nothing per user is reported back. Each user's delay is their own
    /// (drawn from `seed` and their name), so it does not depend on what else was asked before.
    pub fn enqueue(&mut self, emails: &[String], now: Timestamp, seed: u64) -> usize {
        let mut changed = 0;
        for email in emails {
            let delay = self.jittered_delay(seed, &key(email));
            let Some(u) = self.user(email, now).cloned() else { continue };
            let next = match &u.site {
                SiteState::Created { .. } | SiteState::Enqueued { .. } => continue,
                _ if !u.spec.licensed => SiteState::Failed(4098),
                // The service accepts the request but never creates a site for a blocked user:
                // the profile stays Enqueued (1) forever, so only `accountEnabled` reveals them.
                _ if !u.spec.sign_in_allowed || u.spec.profile_outcome == Some(1) => {
                    SiteState::Enqueued { since: now, ready_at: None }
                }
                _ => SiteState::Enqueued { since: now, ready_at: Some(now + delay) },
            };
            self.users.get_mut(&key(email)).expect("present").site = next;
            changed += 1;
        }
        changed
    }

    fn jittered_delay(&self, seed: u64, user: &str) -> SignedDuration {
        let base = self.provision_delay.as_secs_f64();
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ fnv1a(user.as_bytes()));
        let factor = if self.jitter > 0.0 { 1.0 + rng.random_range(-self.jitter..=self.jitter) } else { 1.0 };
        SignedDuration::from_secs_f64((base * factor).max(0.0))
    }

    /// Whether the user's site is being created (enqueued, eligible, not there yet).
    pub fn being_created(&mut self, upn: &str, now: Timestamp) -> bool {
        self.user(upn, now).is_some_and(|u| matches!(u.site, SiteState::Enqueued { ready_at: Some(_), .. }))
    }

    /// Every personal site created at least `lag` ago, in a stable order: (display name, URL).
    pub fn sites(&mut self, now: Timestamp, lag: SignedDuration) -> Vec<(String, String)> {
        let keys: Vec<String> = self.users.keys().cloned().collect();
        keys.iter()
            .filter_map(|k| {
                let u = self.user(k, now)?;
                let listed = u.created_at.is_none_or(|t| t + lag <= now);
                match &u.site {
                    SiteState::Created { url } if listed => Some((display_name(&u.spec.upn), url.clone())),
                    _ => None,
                }
            })
            .collect()
    }

    /// Users from the `skip`-th on, at most `n` (the directory listing's pages).
    pub fn page(&self, skip: usize, n: usize) -> Vec<SimUser> {
        self.users.values().skip(skip).take(n).cloned().collect()
    }

    /// Test hook: remove a site (drift), or change a user.
    pub fn set_site(&mut self, upn: &str, state: SiteState) -> bool {
        match self.users.get_mut(&key(upn)) {
            Some(u) => {
                u.site = state;
                true
            }
            None => false,
        }
    }

    /// The owner of the personal site at `url`, once the site exists (advanced to `now`) and
    /// has for `lag`.
    pub fn site_owner(&mut self, url: &str, now: Timestamp, lag: SignedDuration) -> Option<&mut SimUser> {
        let name = url.trim_end_matches('/').rsplit('/').next()?.to_ascii_lowercase();
        let key = self.by_site_name.get(&name)?.clone();
        let u = self.user(&key, now)?;
        let created =
            matches!(u.site, SiteState::Created { .. }) && u.created_at.is_none_or(|t| t + lag <= now);
        created.then(|| self.users.get_mut(&key).expect("present"))
    }

    /// The user whose site has this id (a site's id is its owner's, in the simulator).
    pub fn by_id(&self, id: &str) -> Option<&SimUser> {
        self.users.values().find(|u| u.id == id && matches!(u.site, SiteState::Created { .. }))
    }

    /// Whether the directory has this user (a site administrator must be one).
    pub fn has_user(&self, upn: &str) -> bool {
        self.users.contains_key(&key(upn))
    }

    pub fn user_ref(&self, upn: &str) -> Option<&SimUser> {
        self.users.get(&key(upn))
    }

    /// Test hook: the user's site, for reading or changing its administrators and quota.
    pub fn user_mut(&mut self, upn: &str) -> Option<&mut SimUser> {
        self.users.get_mut(&key(upn))
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    pub fn my_base(&self) -> &str {
        &self.my_base
    }
}

/// `alice.smith@contoso.com` → `alice.smith` (what a site's `name` shows: not its owner's UPN).
pub fn display_name(upn: &str) -> String {
    upn.split('@').next().unwrap_or_default().to_string()
}

/// `https://contoso-my.sharepoint.com/personal/alice_contoso_com/` in the simulator's shape.
pub fn personal_url(my_base: &str, upn: &str) -> String {
    format!("{my_base}/personal/{}/", personal_space_name(upn))
}

/// `alice@contoso.com` → `alice_contoso_com`, the way SharePoint names personal sites.
pub fn personal_space_name(upn: &str) -> String {
    key(upn).chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant() -> Tenant {
        let mut unlicensed = UserSpec::new("u@contoso.com");
        unlicensed.licensed = false;
        let mut blocked = UserSpec::new("b@contoso.com");
        blocked.sign_in_allowed = false;
        let mut has = UserSpec::new("h@contoso.com");
        has.has_site = true;
        Tenant::new(
            vec![UserSpec::new("a@contoso.com"), unlicensed, blocked, has],
            "http://sim/my".into(),
            SignedDuration::from_secs(60),
            0.0,
        )
    }

    #[test]
    fn sites_appear_after_the_delay_and_failures_show_as_states() {
        let mut t = tenant();
        let t0 = Timestamp::from_second(1_000).unwrap();
        let n = t.enqueue(
            &[
                "A@contoso.com".into(),
                "u@contoso.com".into(),
                "b@contoso.com".into(),
                "h@contoso.com".into(),
                "x@y.z".into(),
            ],
            t0,
            1,
        );
        assert_eq!(n, 3, "the user with a site and the unknown one change nothing");
        assert_eq!(t.user("a@contoso.com", t0).unwrap().site.code(), 1);
        assert_eq!(t.user("u@contoso.com", t0).unwrap().site.code(), 4098);
        let later = t0 + SignedDuration::from_secs(60);
        assert_eq!(
            t.user("a@contoso.com", later).unwrap().site,
            SiteState::Created { url: "http://sim/my/personal/a_contoso_com/".into() }
        );
        let much_later = t0 + SignedDuration::from_hours(100);
        assert_eq!(t.user("b@contoso.com", much_later).unwrap().site.code(), 1, "blocked users stay stuck");
        assert_eq!(t.sites(much_later, SignedDuration::ZERO).len(), 2);
        // A listing that lags shows a new site only once the lag has passed.
        assert_eq!(
            t.sites(later, SignedDuration::from_secs(1)).len(),
            1,
            "only the site that predates the simulator"
        );
        assert_eq!(t.sites(later + SignedDuration::from_secs(1), SignedDuration::from_secs(1)).len(), 2);
    }

    #[test]
    fn users_files_can_set_every_field_quirk_and_outcome() {
        let u: UserSpec = serde_yaml::from_str(
            "{upn: q@contoso.com, signInAllowed: false, lookupQuirk: MysiteUnknownError, profileOutcome: 8195}",
        )
        .unwrap();
        assert!(u.licensed && !u.sign_in_allowed && !u.has_site);
        assert_eq!((u.lookup_quirk, u.profile_outcome), (LookupQuirk::MysiteUnknownError, Some(8195)));
        let plain: UserSpec = serde_yaml::from_str("{upn: p@contoso.com}").unwrap();
        assert_eq!(plain, UserSpec::new("p@contoso.com"));
    }
}
