//! Where spend is kept: the record type ([`record`]), this replica's append-only ledger
//! ([`ledger`]) and, with Redis, the counters every replica shares ([`shared`]).

pub mod ledger;
pub mod record;
pub mod shared;
