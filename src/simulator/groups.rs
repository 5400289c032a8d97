//! Entra ID groups through Microsoft Graph v1.0: a group found by its mail address
//! (`GET /groups?$filter=mail eq '…'`), the users it holds directly or through nested groups
//! (`GET /groups/{id}/transitiveMembers/microsoft.graph.user`), and a deleted group
//! (`GET /directory/deletedItems/{id}`), for OneDrives a group decides.
//!
//! What Graph documents: an OData cast on a member collection (`/microsoft.graph.user`) is an
//! advanced query, which needs the request header `ConsistencyLevel: eventual` and `$count=true`
//! (400 `Request_UnsupportedQuery` otherwise); advanced queries are answered from an index that
//! may lag behind membership changes; a long listing comes in pages, the next one at
//! `@odata.nextLink`, until a page has none. A deleted group stays among the directory's deleted
//! items (restorable) for 30 days.
//!
//! What the simulator chooses: no index lag (a change shows in the next listing); `$skiptoken`
//! is an offset (a change between two pages can shift a member past the reader, as a listing of
//! a changing group may); members in the order a depth-first walk of the groups, each in its
//! listed order, reaches them; a member named by a principal name the directory does not have is
//! listed all the same (the group is the source of truth here), with an id made from the name;
//! deleted groups stay deleted items for as long as the simulator runs.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use jiff::Timestamp;
use serde_json::{Value, json};

use super::graph::{Answer, call, error, param};
use super::model::{fnv1a, key};
use super::{Sim, SimHandle};

/// A member of a group.
#[derive(Clone, Debug, PartialEq)]
pub enum GroupMember {
    /// A user, by user principal name.
    User(String),
    /// A nested group, by object id.
    Group(String),
}

/// An Entra ID group as configured.
#[derive(Clone, Debug)]
pub struct GroupSpec {
    /// The object id (matched case-insensitively).
    pub id: String,
    /// The group's mail address (a Microsoft 365 or mail-enabled security group has one).
    pub mail: Option<String>,
    pub display_name: String,
    /// Direct members, in the order they are listed.
    pub members: Vec<GroupMember>,
    /// Members are listed without their userPrincipalName (hidden membership / a caller without
    /// the permission to read it).
    pub hide_upns: bool,
}

impl GroupSpec {
    /// A group without mail whose members' principal names show.
    pub fn new(
        id: impl Into<String>,
        display_name: impl Into<String>,
        members: Vec<GroupMember>,
    ) -> GroupSpec {
        GroupSpec { id: id.into(), mail: None, display_name: display_name.into(), members, hide_upns: false }
    }
}

/// The tenant's groups: live ones and deleted ones (with when they were deleted), by id
/// (lower-case).
#[derive(Default)]
pub(super) struct Groups {
    live: BTreeMap<String, GroupSpec>,
    deleted: BTreeMap<String, (GroupSpec, Timestamp)>,
}

impl Groups {
    pub(super) fn new(groups: Vec<GroupSpec>) -> Groups {
        let mut out = Groups::default();
        for group in groups {
            out.set(group);
        }
        out
    }

    /// Creates or replaces a group; a deleted one with its id is restored as this.
    fn set(&mut self, group: GroupSpec) {
        let k = key(&group.id);
        self.deleted.remove(&k);
        self.live.insert(k, group);
    }

    /// Moves a live group to the deleted items; `false` when no live group has this id.
    fn delete(&mut self, id: &str, at: Timestamp) -> bool {
        let Some(group) = self.live.remove(&key(id)) else { return false };
        self.deleted.insert(key(id), (group, at));
        true
    }

    fn get(&self, id: &str) -> Option<&GroupSpec> {
        self.live.get(&key(id))
    }

    fn deleted(&self, id: &str) -> Option<&(GroupSpec, Timestamp)> {
        self.deleted.get(&key(id))
    }

    /// Live groups whose mail is `mail` (case-insensitively, as Graph compares addresses).
    fn by_mail(&self, mail: &str) -> Vec<&GroupSpec> {
        let mail = mail.to_lowercase();
        self.live.values().filter(|g| g.mail.as_deref().is_some_and(|m| m.to_lowercase() == mail)).collect()
    }

    /// A live group's users, transitively, and whether it hides their principal names.
    fn members_of(&self, id: &str) -> Option<(Vec<String>, bool)> {
        let root = self.get(id)?;
        Some((transitive_users(root, |g| self.get(g)), root.hide_upns))
    }
}

/// The users a group holds, directly or through nested groups, each once (by principal name,
/// case-insensitively), in the order a depth-first walk of the members in their listed order
/// reaches them. Each nested group is walked once, so a cycle ends; one `find` does not know
/// (deleted, or never created) adds nobody.
fn transitive_users<'a>(root: &'a GroupSpec, find: impl Fn(&str) -> Option<&'a GroupSpec>) -> Vec<String> {
    let mut groups_seen = HashSet::from([key(&root.id)]);
    let mut users_seen = HashSet::new();
    let mut users = Vec::new();
    let mut stack: Vec<std::slice::Iter<'a, GroupMember>> = vec![root.members.iter()];
    while let Some(members) = stack.last_mut() {
        let Some(member) = members.next() else {
            stack.pop();
            continue;
        };
        match member {
            GroupMember::User(upn) => {
                if users_seen.insert(key(upn)) {
                    users.push(upn.clone());
                }
            }
            GroupMember::Group(id) => {
                if groups_seen.insert(key(id))
                    && let Some(nested) = find(id.as_str())
                {
                    stack.push(nested.members.iter());
                }
            }
        }
    }
    users
}

/// The address of `mail eq '…'` (the literal's doubled quotes read as one), words apart by
/// spaces or `+` (a form-encoded space); `None` for any other filter.
fn mail_filter(filter: &str) -> Option<String> {
    let apart = |c: char| c == ' ' || c == '+';
    let (property, rest) = filter.trim_matches(apart).split_once(apart)?;
    let (operator, literal) = rest.trim_start_matches(apart).split_once(apart)?;
    if !property.eq_ignore_ascii_case("mail") || !operator.eq_ignore_ascii_case("eq") {
        return None;
    }
    super::profiles::string_literal(literal.trim_start_matches(apart)).ok()
}

/// An id for a member the directory does not have: GUID-shaped, the same for the same name in
/// every run (Graph's ids are GUIDs; these are made from the principal name).
fn outside_id(upn: &str) -> String {
    let name = key(upn);
    let a = fnv1a(name.as_bytes());
    let b = fnv1a(format!("member:{name}").as_bytes());
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        (b >> 48) & 0xfff,
        b & 0xffff_ffff_ffff
    )
}

/// What a call on groups needs the token to grant (any one of them).
const READ_GROUPS: &[&str] = &["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"];
/// A deleted group is read with `Group.Read.All` (least privileged; `GroupMember.Read.All` does
/// not reach deleted items).
const READ_DELETED_GROUPS: &[&str] = &["Group.Read.All", "Directory.Read.All"];

const ADVANCED_QUERY: &str = "Request with a cast on a member collection requires the ConsistencyLevel \
    header set to eventual and $count=true.";

pub(super) fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/graph/v1.0/groups", get(list_groups))
        .route("/graph/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user", get(transitive_members))
        .route("/graph/v1.0/directory/deletedItems/{id}", get(deleted_item))
}

/// Graph's answer for an object that is not (or no longer) in the directory.
fn no_such_object(sim: &Sim, id: &str) -> Answer {
    error(
        sim,
        404,
        "Request_ResourceNotFound",
        &format!(
            "Resource '{id}' does not exist or one of its queried reference-property objects are not present."
        ),
    )
}

/// A group as Graph shows it with `$select=id,displayName,mail`.
fn group_json(group: &GroupSpec) -> Value {
    json!({"id": group.id, "displayName": group.display_name, "mail": group.mail})
}

/// `GET /groups?$filter=mail eq '…'&$select=id,displayName,mail`. Choice: the simulator lists
/// groups by mail only; another filter, or none, is refused as an unsupported query.
async fn list_groups(State(sim): State<Arc<Sim>>, headers: HeaderMap, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    call(&sim, &headers, "graph.groups", READ_GROUPS, |sim| groups_by_mail(sim, &query))
}

fn groups_by_mail(sim: &Sim, query: &str) -> Answer {
    let mail = param(query, "$filter").as_deref().and_then(mail_filter);
    let Some(mail) = mail else {
        return error(
            sim,
            400,
            "Request_UnsupportedQuery",
            "Unsupported query: the simulator lists groups only with $filter=mail eq '<address>'.",
        );
    };
    let value: Vec<Value> = sim.groups.lock().unwrap().by_mail(&mail).into_iter().map(group_json).collect();
    Answer::ok(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups(id,displayName,mail)",
        "value": value,
    }))
}

/// `GET /groups/{id}/transitiveMembers/microsoft.graph.user?$select=…&$top=…&$count=true`, with
/// `ConsistencyLevel: eventual` (checked on every page), paged by `@odata.nextLink`
/// (`$skiptoken`).
async fn transitive_members(
    State(sim): State<Arc<Sim>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    call(&sim, &headers, "graph.groupMembers", READ_GROUPS, |sim| member_page(sim, &headers, &id, &query))
}

/// Whether a request carries what Graph's advanced queries need.
fn advanced_query(headers: &HeaderMap, query: &str) -> bool {
    let eventual = headers
        .get("consistencylevel")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("eventual"));
    eventual && param(query, "$count").is_some_and(|c| c.eq_ignore_ascii_case("true"))
}

fn member_page(sim: &Sim, headers: &HeaderMap, id: &str, query: &str) -> Answer {
    if !advanced_query(headers, query) {
        return error(sim, 400, "Request_UnsupportedQuery", ADVANCED_QUERY);
    }
    let found = sim.groups.lock().unwrap().members_of(id);
    let Some((upns, hidden)) = found else { return no_such_object(sim, id) };
    let top: usize = param(query, "$top").and_then(|t| t.parse().ok()).unwrap_or(100).clamp(1, 999);
    let skip: usize = param(query, "$skiptoken").and_then(|t| t.parse().ok()).unwrap_or(0);
    let select = param(query, "$select").unwrap_or_else(|| "id,userPrincipalName".into());
    let value: Vec<Value> = {
        let tenant = sim.tenant.lock().unwrap();
        upns.iter()
            .skip(skip)
            .take(top)
            .map(|upn| {
                let user_id = tenant.user_ref(upn).map_or_else(|| outside_id(upn), |u| u.id.clone());
                let shown = if hidden { Value::Null } else { Value::from(upn.as_str()) };
                json!({"@odata.type": "#microsoft.graph.user", "id": user_id, "userPrincipalName": shown})
            })
            .collect()
    };
    let mut body = json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#users({select})"),
        "@odata.count": upns.len(),
        "value": value,
    });
    if skip + top < upns.len() {
        body["@odata.nextLink"] = Value::from(format!(
            "{}/v1.0/groups/{id}/transitiveMembers/microsoft.graph.user?$select={select}&$top={top}&$count=true&$skiptoken={}",
            sim.graph_resource(),
            skip + top
        ));
    }
    Answer::ok(body)
}

/// `GET /directory/deletedItems/{id}`: a deleted group, with when it was deleted.
async fn deleted_item(State(sim): State<Arc<Sim>>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    call(&sim, &headers, "graph.deletedItems", READ_DELETED_GROUPS, |sim| get_deleted(sim, &id))
}

fn get_deleted(sim: &Sim, id: &str) -> Answer {
    let found = sim.groups.lock().unwrap().deleted(id).cloned();
    let Some((group, at)) = found else { return no_such_object(sim, id) };
    let mut body = group_json(&group);
    body["@odata.context"] =
        "https://graph.microsoft.com/v1.0/$metadata#directory/deletedItems/$entity".into();
    body["@odata.type"] = "#microsoft.graph.group".into();
    body["deletedDateTime"] = crate::plan::whole_second(at).to_string().into();
    Answer::ok(body)
}

impl SimHandle {
    /// Test hook: creates or replaces a group (restoring it if it was deleted), as an
    /// administrator does.
    pub fn set_group(&self, group: GroupSpec) {
        self.sim.groups.lock().unwrap().set(group);
    }

    /// Test hook: deletes a group (it becomes a deleted item, deleted now); `false` when no live
    /// group has this id.
    pub fn delete_group(&self, id: &str) -> bool {
        let now = self.sim.now();
        self.sim.groups.lock().unwrap().delete(id, now)
    }

    /// A live group.
    pub fn group(&self, id: &str) -> Option<GroupSpec> {
        self.sim.groups.lock().unwrap().get(id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(upn: &str) -> GroupMember {
        GroupMember::User(upn.into())
    }

    fn nested(id: &str) -> GroupMember {
        GroupMember::Group(id.into())
    }

    #[test]
    fn members_are_walked_through_nested_groups_once_each_even_in_a_cycle() {
        let mut groups = Groups::new(vec![
            GroupSpec::new("A", "a", vec![user("x@contoso.com"), nested("b"), user("z@contoso.com")]),
            GroupSpec::new("B", "b", vec![user("y@contoso.com"), nested("a"), user("X@CONTOSO.COM")]),
            GroupSpec::new("C", "c", vec![nested("gone"), nested("unknown"), nested("A"), nested("B")]),
            GroupSpec::new("gone", "deleted", vec![user("d@contoso.com")]),
        ]);
        assert!(groups.delete("GONE", Timestamp::UNIX_EPOCH));
        let (users, hidden) = groups.members_of("a").unwrap();
        assert_eq!(users, ["x@contoso.com", "y@contoso.com", "z@contoso.com"], "depth first, x once");
        assert!(!hidden);
        let (users, _) = groups.members_of("c").unwrap();
        assert_eq!(users, ["x@contoso.com", "y@contoso.com", "z@contoso.com"], "a deleted group adds nobody");
        assert!(groups.members_of("gone").is_none(), "a deleted group has no members to list");
        assert_eq!(groups.deleted("Gone").map(|(g, _)| g.display_name.as_str()), Some("deleted"));
    }

    #[test]
    fn setting_a_deleted_group_restores_it() {
        let mut groups = Groups::new(vec![GroupSpec::new("g", "g", vec![user("a@contoso.com")])]);
        assert!(groups.delete("g", Timestamp::UNIX_EPOCH));
        assert!(!groups.delete("g", Timestamp::UNIX_EPOCH), "already deleted");
        groups.set(GroupSpec::new("G", "g", vec![]));
        assert!(groups.get("g").is_some() && groups.deleted("g").is_none());
    }

    #[test]
    fn the_mail_filter_reads_doubled_quotes_and_refuses_other_filters() {
        assert_eq!(mail_filter("mail eq 'o''neil@contoso.com'").as_deref(), Some("o'neil@contoso.com"));
        assert_eq!(mail_filter("mail+eq+'a+b@contoso.com'").as_deref(), Some("a+b@contoso.com"));
        assert_eq!(mail_filter("Mail  EQ 'team@contoso.com' ").as_deref(), Some("team@contoso.com"));
        assert_eq!(mail_filter("mail eq 'o'neil@contoso.com'"), None, "an undoubled quote");
        assert_eq!(mail_filter("displayName eq 'team'"), None);
        assert_eq!(mail_filter("startswith(mail,'team')"), None);
        assert_eq!(mail_filter("mail eq team@contoso.com"), None, "not a string literal");
    }

    #[test]
    fn groups_are_found_by_mail_whatever_its_case() {
        let mut team = GroupSpec::new("t", "Team", vec![]);
        team.mail = Some("Team@Contoso.com".into());
        let groups = Groups::new(vec![team, GroupSpec::new("n", "No mail", vec![])]);
        let found: Vec<&str> =
            groups.by_mail("team@contoso.COM").into_iter().map(|g| g.id.as_str()).collect();
        assert_eq!(found, ["t"]);
    }

    #[test]
    fn outside_ids_are_stable_guid_shaped_and_case_blind() {
        let id = outside_id("Ext@Fabrikam.com");
        assert_eq!(id, outside_id("ext@fabrikam.com"));
        assert_ne!(id, outside_id("other@fabrikam.com"));
        let lengths: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(lengths, [8, 4, 4, 4, 12]);
    }
}
