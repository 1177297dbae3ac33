//! Which lane the code runs on. A lane is a thread that serves client connections on a runtime
//! of its own (`app::lanes`): a request's tasks (its connection, the upstream connection, their
//! timers) then wake one another on one thread, with no hand-off between workers. What keeps
//! per-thread state on the request path (the upstream connection pools, the queue probe's
//! readings) is sized by [`count`] and indexed by [`current`].

use std::cell::Cell;
use std::sync::OnceLock;

static COUNT: OnceLock<usize> = OnceLock::new();

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// Fixes the number of lanes, once, before anything sized by it is built; later calls change
/// nothing (the pools already built keep their count).
pub fn set_count(lanes: usize) {
    let _ = COUNT.set(lanes.max(1));
}

/// The number of lanes: 1 until [`set_count`].
pub fn count() -> usize {
    COUNT.get().copied().unwrap_or(1)
}

/// The lane this thread serves: 0 on any thread that is not a lane (a test's runtime, the
/// runtime that accepts connections), which therefore shares lane 0's state.
pub fn current() -> usize {
    CURRENT.with(Cell::get)
}

/// Marks the calling thread as lane `lane`'s, for the rest of its life.
pub fn enter(lane: usize) {
    CURRENT.with(|c| c.set(lane));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_lane_zero_until_it_enters_one_and_keeps_it_to_itself() {
        assert_eq!(current(), 0);
        let other = std::thread::spawn(|| {
            enter(3);
            current()
        });
        assert_eq!(other.join().unwrap(), 3);
        assert_eq!(current(), 0);
    }
}
