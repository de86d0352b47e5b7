//! The scenarios at small sizes against a real nats-server and the real orchestrator and `test`
//! worker processes: figures come out, every workflow is accounted for, replicas are separate
//! processes, and a run whose work does not complete refuses to report. Speed is the
//! benchmark's business (`make bench`), not these tests'.
//!
//! The engine binaries are taken from the workspace's `target/debug` (build them first:
//! `cargo build -p switchyard-orchestrator -p switchyard-test-worker`), or from the directory
//! in `SWITCHYARD_BENCH_BIN_DIR`; one older than the sources it is built from is refused.

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
    let built = modified(&path);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for source in SOURCES {
        let newest = newest_file(&root.join(source));
        assert!(
            built >= newest,
            "{} is older than {source}: rebuild it (cargo build -p {name})",
            path.display()
        );
    }
    path
}

/// What the engine binaries are built from (their own crates and what they share).
const SOURCES: [&str; 8] = [
    "workers/orchestrator/src",
    "test-worker/src",
    "runtime/src",
    "proto/src",
    "workflow/src",
    "catalog/src",
    "catalog/operations",
    "bus-config/src",
];

fn modified(path: &std::path::Path) -> std::time::SystemTime {
    path.metadata()
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The latest modification time of any file under `dir`.
fn newest_file(dir: &std::path::Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        let t = if path.is_dir() {
            newest_file(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(t);
    }
    newest
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
    assert!(
        m.publish_per_s > 0.0 && m.publish_per_s.is_finite(),
        "{m:?}"
    );
    assert!(
        m.consume_ack_per_s > 0.0 && m.consume_ack_per_s.is_finite(),
        "{m:?}"
    );
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
    // Three jobs and four transitions each take some time; how much is the benchmark's.
    assert!(
        paced.latency.p50_ms > 0.0 && paced.latency.p50_ms <= paced.latency.max_ms,
        "{paced:?}"
    );
    assert_eq!(paced.target_rate_per_s, Some(200.0));

    let open = engine.run("e2e", Chain::OneStep, 500, None).await.unwrap();
    assert_eq!((open.accepted, open.completed), (500, 500));
    assert_eq!(open.target_rate_per_s, None);
    assert!(open.completed_per_s > 0.0 && open.accepted_per_s >= open.completed_per_s * 0.5);
}

#[tokio::test]
async fn scale_runs_every_workflow_with_each_replica_count() {
    let bins = Bins::new();
    // 50 ms jobs, 2 at once per replica: 40 workflows/s per replica at best.
    let runs = workflows::scale(bins.binaries(), Chain::Sleep(50), &[1, 2], 2, 40)
        .await
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[0].replicas, runs[0].completed), (1, 40));
    assert_eq!((runs[1].replicas, runs[1].completed), (2, 80));
    // Whether the second replica adds capacity is measured by `make bench`, not asserted here.
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
