//! Benchmarks of Switchyard against the bus's own limit. Every scenario starts its own
//! nats-server (from the test-support crate) so runs do not disturb, or depend on, anything
//! else on the machine, and every scenario checks that all the work it sent was done.

pub mod cards;
pub mod gateway;
pub mod worker_loop;
pub mod workflows;
