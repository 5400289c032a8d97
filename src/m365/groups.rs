//! An Entra ID group's members who are users, for a `OneDriveSiteSet`'s group source.
//!
//! `GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=id,userPrincipalName`: the
//! members of the group and of every group nested in it, cast to users (devices, contacts and the
//! nested groups themselves are left out by Graph). A cast on a member collection is an advanced
//! query: every page carries `ConsistencyLevel: eventual` and the first asks `$count=true`; it is
//! served from an index that may lag behind membership changes by minutes. A group named by mail
//! is first resolved to its id (`GET /groups?$filter=mail eq '…'`).
//!
//! A member listed without a user principal name (a hidden membership needing
//! `Member.Read.Hidden`, a permission that does not show it) fails the whole listing: a list
//! with someone missing would read as that person leaving.

use serde_json::Value;

use super::graph::with_token;
use super::http::MAX_BODY;
use super::listing::USER_PAGE_UNITS;
use super::paging::{PageError, Query, each_page_of};
use super::{M365Error, TenantClient};
use crate::api::rules::GUID_PATTERN;
use crate::api::{GroupRef, SetReason};

/// Members per page (Graph's most for directory objects).
const PAGE: usize = 999;
/// Pages one listing reads at most (about 200,000 members): a `nextLink` loop ends here.
const MAX_PAGES: u64 = 200;
/// The permission the member listing needs (the least of those that grant it).
pub const GROUP_PERMISSION: &str = "GroupMember.Read.All";

/// Why a group's members could not be listed. `reason()` is the set's condition reason.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "Microsoft Graph knows no {0}: an unknown id or mail address, or a deleted group (a deleted security group is gone for good; telling a deleted Microsoft 365 group apart needs Group.Read.All)"
    )]
    NotFound(String),
    #[error(
        "{0} was deleted (a deleted Microsoft 365 group can be restored within 30 days: the set resumes then)"
    )]
    Deleted(String),
    #[error(
        "Microsoft Graph refused to list the members of {group} (403): grant the app {GROUP_PERMISSION} ({kind} permission) with admin consent"
    )]
    PermissionMissing { group: String, kind: &'static str },
    #[error(
        "{count} members of {group} were listed without a user principal name (hidden membership needs Member.Read.Hidden, or the token does not show it): nothing is removed while members cannot be read"
    )]
    Unreadable { group: String, count: usize },
    #[error("reading the members of {group}: {error}")]
    Tenant { group: String, error: M365Error },
    #[error("reading the members of {group}: {message}")]
    Broken { group: String, message: String },
    #[error(
        "{group} has more members than {pages} pages of Microsoft Graph hold (about {} users): split it over several groups and sets",
        pages * PAGE as u64
    )]
    TooLarge { group: String, pages: u64 },
}

impl GroupError {
    pub fn reason(&self) -> SetReason {
        match self {
            GroupError::NotFound(_) => SetReason::GroupNotFound,
            GroupError::Deleted(_) => SetReason::GroupDeleted,
            GroupError::PermissionMissing { .. } => SetReason::GroupPermissionMissing,
            GroupError::Unreadable { .. } => SetReason::MembersUnreadable,
            GroupError::Tenant { error: M365Error::Throttled { .. }, .. } => SetReason::Throttled,
            GroupError::Tenant { .. } | GroupError::Broken { .. } | GroupError::TooLarge { .. } => {
                SetReason::SourceUnavailable
            }
        }
    }

    /// Whether a person must act (the set is `Stalled`) rather than wait.
    pub fn needs_person(&self) -> bool {
        match self {
            GroupError::Tenant { error, .. } => error.needs_person(),
            GroupError::Broken { .. } => false,
            _ => true,
        }
    }

    /// When Microsoft asked to come back (throttled).
    pub fn retry_at(&self) -> Option<jiff::Timestamp> {
        match self {
            GroupError::Tenant { error: M365Error::Throttled { until, .. }, .. } => Some(*until),
            _ => None,
        }
    }
}

impl TenantClient {
    /// The user principal names of `group`'s transitive members who are users, in Graph's order.
    pub async fn group_members(&self, group: &GroupRef) -> Result<Vec<String>, GroupError> {
        let named = group.describe();
        let id = match (&group.id, &group.mail) {
            (Some(id), _) => id.clone(),
            (None, Some(mail)) => resolve_mail(self, mail, &named).await?,
            (None, None) => return Err(GroupError::NotFound(named)),
        };
        static GUID: std::sync::LazyLock<regex::Regex> =
            std::sync::LazyLock::new(|| regex::Regex::new(GUID_PATTERN).expect("the GUID pattern compiles"));
        if !GUID.is_match(&id) {
            return Err(broken(&named, format!("the group id {id:?} is not an object id")));
        }
        let url = format!(
            "{}/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select=id,userPrincipalName&$top={PAGE}&$count=true",
            self.config.graph_url
        );
        let mut users = Vec::new();
        let mut hidden = 0;
        let listed = each_page_of(self, Query::Advanced, url, MAX_PAGES, USER_PAGE_UNITS, |member| {
            match member["userPrincipalName"].as_str().filter(|u| !u.trim().is_empty()) {
                Some(upn) => users.push(upn.chars().take(256).collect()),
                None => hidden += 1,
            }
        })
        .await;
        match listed {
            Ok(_) if hidden > 0 => Err(GroupError::Unreadable { group: named, count: hidden }),
            // The pages must hold as many members as the first announced: fewer would read as
            // people leaving.
            Ok(pages) if pages.count.is_some_and(|c| c != users.len() as u64) => Err(broken(
                &named,
                format!(
                    "Microsoft Graph announced {} members and listed {}",
                    pages.count.unwrap_or_default(),
                    users.len()
                ),
            )),
            Ok(_) => Ok(users),
            Err(PageError::Broken(message)) if message.starts_with("more than") => {
                Err(GroupError::TooLarge { group: named, pages: MAX_PAGES })
            }
            Err(PageError::Status { status: 404, .. }) => Err(gone(self, &id, named).await),
            Err(PageError::Status { status: 403, .. }) => Err(permission_missing(self, named)),
            Err(PageError::Status { status, code }) => {
                Err(broken(&named, format!("Microsoft Graph answered {status} ({code})")))
            }
            Err(PageError::Tenant(error)) => Err(GroupError::Tenant { group: named, error }),
            Err(PageError::Broken(message)) => Err(broken(&named, message)),
        }
    }
}

fn broken(group: &str, message: String) -> GroupError {
    GroupError::Broken { group: group.to_string(), message }
}

fn permission_missing(client: &TenantClient, group: String) -> GroupError {
    let kind = match client.credentials() {
        super::Credentials::Delegated { .. } => "delegated",
        _ => "application",
    };
    GroupError::PermissionMissing { group, kind }
}

/// A group Graph does not find: deleted (it is among the deleted items), never there, or not
/// known for now (the deleted items could not be asked).
async fn gone(client: &TenantClient, id: &str, named: String) -> GroupError {
    let url = format!("{}/v1.0/directory/deletedItems/{id}?$select=id", client.config.graph_url);
    let answer =
        with_token(client, MAX_BODY, |token| client.http.client().get(&url).bearer_auth(token)).await;
    match answer {
        Ok(a) if a.status == 200 => GroupError::Deleted(named),
        // Not among the deleted items, or not allowed to look (Group.Read.All is not granted).
        Ok(a) if matches!(a.status, 403 | 404) => GroupError::NotFound(named),
        Ok(a) => {
            broken(&named, format!("Microsoft Graph answered {} when asked for deleted items", a.status))
        }
        Err(error) => GroupError::Tenant { group: named, error },
    }
}

/// The id of the one group whose mail is `mail`.
async fn resolve_mail(client: &TenantClient, mail: &str, named: &str) -> Result<String, GroupError> {
    let filter = format!("mail eq {}", super::escape::odata_literal(mail));
    let filter: String = url::form_urlencoded::byte_serialize(filter.as_bytes()).collect();
    // `byte_serialize` writes a space as `+` (and a `+` as `%2B`): Graph wants `%20`.
    let url =
        format!("{}/v1.0/groups?$filter={}&$select=id", client.config.graph_url, filter.replace('+', "%20"));
    let answer = with_token(client, MAX_BODY, |token| client.http.client().get(&url).bearer_auth(token))
        .await
        .map_err(|error| GroupError::Tenant { group: named.to_string(), error })?;
    match answer.status {
        200 => {}
        403 => return Err(permission_missing(client, named.to_string())),
        status => {
            return Err(broken(named, format!("Microsoft Graph answered {status} to the group lookup")));
        }
    }
    let body: Value =
        answer.json().map_err(|e| broken(named, format!("the group lookup is not JSON: {e}")))?;
    let ids: Vec<&str> =
        body["value"].as_array().into_iter().flatten().filter_map(|g| g["id"].as_str()).collect();
    match ids.as_slice() {
        [] => Err(GroupError::NotFound(named.to_string())),
        [id] => Ok(id.to_string()),
        many => {
            Err(broken(named, format!("{} groups have this mail address: name the group by id", many.len())))
        }
    }
}
