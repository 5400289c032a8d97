//! What the tenant said about a user, in the planner's words: the tenant client turns Microsoft's
//! answers into these, and `check` and the controller read the same values, so they never
//! disagree about a user.

use std::sync::Arc;

use jiff::Timestamp;

use crate::api::SiteReason;

/// What the tenant said about one user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Observation {
    /// The personal site exists.
    HasSite { url: String },
    /// The user exists, may sign in, holds a SharePoint licence and has no site: may be enqueued.
    NoSite,
    /// The directory has no such user.
    UserNotFound,
    /// The user has no enabled SharePoint plan.
    UserNotLicensed,
    /// The account may not sign in (`accountEnabled: false`): SharePoint accepts an enqueue for it
    /// and never creates the site.
    SignInBlocked,
    /// The user profile's `SPS-PersonalSiteInstantiationState`, read when no drive was found.
    Profile(ProfileState),
    /// An answer nobody documents the meaning of (status and error code), e.g. a 500.
    LookupFailed { status: u16, code: String },
    /// No answer (throttled, timed out): nothing is concluded.
    Unknown,
}

/// A user profile's instantiation state: its code, its name and what it means for the planner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProfileState {
    pub code: i64,
    pub name: &'static str,
    pub meaning: ProfileMeaning,
}

/// What a profile state means for the user's site.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProfileMeaning {
    /// No site and none on its way (never enqueued, or the site was deleted).
    NoSite,
    /// SharePoint is working on it (enqueued, created without a personal space yet, or
    /// "already exists", which the drive lookup will confirm).
    Working,
    /// SharePoint may not create the site because the user holds no licence.
    NotLicensed,
    /// SharePoint may not create personal sites for this user (a tenant setting).
    NotPermitted,
    /// SharePoint tried and failed.
    Failed,
    /// A code nobody documents: treated like "no site".
    Unrecognised,
}

impl Observation {
    /// Observations that mean "exists, has no site, may be enqueued".
    pub fn is_no_site(&self) -> bool {
        match self {
            Observation::NoSite => true,
            Observation::Profile(p) => {
                matches!(p.meaning, ProfileMeaning::NoSite | ProfileMeaning::Unrecognised)
            }
            _ => false,
        }
    }

    /// The lookup gave no usable answer (no answer at all, or one nobody documents).
    pub fn is_failed_lookup(&self) -> bool {
        matches!(self, Observation::Unknown | Observation::LookupFailed { .. })
    }

    /// The `OneDriveSite` reason of a verdict that no batch can change: the directory or the
    /// user profile says SharePoint will never create this user's site as things stand. The one
    /// classification `check` prints and the planner writes.
    pub fn refusal(&self) -> Option<SiteReason> {
        match self {
            Observation::UserNotFound => Some(SiteReason::UserNotFound),
            Observation::UserNotLicensed => Some(SiteReason::UserNotLicensed),
            Observation::SignInBlocked => Some(SiteReason::SignInBlocked),
            Observation::Profile(p) => match p.meaning {
                ProfileMeaning::NotLicensed => Some(SiteReason::UserNotLicensed),
                ProfileMeaning::NotPermitted => Some(SiteReason::SiteCreationNotPermitted),
                ProfileMeaning::Failed => Some(SiteReason::ProvisioningFailed),
                _ => None,
            },
            _ => None,
        }
    }
}

/// A user's preferred data location (Multi-Geo) as their directory entry gave it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum DataLocation {
    /// The directory entry was not read (the drive lookup found a site, or it failed).
    #[default]
    Unread,
    /// Read, and none is set: the central geo's.
    Unset,
    /// `preferredDataLocation`, e.g. EUR.
    Preferred(Box<str>),
}

impl DataLocation {
    /// From Graph's `preferredDataLocation` (absent, null or empty: none set).
    pub fn from_directory(value: Option<&str>) -> DataLocation {
        match value.map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => DataLocation::Preferred(v.to_ascii_uppercase().into()),
            None => DataLocation::Unset,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            DataLocation::Preferred(c) => Some(c),
            _ => None,
        }
    }
}

/// An observation, when it was made, and how many lookups in a row gave it. The controller keeps
/// the newest per user in memory (soft state: after a restart everything uncertain is simply
/// observed again).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub at: Timestamp,
    pub observation: Observation,
    /// Lookups in a row that gave this same answer (1 for a new answer).
    pub times: u32,
    /// The newest preferred data location the directory gave (kept while later lookups do not
    /// read the directory).
    pub location: DataLocation,
}

impl Observed {
    pub fn new(at: Timestamp, observation: Observation) -> Observed {
        Observed { at, observation, times: 1, location: DataLocation::Unread }
    }

    /// `observation`, made at `at`, following `previous` (repeats of one answer are counted).
    pub fn after(previous: Option<&Observed>, at: Timestamp, observation: Observation) -> Observed {
        Observed::located(previous, at, observation, DataLocation::Unread)
    }

    /// [`Observed::after`], with the preferred data location the same lookup read (if it did).
    pub fn located(
        previous: Option<&Observed>,
        at: Timestamp,
        observation: Observation,
        location: DataLocation,
    ) -> Observed {
        let times = match previous {
            Some(p) if p.observation == observation => p.times.saturating_add(1),
            _ => 1,
        };
        let location = match location {
            DataLocation::Unread => previous.map(|p| p.location.clone()).unwrap_or_default(),
            read => read,
        };
        Observed { at, observation, times, location }
    }
}

/// One user to look up, and whether their user profile is wanted too (enqueued users without a
/// site: only the profile says whether SharePoint refused or failed them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub user: String,
    pub profile: bool,
    /// A tenant-wide listing that does not show this user's site is not enough: look the user up
    /// on their own. Set where "no site" would end something — the batch's gate user, a Ready
    /// user's drift check, the last look before a timeout — because a listing may lag, and a
    /// renamed user's site keeps the URL of their old name.
    pub confirm: bool,
}

impl Lookup {
    /// A drive (and, when it finds none, directory) lookup.
    pub fn drive(user: &str) -> Lookup {
        Lookup { user: user.trim().to_string(), profile: false, confirm: false }
    }

    /// A lookup whose "no site" is confirmed user by user (see [`Lookup::confirm`]), with the
    /// user profile read when no site is found (`check`, `doctor`: few users, exact answers).
    pub fn exact(user: &str) -> Lookup {
        Lookup { user: user.trim().to_string(), profile: true, confirm: true }
    }
}

/// Compares the user only (tests list whom a plan looks up).
impl PartialEq<&str> for Lookup {
    fn eq(&self, other: &&str) -> bool {
        self.user == *other
    }
}

/// A user as the operator compares users: trimmed and lowercased (sign-in names are
/// case-insensitive), made once where a user enters the operator. The original spelling is kept
/// apart, for what is sent to Microsoft and shown to people.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserKey(Arc<str>);

impl UserKey {
    pub fn new(user: &str) -> UserKey {
        UserKey(user.trim().to_lowercase().into())
    }

    /// A key from a user already trimmed and lowercased.
    pub(super) fn normalized(key: &str) -> UserKey {
        UserKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Maps keyed by `UserKey` are looked up with the `&str` of a key (no copy).
impl std::borrow::Borrow<str> for UserKey {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for UserKey {
    fn from(user: &str) -> UserKey {
        UserKey::new(user)
    }
}

impl From<String> for UserKey {
    fn from(user: String) -> UserKey {
        UserKey::new(&user)
    }
}

impl PartialEq<&str> for UserKey {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl std::fmt::Display for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The hasher of the maps keyed by user (the newest observations, the grouping of sites by
/// user). Seeded at random per process like the standard one, so a user name crafted for
/// collisions cannot be prepared in advance.
pub type UserHasher = foldhash::fast::RandomState;

/// The newest observation of each user, as the controller keeps it between cycles (in the order
/// they were first seen: a map whose iteration is the same run after run).
pub type Observations = indexmap::IndexMap<UserKey, Observed, UserHasher>;

/// Users are compared case-insensitively: sign-in names are.
pub fn user_key(user: &str) -> UserKey {
    UserKey::new(user)
}
