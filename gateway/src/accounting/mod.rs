//! Counting and pricing what a request used, and keeping the record: the one usage record
//! ([`usage`]) and the gateway's own count when a provider gives none ([`estimate`]), prices
//! ([`pricing`]), the completion record ([`settlement`]), the spend it feeds ([`spend`]) and
//! the Prometheus metrics ([`metrics`]).

pub mod estimate;
pub mod metrics;
pub mod pricing;
pub mod settlement;
pub mod spend;
pub mod usage;
