//! Property tests: the real planner driven over many cycles against a model tenant, checking
//! the mission's rules on every cycle.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::{SignedDuration, Timestamp};
use proptest::prelude::*;

use super::fixtures::*;
use super::users::key_of;
use super::*;
use crate::api::{BatchStatus, SitePhase};
use crate::m365::profile_state;

/// What the tenant "really" has: sites appear `delay` seconds after a user is enqueued.
#[derive(Clone, Debug)]
struct ModelTenant {
    sites: HashMap<String, String>,
    provisioning: HashMap<String, Timestamp>,
    delay: HashMap<String, i64>,
    not_found: HashSet<String>,
    unlicensed: HashSet<String>,
    /// May not sign in: an enqueue is accepted and nothing ever happens.
    blocked: HashSet<String>,
    /// The profile state an enqueue of this user ends in instead of a site (4099, 8195).
    profile_error: HashMap<String, i64>,
    /// Users whose enqueue ended in their profile error.
    failed: HashMap<String, i64>,
    /// Whether lookups that ask for the profile get it (the controller reads a bounded number).
    profiles_answered: bool,
    /// Users whose first enqueue SharePoint silently drops (a stuck timer job).
    lose_first: HashSet<String>,
    /// Users who get a site on their own (they open OneDrive) at this time.
    own_site_at: HashMap<String, Timestamp>,
    enqueues: Vec<(Timestamp, Vec<String>)>,
}

impl ModelTenant {
    fn tick(&mut self, now: Timestamp) {
        let done: Vec<String> = self
            .provisioning
            .iter()
            .filter(|(u, at)| **at + SignedDuration::from_secs(self.delay[*u]) <= now)
            .map(|(u, _)| u.clone())
            .collect();
        for u in done {
            self.provisioning.remove(&u);
            if self.blocked.contains(&u) {
                // SharePoint never creates a blocked account's site: it stays enqueued.
                self.provisioning.insert(u, now);
            } else if let Some(code) = self.profile_error.get(&u) {
                self.failed.insert(u, *code);
            } else {
                self.sites.insert(u.clone(), url(&u));
            }
        }
        for (u, at) in &self.own_site_at {
            if *at <= now {
                self.sites.entry(u.clone()).or_insert_with(|| url(u));
            }
        }
    }

    fn observe(&self, lookup: &Lookup) -> Observation {
        let k = key(&lookup.user);
        let profile = lookup.profile && self.profiles_answered;
        if self.not_found.contains(&k) {
            Observation::UserNotFound
        } else if self.unlicensed.contains(&k) {
            Observation::UserNotLicensed
        } else if let Some(url) = self.sites.get(&k) {
            Observation::HasSite { url: url.clone() }
        } else if self.blocked.contains(&k) {
            Observation::SignInBlocked
        } else if let (true, Some(code)) = (profile, self.failed.get(&k)) {
            Observation::Profile(profile_state(*code))
        } else if profile && self.provisioning.contains_key(&k) {
            Observation::Profile(profile_state(1))
        } else {
            Observation::NoSite
        }
    }

    /// Whether the directory refuses the user (they are never to be sent).
    fn directory_refuses(&self, k: &str) -> bool {
        self.not_found.contains(k) || self.unlicensed.contains(k) || self.blocked.contains(k)
    }

    /// Whether the tenant has refused the user so far (directory, or a profile error shown).
    fn refused(&self, k: &str) -> bool {
        self.directory_refuses(k) || self.failed.contains_key(k)
    }
}

struct World {
    sites: Vec<DesiredSite<'static>>,
    memory: Observations,
    batch: Option<BatchStatus>,
    last_batch_id: i64,
    now: Timestamp,
    limits: Limits,
    tenant: ModelTenant,
    writes: usize,
    typical_batch: Option<SignedDuration>,
}

/// What one cycle did, for the invariant checks.
struct Cycle {
    enqueued: Option<Vec<String>>,
    updates: usize,
}

impl World {
    fn input(&self) -> Case<'_> {
        Case { sites: &self.sites, input: self.plan_input() }
    }

    fn plan_input(&self) -> PlanInput<'_> {
        PlanInput {
            batch: self.batch.as_ref(),
            last_batch_id: self.last_batch_id,
            typical_batch: self.typical_batch,
            ..PlanInput::new("model", &self.memory, &self.limits, self.now)
        }
    }

    /// Whether the planner still sees work ahead (a batch in flight, users not settled).
    fn reconciling(&self) -> bool {
        self.batch.is_some() || plan(&self.input()).reconciling
    }

    fn observe(&mut self, users: &[Lookup]) {
        for u in users {
            let o = self.tenant.observe(u);
            let k = key(&u.user);
            let next = Observed::after(self.memory.get(k.as_str()), self.now, o);
            self.memory.insert(k.into(), next);
        }
    }

    /// A cycle gathers users once and plans with them again as observations come in (and the
    /// batch changes): that must decide exactly what a fresh planner decides.
    fn check_shared_users(&self, p: &Plan) {
        let input = self.plan_input();
        let mut shared = Planner::new(&self.sites);
        let _ = shared.plan(&PlanInput { batch: None, ..input });
        assert_eq!(&shared.plan(&input), p);
        let next = PlanInput { batch: p.batch.as_ref(), ..input };
        let fresh = Case { sites: &self.sites, input: next };
        assert_eq!(shared.plan(&next), plan(&fresh));
    }

    /// One reconcile cycle as the controller runs it, checking the mission's rules on the way.
    fn cycle(&mut self) -> Cycle {
        self.tenant.tick(self.now);
        // As the controller does: every gate first, then whom else the plan names.
        let gates = plan(&self.input()).gates;
        self.observe(&gates);
        let rest = plan(&self.input()).lookups;
        self.observe(&rest);
        let mut p = plan(&self.input());
        for _ in 0..3 {
            if p.observe_now.is_empty() {
                break;
            }
            let more = p.observe_now.clone();
            self.observe(&more);
            p = plan(&self.input());
        }
        self.check_shared_users(&p);
        let mut enqueued = None;
        if let Some(e) = &p.enqueue {
            assert!(p.observe_now.is_empty(), "nothing is sent while the plan waits on observations");
            let users = &e.batch.users;
            assert!(!users.is_empty());
            assert!(users.len() <= self.limits.batch_size.min(200), "batch of {}", users.len());
            let keys: HashSet<String> = users.iter().map(|u| key(u)).collect();
            assert_eq!(keys.len(), users.len(), "duplicate user in one batch");
            if !e.resend {
                if let Some(prev) = &self.batch {
                    // The batch's last user who was not refused has a site (or all were refused).
                    let gate = prev.users.iter().rev().map(|u| key(u)).find(|k| !self.tenant.refused(k));
                    let timed_out = prev.enqueued_at.0 + self.limits.provisioning_timeout <= self.now;
                    assert!(
                        gate.is_none_or(|g| self.tenant.sites.contains_key(&g)) || timed_out,
                        "a new batch while batch {} is in flight",
                        prev.id
                    );
                }
                // The last user, whose site the next batch waits for, was seen without one
                // within the poll interval.
                let last = key(&e.batch.last_user);
                let since = self.now - self.limits.poll_interval;
                assert!(
                    self.memory
                        .get(last.as_str())
                        .is_some_and(|o| o.at >= since && o.observation.is_no_site()),
                    "last user {last} not checked lately"
                );
                for k in &keys {
                    assert!(
                        !self.tenant.directory_refuses(k),
                        "{k} is refused by the directory but was sent"
                    );
                    // Nobody known to have a site is sent; someone may have got one on their own
                    // since they were last seen (SharePoint ignores them).
                    if self.tenant.sites.contains_key(k) {
                        let seen = self.memory.get(k.as_str()).expect("every enqueued user was observed");
                        let own = self.tenant.own_site_at.get(k);
                        assert!(
                            seen.observation.is_no_site() && own.is_some_and(|at| *at > seen.at),
                            "{k} already has a site"
                        );
                    }
                    if let Some(at) = self.tenant.provisioning.get(k) {
                        assert!(
                            *at + self.limits.provisioning_timeout <= self.now,
                            "{k} is already in flight"
                        );
                    }
                }
            }
            for k in keys {
                if !self.tenant.lose_first.remove(&k) {
                    self.tenant.provisioning.entry(k).or_insert(self.now);
                }
            }
            self.tenant.enqueues.push((self.now, users.clone()));
            enqueued = Some(users.clone());
        }
        self.batch = p.batch.clone().map(|mut b| {
            b.sent = true;
            b
        });
        self.last_batch_id = p.last_batch_id;
        self.typical_batch = p.batch_duration.or(self.typical_batch);
        apply(&mut self.sites, &p);
        self.writes += p.site_updates.len();
        Cycle { enqueued, updates: p.site_updates.len() }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    // (creation second, kind: 0..=6 normal, 7 has site, 8 not found, 9 unlicensed, 10 sign-in
    // blocked, 11 ends in profile state 4099, 12 ends in 8195)
    users: Vec<(i64, u8)>,
    duplicates: Vec<usize>,
    batch_size: usize,
    delays: Vec<i64>,
    poll: i64,
}

fn scenario(max_users: usize) -> impl Strategy<Value = Scenario> {
    (1..=max_users)
        .prop_flat_map(|n| {
            (
                proptest::collection::vec((0i64..500, 0u8..13), n),
                proptest::collection::vec(0..n, 0..=n.min(5)),
                prop_oneof![1usize..=25, Just(200usize), 201usize..=400],
                proptest::collection::vec(1i64..=400, n),
                10i64..=120,
            )
        })
        .prop_map(|(users, duplicates, batch_size, delays, poll)| Scenario {
            users,
            duplicates,
            batch_size,
            delays,
            poll,
        })
}

fn world(s: &Scenario) -> World {
    let mut sites = Vec::new();
    let mut tenant = ModelTenant {
        sites: HashMap::new(),
        provisioning: HashMap::new(),
        delay: HashMap::new(),
        not_found: HashSet::new(),
        unlicensed: HashSet::new(),
        blocked: HashSet::new(),
        profile_error: HashMap::new(),
        failed: HashMap::new(),
        profiles_answered: true,
        lose_first: HashSet::new(),
        own_site_at: HashMap::new(),
        enqueues: Vec::new(),
    };
    for (i, (created, kind)) in s.users.iter().enumerate() {
        let user = format!("user{i}@contoso.com");
        sites.push(site("ns-a", &format!("s{i}"), &user, *created));
        tenant.delay.insert(key(&user), s.delays[i]);
        match kind {
            7 => {
                tenant.sites.insert(key(&user), url(&user));
            }
            8 => {
                tenant.not_found.insert(key(&user));
            }
            9 => {
                tenant.unlicensed.insert(key(&user));
            }
            10 => {
                tenant.blocked.insert(key(&user));
            }
            11 => {
                tenant.profile_error.insert(key(&user), 4099);
            }
            12 => {
                tenant.profile_error.insert(key(&user), 8195);
            }
            _ => {}
        }
    }
    // Kubernetes names are unique: one duplicate resource per user at most.
    let duplicates: std::collections::BTreeSet<usize> = s.duplicates.iter().copied().collect();
    for i in duplicates {
        // Another team's resource for the same user, spelled differently, created later.
        let user = format!("USER{i}@Contoso.com");
        sites.push(site("ns-b", &format!("dup{i}"), &user, s.users[i].0 + 1000));
    }
    World {
        sites,
        memory: Observations::default(),
        batch: None,
        last_batch_id: 0,
        now: t(1000),
        limits: Limits {
            batch_size: s.batch_size,
            poll_interval: SignedDuration::from_secs(s.poll),
            ..Limits::default()
        },
        tenant,
        writes: 0,
        typical_batch: None,
    }
}

/// Runs cycles until nothing is left to do (or a generous bound), returning every cycle.
fn run(w: &mut World, max_cycles: usize) -> Vec<Cycle> {
    let mut cycles = Vec::new();
    for _ in 0..max_cycles {
        let c = w.cycle();
        let idle = c.enqueued.is_none() && c.updates == 0 && !w.reconciling();
        cycles.push(c);
        if idle {
            break;
        }
        let step = plan(&w.input()).requeue_after;
        w.now += step.max(SignedDuration::from_secs(1));
    }
    cycles
}

fn phase_of(w: &World, user: &str) -> Vec<(SitePhase, String)> {
    w.sites
        .iter()
        .filter(|s| key(&s.user) == user)
        .map(|s| {
            let st = &status_of(s);
            (st.phase.unwrap(), ready_of(st).reason.clone())
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// The planner's copy-free key is the public one, whatever the spelling.
    #[test]
    fn keys_without_a_copy_equal_user_keys(
        user in "[ \u{a0}\u{3000}]{0,2}[a-zA-Z0-9İıßÄäǅΣσς@._-]{0,12}[ \t\u{a0}]{0,2}"
    ) {
        prop_assert_eq!(key_of(&user).into_owned(), key(&user));
    }

    /// Batches never exceed the size or 200, never hold a user with a site or in flight, never
    /// start while one is in flight (all asserted inside `cycle`), and every user converges:
    /// enqueued exactly once, oldest first; duplicates share their phase.
    #[test]
    fn converges_in_batches_oldest_first_without_duplicates(s in scenario(60)) {
        let mut w = world(&s);
        run(&mut w, 2000);
        let mut sent: Vec<String> = Vec::new();
        for (_, users) in &w.tenant.enqueues {
            sent.extend(users.iter().map(|u| key(u)));
        }
        let unique: HashSet<&String> = sent.iter().collect();
        prop_assert_eq!(unique.len(), sent.len(), "a user was enqueued twice");
        // Oldest first: the order sent is the order of the users' oldest resources.
        let mut expected: Vec<(Timestamp, String)> = Vec::new();
        let mut oldest: BTreeMap<String, Timestamp> = BTreeMap::new();
        for site in &w.sites {
            let e = oldest.entry(key(&site.user)).or_insert(site.created);
            *e = (*e).min(site.created);
        }
        for (k, at) in &oldest {
            if sent.contains(k) {
                expected.push((*at, k.clone()));
            }
        }
        expected.sort();
        let expected: Vec<String> = expected.into_iter().map(|(_, k)| k).collect();
        prop_assert_eq!(&sent, &expected);
        for k in oldest.keys() {
            let phases = phase_of(&w, k);
            prop_assert!(phases.windows(2).all(|p| p[0] == p[1]), "{k}: {phases:?}");
            let (phase, reason) = phases[0].clone();
            if w.tenant.not_found.contains(k) {
                prop_assert_eq!(reason, reason::USER_NOT_FOUND);
                prop_assert!(!sent.contains(k));
            } else if w.tenant.unlicensed.contains(k) {
                prop_assert_eq!(reason, reason::USER_NOT_LICENSED);
                prop_assert!(!sent.contains(k));
            } else if w.tenant.blocked.contains(k) {
                prop_assert_eq!(reason, reason::SIGN_IN_BLOCKED);
                prop_assert!(!sent.contains(k));
            } else if let Some(code) = w.tenant.profile_error.get(k) {
                let expected = if *code < 8192 { reason::SITE_CREATION_NOT_PERMITTED } else { reason::PROVISIONING_FAILED };
                prop_assert_eq!((phase, reason), (SitePhase::Failed, expected.to_string()));
                prop_assert!(sent.contains(k));
            } else {
                prop_assert_eq!(phase, SitePhase::Ready, "{} ended {:?}", k, reason);
            }
        }
        // An unchanged world: nothing written, nothing sent.
        w.now += SignedDuration::from_secs(30);
        let c = w.cycle();
        prop_assert_eq!(c.updates, 0);
        prop_assert!(c.enqueued.is_none());
    }

    /// Users who get a site on their own (they open OneDrive) at any moment: nobody known to
    /// have a site is sent, a batch's last user was checked within the poll interval (both
    /// asserted inside `cycle`), nobody is sent twice, and everyone ends Ready.
    #[test]
    fn users_who_get_a_site_on_their_own_are_never_lost(
        s in scenario(40),
        own in proptest::collection::vec((0usize..40, 0i64..30_000), 0..12),
    ) {
        let mut w = world(&s);
        for (i, at) in own {
            let k = key(&format!("user{}@contoso.com", i % s.users.len()));
            if !w.tenant.directory_refuses(&k) && !w.tenant.profile_error.contains_key(&k) {
                w.tenant.own_site_at.insert(k, t(at));
            }
        }
        w.limits.enqueue_recheck_after = SignedDuration::from_secs(3600);
        run(&mut w, 3000);
        let mut sent: Vec<String> = Vec::new();
        for (_, users) in &w.tenant.enqueues {
            sent.extend(users.iter().map(|u| key(u)));
        }
        let unique: HashSet<&String> = sent.iter().collect();
        prop_assert_eq!(unique.len(), sent.len(), "a user was enqueued twice");
        for i in 0..s.users.len() {
            let k = key(&format!("user{i}@contoso.com"));
            if !w.tenant.directory_refuses(&k) && !w.tenant.profile_error.contains_key(&k) {
                let phases = phase_of(&w, &k);
                prop_assert!(phases.iter().all(|(p, _)| *p == SitePhase::Ready), "{k}: {phases:?}");
            }
        }
    }

    /// A user whose first enqueue is lost is reported `ProvisioningTimedOut`, then sent again
    /// in a later batch, and ends Ready.
    #[test]
    fn timeouts_are_reported_then_retried(s in scenario(20), slow in 0usize..20) {
        let mut w = world(&s);
        let slow_user = key(&format!("user{}@contoso.com", slow % s.users.len()));
        let normal = !w.tenant.directory_refuses(&slow_user)
            && !w.tenant.profile_error.contains_key(&slow_user)
            && !w.tenant.sites.contains_key(&slow_user);
        w.limits.provisioning_timeout = SignedDuration::from_secs(1000);
        w.tenant.lose_first.insert(slow_user.clone());
        let mut saw_timeout = false;
        for _ in 0..3000 {
            let c = w.cycle();
            saw_timeout |= phase_of(&w, &slow_user)
                .iter()
                .any(|(p, r)| *p == SitePhase::Failed && r == reason::PROVISIONING_TIMED_OUT);
            if c.enqueued.is_none() && c.updates == 0 && !w.reconciling() {
                break;
            }
            w.now += plan(&w.input()).requeue_after.max(SignedDuration::from_secs(1));
        }
        if normal {
            prop_assert!(saw_timeout);
            let times = w.tenant.enqueues.iter().filter(|(_, u)| u.iter().any(|x| key(x) == slow_user)).count();
            prop_assert!(times >= 2, "sent {times} times");
            prop_assert_eq!(phase_of(&w, &slow_user)[0].0, SitePhase::Ready);
        }
    }

    /// A Ready user whose site disappears is found by the drift re-check, goes back to
    /// Pending and is provisioned again.
    #[test]
    fn vanished_sites_are_found_and_provisioned_again(s in scenario(30), victim in 0usize..30) {
        let mut w = world(&s);
        w.limits.drift_check_interval = SignedDuration::from_secs(3600);
        run(&mut w, 2000);
        let k = key(&format!("user{}@contoso.com", victim % s.users.len()));
        if phase_of(&w, &k)[0].0 == SitePhase::Ready {
            w.tenant.sites.remove(&k);
            let mut saw_pending = false;
            for _ in 0..500 {
                w.now += SignedDuration::from_secs(600);
                w.cycle();
                let p = phase_of(&w, &k)[0].0;
                saw_pending |= p == SitePhase::Pending || p == SitePhase::SpsSiteError;
                if saw_pending && p == SitePhase::Ready {
                    break;
                }
            }
            prop_assert!(saw_pending);
            prop_assert_eq!(phase_of(&w, &k)[0].0, SitePhase::Ready);
        }
    }

    /// Status writes stay proportional to phase changes: at most 4 per site over a whole
    /// convergence (first visit, checked, enqueued, ready).
    #[test]
    fn writes_per_site_stay_small(s in scenario(40)) {
        let mut w = world(&s);
        run(&mut w, 2000);
        prop_assert!(w.writes <= 4 * w.sites.len(), "{} writes for {} sites", w.writes, w.sites.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Once a user has a verdict (directory or profile), its phase and reason never change while
    /// the tenant's answer stays the same: re-checks at random times, with the profile read in
    /// some cycles and not in others (the controller bounds profile reads), never flip it back to
    /// Pending or SPSSITEERROR.
    #[test]
    fn verdicts_do_not_flap_under_random_rechecks(
        s in scenario(30),
        steps in proptest::collection::vec((60i64..20_000, any::<bool>()), 60),
    ) {
        let mut w = world(&s);
        let mut verdicts: HashMap<String, (SitePhase, String)> = HashMap::new();
        let mut check = |w: &World| -> Result<(), TestCaseError> {
            for site in &w.sites {
                let k = key(&site.user);
                let Some(st) = site.status.as_ref().map(|s| s.to_status()) else { continue };
                let now = (st.phase.unwrap(), ready_of(&st).reason.clone());
                let permanent = [
                    reason::USER_NOT_FOUND, reason::USER_NOT_LICENSED, reason::SIGN_IN_BLOCKED,
                    reason::SITE_CREATION_NOT_PERMITTED, reason::PROVISIONING_FAILED,
                ];
                if let Some(before) = verdicts.get(&k) {
                    prop_assert_eq!(&now, before, "{} flapped", k);
                } else if permanent.contains(&now.1.as_str()) {
                    verdicts.insert(k, now);
                }
            }
            Ok(())
        };
        for _ in 0..400 {
            let c = w.cycle();
            check(&w)?;
            if c.enqueued.is_none() && c.updates == 0 && !w.reconciling() {
                break;
            }
            w.now += plan(&w.input()).requeue_after.max(SignedDuration::from_secs(1));
        }
        for (step, profiles) in steps {
            w.tenant.profiles_answered = profiles;
            w.now += SignedDuration::from_secs(step);
            w.cycle();
            check(&w)?;
        }
    }
}
