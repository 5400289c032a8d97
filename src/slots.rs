//! Work slots: the operator's `--concurrency` bound on tenant cycles doing work at once. A cycle
//! that waits on Microsoft (a `Retry-After`, an operation's polling interval) gives its slot up
//! for the wait and takes one again, in turn behind the cycles already waiting, before it goes
//! on. A tenant held throttled then costs the others only the time its requests take, not the
//! seconds it is told to wait: with 100 tenants on 4 slots, a throttled cycle sleeping in its
//! slot for 10 s pushed every tenant behind it back by seconds.
//!
//! Code that waits calls [`sleep_until`]; outside [`Slots::run`] (the command-line tools, tests
//! that call a cycle directly) it simply sleeps.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// A fixed number of work slots, taken first come, first served.
#[derive(Clone)]
pub struct Slots(Arc<Semaphore>);

/// How one run used its slot.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlotUse {
    /// Waiting for a slot: before it started, and after each wait on Microsoft.
    pub waited: Duration,
    /// Holding one.
    pub held: Duration,
}

/// The slot of the run this task is in.
struct Held {
    slots: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
    /// Since when the permit is held.
    since: Instant,
    /// The run's waits on Microsoft going on now (a cycle's requests run a few at a time).
    sleeping: usize,
    used: SlotUse,
}

impl Held {
    /// Gives the slot back (if held), counting the time it was held.
    fn release(&mut self) {
        if self.permit.take().is_some() {
            self.used.held += self.since.elapsed();
        }
    }
}

tokio::task_local! {
    static SLOT: RefCell<Held>;
}

impl Slots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Slots {
        Slots(Arc::new(Semaphore::new(n.max(1))))
    }

    /// Runs `work` in a slot: waits for one, holds it while `work` runs except while it waits
    /// in [`sleep_until`], and says how long it waited and held.
    pub async fn run<F: Future>(&self, work: F) -> (F::Output, SlotUse) {
        let asked = Instant::now();
        let permit = acquire(&self.0).await;
        let since = Instant::now();
        let used = SlotUse { waited: since - asked, held: Duration::ZERO };
        let held = Held { slots: self.0.clone(), permit: Some(permit), since, sleeping: 0, used };
        SLOT.scope(RefCell::new(held), async move {
            let out = work.await;
            let used = SLOT.with(|h| {
                let mut h = h.borrow_mut();
                h.release();
                h.used
            });
            (out, used)
        })
        .await
    }

    /// Slots free now.
    #[cfg(test)]
    fn free(&self) -> usize {
        self.0.available_permits()
    }
}

/// Sleeps until `deadline`; in a run of [`Slots::run`], without its slot. The last of the run's
/// waits to end takes a slot again before returning (the others of the run go on meanwhile: the
/// bound is on cycles, and a cycle's other requests are its own).
pub async fn sleep_until(deadline: Instant) {
    let released = SLOT.try_with(|h| {
        let mut h = h.borrow_mut();
        h.sleeping += 1;
        h.release();
        h.slots.clone()
    });
    tokio::time::sleep_until(deadline).await;
    let Ok(slots) = released else { return };
    let last = SLOT.with(|h| {
        let mut h = h.borrow_mut();
        h.sleeping -= 1;
        h.sleeping == 0 && h.permit.is_none()
    });
    if !last {
        return;
    }
    let asked = Instant::now();
    let permit = acquire(&slots).await;
    SLOT.with(|h| {
        let mut h = h.borrow_mut();
        let now = Instant::now();
        h.used.waited += now - asked;
        // Another wait may have begun while this one queued for the slot: it holds none then.
        if h.sleeping == 0 && h.permit.is_none() {
            h.permit = Some(permit);
            h.since = now;
        }
    });
}

/// Sleeps for `wait` (see [`sleep_until`]).
pub async fn sleep(wait: Duration) {
    sleep_until(Instant::now() + wait).await;
}

async fn acquire(slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    // The semaphore is never closed: it lives as long as any holder of it.
    slots.clone().acquire_owned().await.expect("work slots are never closed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::mpsc;
    use tokio::task::JoinHandle;

    type Log = mpsc::UnboundedSender<&'static str>;

    /// Runs `work` in a slot of `slots` on a task of its own.
    fn spawn_run(slots: &Slots, work: impl Future<Output = ()> + Send + 'static) -> JoinHandle<SlotUse> {
        let slots = slots.clone();
        tokio::spawn(async move { slots.run(work).await.1 })
    }

    /// The events after `seen`, once every sender is gone, in the order they happened (a paused
    /// clock: every wait is exact and instant).
    async fn events(
        mut rx: mpsc::UnboundedReceiver<&'static str>,
        mut seen: Vec<&'static str>,
    ) -> Vec<&'static str> {
        while let Some(e) = rx.recv().await {
            seen.push(e);
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_waiting_on_microsoft_lets_another_run_work() {
        let slots = Slots::new(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let log: Log = tx.clone();
        let throttled = spawn_run(&slots, async move {
            log.send("throttled starts").unwrap();
            sleep(Duration::from_secs(10)).await;
            log.send("throttled goes on").unwrap();
        });
        // The throttled run has the slot and is in its wait (it sends, then waits, in one poll).
        assert_eq!(rx.recv().await, Some("throttled starts"));
        let log: Log = tx;
        let healthy = spawn_run(&slots, async move { log.send("healthy works").unwrap() });
        let healthy = healthy.await.unwrap();
        let throttled = throttled.await.unwrap();
        let order = events(rx, vec!["throttled starts"]).await;
        assert_eq!(order, ["throttled starts", "healthy works", "throttled goes on"]);
        assert!(
            healthy.waited < Duration::from_secs(1),
            "the healthy run did not wait out the 10 s: {healthy:?}"
        );
        assert!(throttled.held < Duration::from_secs(1), "the wait was not counted as held: {throttled:?}");
        assert_eq!(slots.free(), 1, "every slot is back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_takes_a_slot_again_in_turn_after_its_wait() {
        let slots = Slots::new(1);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let log: Log = tx.clone();
        let first = spawn_run(&slots, async move {
            log.send("first waits").unwrap();
            sleep(Duration::from_secs(1)).await;
            log.send("first after its wait").unwrap();
        });
        assert_eq!(rx.recv().await, Some("first waits"));
        // A run that works (without waiting on Microsoft) for 5 s once it has the slot.
        let log: Log = tx;
        let busy = spawn_run(&slots, async move {
            log.send("busy starts").unwrap();
            // Work that keeps its slot: a plain sleep, not the slot-giving one.
            tokio::time::sleep(Duration::from_secs(5)).await;
            log.send("busy ends").unwrap();
        });
        let first_use = first.await.unwrap();
        busy.await.unwrap();
        let order = events(rx, Vec::new()).await;
        assert_eq!(order, ["busy starts", "busy ends", "first after its wait"], "no second slot is made up");
        assert!(first_use.waited >= Duration::from_secs(3), "it waited for the busy run: {first_use:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_waits_of_one_run_take_one_slot_again() {
        let slots = Slots::new(2);
        let (_, used) = slots
            .run(async {
                let waits = (1..=3).map(|s| sleep(Duration::from_secs(s)));
                futures::future::join_all(waits).await;
                assert_eq!(slots.free(), 1, "the run holds exactly one slot again");
            })
            .await;
        assert_eq!(slots.free(), 2);
        assert!(used.held < Duration::from_secs(1), "{used:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn outside_a_run_it_only_sleeps() {
        let start = Instant::now();
        sleep(Duration::from_secs(2)).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(2));
    }
}
