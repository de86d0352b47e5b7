//! Benchmarks of Switchyard against the bus's own limit and against Celery. Every scenario
//! starts its own nats-server (from the test-support crate) so runs do not disturb, or depend
//! on, anything else on the machine, and every scenario checks that all the work it sent was
//! done: one that loses work refuses to report a figure ([`report::Error::LostWork`]). It must
//! not become a test harness: nothing here asserts product behaviour, it only measures.

pub mod cards;
pub mod celery;
pub mod cli;
pub mod gateway;
pub mod ledger;
pub mod mcp;
pub mod python_worker;
pub mod raw;
pub mod report;
pub mod suite;
pub mod worker_loop;
pub mod workflows;
