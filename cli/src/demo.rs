//! The local demo: a direct caller that publishes test jobs onto `JOBS_TEST`, follows their
//! results on `wf.result.<instance>` and the dead letters on `dlq.test`, and reports each
//! case against what the worker loop promises.

use std::{collections::HashMap, fmt, time::Duration};

use anyhow::Context as _;
use async_nats::{HeaderMap, jetstream};
use futures::StreamExt as _;
use serde_json::{Value, json};
use switchyard_proto::{
    ContentType, DeadLetter, DeadLetterReason, Job, JobResult, JobStatus, RetryPolicy, decode,
    encode_proto, header, stream, subject,
};

const TENANT: &str = "demo";

/// What a case should end as.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    Succeeded {
        output: Option<Value>,
        attempts: u32,
    },
    Failed {
        dead_letter: DeadLetterReason,
    },
    /// Not a job at all: no result, one dead letter.
    DeadLetterOnly,
}

#[derive(Debug)]
struct Case {
    label: String,
    job_id: String,
    expect: Expect,
    result: Option<JobResult>,
    dead_letter: Option<DeadLetter>,
}

impl Case {
    fn settled(&self) -> bool {
        match self.expect {
            Expect::Succeeded { .. } => self.result.is_some(),
            Expect::Failed { .. } => self.result.is_some() && self.dead_letter.is_some(),
            Expect::DeadLetterOnly => self.dead_letter.is_some(),
        }
    }

    fn as_expected(&self) -> bool {
        match (&self.expect, &self.result, &self.dead_letter) {
            (Expect::Succeeded { output, attempts }, Some(r), None) => {
                r.status == JobStatus::Succeeded as i32
                    && r.attempts == *attempts
                    && output.as_ref().is_none_or(|o| {
                        serde_json::from_slice::<Value>(&r.output).ok().as_ref() == Some(o)
                    })
            }
            (Expect::Failed { dead_letter }, Some(r), Some(d)) => {
                r.status == JobStatus::Failed as i32 && d.reason == *dead_letter as i32
            }
            (Expect::DeadLetterOnly, None, Some(d)) => d.reason == DeadLetterReason::Decode as i32,
            _ => false,
        }
    }
}

/// What the demo saw.
#[derive(Debug)]
pub struct Report {
    instance: String,
    cases: Vec<Case>,
    elapsed: Duration,
}

impl Report {
    pub fn all_as_expected(&self) -> bool {
        self.cases.iter().all(Case::as_expected)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "demo instance {} ({} jobs):",
            self.instance,
            self.cases.len()
        )?;
        let mut echo_ok = 0;
        for case in &self.cases {
            if case.label.starts_with("echo #") && case.as_expected() {
                echo_ok += 1;
                continue;
            }
            let mark = if case.as_expected() { "ok  " } else { "FAIL" };
            let outcome = match (&case.result, &case.dead_letter) {
                (Some(r), dl) => {
                    let status = JobStatus::try_from(r.status)
                        .map(|s| s.as_str_name())
                        .unwrap_or("?");
                    let detail = match &r.error {
                        Some(e) => e.message.clone(),
                        None => String::from_utf8_lossy(&r.output).into_owned(),
                    };
                    let dl = dl
                        .as_ref()
                        .map(|d| format!(", dead-lettered ({})", reason(d)))
                        .unwrap_or_default();
                    format!(
                        "{} after {} attempt(s) on {}: {detail}{dl}",
                        status.trim_start_matches("JOB_STATUS_").to_lowercase(),
                        r.attempts,
                        r.worker_id
                    )
                }
                (None, Some(d)) => format!("dead-lettered ({}): {}", reason(d), d.error),
                (None, None) => "no outcome in time".into(),
            };
            writeln!(f, "  {mark} {:<34} {outcome}", case.label)?;
        }
        let echoes = self
            .cases
            .iter()
            .filter(|c| c.label.starts_with("echo #"))
            .count();
        writeln!(
            f,
            "  {}   {:<34} {echo_ok}/{echoes} returned their input",
            if echo_ok == echoes { "ok  " } else { "FAIL" },
            "echo jobs"
        )?;
        let mut by_worker: HashMap<&str, usize> = HashMap::new();
        for r in self.cases.iter().filter_map(|c| c.result.as_ref()) {
            *by_worker.entry(r.worker_id.as_str()).or_default() += 1;
        }
        let mut workers: Vec<_> = by_worker.into_iter().collect();
        workers.sort();
        writeln!(f, "results by replica: {workers:?}")?;
        let good = self.cases.iter().filter(|c| c.as_expected()).count();
        writeln!(
            f,
            "{good}/{} jobs ended as expected in {:.2}s",
            self.cases.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

fn reason(d: &DeadLetter) -> String {
    DeadLetterReason::try_from(d.reason)
        .map(|r| {
            r.as_str_name()
                .trim_start_matches("DEAD_LETTER_REASON_")
                .to_lowercase()
        })
        .unwrap_or_default()
}

fn job(instance: &str, step: &str, operation: &str, input: Value) -> Job {
    Job {
        job_id: format!("{instance}-{step}"),
        tenant: TENANT.into(),
        instance_id: instance.into(),
        step_id: step.into(),
        operation: operation.into(),
        input: serde_json::to_vec(&input).unwrap_or_default(),
        retry: Some(RetryPolicy {
            max_attempts: 4,
            initial_delay_ms: 200,
            max_delay_ms: 2_000,
            multiplier: 2.0,
        }),
        correlation_id: format!("demo-{step}"),
        created_at_ms: switchyard_proto::now_ms(),
        ..Job::default()
    }
}

async fn publish(
    js: &jetstream::Context,
    subject_name: String,
    msg_id: &str,
    payload: Vec<u8>,
) -> anyhow::Result<()> {
    let mut headers = HeaderMap::new();
    headers.insert(header::MSG_ID, msg_id);
    headers.insert(header::CORRELATION_ID, msg_id);
    js.publish_with_headers(subject_name, headers, payload.into())
        .await?
        .await
        .with_context(|| format!("publishing {msg_id}"))?;
    Ok(())
}

/// Runs the demo: `echoes` echo jobs plus one each of sleep, flaky, permanent failure and
/// malformed payload.
pub async fn run(
    client: &async_nats::Client,
    echoes: usize,
    timeout: Duration,
) -> anyhow::Result<Report> {
    let js = jetstream::new(client.clone());
    js.get_stream(stream::jobs("test")).await.map_err(|_| {
        anyhow::anyhow!(
            "stream {} is missing: run `switchyard bus apply` first",
            stream::jobs("test")
        )
    })?;
    let instance = format!("demo-{}", uuid::Uuid::now_v7().simple());
    let mut results = client.subscribe(subject::result(&instance)).await?;
    let mut letters = client.subscribe(subject::dlq("test")).await?;
    let started = std::time::Instant::now();

    let mut jobs = Vec::new();
    for i in 0..echoes {
        let input = json!({ "n": i, "text": format!("hello #{i}") });
        jobs.push((
            format!("echo #{i}"),
            job(&instance, &format!("echo-{i}"), "test.echo", input.clone()),
            Expect::Succeeded {
                output: Some(input),
                attempts: 1,
            },
        ));
    }
    jobs.push((
        "sleep 300ms".into(),
        job(&instance, "sleep", "test.sleep", json!({"ms": 300})),
        Expect::Succeeded {
            output: None,
            attempts: 1,
        },
    ));
    jobs.push((
        "flaky: fails twice, then succeeds".into(),
        job(
            &instance,
            "flaky",
            "test.fail",
            json!({"mode": "retryable", "times": 2}),
        ),
        Expect::Succeeded {
            output: Some(json!({"attempts": 3})),
            attempts: 3,
        },
    ));
    jobs.push((
        "permanent failure".into(),
        job(
            &instance,
            "broken",
            "test.fail",
            json!({"mode": "permanent"}),
        ),
        Expect::Failed {
            dead_letter: DeadLetterReason::Permanent,
        },
    ));

    let mut cases = Vec::new();
    for (label, job, expect) in jobs {
        publish(
            &js,
            subject::job(&job.operation),
            &job.job_id,
            encode_proto(&job),
        )
        .await?;
        cases.push(Case {
            label,
            job_id: job.job_id,
            expect,
            result: None,
            dead_letter: None,
        });
    }
    let garbage_id = format!("{instance}-garbage");
    let garbage = format!("not a job ({instance})").into_bytes();
    publish(&js, subject::job("test.echo"), &garbage_id, garbage.clone()).await?;
    cases.push(Case {
        label: "malformed payload".into(),
        job_id: garbage_id,
        expect: Expect::DeadLetterOnly,
        result: None,
        dead_letter: None,
    });

    let deadline = tokio::time::Instant::now() + timeout;
    while !cases.iter().all(Case::settled) {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            Some(msg) = results.next() => {
                let result: JobResult = decode(ContentType::Protobuf, &msg.payload)?;
                if let Some(case) = cases.iter_mut().find(|c| c.job_id == result.job_id) {
                    case.result = Some(result);
                }
            }
            Some(msg) = letters.next() => {
                let letter: DeadLetter = decode(ContentType::Protobuf, &msg.payload)?;
                let case = if letter.payload == garbage {
                    cases.iter_mut().find(|c| c.expect == Expect::DeadLetterOnly)
                } else {
                    cases.iter_mut().find(|c| c.job_id == letter.job_id)
                };
                if let Some(case) = case {
                    case.dead_letter = Some(letter);
                }
            }
        }
    }
    let elapsed = started.elapsed();

    // No orchestrator consumes these results; the demo was their only reader.
    let inbox = js.get_stream(stream::WF_INBOX).await?;
    inbox.purge().filter(subject::result(&instance)).await?;
    Ok(Report {
        instance,
        cases,
        elapsed,
    })
}
