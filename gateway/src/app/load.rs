//! Load shedding, before anything else is done for a request: slots for the requests in
//! flight, and, lane by lane, how long ready work waits to run. Each lane's probe measures its
//! own runtime's queue, so a request is shed for the wait it would meet on the thread that
//! would serve it; lane 0's probe also hands freed heap back to the system after a burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::Request;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::edge::Guarded;
use super::gate::{Check, Pass, Verdict};

/// What the shedder reads: slots for requests in flight, and how long work waits to run.
#[derive(Debug)]
pub struct Load {
    pub slots: Arc<Semaphore>,
    max_in_flight: usize,
    /// One per lane, written by that lane's probe.
    waits: Box<[Wait]>,
    /// Shed while a lane's lag is above this; `None`: never for lag.
    budget: Option<Duration>,
}

/// One lane's readings.
#[derive(Debug, Default)]
struct Wait {
    /// How long the probe waited (microseconds), the lesser of its last two waits: its timer's
    /// lateness plus its wait for a turn behind the tasks ready before it, the queueing a new
    /// request meets before its first line of code runs.
    lag_us: AtomicU64,
    /// The probe's last wait alone.
    last_us: AtomicU64,
}

impl Load {
    pub fn new(max_in_flight: usize, queue_budget: Option<Duration>, lanes: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            waits: (0..lanes.max(1)).map(|_| Wait::default()).collect(),
            budget: queue_budget,
        }
    }

    /// Measures how long work waits to run on `lane` every 10 ms, for as long as the lane
    /// runs; on lane 0, once a burst is over, also hands the memory it left free back to the
    /// system. (Ticking every 100 ms at rest saved wake-ups but missed bursts shorter than a
    /// tick, which then were never followed by a trim.)
    pub async fn probe(self: Arc<Self>, lane: usize) {
        const EVERY: Duration = Duration::from_millis(10);
        let mut calm_since: Option<Instant> = None;
        let mut busy_since_trim = false;
        // Requests in flight at the last busy probe: calm keeps the count within 32 of it, so
        // a slow climb is load too.
        let mut settled_at = 0;
        loop {
            if lane == 0 {
                // Busy: requests arriving or ending by the dozen, or work waiting its turn on
                // any lane (a busy neighbour delays the probe too: with a 1 ms threshold,
                // before the timer's slack was left out, calm never came, and RSS stayed at 76
                // MB after a burst that a trim takes to 22). Many requests held open at a
                // steady count (a thousand streams) are calm: what opening them left free goes
                // back too.
                let in_flight = self.in_flight();
                if in_flight.abs_diff(settled_at) > 32 || self.behind() {
                    busy_since_trim = true;
                    calm_since = None;
                    settled_at = in_flight;
                } else {
                    calm_since.get_or_insert_with(Instant::now);
                }
                // A second of calm (few requests, punctual runtimes) after load: glibc keeps
                // freed heap in its arenas otherwise (RSS stayed at its overload peak for
                // minutes). Never during sustained load: a trim walks the whole heap.
                if busy_since_trim
                    && calm_since.is_some_and(|t| t.elapsed() >= Duration::from_secs(1))
                {
                    crate::support::heap::trim();
                    tracing::debug!(
                        target: "dsgw::edge",
                        "a second of calm after load: freed heap returned to the system"
                    );
                    busy_since_trim = false;
                }
            }
            let started = Instant::now();
            tokio::time::sleep(EVERY).await;
            // tokio's timers have a 1 ms tick: up to about 2 ms late on an idle runtime.
            let late = started.elapsed().saturating_sub(EVERY + TIMER_SLACK);
            self.observe(lane, (late + turn_wait().await).as_micros() as u64);
        }
    }

    fn in_flight(&self) -> usize {
        self.max_in_flight - self.slots.available_permits()
    }

    /// Work waits its turn on some lane.
    fn behind(&self) -> bool {
        self.waits
            .iter()
            .any(|w| w.lag_us.load(Ordering::Relaxed) >= 50_000)
    }

    /// Takes one probe's wait: only two waits in a row over the budget shed, so a lone stall (a
    /// page-fault burst, a first connection, a descheduled process) sheds nothing, and a
    /// runtime that stays behind sheds from its second probe, whose ticks are as slow as the
    /// wait (an average over ticks took seconds to react to waits of 400 ms).
    fn observe(&self, lane: usize, wait_us: u64) {
        let Some(w) = self.waits.get(lane) else {
            return;
        };
        let previous = w.last_us.swap(wait_us, Ordering::Relaxed);
        w.lag_us.store(previous.min(wait_us), Ordering::Relaxed);
    }

    fn overloaded(&self, lane: usize) -> bool {
        self.budget.is_some_and(|b| {
            self.waits
                .get(lane)
                .is_some_and(|w| w.lag_us.load(Ordering::Relaxed) > b.as_micros() as u64)
        })
    }
}

/// How late a timer fires on an idle runtime (its wheel ticks in milliseconds), not counted as
/// waiting.
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// How long a task ready now waits for its turn: a yielded task goes to the back of its
/// lane's queue, behind every connection that became ready before it. A timer alone misses
/// this queue: the runtime checks timers every few dozen polls however long the queue is.
async fn turn_wait() -> Duration {
    let asked = Instant::now();
    tokio::task::yield_now().await;
    asked.elapsed()
}

/// Sheds load: beyond `[server] max_in_flight` requests at once, or while work waits longer
/// than `queue_budget_ms` to run on this request's lane (two probes in a row), a new request is
/// answered 503 with `Retry-After` at once, before any key is checked or body read.
/// A request holds its slot until its response (a stream included) is done.
/// Sheds load before anything else is done for a request: a 503 with `Retry-After` when every
/// slot is taken or the lane it is on stays behind its queue budget.
#[derive(Clone, Debug)]
pub struct Shed(pub Arc<Load>);

/// A request's slot, held until its response body is done.
pub struct Slot(OwnedSemaphorePermit);

impl Pass for Slot {
    fn finish(self, response: Response) -> Response {
        response.map(|body| Body::new(Guarded::new(body, self.0)))
    }
}

impl Check for Shed {
    type Pass = Slot;

    fn check(&self, _: &mut Request<Body>) -> Verdict<Slot> {
        let lane = crate::support::lane::current();
        let why = match self.0.slots.clone().try_acquire_owned() {
            Ok(slot) if !self.0.overloaded(lane) => return Verdict::Pass(Slot(slot)),
            Ok(_) => {
                "The gateway is behind: work waits longer than its queue budget; retry shortly."
            }
            Err(_) => "The gateway is at its limit of requests in flight; retry shortly.",
        };
        let mut e = crate::wire::error::ApiError::unavailable(why);
        e.retry_after = Some(1);
        Verdict::Answer(axum::response::IntoResponse::into_response(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_lag(load: &Load, lane: usize, us: u64) {
        load.waits[lane].lag_us.store(us, Ordering::Relaxed);
    }

    #[test]
    fn a_lone_stall_sheds_nothing_and_a_runtime_that_stays_behind_does() {
        let load = Load::new(8, Some(Duration::from_millis(250)), 1);
        for calm_then_stall in [100, 3_000_000, 100, 100] {
            load.observe(0, calm_then_stall);
            assert!(!load.overloaded(0));
        }
        // Waits over the budget probe after probe: shed from the second...
        load.observe(0, 400_000);
        assert!(!load.overloaded(0));
        load.observe(0, 300_000);
        assert!(load.overloaded(0));
        load.observe(0, 500_000);
        assert!(load.overloaded(0));
        // ...and no longer from the first calm one.
        load.observe(0, 100);
        assert!(!load.overloaded(0));
    }

    #[tokio::test]
    async fn a_turn_waits_behind_every_task_ready_before_it() {
        assert!(turn_wait().await < Duration::from_millis(20));
        for _ in 0..3 {
            tokio::spawn(async { std::thread::sleep(Duration::from_millis(15)) });
        }
        assert!(turn_wait().await >= Duration::from_millis(45));
    }

    #[test]
    fn lag_sheds_only_with_a_budget_and_above_it() {
        let load = Load::new(4, Some(Duration::from_millis(10)), 1);
        set_lag(&load, 0, 9_000);
        assert!(!load.overloaded(0));
        set_lag(&load, 0, 11_000);
        assert!(load.overloaded(0));
        let unbudgeted = Load::new(4, None, 1);
        set_lag(&unbudgeted, 0, 10_000_000);
        assert!(!unbudgeted.overloaded(0));
    }

    #[test]
    fn a_lane_behind_sheds_its_own_requests_and_keeps_the_heap_untrimmed() {
        let load = Load::new(64, Some(Duration::from_millis(10)), 2);
        assert!(!load.behind());
        load.observe(1, 60_000);
        load.observe(1, 70_000);
        assert!(load.overloaded(1));
        assert!(!load.overloaded(0), "lane 0's queue is short");
        assert!(load.behind(), "a burst on any lane defers the trim");
        // A lane that does not exist reads as calm and takes no readings.
        load.observe(7, 1_000_000);
        assert!(!load.overloaded(7));
    }

    #[test]
    fn requests_in_flight_are_counted_while_they_hold_their_slots() {
        let load = Load::new(64, None, 1);
        let held = load.slots.clone().try_acquire_many_owned(33).unwrap();
        assert_eq!(load.in_flight(), 33);
        drop(held);
        assert_eq!(load.in_flight(), 0);
    }
}
