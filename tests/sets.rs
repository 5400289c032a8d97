//! `OneDriveSiteSet`: the members of an Entra ID group (nested groups included) or of a list get
//! one `OneDriveSite` each, kept in step with the source; a tenant decides which namespace may
//! read which group; a guard holds mass removals. The controller over the simulator (Graph's
//! groups, its record of every request and of every OneDrive) and an in-memory Kubernetes API.

mod common;

use std::collections::BTreeMap;

use common::*;
use jiff::SignedDuration;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use onedrive_operator::api::{
    GroupRef, GroupSourceGrant, OneDriveSite, OneDriveSiteSet, OneDriveSiteSetSpec, OneDriveTenant,
    SetSource, SitePhase, annotations, condition_type, find_condition,
};
use onedrive_operator::controller::Reconciler;
use onedrive_operator::simulator::{self, GroupMember, GroupSpec, SimHandle, UserSpec};
use onedrive_operator::testing::site;
use serde_json::json;

const STAFF: &str = "0f5a2c1e-8b7d-4c3a-9e21-5d6f7a8b9c0d";
const NESTED: &str = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d";
const NS: &str = "hr";

fn upn(i: usize) -> String {
    format!("user{i:04}@contoso.com")
}

fn users_of(range: std::ops::Range<usize>) -> Vec<GroupMember> {
    range.map(|i| GroupMember::User(upn(i))).collect()
}

/// "All staff": `direct` users, and `nested` ones through a nested group (which also lists the
/// first three direct members again, and nests "All staff" back: a cycle).
fn staff(direct: std::ops::Range<usize>, nested: std::ops::Range<usize>) -> (GroupSpec, GroupSpec) {
    let (direct_start, direct_end) = (direct.start, direct.end);
    let mut members = users_of(direct);
    members.push(GroupMember::Group(NESTED.into()));
    let mut outer = GroupSpec::new(STAFF, "All staff", members);
    outer.mail = Some("staff@contoso.com".into());
    let mut inner_members = users_of(nested);
    inner_members.extend(users_of(direct_start..(direct_start + 3).min(direct_end)));
    inner_members.push(GroupMember::Group(STAFF.into()));
    (outer, GroupSpec::new(NESTED, "Wave 3", inner_members))
}

fn group_set(name: &str, namespace: &str, group: GroupRef) -> OneDriveSiteSet {
    let mut set = OneDriveSiteSet::new(
        name,
        OneDriveSiteSetSpec {
            tenant_ref: Some(onedrive_operator::api::TenantRef { name: "contoso".into() }),
            source: SetSource { group: Some(group), users: None },
            resync_interval: "1m".into(),
            ..Default::default()
        },
    );
    set.metadata.namespace = Some(namespace.into());
    set
}

fn by_id(id: &str) -> GroupRef {
    GroupRef { id: Some(id.into()), mail: None }
}

fn tenant_allowing(sim: &SimHandle, grants: Vec<GroupSourceGrant>) -> OneDriveTenant {
    let mut t = sim_tenant(sim, "contoso", "app-cert");
    t.spec.group_sources = grants;
    t
}

fn grant(namespaces: &[&str], groups: &[&str]) -> GroupSourceGrant {
    GroupSourceGrant {
        namespaces: namespaces.iter().map(|s| s.to_string()).collect(),
        groups: groups.iter().map(|s| s.to_string()).collect(),
    }
}

async fn create_set(client: &kube::Client, set: &OneDriveSiteSet) {
    let api: Api<OneDriveSiteSet> = Api::namespaced(client.clone(), &set.namespace().unwrap());
    api.create(&Default::default(), set).await.unwrap();
}

async fn get_set(client: &kube::Client, namespace: &str, name: &str) -> OneDriveSiteSet {
    Api::<OneDriveSiteSet>::namespaced(client.clone(), namespace).get(name).await.unwrap()
}

async fn sites_in(client: &kube::Client, namespace: &str) -> Vec<OneDriveSite> {
    Api::<OneDriveSite>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

fn ready(set: &OneDriveSiteSet) -> (String, String, String) {
    let c = find_condition(&set.status.as_ref().unwrap().conditions, condition_type::READY).unwrap();
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn stalled(set: &OneDriveSiteSet) -> bool {
    let c = find_condition(&set.status.as_ref().unwrap().conditions, condition_type::STALLED).unwrap();
    c.status == "True"
}

/// Set passes until one writes no site (a source is worked through `WRITES_PER_PASS` at a time).
async fn sync(r: &Reconciler, namespace: &str, name: &str) -> (usize, usize) {
    let (mut created, mut deleted) = (0, 0);
    for _ in 0..100 {
        let report = r.reconcile_set(namespace, name).await.unwrap();
        created += report.created;
        deleted += report.deleted;
        if report.created + report.updated + report.deleted == 0 {
            return (created, deleted);
        }
    }
    panic!("the set kept writing sites");
}

/// Set passes and tenant cycles on the simulated clock until the set is Ready.
async fn until_ready(
    r: &Reconciler,
    sim: &SimHandle,
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> usize {
    for n in 0..400 {
        sync(r, namespace, name).await;
        if ready(&get_set(client, namespace, name).await).0 == "True" {
            return n;
        }
        let report = r.reconcile_tenant("contoso").await.unwrap();
        assert!(report.problem.is_none(), "{:?}", report.problem);
        sim.advance(SignedDuration::from_secs(60));
    }
    panic!("the set never became Ready");
}

/// Each user's phase and Ready reason.
fn outcomes(sites: &[OneDriveSite]) -> BTreeMap<String, (Option<SitePhase>, String)> {
    sites
        .iter()
        .map(|s| {
            let status = s.status.as_ref();
            let reason = status
                .and_then(|st| find_condition(&st.conditions, condition_type::READY))
                .map(|c| c.reason.clone())
                .unwrap_or_default();
            (s.spec.user.to_lowercase(), (status.and_then(|st| st.phase), reason))
        })
        .collect()
}

fn population(n: usize) -> simulator::Config {
    let mut c = sim_config(0);
    c.users = (0..n).map(|i| simulator::realistic_user(i, upn(i))).collect();
    c
}

fn requests(sim: &SimHandle, endpoint: &str) -> u64 {
    sim.stats().requests.get(endpoint).copied().unwrap_or(0)
}

#[tokio::test]
async fn a_group_of_a_thousand_with_a_nested_group_gets_a_thousand_sites_and_follows_its_changes() {
    // The same 1,000 realistic users, hand-written: what the set's sites must come to.
    let hand = simulator::start(population(1100), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let sites: Vec<OneDriveSite> =
        (0..1000).map(|i| site(NS, &format!("u{i:04}"), &upn(i), "contoso")).collect();
    let client = kube(
        sites,
        vec![sim_tenant(&hand, "contoso", "app-cert")],
        vec![cert_secret("app-cert", &["contoso"])],
    )
    .await;
    let r = reconciler_on(&client, &hand);
    for _ in 0..400 {
        r.reconcile_tenant("contoso").await.unwrap();
        let sites = sites_in(&client, NS).await;
        if sites.iter().all(|s| {
            matches!(s.status.as_ref().and_then(|st| st.phase), Some(SitePhase::Ready | SitePhase::Failed))
        }) {
            break;
        }
        hand.advance(SignedDuration::from_secs(60));
    }
    let expected = outcomes(&sites_in(&client, NS).await);
    assert_eq!(expected.len(), 1000);

    // The group: 900 direct members, 100 through a nested group.
    let mut config = population(1100);
    let (outer, inner) = staff(0..900, 900..1000);
    config.groups = vec![outer, inner];
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tenant = tenant_allowing(&sim, vec![grant(&[NS], &[STAFF])]);
    let client = kube(vec![], vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    create_set(&client, &group_set("staff", NS, by_id(STAFF))).await;
    let r = reconciler_on(&client, &sim);
    let cycles = until_ready(&r, &sim, &client, NS, "staff").await;
    let sites = sites_in(&client, NS).await;
    assert_eq!(sites.len(), 1000);
    assert_eq!(outcomes(&sites), expected, "the set's sites end as hand-written ones do");
    let set = get_set(&client, NS, "staff").await;
    let status = set.status.clone().unwrap();
    assert_eq!(status.members, Some(1000));
    assert_eq!(status.children.total, 1000);
    assert_eq!(status.children.ready + status.children.failed, 1000);
    assert!(status.children.failed > 0, "the population has users who cannot get a site");
    let (_, reason, message) = ready(&set);
    assert_eq!(reason, "Settled");
    assert!(message.contains(&format!("{} Failed", status.children.failed)), "{message}");
    for s in &sites {
        assert_eq!(s.labels().get(annotations::SITE_SET_LABEL).map(String::as_str), Some("staff"));
        let owner = &s.owner_references()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("OneDriveSiteSet", Some(true)));
        assert_eq!(owner.uid, set.uid().unwrap());
    }
    eprintln!("1,000 members settled after {cycles} cycles");

    // 50 members leave (below the guard): exactly their 50 sites go, no other is touched and no
    // OneDrive is deleted.
    let onedrives = (0..1100)
        .filter(|i| matches!(sim.site_state(&upn(*i)), Some(simulator::SiteState::Created { .. })))
        .count();
    let before: BTreeMap<String, String> =
        sites.iter().map(|s| (s.name_any(), s.resource_version().unwrap())).collect();
    let (outer, inner) = staff(50..900, 900..1000);
    sim.set_group(outer);
    sim.set_group(inner);
    sim.advance(SignedDuration::from_secs(60));
    let (created, deleted) = sync(&r, NS, "staff").await;
    assert_eq!((created, deleted), (0, 50));
    let after = sites_in(&client, NS).await;
    assert_eq!(after.len(), 950);
    for s in &after {
        assert_eq!(
            before.get(&s.name_any()),
            Some(&s.resource_version().unwrap()),
            "{} was touched",
            s.name_any()
        );
        assert!(!(0..50).any(|i| upn(i) == s.spec.user));
    }
    assert_eq!(
        (0..1100)
            .filter(|i| matches!(sim.site_state(&upn(*i)), Some(simulator::SiteState::Created { .. })))
            .count(),
        onedrives,
        "no OneDrive was deleted"
    );

    // 100 join: 100 new sites.
    let (outer, inner) = staff(50..1000, 1000..1100);
    sim.set_group(outer);
    sim.set_group(inner);
    sim.advance(SignedDuration::from_secs(60));
    let (created, deleted) = sync(&r, NS, "staff").await;
    assert_eq!((created, deleted), (100, 0));
    assert_eq!(sites_in(&client, NS).await.len(), 1050);
    assert!(requests(&sim, "graph.groupMembers") > 0);
}

#[tokio::test]
async fn a_namespace_the_tenant_does_not_allow_reads_no_member() {
    let mut config = population(20);
    let (outer, inner) = staff(0..10, 10..20);
    config.groups = vec![outer, inner];
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    // The tenant lets `hr` read the group, and nobody else.
    let tenant = tenant_allowing(&sim, vec![grant(&[NS], &[STAFF])]);
    let client = kube(vec![], vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    create_set(&client, &group_set("staff", "sales", by_id(STAFF))).await;
    // By mail too: the grant names the id, not the mail.
    create_set(
        &client,
        &group_set("by-mail", NS, GroupRef { id: None, mail: Some("staff@contoso.com".into()) }),
    )
    .await;
    let r = reconciler_on(&client, &sim);
    for (ns, name) in [("sales", "staff"), (NS, "by-mail")] {
        let report = r.reconcile_set(ns, name).await.unwrap();
        assert_eq!(report.created, 0);
        let set = get_set(&client, ns, name).await;
        let (status, reason, message) = ready(&set);
        assert_eq!((status.as_str(), reason.as_str()), ("False", "GroupNotAllowed"));
        assert!(message.contains("spec.groupSources") && message.contains(ns), "{message}");
        assert!(stalled(&set));
    }
    assert!(sites_in(&client, "sales").await.is_empty());
    assert_eq!(requests(&sim, "graph.groupMembers") + requests(&sim, "graph.groups"), 0, "no Graph read");
    // The tenant grants `*` to `hr`: the set by mail reads its group.
    Api::<OneDriveTenant>::all(client.clone())
        .patch(
            "contoso",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"groupSources": [{"namespaces": [NS], "groups": ["*"]}]}})),
        )
        .await
        .unwrap();
    let (created, _) = sync(&r, NS, "by-mail").await;
    assert_eq!(created, 20);
    assert_eq!(requests(&sim, "graph.groups"), 1, "the mail resolved once");
}

#[tokio::test]
async fn an_emptied_group_deletes_nothing_until_confirmed_or_restored() {
    let mut config = population(120);
    let (outer, inner) = staff(0..100, 100..120);
    config.groups = vec![outer.clone(), inner.clone()];
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tenant = tenant_allowing(&sim, vec![grant(&[NS], &[STAFF])]);
    let client = kube(vec![], vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    create_set(&client, &group_set("staff", NS, by_id(STAFF))).await;
    let r = reconciler_on(&client, &sim);
    assert_eq!(sync(&r, NS, "staff").await, (120, 0));

    let empty = || (GroupSpec::new(STAFF, "All staff", vec![]), GroupSpec::new(NESTED, "Wave 3", vec![]));
    let (o, i) = empty();
    sim.set_group(o);
    sim.set_group(i);
    sim.advance(SignedDuration::from_secs(60));
    assert_eq!(sync(&r, NS, "staff").await, (0, 0));
    assert_eq!(sites_in(&client, NS).await.len(), 120);
    let set = get_set(&client, NS, "staff").await;
    let (_, reason, message) = ready(&set);
    assert_eq!(reason, "RemovalHeld");
    assert!(stalled(&set));
    assert!(message.contains("120 of the set's 120 sites would be deleted"), "{message}");
    let held = set.status.clone().unwrap().held_removals.unwrap();
    assert_eq!(held.count, 120);

    // The group restored: nothing held, nothing deleted.
    sim.set_group(outer);
    sim.set_group(inner);
    sim.advance(SignedDuration::from_secs(60));
    assert_eq!(sync(&r, NS, "staff").await, (0, 0));
    let set = get_set(&client, NS, "staff").await;
    assert!(set.status.clone().unwrap().held_removals.is_none());
    assert!(!stalled(&set));

    // Emptied again, then a person confirms these removals: they go.
    let (o, i) = empty();
    sim.set_group(o);
    sim.set_group(i);
    sim.advance(SignedDuration::from_secs(60));
    sync(&r, NS, "staff").await;
    let token = get_set(&client, NS, "staff").await.status.unwrap().held_removals.unwrap().token;
    Api::<OneDriveSiteSet>::namespaced(client.clone(), NS)
        .patch(
            "staff",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"annotations": {annotations::CONFIRM_REMOVALS: token}}})),
        )
        .await
        .unwrap();
    assert_eq!(sync(&r, NS, "staff").await, (0, 120));
    assert!(sites_in(&client, NS).await.is_empty());
    assert!(!stalled(&get_set(&client, NS, "staff").await));
}

#[tokio::test]
async fn a_users_list_adds_and_removes_sites_as_it_is_edited() {
    let sim = simulator::start(population(30), "127.0.0.1:0".parse().unwrap()).await.unwrap();
    // A hand-written site already holds the name the set would give user0005.
    let name5 = onedrive_operator::plan::site_set::child_name(&upn(5));
    let hand = site(NS, &name5, &upn(5), "contoso");
    let client = kube(
        vec![hand],
        vec![sim_tenant(&sim, "contoso", "app-cert")],
        vec![cert_secret("app-cert", &["contoso"])],
    )
    .await;
    let mut listed: Vec<String> = (0..10).map(upn).collect();
    listed.push("not-a-user".into());
    let mut set = OneDriveSiteSet::new(
        "list",
        OneDriveSiteSetSpec {
            tenant_ref: Some(onedrive_operator::api::TenantRef { name: "contoso".into() }),
            source: SetSource { group: None, users: Some(listed) },
            ..Default::default()
        },
    );
    set.metadata.namespace = Some(NS.into());
    create_set(&client, &set).await;
    let r = reconciler_on(&client, &sim);
    assert_eq!(sync(&r, NS, "list").await, (9, 0), "user0005's name is taken");
    let sites = sites_in(&client, NS).await;
    let hand = sites.iter().find(|s| s.name_any() == name5).unwrap();
    assert!(hand.owner_references().is_empty(), "the hand-written site is not adopted");
    let status = get_set(&client, NS, "list").await.status.unwrap();
    assert_eq!((status.conflicts, status.invalid_members, status.members), (1, 1, Some(11)));
    let message = ready(&get_set(&client, NS, "list").await).2;
    assert!(message.contains(&name5) && message.contains("\"not-a-user\""), "{message}");

    // Edited: 0..3 leave, 10..15 join.
    let edited: Vec<String> = (3..15).map(upn).collect();
    Api::<OneDriveSiteSet>::namespaced(client.clone(), NS)
        .patch(
            "list",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"source": {"users": edited}}})),
        )
        .await
        .unwrap();
    assert_eq!(sync(&r, NS, "list").await, (5, 3));
    let users: std::collections::BTreeSet<String> =
        sites_in(&client, NS).await.iter().map(|s| s.spec.user.clone()).collect();
    assert_eq!(users, (3..15).map(upn).collect());

    // A template change reaches every site of the set, and only those.
    Api::<OneDriveSiteSet>::namespaced(client.clone(), NS)
        .patch(
            "list",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"template": {"labels": {"wave": "3"}}}})),
        )
        .await
        .unwrap();
    sync(&r, NS, "list").await;
    for s in sites_in(&client, NS).await {
        let labelled = s.labels().get("wave").map(String::as_str) == Some("3");
        assert_eq!(labelled, s.name_any() != name5, "{}", s.name_any());
    }

    // The set deleted and created again under its name, with another list: the new list counts
    // (nothing of the old set's is remembered).
    Api::<OneDriveSiteSet>::namespaced(client.clone(), NS).delete("list", &Default::default()).await.unwrap();
    let mut again = set.clone();
    again.spec.source.users = Some((20..22).map(upn).collect());
    create_set(&client, &again).await;
    sync(&r, NS, "list").await;
    let set_uid = get_set(&client, NS, "list").await.uid().unwrap();
    let users: std::collections::BTreeSet<String> = sites_in(&client, NS)
        .await
        .iter()
        .filter(|s| s.owner_references().iter().any(|o| o.uid == set_uid))
        .map(|s| s.spec.user.clone())
        .collect();
    assert_eq!(users, (20..22).map(upn).collect());
}

#[tokio::test]
async fn group_failures_are_reasons_on_the_set_and_never_removals() {
    let mut config = population(10);
    let (outer, inner) = staff(0..10, 10..10);
    config.groups = vec![outer.clone(), inner];
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tenant = tenant_allowing(&sim, vec![grant(&[NS], &["*"])]);
    let client = kube(vec![], vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    create_set(&client, &group_set("staff", NS, by_id(STAFF))).await;
    create_set(&client, &group_set("ghost", NS, by_id("99999999-8888-4777-8666-555555555555"))).await;
    let r = reconciler_on(&client, &sim);
    assert_eq!(sync(&r, NS, "staff").await, (10, 0));
    sync(&r, NS, "ghost").await;
    assert_eq!(ready(&get_set(&client, NS, "ghost").await).1, "GroupNotFound");

    // Hidden members: an error, not 10 removals.
    let mut hidden = outer.clone();
    hidden.hide_upns = true;
    sim.set_group(hidden);
    sim.advance(SignedDuration::from_secs(60));
    assert_eq!(sync(&r, NS, "staff").await, (0, 0));
    let set = get_set(&client, NS, "staff").await;
    assert_eq!(ready(&set).1, "MembersUnreadable");
    assert!(stalled(&set));
    assert_eq!(sites_in(&client, NS).await.len(), 10);

    // Deleted: its own reason, still no removal.
    sim.set_group(outer);
    assert!(sim.delete_group(STAFF));
    sim.advance(SignedDuration::from_secs(60));
    assert_eq!(sync(&r, NS, "staff").await, (0, 0));
    let (_, reason, message) = ready(&get_set(&client, NS, "staff").await);
    assert_eq!(reason, "GroupDeleted");
    assert!(message.contains("no site was created or deleted"), "{message}");
    assert_eq!(sites_in(&client, NS).await.len(), 10);
}

#[tokio::test]
async fn a_token_without_group_member_read_is_named() {
    let mut config = population(5);
    let (outer, inner) = staff(0..5, 5..5);
    config.groups = vec![outer, inner];
    config.withheld_permissions = vec!["GroupMember.Read.All".into(), "Group.Read.All".into()];
    config.users.push(UserSpec::new("extra@contoso.com"));
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tenant = tenant_allowing(&sim, vec![grant(&[NS], &[STAFF])]);
    let client = kube(vec![], vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    create_set(&client, &group_set("staff", NS, by_id(STAFF))).await;
    let r = reconciler_on(&client, &sim);
    sync(&r, NS, "staff").await;
    let set = get_set(&client, NS, "staff").await;
    let (_, reason, message) = ready(&set);
    assert_eq!(reason, "GroupPermissionMissing");
    assert!(message.contains("GroupMember.Read.All"), "{message}");
    assert!(stalled(&set));
}

#[tokio::test]
async fn with_group_member_read_alone_a_deleted_group_reads_as_unknown() {
    let mut config = population(5);
    let (outer, inner) = staff(0..5, 5..5);
    config.groups = vec![outer, inner];
    // The least privilege for members; deleted items need Group.Read.All.
    config.withheld_permissions = vec!["Group.Read.All".into()];
    let sim = simulator::start(config, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let tenant = tenant_allowing(&sim, vec![grant(&[NS], &[STAFF])]);
    let client = kube(vec![], vec![tenant], vec![cert_secret("app-cert", &["contoso"])]).await;
    create_set(&client, &group_set("staff", NS, by_id(STAFF))).await;
    let r = reconciler_on(&client, &sim);
    assert_eq!(sync(&r, NS, "staff").await, (5, 0));
    assert!(sim.delete_group(STAFF));
    sim.advance(SignedDuration::from_secs(60));
    assert_eq!(sync(&r, NS, "staff").await, (0, 0));
    let (_, reason, message) = ready(&get_set(&client, NS, "staff").await);
    assert_eq!(reason, "GroupNotFound");
    assert!(message.contains("Group.Read.All"), "{message}");
    assert_eq!(sites_in(&client, NS).await.len(), 5, "nothing removed");
}
