//! The settle phase: the one place a request ends. A [`Ticket`] holds the request's completion
//! record and its limit reservation from admission on; settling it reconciles the reservation
//! with what was used and writes the record, exactly once, however the request ended. A ticket
//! dropped unsettled (the client went away mid-stream) settles as a disconnect.

use crate::accounting::settlement::{Outcome, Settlement};
use crate::pipeline::admission::limits::Reservation;
use crate::support::redis_link::AfterWrites;

#[derive(Debug)]
pub struct Ticket {
    record: Option<Settlement>,
    reservation: Option<Reservation>,
}

impl Ticket {
    pub fn new(record: Settlement) -> Self {
        Self {
            record: Some(record),
            reservation: None,
        }
    }

    /// The record being filled in.
    pub fn record(&mut self) -> &mut Settlement {
        self.record
            .as_mut()
            .expect("a ticket is settled only when it is consumed or dropped")
    }

    /// Holds the request's limit reservation until it settles.
    pub fn hold(&mut self, reservation: Reservation) {
        self.reservation = Some(reservation);
    }

    pub fn settle(mut self, outcome: Outcome) {
        self.close(outcome);
    }

    fn close(&mut self, outcome: Outcome) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.upstream_finished();
        let usage = record.final_usage(outcome);
        // The reservation's return and the record's shared spend leave in one round trip (per
        // Redis slot) when `writes` is dropped, at the end of this function.
        let mut writes = AfterWrites::default();
        if let Some(reservation) = self.reservation.take() {
            // A request refused before any byte used nothing; otherwise the provider's count
            // reconciles the estimate (kept as is when the provider never said).
            let used = match outcome {
                Outcome::Failed(..) => Some((0, 0)),
                _ => usage.map(|u| (u.prompt(), u.output)),
            };
            reservation.settle(used, &mut writes);
        }
        record.write(outcome, &mut writes);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.close(Outcome::ClientDisconnected);
    }
}
