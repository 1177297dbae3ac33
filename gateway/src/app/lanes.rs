//! The lanes: the threads that serve client connections, one per CPU by default (`[server]
//! workers`), each on a current-thread runtime of its own. The acceptor hands every new
//! connection to the lane with the fewest open (the first on a tie, so a quiet gateway keeps
//! its work and its warm upstream connections on one thread); that connection and all its
//! requests start (the upstream connection's task, their timers, the Redis write after a
//! settlement) then run on that one thread. On a work-stealing runtime a request's tasks woke
//! one another across the workers: 3.2 context switches a request on two workers against 1.6
//! on one, and about a third more CPU (docs/benchmarks.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use super::edge::{self, App, EdgeLimits};
use super::load::Load;

/// The running lanes, and how many connections each has open.
pub struct Lanes {
    doors: Vec<mpsc::UnboundedSender<Arrival>>,
    open: Arc<[AtomicUsize]>,
    threads: Vec<JoinHandle<()>>,
}

/// A connection accepted and admitted under the connection cap, on its way to a lane.
struct Arrival {
    tcp: std::net::TcpStream,
    permit: OwnedSemaphorePermit,
    graceful: Watcher,
}

/// One connection of a lane's count, until it ends however it ends.
struct Open(Arc<[AtomicUsize]>, usize);

impl Drop for Open {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

impl Lanes {
    /// Starts the lanes (`support::lane::count()`, the number the upstream pools and the
    /// probe's readings were sized by) serving `app`; each also runs its queue probe for `load`.
    pub fn start(app: impl App, limits: EdgeLimits, load: &Arc<Load>) -> std::io::Result<Self> {
        let open: Arc<[AtomicUsize]> = (0..crate::support::lane::count())
            .map(|_| AtomicUsize::new(0))
            .collect();
        let mut lanes = Self {
            doors: Vec::with_capacity(open.len()),
            open: open.clone(),
            threads: Vec::with_capacity(open.len()),
        };
        for lane in 0..open.len() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (door, arrivals) = mpsc::unbounded_channel();
            let (app, load, open) = (app.clone(), load.clone(), open.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dsgw-lane-{lane}"))
                .spawn(move || {
                    crate::support::lane::enter(lane);
                    runtime.block_on(run(lane, arrivals, app, limits, load, open));
                })?;
            lanes.doors.push(door);
            lanes.threads.push(thread);
        }
        Ok(lanes)
    }

    /// Hands `tcp` to the lane with the fewest connections open.
    pub fn hand(&self, tcp: TcpStream, permit: OwnedSemaphorePermit, graceful: Watcher) {
        // Off this runtime's reactor, onto the lane's.
        let tcp = match tcp.into_std() {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand a connection to a lane");
                return;
            }
        };
        let lane = quietest(&self.open);
        self.open[lane].fetch_add(1, Ordering::Relaxed);
        let arrival = Arrival {
            tcp,
            permit,
            graceful,
        };
        if self.doors[lane].send(arrival).is_err() {
            // Only a lane whose thread died refuses: the connection closes as it drops.
            self.open[lane].fetch_sub(1, Ordering::Relaxed);
            tracing::error!(lane, "a lane is gone; connection closed");
        }
    }

    /// Stops every lane: a connection still open is dropped with its lane's runtime.
    pub fn stop(self) {
        drop(self.doors);
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// A lane's life: its probe, and every connection handed to it, until the doors close.
async fn run(
    lane: usize,
    mut arrivals: mpsc::UnboundedReceiver<Arrival>,
    app: impl App,
    limits: EdgeLimits,
    load: Arc<Load>,
    open: Arc<[AtomicUsize]>,
) {
    let probe = tokio::spawn(load.probe(lane));
    while let Some(arrival) = arrivals.recv().await {
        let counted = Open(open.clone(), lane);
        match TcpStream::from_std(arrival.tcp) {
            Ok(tcp) => {
                let app = app.clone();
                tokio::spawn(async move {
                    edge::serve_connection(tcp, app, limits, arrival.graceful, arrival.permit)
                        .await;
                    drop(counted);
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot register a connection with its lane"),
        }
    }
    probe.abort();
}

/// The lane with the fewest open connections, the first of those tied.
fn quietest(open: &[AtomicUsize]) -> usize {
    open.iter()
        .enumerate()
        .min_by_key(|(_, n)| n.load(Ordering::Relaxed))
        .map_or(0, |(lane, _)| lane)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_goes_to_the_quietest_lane_and_the_first_of_a_tie() {
        let open: Vec<AtomicUsize> = [3, 1, 1, 2].into_iter().map(AtomicUsize::new).collect();
        assert_eq!(quietest(&open), 1);
        open[1].store(5, Ordering::Relaxed);
        assert_eq!(quietest(&open), 2);
        let idle: Vec<AtomicUsize> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        assert_eq!(quietest(&idle), 0, "a quiet gateway stays on one lane");
    }
}
