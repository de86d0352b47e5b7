//! The integration worker: the `integration.*` operations that reach outside Switchyard —
//! Notion pages from Markdown, Slack messages, ClickUp tasks, signed webhooks, and the local
//! Markdown sink that works offline.
//!
//! Every external effect is recorded by job id in the worker's own Postgres schema
//! (`integration.effects`): claimed before the call, marked done with its result after. A
//! redelivered job whose effect is done gets the recorded result without a second call; see
//! the crate README for the window that remains on APIs without idempotency keys. Rate limits
//! (429 with `Retry-After`) become delayed retries through the worker loop.
//! `integration.status` is the one read-only operation: it checks credentials and records
//! nothing.
//!
//! This crate must not hold workflow logic, keep state a second replica would need outside
//! Postgres, or log a secret.

pub mod clickup;
pub mod effects;
mod error;
mod http;
pub mod markdown;
pub mod mcp;
pub mod metrics;
pub mod notion;
pub mod sink;
pub mod slack;
pub mod status;
pub mod webhook;

use std::{collections::HashMap, path::PathBuf, sync::Arc, time::Duration};

use prometheus::Registry;
use serde_json::Value;
use sqlx::PgPool;
use switchyard_proto::Job;
use switchyard_runtime::JobInput as _;
use switchyard_runtime::{
    Config, Handler, JobContext, JobFailure, OperationInfo,
    config::{
        ClickUpSettings, IntegrationSettings, NotionSettings, Secret, SlackSettings,
        TenantIntegrations,
    },
    database, process,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub use error::Error;
pub use switchyard_runtime::net::{AddressGuard, is_public};

/// The configuration sections this component reads and validates, besides the common ones.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 3] = {
    use switchyard_runtime::config::Section;
    [Section::Worker, Section::Integration, Section::Database]
};

use effects::{EffectKey, Effects};
use metrics::{Metrics, System};

/// The worker kind.
pub const KIND: &str = "integration";

/// The operations of the kind, as named in the catalog.
pub mod op {
    pub const NOTION_CREATE_PAGE: &str = "integration.notion.create_page";
    pub const SLACK_POST_MESSAGE: &str = "integration.slack.post_message";
    pub const CLICKUP_CREATE_TASK: &str = "integration.clickup.create_task";
    pub const CLICKUP_UPDATE_STATUS: &str = "integration.clickup.update_status";
    pub const WEBHOOK_POST: &str = "integration.webhook.post";
    pub const MARKDOWN_WRITE: &str = "integration.markdown.write";
    pub const STATUS: &str = "integration.status";
}

/// The handler of the `integration` kind; cheap to clone.
#[derive(Debug, Clone)]
pub struct IntegrationWorker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    effects: Effects,
    http: http::Http,
    /// The deployment-wide clients, for tenants without their own when they are shared.
    shared: Clients,
    share: bool,
    /// Each configured tenant's own clients.
    tenants: HashMap<String, Clients>,
    /// Clients with no credentials: what a tenant without its own gets when none are shared.
    unconfigured: Clients,
    sink: sink::Sink,
}

/// The clients of one tenant (or of the deployment), and its cached status report.
#[derive(Debug)]
struct Clients {
    notion: notion::Notion,
    slack: slack::Slack,
    clickup: clickup::ClickUp,
    webhook: webhook::Webhook,
    status: status::Reuse,
}

/// The keys secrets are read from, named in errors.
struct SecretKeys {
    notion: &'static str,
    slack_bot: &'static str,
    slack_webhook: &'static str,
    clickup: &'static str,
    webhook: &'static str,
}

const SHARED_KEYS: SecretKeys = SecretKeys {
    notion: "integration.notion.token_file",
    slack_bot: "integration.slack.bot_token_file",
    slack_webhook: "integration.slack.webhook_url_file",
    clickup: "integration.clickup.token_file",
    webhook: "integration.webhook.signing_secret_file",
};

const TENANT_KEYS: SecretKeys = SecretKeys {
    notion: "integration.tenants.*.notion.token_file",
    slack_bot: "integration.tenants.*.slack.bot_token_file",
    slack_webhook: "integration.tenants.*.slack.webhook_url_file",
    clickup: "integration.tenants.*.clickup.token_file",
    webhook: "integration.tenants.*.webhook.signing_secret_file",
};

impl Clients {
    fn build(
        n: &NotionSettings,
        s: &SlackSettings,
        c: &ClickUpSettings,
        signing: (&Option<Secret>, &Option<PathBuf>),
        keys: &SecretKeys,
    ) -> Result<Clients, Error> {
        Ok(Clients {
            notion: notion::Notion::new(n, secret(keys.notion, &n.token, &n.token_file)?),
            slack: slack::Slack::new(
                s,
                secret(keys.slack_bot, &s.bot_token, &s.bot_token_file)?,
                secret(keys.slack_webhook, &s.webhook_url, &s.webhook_url_file)?,
            ),
            clickup: clickup::ClickUp::new(c, secret(keys.clickup, &c.token, &c.token_file)?),
            webhook: webhook::Webhook::new(secret(keys.webhook, signing.0, signing.1)?),
            status: status::Reuse::default(),
        })
    }
}

impl IntegrationWorker {
    /// Builds the handler: reads secret files, builds the HTTP clients, registers the
    /// `cross_system_*` metrics in `registry`. `pool` must be migrated ([`effects::migrate`]).
    pub fn build(
        settings: &IntegrationSettings,
        pool: PgPool,
        registry: &Registry,
    ) -> Result<Self, Error> {
        let metrics = Metrics::register(registry)?;
        let guard = if settings.webhook.allow_private_addresses {
            AddressGuard::allow_all()
        } else {
            AddressGuard::public_only()
        };
        let http = http::Http::new(settings.request_timeout, guard, metrics)?;
        // A claim outlives one call with margin; multi-call effects renew it as they go.
        let lease = settings.request_timeout * 2 + Duration::from_secs(10);
        let w = &settings.webhook;
        let shared = Clients::build(
            &settings.notion,
            &settings.slack,
            &settings.clickup,
            (&w.signing_secret, &w.signing_secret_file),
            &SHARED_KEYS,
        )?;
        let tenants = settings
            .tenants
            .iter()
            .map(|(tenant, t)| {
                let signing = (&t.webhook.signing_secret, &t.webhook.signing_secret_file);
                Clients::build(&t.notion, &t.slack, &t.clickup, signing, &TENANT_KEYS)
                    .map(|c| (tenant.clone(), c))
            })
            .collect::<Result<HashMap<_, _>, _>>()?;
        let none = TenantIntegrations::default();
        let unconfigured = Clients::build(
            &none.notion,
            &none.slack,
            &none.clickup,
            (&None, &None),
            &TENANT_KEYS,
        )?;
        let inner = Inner {
            effects: Effects::new(pool, lease),
            http,
            shared,
            share: settings.shared_credentials,
            tenants,
            unconfigured,
            sink: sink::Sink::new(settings.markdown.output_dir.clone()),
        };
        Ok(IntegrationWorker {
            inner: Arc::new(inner),
        })
    }
}

/// The secret given inline, or read from its file (surrounding whitespace removed).
fn secret(
    key: &'static str,
    inline: &Option<Secret>,
    file: &Option<PathBuf>,
) -> Result<Option<Secret>, Error> {
    match (inline, file) {
        (Some(s), _) => Ok(Some(s.clone())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
                key,
                path: path.display().to_string(),
                source,
            })?;
            let text = text.trim();
            if text.is_empty() {
                return Err(Error::Config {
                    key,
                    message: format!("{} is empty", path.display()),
                });
            }
            Ok(Some(Secret::new(text)))
        }
        (None, None) => Ok(None),
    }
}

impl Handler for IntegrationWorker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn operations(&self) -> Vec<OperationInfo> {
        OperationInfo::of_kind(KIND)
    }

    async fn handle(&self, ctx: JobContext, job: &Job) -> Result<Value, JobFailure> {
        self.inner.handle(&ctx.worker_id, ctx.attempt, job).await.map_err(|e| {
            warn!(job_id = %job.job_id, operation = %job.operation, error = %e, "integration failed");
            e.failure()
        })
    }

    async fn recorded(&self, job: &Job) -> Option<Value> {
        self.inner.effects.recorded_for(job).await
    }
}

impl IntegrationWorker {
    /// Runs one job as the worker loop would, effect record included, outside the loop (for
    /// tests and tools); `worker_id` names the claimant in the record.
    pub async fn run_job(&self, worker_id: &str, job: &Job) -> Result<Value, Error> {
        self.inner.handle(worker_id, 1, job).await
    }
}

impl Inner {
    /// The clients `tenant` acts with: its own, else the deployment's when they are shared,
    /// else none.
    fn clients(&self, tenant: &str) -> &Clients {
        match self.tenants.get(tenant) {
            Some(own) => own,
            None if self.share => &self.shared,
            None => &self.unconfigured,
        }
    }

    #[instrument(skip_all, fields(job_id = %job.job_id, operation = %job.operation))]
    async fn handle(&self, worker_id: &str, attempt: u32, job: &Job) -> Result<Value, Error> {
        let http = &self.http;
        let clients = self.clients(&job.tenant);
        match job.operation.as_str() {
            op::NOTION_CREATE_PAGE => {
                let input: notion::CreatePage = job.input()?;
                self.effect(worker_id, attempt, job, System::Notion, |progress| {
                    clients.notion.create_page(
                        http,
                        &self.effects,
                        job.effect_id(),
                        input,
                        progress,
                    )
                })
                .await
            }
            op::SLACK_POST_MESSAGE => {
                let input: slack::PostMessage = job.input()?;
                self.effect(worker_id, attempt, job, System::Slack, |_| {
                    clients.slack.post(http, input)
                })
                .await
            }
            op::CLICKUP_CREATE_TASK => {
                let input: clickup::CreateTask = job.input()?;
                self.effect(worker_id, attempt, job, System::ClickUp, |_| {
                    clients.clickup.create_task(http, input)
                })
                .await
            }
            op::CLICKUP_UPDATE_STATUS => {
                let input: clickup::UpdateStatus = job.input()?;
                // A task is moved only by the tenant that created it.
                let task_id = input.task_id.trim();
                http::check_id("task_id", task_id)?;
                if !self
                    .effects
                    .created(&job.tenant, op::CLICKUP_CREATE_TASK, task_id)
                    .await?
                {
                    return Err(Error::NotFound {
                        what: format!("ClickUp task {:?}", input.task_id),
                    });
                }
                self.effect(worker_id, attempt, job, System::ClickUp, |_| {
                    clients.clickup.update_status(http, input)
                })
                .await
            }
            op::WEBHOOK_POST => {
                let input: webhook::Post = job.input()?;
                self.effect(worker_id, attempt, job, System::Webhook, |_| {
                    clients.webhook.post(http, job.effect_id(), input)
                })
                .await
            }
            op::MARKDOWN_WRITE => {
                let input: sink::WriteInput = job.input()?;
                self.effect(worker_id, attempt, job, System::Markdown, |_| async {
                    let started = std::time::Instant::now();
                    let result = self.sink.write(&job.tenant, input).await;
                    let outcome = match &result {
                        Ok(_) => "ok",
                        Err(e) => e.outcome(),
                    };
                    http.metrics.observe(
                        System::Markdown,
                        outcome,
                        started.elapsed().as_secs_f64(),
                    );
                    result
                })
                .await
            }
            op::STATUS => {
                // Read-only: no effect record, so asking costs no database round trip.
                let _: status::StatusInput = job.input()?;
                Ok(clients.status.get(|| self.check_all(clients)).await)
            }
            other => Err(Error::invalid(
                "operation",
                format!("{other:?} is not an integration operation"),
            )),
        }
    }

    /// Checks every integration of `clients` at once; see [`status`].
    async fn check_all(&self, clients: &Clients) -> Value {
        let (notion, slack, clickup, markdown) = tokio::join!(
            clients.notion.check(&self.http),
            clients.slack.check(&self.http),
            clients.clickup.check(&self.http),
            self.sink.check(),
        );
        let checks = [notion, slack, clickup, clients.webhook.check(), markdown];
        status::report(&checks, switchyard_proto::now_ms())
    }

    /// Performs an effect at most once per job as far as the record can tell (see
    /// [`Effects::perform`]).
    async fn effect<F, Fut>(
        &self,
        worker_id: &str,
        attempt: u32,
        job: &Job,
        system: System,
        perform: F,
    ) -> Result<Value, Error>
    where
        F: FnOnce(Option<Value>) -> Fut,
        Fut: Future<Output = Result<Value, Error>>,
    {
        let key = EffectKey::of(job, system, worker_id);
        self.effects.perform(&key, attempt, perform).await
    }
}

/// Connects to Postgres and brings the `integration` schema up to date.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, Error> {
    let pool = database::connect(database_url, max_connections).await?;
    effects::migrate(&pool).await?;
    Ok(pool)
}

/// Runs one replica of the integration worker until `shutdown` is cancelled: connects to
/// Postgres (`database_url`, required) and migrates, then consumes `integration` jobs.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let url = database::url(&config, "the integration worker (it records every effect)")?;
    let pool = connect(&url, database::pool_size(&config)).await?;
    let settings = &config.integration;
    let build = |registry: Registry| async move {
        let handler = IntegrationWorker::build(settings, pool, &registry)?;
        info!(
            output_dir = %settings.markdown.output_dir.display(),
            "integration worker ready"
        );
        Ok::<_, Error>(handler)
    };
    process::run_worker(&config, "switchyard-integration", build, shutdown).await
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => process::exit_code(e),
        Error::Config { .. } | Error::SecretFile { .. } => process::EXIT_CONFIG,
        _ => process::EXIT_FAILURE,
    }
}
