//! Realistic user populations: the mix of users a real tenant has, for tests, the demo, the
//! benchmarks and `simulate --generate`.

use super::{LookupQuirk, UserSpec};

/// `n` generated users `user0001@domain` …, a population as the field shows it (see
/// [`Population`] for the shares).
pub fn generate_users(n: usize, domain: &str) -> Vec<UserSpec> {
    (1..=n).map(|i| realistic_user(i, format!("user{i:04}@{domain}"))).collect()
}

/// The `i`-th user (from 1) of a realistic population: every 10th already has a OneDrive (every
/// 170th under the name they had before a rename, which its URL keeps), every
/// 50th (from the 25th) is unlicensed, every 83rd may not sign in; of the rest, every 20th answers the drive
/// lookup with the 400 "Unable to retrieve user's mysite URL." quirk and every 67th with its 500
/// `UnknownError` variant; every 149th ends in profile state 4099 (SelfServiceSiteCreationDisabled)
/// and every 151st in 8195 (PartialCreate).
pub fn realistic_user(i: usize, upn: String) -> UserSpec {
    let mut u = UserSpec::new(upn.clone());
    u.has_site = i.is_multiple_of(10);
    if i.is_multiple_of(170) {
        let domain = upn.split_once('@').map_or("", |(_, d)| d);
        u.renamed_from = Some(format!("former{i:04}@{domain}"));
    }
    u.licensed = i % 50 != 25;
    u.sign_in_allowed = !i.is_multiple_of(83);
    u.lookup_quirk = match i {
        _ if i % 20 == 7 => LookupQuirk::MysiteBadRequest,
        _ if i % 67 == 5 => LookupQuirk::MysiteUnknownError,
        _ => LookupQuirk::None,
    };
    let sendable = !u.has_site && u.licensed && u.sign_in_allowed;
    u.profile_outcome = match i {
        _ if !sendable => None,
        _ if i % 149 == 11 => Some(4099),
        _ if i % 151 == 13 => Some(8195),
        _ => None,
    };
    u
}

/// The `Ready` reason the operator must end a user of a population with (a renamed user's site is
/// found through their profile once SharePoint ignored their enqueue: `Provisioned`).
pub fn expected_reason(u: &UserSpec) -> &'static str {
    match u {
        u if u.has_site => "Provisioned",
        u if !u.licensed => "UserNotLicensed",
        u if !u.sign_in_allowed => "SignInBlocked",
        UserSpec { profile_outcome: Some(c), .. } if *c >= 8192 => "ProvisioningFailed",
        UserSpec { profile_outcome: Some(c), .. } if *c >= 4096 => "SiteCreationNotPermitted",
        _ => "Provisioned",
    }
}

/// Spreads `users` evenly over `geos` (their preferred data locations, in turn); nothing with
/// fewer than two geos.
pub fn spread_over_geos(users: &mut [UserSpec], geos: &[String]) {
    if geos.len() < 2 {
        return;
    }
    for (i, u) in users.iter_mut().enumerate() {
        u.preferred_data_location = Some(geos[i % geos.len()].clone());
    }
}

/// The make-up of a user population (printed with benchmark figures).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Population {
    pub users: usize,
    pub has_site: usize,
    /// Of those with a OneDrive, renamed since: the site's URL carries their former name.
    pub renamed: usize,
    pub unlicensed: usize,
    pub sign_in_blocked: usize,
    /// Licensed, allowed to sign in, no site, whose drive lookup answers a mysite quirk.
    pub mysite_quirk: usize,
    /// Would be enqueued, and the profile then shows a 4xxx/8xxx state.
    pub profile_error: usize,
    /// Licensed, allowed to sign in, no site, no profile error: N, the users who can get a site.
    pub can_get_site: usize,
}

impl Population {
    pub fn of(users: &[UserSpec]) -> Population {
        let mut p = Population { users: users.len(), ..Population::default() };
        for u in users {
            if u.has_site {
                p.has_site += 1;
                p.renamed += usize::from(u.renamed_from.is_some());
            } else if !u.licensed {
                p.unlicensed += 1;
            } else if !u.sign_in_allowed {
                p.sign_in_blocked += 1;
            } else if u.profile_outcome.is_some_and(|c| c >= 4096) {
                p.profile_error += 1;
            } else {
                p.can_get_site += 1;
            }
            let no_site_licensed = !u.has_site && u.licensed && u.sign_in_allowed;
            if no_site_licensed
                && matches!(u.lookup_quirk, LookupQuirk::MysiteBadRequest | LookupQuirk::MysiteUnknownError)
            {
                p.mysite_quirk += 1;
            }
        }
        p
    }
}

impl std::fmt::Display for Population {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |n: usize| 100.0 * n as f64 / self.users.max(1) as f64;
        write!(
            f,
            "{} users: {} ({:.1}%) already with a OneDrive ({} of them renamed since), {} ({:.1}%) unlicensed, {} ({:.1}%) sign-in blocked, {} ({:.1}%) licensed without a site answering the \"mysite URL\" quirk, {} ({:.1}%) ending in a profile error, N = {} who can get a site",
            self.users,
            self.has_site,
            share(self.has_site),
            self.renamed,
            self.unlicensed,
            share(self.unlicensed),
            self.sign_in_blocked,
            share(self.sign_in_blocked),
            self.mysite_quirk,
            share(self.mysite_quirk),
            self.profile_error,
            share(self.profile_error),
            self.can_get_site
        )
    }
}
