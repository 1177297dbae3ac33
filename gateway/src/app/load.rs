//! Load shedding, before anything else is done for a request: slots for the requests in
//! flight, and, lane by lane, how long ready work waits to run. Each lane's probe measures its
//! own runtime's queue, so a request is shed for the wait it would meet on the thread that
//! would serve it; lane 0's probe also hands freed heap back to the system after a burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use http::Request;
use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts};
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
    /// Shed while a lane's waits stay above this; `None`: never for waiting.
    budget: Option<Duration>,
    /// What the readings' times are counted from.
    epoch: Instant,
    exported: Exported,
}

/// What an operator sees of the shedder: its refusals counted as they happen, its readings
/// set at each scrape.
#[derive(Debug)]
struct Exported {
    /// Indexed by `Why`.
    shed: [IntCounter; 2],
    shed_vec: IntCounterVec,
    in_flight: IntGauge,
    lane_wait: GaugeVec,
}

/// Why a request was shed: the `reason` label's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    InFlight = 0,
    Behind = 1,
}

impl Why {
    const ALL: [Why; 2] = [Why::InFlight, Why::Behind];

    fn label(self) -> &'static str {
        match self {
            Why::InFlight => "in_flight",
            Why::Behind => "queue_budget",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Why::InFlight => "The gateway is at its limit of requests in flight; retry shortly.",
            Why::Behind => {
                "The gateway is behind: work waits longer than its queue budget; retry shortly."
            }
        }
    }
}

impl Exported {
    fn new() -> Self {
        let shed_vec = IntCounterVec::new(
            Opts::new(
                "dsgw_shed_total",
                "Requests answered 503 before any other work: reason is in_flight (max_in_flight reached) or queue_budget (work on the request's lane has waited longer than queue_budget_ms for 100 ms).",
            ),
            &["reason"],
        )
        .expect("metric");
        Self {
            shed: Why::ALL.map(|why| shed_vec.with_label_values(&[why.label()])),
            shed_vec,
            in_flight: IntGauge::new(
                "dsgw_requests_in_flight",
                "Requests holding a slot now (a stream until it ends), of max_in_flight.",
            )
            .expect("metric"),
            lane_wait: GaugeVec::new(
                Opts::new(
                    "dsgw_lane_wait_seconds",
                    "How long ready work waits to run on each lane: the lesser of the queue probe's last two readings (one every 10 ms at rest, each compared with queue_budget_ms).",
                ),
                &["lane"],
            )
            .expect("metric"),
        }
    }
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
    /// Since when (microseconds after `Load::epoch`, plus one: 0 is never) every wait has been
    /// over the budget.
    over_since_us: AtomicU64,
    /// Whether they have been for `STANDING` or longer: the door sheds while this holds.
    shedding: AtomicBool,
}

/// How long waits must stay over the budget before the door sheds: a queue that a burst
/// built drains within it (600 requests at once are ~36 ms of work for a release build), one
/// that stands is overload. CoDel's interval, for the same reason. Two readings in a row (20
/// ms at rest), the rule before, would shed the tail of such a burst at a budget low enough to
/// keep served requests fast.
const STANDING: Duration = Duration::from_millis(100);

impl Load {
    pub fn new(max_in_flight: usize, queue_budget: Option<Duration>, lanes: usize) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            waits: (0..lanes.max(1)).map(|_| Wait::default()).collect(),
            budget: queue_budget,
            epoch: Instant::now(),
            exported: Exported::new(),
        }
    }

    /// The shedder's series, for the registry that renders `/metrics`.
    pub fn collectors(&self) -> [Box<dyn Collector>; 3] {
        let e = &self.exported;
        [
            Box::new(e.shed_vec.clone()),
            Box::new(e.in_flight.clone()),
            Box::new(e.lane_wait.clone()),
        ]
    }

    /// Sets the gauges to the readings now (at a scrape).
    pub fn export(&self) {
        let e = &self.exported;
        e.in_flight.set(self.in_flight() as i64);
        for (lane, w) in self.waits.iter().enumerate() {
            let seconds = w.lag_us.load(Ordering::Relaxed) as f64 / 1e6;
            e.lane_wait
                .with_label_values(&[lane.to_string()])
                .set(seconds);
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
            let waited = late + turn_wait().await;
            self.observe(lane, waited.as_micros() as u64, Instant::now());
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

    /// Takes one probe's wait, read at `at`: the door sheds once every wait for `STANDING`
    /// has been over the budget, so a lone stall (a page-fault burst, a first connection, a
    /// descheduled process) or a burst's queue sheds nothing, and a runtime that stays behind
    /// sheds until a wait is under the budget again. (An average over ticks took seconds to
    /// react to waits of 400 ms: each tick lasts as long as the wait.)
    fn observe(&self, lane: usize, wait_us: u64, at: Instant) {
        let Some(w) = self.waits.get(lane) else {
            return;
        };
        let previous = w.last_us.swap(wait_us, Ordering::Relaxed);
        w.lag_us.store(previous.min(wait_us), Ordering::Relaxed);
        let Some(budget) = self.budget else {
            return;
        };
        // This lane's probe is the only writer of its readings.
        let now_us = at.saturating_duration_since(self.epoch).as_micros() as u64 + 1;
        let shedding = if wait_us > budget.as_micros() as u64 {
            let since = match w.over_since_us.load(Ordering::Relaxed) {
                0 => {
                    w.over_since_us.store(now_us, Ordering::Relaxed);
                    now_us
                }
                since => since,
            };
            now_us - since >= STANDING.as_micros() as u64
        } else {
            w.over_since_us.store(0, Ordering::Relaxed);
            false
        };
        w.shedding.store(shedding, Ordering::Relaxed);
    }

    fn overloaded(&self, lane: usize) -> bool {
        self.waits
            .get(lane)
            .is_some_and(|w| w.shedding.load(Ordering::Relaxed))
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

/// Sheds load: beyond `[server] max_in_flight` requests at once, or once work has waited
/// longer than `queue_budget_ms` to run on this request's lane for `STANDING`, a new request
/// is answered 503 with `Retry-After` at once, before any key is checked or body read.
/// A request holds its slot until its response (a stream included) is done.
#[derive(Clone, Debug)]
pub struct Shed(pub Arc<Load>);

/// A request's slot, held until its response body is done; none for the operator's probes.
pub struct Slot(Option<OwnedSemaphorePermit>);

impl Pass for Slot {
    fn finish(self, response: Response) -> Response {
        match self.0 {
            Some(slot) => response.map(|body| Body::new(Guarded::new(body, slot))),
            None => response,
        }
    }
}

/// What an operator and a load balancer read to see the overload: answered however busy the
/// gateway is (each is a few microseconds of work, or a render of the registry), and still
/// bounded by the connection cap.
fn never_shed(request: &Request<Body>) -> bool {
    request.method() == http::Method::GET
        && matches!(request.uri().path(), "/metrics" | "/healthz" | "/readyz")
}

impl Check for Shed {
    type Pass = Slot;

    fn check(&self, request: &mut Request<Body>) -> Verdict<Slot> {
        if never_shed(request) {
            return Verdict::Pass(Slot(None));
        }
        let lane = crate::support::lane::current();
        let why = match self.0.slots.clone().try_acquire_owned() {
            Ok(slot) if !self.0.overloaded(lane) => return Verdict::Pass(Slot(Some(slot))),
            Ok(_) => Why::Behind,
            Err(_) => Why::InFlight,
        };
        self.0.exported.shed[why as usize].inc();
        let mut e = crate::wire::error::ApiError::unavailable(why.message());
        e.retry_after = Some(1);
        Verdict::Answer(axum::response::IntoResponse::into_response(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `load`'s lane waits (microseconds) at the given milliseconds after its epoch;
    /// whether each reading leaves the door shedding.
    fn feed(load: &Load, lane: usize, readings: &[(u64, u64)]) -> Vec<bool> {
        readings
            .iter()
            .map(|&(at_ms, wait_us)| {
                load.observe(lane, wait_us, load.epoch + Duration::from_millis(at_ms));
                load.overloaded(lane)
            })
            .collect()
    }

    #[test]
    fn a_lone_stall_sheds_nothing_and_a_runtime_that_stays_behind_does() {
        let load = Load::new(8, Some(Duration::from_millis(10)), 1);
        // A stall of 3 s between calm readings.
        assert_eq!(
            feed(&load, 0, &[(0, 100), (3010, 3_000_000), (3020, 100)]),
            [false, false, false]
        );
        // Waits over the budget reading after reading: shed once they have lasted 100 ms...
        let behind: Vec<_> = (0..8).map(|i| (4000 + i * 20, 30_000)).collect();
        assert_eq!(
            feed(&load, 0, &behind),
            [false, false, false, false, false, true, true, true]
        );
        // ...and no longer from the first one under it.
        assert_eq!(
            feed(&load, 0, &[(4200, 9_000), (4210, 30_000)]),
            [false, false]
        );
    }

    #[test]
    fn a_bursts_queue_that_drains_within_the_interval_sheds_nothing() {
        let load = Load::new(8, Some(Duration::from_millis(10)), 1);
        // 600 requests at once: waits of 40 ms, then 25, then the queue is gone.
        assert_eq!(
            feed(
                &load,
                0,
                &[(0, 40_000), (50, 25_000), (85, 20_000), (95, 2_000)]
            ),
            [false, false, false, false]
        );
        // Slow readings (each as long as the wait) shed from the one 100 ms after the first.
        assert_eq!(
            feed(&load, 0, &[(200, 90_000), (290, 90_000), (380, 90_000)]),
            [false, false, true]
        );
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
    fn waits_shed_only_with_a_budget_and_above_it() {
        let standing =
            |wait_us| -> Vec<(u64, u64)> { (0..12).map(|i| (i * 10, wait_us)).collect() };
        let load = Load::new(4, Some(Duration::from_millis(10)), 1);
        assert!(!feed(&load, 0, &standing(10_000)).contains(&true));
        assert!(feed(&load, 0, &standing(10_001)).ends_with(&[true]));
        let unbudgeted = Load::new(4, None, 1);
        assert!(!feed(&unbudgeted, 0, &standing(10_000_000)).contains(&true));
    }

    #[test]
    fn a_lane_behind_sheds_its_own_requests_and_keeps_the_heap_untrimmed() {
        let load = Load::new(64, Some(Duration::from_millis(10)), 2);
        assert!(!load.behind());
        assert_eq!(
            feed(&load, 1, &[(0, 60_000), (70, 70_000), (140, 70_000)]),
            [false, false, true]
        );
        assert!(!load.overloaded(0), "lane 0's queue is short");
        assert!(load.behind(), "a burst on any lane defers the trim");
        // A lane that does not exist reads as calm and takes no readings.
        assert_eq!(
            feed(&load, 7, &[(0, 1_000_000), (500, 1_000_000)]),
            [false, false]
        );
    }

    #[test]
    fn the_door_counts_what_it_sheds_and_exports_its_readings() {
        let load = Shed(Arc::new(Load::new(1, Some(Duration::from_millis(10)), 1)));
        let chat = || {
            Request::post("/v1/chat/completions")
                .body(Body::empty())
                .unwrap()
        };
        let Verdict::Pass(held) = load.check(&mut chat()) else {
            panic!("the first request has a slot");
        };
        assert!(matches!(load.check(&mut chat()), Verdict::Answer(_)));
        // The operator's probes are answered however full the gateway is.
        for path in ["/metrics", "/healthz", "/readyz"] {
            let mut probe = Request::get(path).body(Body::empty()).unwrap();
            assert!(matches!(load.check(&mut probe), Verdict::Pass(_)), "{path}");
        }
        drop(held);
        feed(&load.0, 0, &[(0, 50_000), (200, 50_000)]);
        assert!(matches!(load.check(&mut chat()), Verdict::Answer(_)));
        load.0.export();
        let e = &load.0.exported;
        assert_eq!(
            (
                e.shed[Why::InFlight as usize].get(),
                e.shed[Why::Behind as usize].get()
            ),
            (1, 1)
        );
        assert_eq!(e.in_flight.get(), 0);
        assert_eq!(e.lane_wait.with_label_values(&["0"]).get(), 0.05);
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
