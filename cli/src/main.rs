//! `switchyard` — see `switchyard --help`.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use switchyard_bus_config::{ApplyOptions, BusConfig};
use switchyard_runtime::{
    Config,
    config::{Section, Sources},
    nats, process, shutdown, telemetry,
};

#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about = "AI workflows on NATS JetStream")]
struct Cli {
    /// TOML configuration file (settings are also read from SWITCHYARD_* variables).
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    /// NATS server URL; overrides SWITCHYARD_NATS_URL.
    #[arg(long, global = true)]
    nats_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Streams, consumers and KV buckets.
    Bus {
        #[command(subcommand)]
        command: BusCommand,
    },
    /// Run one replica of a worker kind until SIGTERM.
    Worker {
        #[arg(value_enum)]
        kind: WorkerKind,
    },
    /// Run one orchestrator (workflow engine) replica until SIGTERM.
    Orchestrator,
    /// Run one ledger replica until SIGTERM (usage, instance history, audit log; needs
    /// `DATABASE_URL`), or rebuild the ledger from the streams.
    Ledger {
        #[command(subcommand)]
        command: Option<LedgerCommand>,
    },
    /// Run one HTTP gateway replica on `http_addr` until SIGTERM.
    Gateway,
    /// Register, validate, run and follow workflows.
    Workflow {
        /// The tenant whose definitions and instances to use.
        #[arg(long, global = true, default_value = "demo")]
        tenant: String,
        #[command(subcommand)]
        command: WorkflowCommand,
    },
    /// Every worker kind as the engine sees it: operations and their versions, live
    /// replicas, the age of the last answer, pending and ack-pending jobs, the definitions
    /// that use it.
    Registry {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        command: Option<RegistryCommand>,
    },
    /// Dead letters: list, show, replay and purge what consumers gave up on.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Print the HTTP API's OpenAPI 3.1 document (what the gateway serves at `/openapi.json`).
    Openapi,
    /// Print a development bearer token for the gateway, signed with the configured HS256
    /// secret (`gateway.auth.secret`). RS256 tokens come from an identity provider instead.
    Token {
        /// The tenant the token acts for.
        #[arg(long)]
        tenant: String,
        /// What the token may do: viewer (read), operator (read and run), admin (everything
        /// within the tenant), platform (the deployment's operator: also reads other tenants'
        /// usage and audit log).
        #[arg(long, value_parser = ["viewer", "operator", "admin", "platform"])]
        role: String,
        /// Who the token stands for (the `sub` claim).
        #[arg(long, default_value = "dev")]
        subject: String,
        /// How long the token is valid, e.g. `30m`, `1h`, `7d`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
    },
    /// Publish a mix of test jobs, follow them to their results and dead letters, and print
    /// what happened. Needs a running `test` worker.
    Demo {
        /// How many echo jobs to send besides the fixed cases.
        #[arg(long, default_value_t = 20)]
        jobs: usize,
        /// Seconds to wait for every outcome.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

/// Which instances a bulk action selects: at least one option.
#[derive(Debug, Clone, clap::Args)]
struct BulkSelect {
    /// Only instances of this workflow.
    #[arg(long)]
    workflow: Option<String>,
    /// Only instances started with this label, `key=value`.
    #[arg(long)]
    label: Option<String>,
    /// Only instances created within this long, e.g. `1h`.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
    /// At most this many.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
}

impl BulkSelect {
    fn selection(
        self,
        status: &'static str,
    ) -> anyhow::Result<switchyard_cli::workflow::Selection> {
        if self.workflow.is_none() && self.label.is_none() && self.since.is_none() {
            anyhow::bail!(
                "select instances with --workflow, --label or --since: a bulk action never selects every instance"
            );
        }
        Ok(switchyard_cli::workflow::Selection {
            workflow: self.workflow,
            label: self.label,
            since: self.since,
            status,
            limit: self.limit,
        })
    }
}

/// Which dead letters: every option narrows the selection.
#[derive(Debug, Clone, Default, clap::Args)]
struct DlqSelect {
    /// Only this tenant's letters.
    #[arg(long)]
    tenant: Option<String>,
    /// The kind of consumer that gave up: a worker kind, `orchestrator` or `ledger`.
    #[arg(long)]
    kind: Option<String>,
    /// The job's operation, e.g. `ai.summarize`.
    #[arg(long)]
    operation: Option<String>,
    /// Why it was given up on: retries_exhausted, permanent, decode, deadline_exceeded,
    /// unknown_operation, unavailable.
    #[arg(long)]
    reason: Option<String>,
    /// Only letters of this workflow instance's jobs.
    #[arg(long)]
    instance: Option<String>,
    /// Only letters stored within this long, e.g. `1h`, `2d`.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<std::time::Duration>,
}

impl DlqSelect {
    fn filter(self) -> switchyard_proto::orchestrator::DlqFilter {
        switchyard_proto::orchestrator::DlqFilter {
            tenant: self.tenant,
            kind: self.kind,
            operation: self.operation,
            reason: self.reason,
            instance_id: self.instance,
            from_ms: self.since.map(|d| {
                switchyard_proto::now_ms() - i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
            }),
            to_ms: None,
            handled: None,
        }
    }

    fn is_empty(&self) -> bool {
        self.kind.is_none()
            && self.operation.is_none()
            && self.reason.is_none()
            && self.instance.is_none()
            && self.since.is_none()
    }
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Letters, oldest first, with why they were given up on and whether they were replayed.
    List {
        #[command(flatten)]
        select: DlqSelect,
        /// Only letters already replayed (`true`) or not yet (`false`).
        #[arg(long)]
        handled: Option<bool>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Letters after this sequence (a previous page's last).
        #[arg(long)]
        after: Option<u64>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One letter: its original payload and headers, the error, attempts and the replica
    /// that gave up, as JSON.
    Show {
        seq: u64,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Replay one letter, or those the options select: a workflow step's job re-runs its
    /// instance from that step; a job published straight to the bus is published again.
    Replay {
        /// The letter; without it, the options select (at least one of them).
        seq: Option<u64>,
        #[command(flatten)]
        select: DlqSelect,
        /// At most this many letters.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
    },
    /// Remove letters: those named, or those the options select that were replayed
    /// (`--unhandled` removes the ones that were not instead).
    Purge {
        seqs: Vec<u64>,
        #[command(flatten)]
        select: DlqSelect,
        #[arg(long)]
        unhandled: bool,
    },
}

#[derive(Debug, Subcommand)]
enum RegistryCommand {
    /// Remove the declarations of a kind declared at run time; refused, naming them, while
    /// registered definitions use it.
    Retire {
        /// The worker kind.
        kind: String,
    },
}

#[derive(Debug, Subcommand)]
enum BusCommand {
    /// Create or update every declared object; a second run reports no changes.
    Apply {
        /// Definitions file; the built-in bus-config/bus.toml when absent.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Replicas for every stream and bucket (3 on a 3-node cluster).
        #[arg(long)]
        replicas: Option<usize>,
    },
    /// Messages, pending, ack-pending and redeliveries per stream and consumer, and DLQ depth.
    Status {
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The bus's keys: create them (once) and write the server's `auth.conf` and every
    /// service's credentials (`creds/<role>.creds`) from them.
    AuthInit {
        /// The directory of the keys; keep it private.
        #[arg(long, env = "SWITCHYARD_BUS_AUTH_DIR")]
        dir: PathBuf,
        /// Definitions file whose worker kinds get credentials; the built-in one when absent.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Credentials for a tenant's own services to publish its workflows straight onto the
    /// bus: start, cancel and signal its instances, read its events, nothing else.
    TenantCredentials {
        tenant: String,
        #[command(flatten)]
        issue: IssueArgs,
    },
    /// Credentials for one role: `operator`, `gateway`, `orchestrator`, `ledger`,
    /// `worker-<kind>` or `tenant-<tenant>` (e.g. a worker kind added after `auth-init`).
    Credentials {
        role: switchyard_bus_auth::Role,
        #[command(flatten)]
        issue: IssueArgs,
    },
}

/// Where the keys are and what to issue.
#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// The directory of the bus's keys (from `auth-init`).
    #[arg(long, env = "SWITCHYARD_BUS_AUTH_DIR")]
    dir: PathBuf,
    /// How long they stay valid, e.g. `90d`; without it they do not expire.
    #[arg(long)]
    expires: Option<humantime::Duration>,
    /// Write them to this file (owner-readable only) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
    /// Empty the ledger's tables and replay USAGE, WF_EVENTS and AUDIT from their first
    /// messages into them (in one transaction), then print what was read and stored.
    Rebuild,
}

#[derive(Debug, Subcommand)]
enum WorkflowCommand {
    /// Register a definition (YAML) for the tenant; registering the same text again is a no-op.
    Register { file: PathBuf },
    /// Check a definition against the operation catalog without registering it.
    Validate { file: PathBuf },
    /// List the definitions the tenant can run (its own and the shipped ones).
    List,
    /// Start an instance, print its events as they happen, then its steps and output.
    /// Exits 0 when it completed, 1 otherwise.
    Run {
        workflow: String,
        /// The workflow input, a JSON object.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Seconds to wait for the instance to finish.
        #[arg(long, default_value_t = 120)]
        timeout: u64,
    },
    /// Print an instance's status: each step's status, attempts, timings, output or error.
    Status {
        instance: String,
        /// Print the JSON reply instead of a summary.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running instance.
    Cancel {
        instance: String,
        #[arg(long, default_value = "cancelled from the command line")]
        reason: String,
    },
    /// Run a failed, cancelled or timed-out instance again from its failed steps: completed
    /// steps keep their outputs and do not run again.
    Rerun {
        instance: String,
        /// Also run this step, and every step downstream of it, again (needed for a
        /// completed instance).
        #[arg(long)]
        from_step: Option<String>,
        /// Continue under this newer version of the workflow; it must keep the completed
        /// steps' ids and accept their outputs.
        #[arg(long)]
        version: Option<u32>,
        #[arg(long, default_value = "re-run from the command line")]
        reason: String,
    },
    /// Cancel every running instance the options select (as the ledger lists them).
    BulkCancel {
        #[command(flatten)]
        select: BulkSelect,
        #[arg(long, default_value = "cancelled in bulk from the command line")]
        reason: String,
    },
    /// Re-run every failed (or `--cancelled`) instance the options select (as the ledger
    /// lists them).
    BulkRerun {
        #[command(flatten)]
        select: BulkSelect,
        /// Re-run cancelled instances instead of failed ones.
        #[arg(long)]
        cancelled: bool,
        #[arg(long, default_value = "re-run in bulk from the command line")]
        reason: String,
    },
    /// Send a named signal (e.g. an approval) to an instance.
    Signal {
        instance: String,
        name: String,
        /// The signal's payload, JSON.
        #[arg(long, default_value = "{}")]
        payload: String,
    },
}

/// The worker kinds this build can run.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum WorkerKind {
    /// echo, sleep and fail: for tests, benchmarks and the demo.
    Test,
    /// Notion, Slack, ClickUp, signed webhooks and the local Markdown sink; needs
    /// `DATABASE_URL` (effect records).
    Integration,
    /// LLM and speech providers (`[ai]` settings); the default `local` provider needs no
    /// key and no network.
    Ai,
    /// Topic research over the local corpus, given URLs and SearXNG (`[research]` settings).
    Research,
    /// Versioned content cards and onboarding; needs `DATABASE_URL` (the cards live there).
    Cards,
    /// Tools of MCP servers (`[mcp]` settings) as steps; needs `DATABASE_URL` (call records).
    Mcp,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut sources = Sources::from_process(cli.config.clone());
    if let Some(url) = &cli.nats_url {
        sources = sources.with_override("nats_url", url.clone());
    }
    let mut config = match Config::load_sections(&sources, &config_sections(&cli.command)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchyard: {e}");
            return ExitCode::from(process::exit_code(&e) as u8);
        }
    };
    config.nats.use_role(&bus_role(&cli.command));
    match Box::pin(run(cli.command, config)).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("switchyard: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The bus user a subcommand connects as (see `nats.credentials_dir`).
fn bus_role(command: &Command) -> String {
    use switchyard_bus_auth::Role;
    let role = match command {
        Command::Gateway => Role::Gateway,
        Command::Orchestrator => Role::Orchestrator,
        Command::Ledger { .. } => Role::Ledger,
        Command::Worker { kind } => Role::Worker(kind_name(*kind)),
        _ => Role::Operator,
    };
    role.name()
}

fn kind_name(kind: WorkerKind) -> String {
    kind.to_possible_value()
        .map_or_else(|| "worker".to_owned(), |v| v.get_name().to_owned())
}

/// The configuration sections a subcommand reads and validates besides the common ones: a
/// process started as `switchyard gateway` never fails over the AI worker's settings.
fn config_sections(command: &Command) -> Vec<Section> {
    match command {
        Command::Config => Section::ALL.to_vec(),
        Command::Gateway | Command::Token { .. } => switchyard_gateway::CONFIG_SECTIONS.to_vec(),
        Command::Orchestrator => switchyard_orchestrator::CONFIG_SECTIONS.to_vec(),
        Command::Ledger { .. } => switchyard_ledger::CONFIG_SECTIONS.to_vec(),
        Command::Worker { kind, .. } => match kind {
            WorkerKind::Test => switchyard_test_worker::CONFIG_SECTIONS.to_vec(),
            WorkerKind::Integration => switchyard_integration::CONFIG_SECTIONS.to_vec(),
            WorkerKind::Ai => switchyard_ai::CONFIG_SECTIONS.to_vec(),
            WorkerKind::Research => switchyard_research::CONFIG_SECTIONS.to_vec(),
            WorkerKind::Cards => switchyard_cards::CONFIG_SECTIONS.to_vec(),
            WorkerKind::Mcp => switchyard_integration::mcp::CONFIG_SECTIONS.to_vec(),
        },
        Command::Bus { .. }
        | Command::Dlq { .. }
        | Command::Registry { .. }
        | Command::Workflow { .. }
        | Command::Demo { .. }
        | Command::Openapi => Vec::new(),
    }
}

async fn run(command: Command, config: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config => {
            print!("{}", config.redacted_toml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Openapi => {
            println!(
                "{}",
                serde_json::to_string_pretty(&switchyard_gateway::openapi::document())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            tenant,
            role,
            subject,
            ttl,
        } => {
            let role = switchyard_gateway::Role::parse(&role)
                .with_context(|| format!("unknown role {role:?}"))?;
            let token = switchyard_gateway::auth::issue_token(
                &config.gateway.auth,
                &tenant,
                &[role],
                &subject,
                ttl,
            )?;
            println!("{token}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Bus {
            command: BusCommand::AuthInit { dir, file },
        } => {
            let definitions = load_definitions(file)?;
            let keys = switchyard_bus_auth::AuthDir::open(&dir)?;
            let roles = switchyard_bus_auth::service_roles(&definitions.jobs.kinds);
            for path in keys.init(&roles)? {
                println!("wrote {}", path.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Bus {
            command: BusCommand::TenantCredentials { tenant, issue },
        } => issue_credentials(&switchyard_bus_auth::Role::Tenant(tenant), issue),
        Command::Bus {
            command: BusCommand::Credentials { role, issue },
        } => issue_credentials(&role, issue),
        Command::Bus { command } => {
            let client = nats::connect(&config, "switchyard-cli").await?;
            let js = async_nats::jetstream::new(client);
            match command {
                BusCommand::Apply { file, replicas } => {
                    let definitions = load_definitions(file)?;
                    let report =
                        switchyard_bus_config::apply(&js, &definitions, ApplyOptions { replicas })
                            .await?;
                    print!("{report}");
                    println!(
                        "{}",
                        if report.changed() {
                            "changes applied"
                        } else {
                            "no changes"
                        }
                    );
                    Ok(if report.needs_action() {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                BusCommand::AuthInit { .. }
                | BusCommand::TenantCredentials { .. }
                | BusCommand::Credentials { .. } => unreachable!("handled without a connection"),
                BusCommand::Status { file, json } => {
                    let definitions = load_definitions(file)?;
                    let report = switchyard_bus_config::status(&js, &definitions).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&report)?);
                    } else {
                        print!("{report}");
                    }
                    Ok(if report.any_missing() {
                        ExitCode::from(3)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
            }
        }
        Command::Worker { kind } => {
            let name = kind_name(kind);
            telemetry::init_as(&config, &format!("switchyard-{name}"));
            let stop = shutdown::on_signals();
            match kind {
                // Boxed: both futures hold the whole `Config`, which is large.
                WorkerKind::Test => {
                    let build = |_| async {
                        Ok::<_, switchyard_runtime::Error>(switchyard_test_worker::TestWorker)
                    };
                    Box::pin(process::run_worker(&config, "switchyard-test", build, stop)).await?
                }
                WorkerKind::Integration => {
                    Box::pin(switchyard_integration::run(config, stop)).await?
                }
                WorkerKind::Ai => Box::pin(switchyard_ai::run(config, stop)).await?,
                WorkerKind::Research => Box::pin(switchyard_research::run(config, stop)).await?,
                WorkerKind::Cards => Box::pin(switchyard_cards::run(config, stop)).await?,
                WorkerKind::Mcp => Box::pin(switchyard_integration::mcp::run(config, stop)).await?,
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Orchestrator => {
            telemetry::init_as(&config, "switchyard-orchestrator");
            let env = switchyard_orchestrator::template_env(&config, |n| std::env::var(n).ok());
            let stop = shutdown::on_signals();
            switchyard_orchestrator::run(config, env, stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger { command: None } => {
            telemetry::init_as(&config, "switchyard-ledger");
            let stop = shutdown::on_signals();
            Box::pin(switchyard_ledger::run(config, stop)).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ledger {
            command: Some(LedgerCommand::Rebuild),
        } => {
            telemetry::init_as(&config, "switchyard-ledger");
            let report = switchyard_ledger::rebuild(&config).await?;
            print!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Gateway => {
            telemetry::init_as(&config, "switchyard-gateway");
            let stop = shutdown::on_signals();
            switchyard_gateway::run(config, stop).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Workflow { tenant, command } => workflow_command(&config, &tenant, command).await,
        Command::Registry { json, command } => {
            let client = nats::connect(&config, "switchyard-cli").await?;
            match command {
                None => {
                    let view = switchyard_cli::registry::get(&client).await?;
                    if json {
                        println!("{}", serde_json::to_string_pretty(&view)?);
                    } else {
                        print!("{}", switchyard_cli::registry::render(&view));
                    }
                }
                Some(RegistryCommand::Retire { kind }) => {
                    let reply = switchyard_cli::registry::retire(&client, &kind).await?;
                    let names: Vec<String> = reply
                        .retired
                        .iter()
                        .map(|r| format!("{} v{}", r.name, r.version))
                        .collect();
                    println!("retired {}: {}", reply.kind, names.join(", "));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { command } => dlq_command(&config, command).await,
        Command::Demo { jobs, timeout } => {
            let client = nats::connect(&config, "switchyard-demo").await?;
            let report =
                switchyard_cli::demo::run(&client, jobs, std::time::Duration::from_secs(timeout))
                    .await?;
            print!("{report}");
            Ok(if report.all_as_expected() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

async fn workflow_command(
    config: &Config,
    tenant: &str,
    command: WorkflowCommand,
) -> anyhow::Result<ExitCode> {
    use switchyard_cli::workflow;
    use switchyard_proto::orchestrator::{
        DefinitionsList, GetInstance, InstanceGet, InstanceRerun, InstanceStatus, ListDefinitions,
        RerunInstance,
    };

    let client = nats::connect(config, "switchyard-cli").await?;
    match command {
        WorkflowCommand::Register { file } => {
            let reply = workflow::register(&client, tenant, &file).await?;
            let what = if reply.created {
                "registered"
            } else {
                "already registered"
            };
            println!("{} version {}: {what}", reply.name, reply.version);
            for warning in &reply.warnings {
                println!("warning: {warning}");
            }
        }
        WorkflowCommand::Validate { file } => {
            let reply = workflow::validate(&client, tenant, &file).await?;
            if reply.valid {
                println!(
                    "{} version {}: valid",
                    reply.name.unwrap_or_default(),
                    reply.version.unwrap_or_default()
                );
            } else {
                for p in &reply.problems {
                    let line = p.line.map(|l| format!(" (line {l})")).unwrap_or_default();
                    println!("{}{line}: {}", p.path, p.message);
                }
                return Ok(ExitCode::FAILURE);
            }
        }
        WorkflowCommand::List => {
            let reply = workflow::query::<ListDefinitions>(
                &client,
                &DefinitionsList {
                    tenant: tenant.to_owned(),
                    include_deleted: false,
                },
            )
            .await?;
            for d in &reply.definitions {
                let scope = serde_json::to_value(d.scope)?;
                println!(
                    "{:<20} v{:<3} {:<7} {}",
                    d.name,
                    d.version,
                    scope.as_str().unwrap_or_default(),
                    d.description
                );
            }
        }
        WorkflowCommand::Run {
            workflow: name,
            input,
            timeout,
        } => {
            let input: serde_json::Value =
                serde_json::from_str(&input).context("--input is not JSON")?;
            let status = workflow::run(
                &client,
                tenant,
                &name,
                input,
                std::time::Duration::from_secs(timeout),
            )
            .await?;
            print!("{}", workflow::summary(&status));
            if status.status != InstanceStatus::Completed {
                return Ok(ExitCode::FAILURE);
            }
        }
        WorkflowCommand::Status { instance, json } => {
            let status = workflow::query::<GetInstance>(
                &client,
                &InstanceGet {
                    tenant: tenant.to_owned(),
                    instance_id: instance,
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", workflow::summary(&status));
            }
        }
        WorkflowCommand::Cancel { instance, reason } => {
            workflow::cancel(&client, tenant, &instance, &reason).await?;
            println!("cancel sent for {instance}");
        }
        WorkflowCommand::Rerun {
            instance,
            from_step,
            version,
            reason,
        } => {
            let reply = workflow::query::<RerunInstance>(
                &client,
                &InstanceRerun {
                    tenant: tenant.to_owned(),
                    instance_id: instance.clone(),
                    from_step,
                    version,
                    requested_by: workflow::cli_actor(),
                    reason: Some(reason),
                    correlation_id: None,
                },
            )
            .await?;
            println!(
                "{instance}: run {} (version {}) re-runs {}; keeps {}",
                reply.run,
                reply.version,
                list_or_none(&reply.steps),
                list_or_none(&reply.kept)
            );
        }
        WorkflowCommand::BulkCancel { select, reason } => {
            let (ids, more) =
                workflow::listed(&client, tenant, &select.selection("running")?).await?;
            for id in &ids {
                workflow::cancel(&client, tenant, id, &reason).await?;
            }
            println!("cancel sent for {} instances{}", ids.len(), more_note(more));
        }
        WorkflowCommand::BulkRerun {
            select,
            cancelled,
            reason,
        } => {
            let status = if cancelled { "cancelled" } else { "failed" };
            let (ids, more) = workflow::listed(&client, tenant, &select.selection(status)?).await?;
            let mut refused = 0;
            for id in &ids {
                let asked = workflow::query::<RerunInstance>(
                    &client,
                    &InstanceRerun {
                        tenant: tenant.to_owned(),
                        instance_id: id.clone(),
                        requested_by: workflow::cli_actor(),
                        reason: Some(reason.clone()),
                        ..InstanceRerun::default()
                    },
                )
                .await;
                match asked {
                    Ok(reply) => println!(
                        "{id}: run {} re-runs {}",
                        reply.run,
                        list_or_none(&reply.steps)
                    ),
                    Err(e) => {
                        refused += 1;
                        println!("{id}: refused: {e}");
                    }
                }
            }
            println!(
                "{} re-run, {refused} refused{}",
                ids.len() - refused,
                more_note(more)
            );
            if refused > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        WorkflowCommand::Signal {
            instance,
            name,
            payload,
        } => {
            let payload: serde_json::Value =
                serde_json::from_str(&payload).context("--payload is not JSON")?;
            workflow::signal(&client, tenant, &instance, &name, payload).await?;
            println!("signal {name} sent to {instance}");
        }
    }
    client.flush().await?;
    Ok(ExitCode::SUCCESS)
}

fn more_note(more: bool) -> &'static str {
    if more {
        "; more matched: run it again"
    } else {
        ""
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

async fn dlq_command(config: &Config, command: DlqCommand) -> anyhow::Result<ExitCode> {
    use switchyard_cli::dlq;
    let client = nats::connect(config, "switchyard-cli").await?;
    match command {
        DlqCommand::List {
            select,
            handled,
            limit,
            after,
            json,
        } => {
            let mut filter = select.filter();
            filter.handled = handled;
            let page = dlq::list(&client, filter, Some(limit), after).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&page)?);
            } else {
                print!("{}", dlq::render(&page));
            }
        }
        DlqCommand::Show { seq, tenant } => {
            let letter = dlq::show(&client, tenant, seq).await?;
            println!("{}", serde_json::to_string_pretty(&letter)?);
        }
        DlqCommand::Replay { seq, select, limit } => {
            let reply = match seq {
                Some(seq) => dlq::replay(&client, select.tenant, Some(seq), None, None).await?,
                None => {
                    if select.is_empty() {
                        anyhow::bail!(
                            "name a letter, or select letters with --kind, --operation, --reason, --instance or --since"
                        );
                    }
                    let tenant = select.tenant.clone();
                    dlq::replay(&client, tenant, None, Some(select.filter()), Some(limit)).await?
                }
            };
            print!("{}", dlq::render_replay(&reply));
            if !reply.refused.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge {
            seqs,
            select,
            unhandled,
        } => {
            let mut filter = select.filter();
            filter.handled = Some(!unhandled);
            let reply = dlq::purge(&client, filter, seqs).await?;
            println!("purged {} letters", reply.purged);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints (or writes to `out`) credentials for `role`, signed with the keys in `dir`.
fn issue_credentials(
    role: &switchyard_bus_auth::Role,
    IssueArgs { dir, expires, out }: IssueArgs,
) -> anyhow::Result<ExitCode> {
    let keys = switchyard_bus_auth::AuthDir::open(&dir)?;
    let expires = expires.map(|d| {
        (std::time::SystemTime::now() + *d)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_secs())
    });
    let creds = keys.credentials(role, expires)?;
    match out {
        Some(path) => {
            keys.write_to(&path, &creds)?;
            eprintln!("wrote {role}'s credentials to {}", path.display());
            if let switchyard_bus_auth::Role::Tenant(_) = role {
                eprintln!(
                    "connect with them and the inbox prefix {:?} (NATS clients' custom inbox prefix)",
                    role.inbox_prefix()
                );
            }
        }
        None => print!("{creds}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn load_definitions(file: Option<PathBuf>) -> anyhow::Result<BusConfig> {
    Ok(match file {
        Some(path) => BusConfig::load(path)?,
        None => BusConfig::default(),
    })
}
