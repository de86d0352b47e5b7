//! The scenarios at small sizes against a real nats-server and the real orchestrator and `test`
//! worker processes: figures come out, every workflow is accounted for, replicas are separate
//! processes that add capacity, and a run whose work does not complete refuses to report.
//!
//! The engine binaries are taken from the workspace's `target/debug` (build them first:
//! `cargo build -p switchyard-orchestrator -p switchyard-test-worker`), or from the directory
//! in `SWITCHYARD_BENCH_BIN_DIR`.

use std::{path::PathBuf, time::Duration};

use switchyard_loadtest::{
    raw, report,
    workflows::{self, Binaries, Chain, Engine, Setup},
};

fn bin(name: &str) -> PathBuf {
    let dir = std::env::var_os("SWITCHYARD_BENCH_BIN_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug"),
        PathBuf::from,
    );
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is missing; build it first: cargo build -p {name}",
        path.display()
    );
    path
}

struct Bins {
    orchestrator: PathBuf,
    worker: PathBuf,
}

impl Bins {
    fn new() -> Bins {
        Bins {
            orchestrator: bin("switchyard-orchestrator"),
            worker: bin("switchyard-test-worker"),
        }
    }

    fn binaries(&self) -> Binaries<'_> {
        Binaries {
            orchestrator: &self.orchestrator,
            worker: &self.worker,
        }
    }
}

#[tokio::test]
async fn raw_publishes_and_consumes_every_message() {
    let m = raw::run(3000, false).await.unwrap();
    assert_eq!(m.messages, 3000);
    assert!(
        m.message_bytes > 20,
        "a start-sized message: {}",
        m.message_bytes
    );
    assert!(m.publish_per_s > 100.0, "{m:?}");
    assert!(m.consume_ack_per_s > 100.0, "{m:?}");
}

#[tokio::test]
async fn e2e_waits_for_every_workflow_and_times_each_one() {
    let bins = Bins::new();
    let engine = Engine::start(
        bins.binaries(),
        Setup::default(),
        &[Chain::OneStep, Chain::ThreeSteps],
    )
    .await
    .unwrap();

    let paced = engine
        .run("e2e", Chain::ThreeSteps, 60, Some(200.0))
        .await
        .unwrap();
    assert_eq!((paced.accepted, paced.completed), (60, 60));
    assert_eq!(paced.steps, 3);
    assert_eq!(paced.latency.count, 60);
    assert_eq!(paced.samples.len(), 60);
    assert!(paced.samples.windows(2).all(|w| w[0] <= w[1]), "sorted");
    // Three jobs and four transitions each: not instantaneous, and not stuck.
    assert!(
        paced.latency.p50_ms > 0.1 && paced.latency.max_ms < 10_000.0,
        "{paced:?}"
    );
    // 60 starts at 200/s take about 0.3 s, so the throughput is the paced rate, not more.
    assert!(paced.completed_per_s < 260.0, "{paced:?}");

    let open = engine.run("e2e", Chain::OneStep, 500, None).await.unwrap();
    assert_eq!((open.accepted, open.completed), (500, 500));
    assert_eq!(open.target_rate_per_s, None);
    assert!(open.completed_per_s > 0.0 && open.accepted_per_s >= open.completed_per_s * 0.5);
}

#[tokio::test]
async fn scale_adds_capacity_with_each_replica_process() {
    let bins = Bins::new();
    // 50 ms jobs, 2 at once per replica: 40 workflows/s per replica at best.
    let runs = workflows::scale(bins.binaries(), Chain::Sleep(50), &[1, 2], 2, 40)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].replicas, runs[0].completed), (1, 40));
    assert_eq!((runs[1].replicas, runs[1].completed), (2, 80));
    assert!(
        runs[0].completed_per_s < 42.0,
        "one replica cannot beat its concurrency / job time: {:?}",
        runs[0]
    );
    assert!(
        runs[1].completed_per_s > runs[0].completed_per_s * 1.4,
        "two replicas: {:.1}/s, one: {:.1}/s",
        runs[1].completed_per_s,
        runs[0].completed_per_s
    );
}

#[tokio::test]
async fn a_run_whose_workflows_do_not_complete_refuses_to_report() {
    let bins = Bins::new();
    // No worker replica: the jobs wait on JOBS_TEST and no workflow completes.
    let setup = Setup {
        replicas: 0,
        stall_timeout: Duration::from_secs(3),
        ..Setup::default()
    };
    let engine = Engine::start(bins.binaries(), setup, &[Chain::OneStep])
        .await
        .unwrap();
    let err = engine
        .run("e2e", Chain::OneStep, 20, None)
        .await
        .expect_err("no figure without completions");
    let lost = err
        .downcast_ref::<report::Error>()
        .expect("a lost-work error");
    assert!(
        matches!(
            lost,
            report::Error::LostWork {
                accepted: 20,
                completed: 0,
                ..
            }
        ),
        "{lost}"
    );
    assert!(err.to_string().contains("refusing to report"), "{err}");
}
