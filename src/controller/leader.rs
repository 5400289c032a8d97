//! Leader election on a `coordination.k8s.io` Lease, with a fence.
//!
//! Why not `kube-lease-manager`: it only reports a change of holder, so a leader cut off from the
//! API server never learns that it has stopped renewing and keeps acting after a standby took
//! over. Here the leader knows when its last renewal was *sent*; it holds a [`Fence`] that is
//! valid for `renew_deadline` after that moment and steps down when the fence lapses. A standby
//! takes over only after seeing the Lease record unchanged for a whole `lease_duration` of its
//! own clock (client-go's rule: no comparison of two machines' wall clocks), which is later than
//! the leader's deadline by `lease_duration - renew_deadline`: the two never act at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

/// How the Lease is held.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    /// How long a standby waits, after the record last changed, before taking over.
    pub duration: Duration,
}

impl LeaseSettings {
    /// How often the leader renews and a standby looks (client-go: 2 s of 15 s).
    pub fn retry_period(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(200))
    }

    /// How long after its last renewal was sent the leader may still act. The rest of the
    /// duration is the margin for a send already under way and for clock-rate drift.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX).max(1)
    }
}

/// Whether this process may act now. Cloned into the reconciler, which checks it immediately
/// before every irreversible request (an enqueue).
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<Mutex<Option<Instant>>>);

impl Fence {
    /// Valid until `until`.
    fn hold_until(&self, until: Instant) {
        *self.0.lock().unwrap() = Some(until);
    }

    fn lapse(&self) {
        *self.0.lock().unwrap() = None;
    }

    /// Whether the lease is held and its deadline not yet reached.
    pub fn holds(&self) -> bool {
        self.remaining().is_some()
    }

    /// Time left before the deadline (`None`: not held, or lapsed).
    pub fn remaining(&self) -> Option<Duration> {
        let until = (*self.0.lock().unwrap())?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }
}

/// The outcome of one look at the Lease.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    /// Created, renewed or taken over by this process.
    Held,
    /// Another process holds it (or won a race to write it).
    HeldBy(String),
}

/// Campaigns for the Lease, renews it while leading, steps down when it cannot.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    fence: Fence,
    /// The record's resourceVersion as last seen and when (this process's clock).
    seen: Option<(String, Instant)>,
}

impl Elector {
    pub fn new(client: kube::Client, settings: LeaseSettings) -> Elector {
        Elector {
            api: Api::namespaced(client, &settings.namespace),
            settings,
            fence: Fence::default(),
            seen: None,
        }
    }

    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Runs the election in a task. The receiver says whether this process leads; it turns
    /// false when the leader steps down (it campaigns again at once, without exiting).
    pub fn spawn(mut self) -> (watch::Receiver<bool>, Campaign) {
        let (tx, rx) = watch::channel(false);
        let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = self.campaign(&tx) => {}
                _ = &mut stop_rx => {}
            }
            self.release().await;
        });
        (rx, Campaign { stop: Some(stop_tx), task })
    }

    async fn campaign(&mut self, leading: &watch::Sender<bool>) {
        let retry = self.settings.retry_period();
        loop {
            let started = Instant::now();
            // A look never outlasts the fence: the step-down below happens on time even when
            // the API server does not answer at all.
            let budget = self.fence.remaining().map_or(retry, |r| r.min(retry));
            match tokio::time::timeout(budget, self.look()).await {
                Ok(Ok(Look::Held)) => {
                    self.fence.hold_until(started + self.settings.renew_deadline());
                    if !*leading.borrow() {
                        tracing::info!(identity = %self.settings.identity, lease = %self.settings.name, "acquired the leader lease");
                        let _ = leading.send(true);
                    }
                }
                Ok(Ok(Look::HeldBy(holder))) => {
                    if *leading.borrow() {
                        tracing::warn!(%holder, "another replica holds the leader lease; stepping down");
                        self.step_down(leading);
                    }
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "could not renew or acquire the leader lease"),
                Err(_) => {
                    tracing::warn!(after = ?budget, "the API server did not answer about the leader lease")
                }
            }
            if *leading.borrow() && !self.fence.holds() {
                tracing::warn!(
                    deadline = ?self.settings.renew_deadline(),
                    "could not renew the leader lease in time; stepping down before it can expire"
                );
                self.step_down(leading);
            }
            let pause = self.fence.remaining().map_or(retry, |r| r.min(retry));
            tokio::time::sleep_until(started + pause).await;
        }
    }

    fn step_down(&mut self, leading: &watch::Sender<bool>) {
        self.fence.lapse();
        let _ = leading.send(false);
    }

    /// One look: create, renew or take over the Lease, or see who holds it.
    async fn look(&mut self) -> Result<Look, kube::Error> {
        let me = self.settings.identity.clone();
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.settings.name.clone()), ..ObjectMeta::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.settings.duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await);
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let first_seen = match &self.seen {
            Some((v, at)) if *v == version => *at,
            _ => {
                let at = Instant::now();
                self.seen = Some((version, at));
                at
            }
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let their_duration =
            Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0).unsigned_abs().into());
        if holder != me {
            if !holder.is_empty() && first_seen.elapsed() < their_duration {
                return Ok(Look::HeldBy(holder));
            }
            tracing::info!(previous = %holder, "taking over the leader lease");
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.settings.duration_seconds());
        // `replace` carries the resourceVersion read: of two processes writing, one gets a Conflict.
        self.write(self.api.replace(&self.settings.name, &PostParams::default(), &lease).await)
    }

    fn write(&mut self, result: Result<Lease, kube::Error>) -> Result<Look, kube::Error> {
        match result {
            Ok(lease) => {
                self.seen = lease.metadata.resource_version.map(|v| (v, Instant::now()));
                Ok(Look::Held)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Look::HeldBy("(a replica that wrote first)".into()))
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if this process holds it, so a standby takes over without waiting.
    async fn release(&mut self) {
        self.fence.lapse();
        let give_up = async {
            let mut lease = self
                .api
                .get_opt(&self.settings.name)
                .await?
                .ok_or_else(|| kube::Error::Service("the lease is gone".into()))?;
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
                return Ok(());
            }
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            self.api.replace(&self.settings.name, &PostParams::default(), &lease).await.map(|_| ())
        };
        match tokio::time::timeout(self.settings.retry_period(), give_up).await {
            Ok(Ok(())) => tracing::info!("released the leader lease"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not release the leader lease; a standby takes over when it expires")
            }
            Err(_) => tracing::warn!(
                "could not release the leader lease in time; a standby takes over when it expires"
            ),
        }
    }
}

/// The running election.
pub struct Campaign {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Campaign {
    /// Stops campaigning and gives the Lease up (if held).
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
