//! The research worker: `research.topic` gathers evidence for a topic from the local document
//! corpus (passages ranked with BM25), the URLs a job gives, and — when one is configured — a
//! SearXNG search whose results are fetched like given URLs; then it writes a summary for the
//! reader's level with key points and the sources used.
//!
//! URLs are fetched through the runtime's address guard (no loopback, private, link-local or
//! metadata addresses unless allow-listed, checked after DNS and on every redirect), with a
//! timeout, a size cap and a content-type check. Summaries come from the AI crate: its `local`
//! provider (TextRank, shaped by difficulty here) by default, or a configured hosted provider.
//! One source failing does not fail the job; all of them failing does, naming each.
//!
//! This crate does the work of one job and keeps no state a second replica would need: the
//! index is rebuilt from the corpus directory at start and kept in step with it.

pub mod corpus;
mod error;
pub mod metrics;
pub mod sources;
pub mod summary;
pub mod text;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use futures::future::join_all;
use prometheus::Registry;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_ai::{JobEnv, Ops, client::Providers};
use switchyard_catalog::Catalog;
use switchyard_proto::Job;
use switchyard_runtime::{
    Config, Handler, JobContext, JobFailure, OperationInfo,
    config::{LOCAL_PROVIDER, ResearchSettings},
    process,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, instrument, warn};

pub use error::Error;

/// The configuration sections this component reads and validates, besides the common ones;
/// research summarizes with the AI providers.
pub const CONFIG_SECTIONS: [switchyard_runtime::config::Section; 3] = {
    use switchyard_runtime::config::Section;
    [Section::Worker, Section::Research, Section::Ai]
};

use corpus::{Corpus, terms};
use metrics::Metrics;
use sources::{Fetcher, Page, Searxng, SourceError};
use summary::Difficulty;

/// The worker kind.
pub const KIND: &str = "research";

/// The operations of the kind, as named in the catalog.
pub mod op {
    pub const TOPIC: &str = "research.topic";
}

/// Usage meters.
pub mod meter {
    /// One per researched topic.
    pub const QUERIES: &str = "research_queries";
    /// Pages fetched and read (given URLs and search results).
    pub const SOURCES_FETCHED: &str = "research_sources_fetched";
    /// Body bytes of those pages.
    pub const BYTES_FETCHED: &str = "research_bytes_fetched";
}

/// Longest snippet, in characters.
const SNIPPET_CHARS: usize = 300;
/// Evidence passages taken from one source.
const PASSAGES_PER_SOURCE: usize = 2;

/// `research.topic` input, after the catalog's defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicInput {
    pub topic: String,
    #[serde(default)]
    pub difficulty: Difficulty,
    #[serde(default = "default_max_sources")]
    pub max_sources: usize,
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default = "yes")]
    pub corpus: bool,
    #[serde(default = "yes")]
    pub web_search: bool,
    /// Answer `found: false` (every failure under `skipped`) when no source could be read,
    /// instead of failing.
    #[serde(default)]
    pub allow_unread: bool,
}

fn default_max_sources() -> usize {
    5
}

fn yes() -> bool {
    true
}

/// A source in the result.
#[derive(Debug, Clone, PartialEq)]
struct Found {
    title: String,
    location: String,
    snippet: String,
    /// 0 to 1: the share of the topic's words in the best passage, times the BM25 score
    /// relative to the best corpus passage for corpus sources.
    score: f64,
    origin: &'static str,
    evidence: Vec<String>,
}

/// The handler of the `research` kind; cheap to clone.
#[derive(Debug, Clone)]
pub struct ResearchWorker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: ResearchSettings,
    corpus: Corpus,
    fetcher: Fetcher,
    /// A SearXNG client per configured base URL (the deployment's and the tenants'); which
    /// serves a job is [`ResearchSettings::searxng_for`] its tenant.
    searxng: BTreeMap<String, Searxng>,
    /// The AI operations, for a hosted summary provider.
    ai: Ops,
}

impl ResearchWorker {
    /// Indexes the corpus (which must exist), builds the HTTP clients and the configured AI
    /// providers, and registers the metrics in `registry`.
    pub async fn build(config: &Config, registry: &Registry) -> Result<Self, Error> {
        Self::build_with(config, Metrics::register(registry)?).await
    }

    /// Like [`ResearchWorker::build`] with metrics nobody scrapes (tests).
    pub async fn build_with(config: &Config, metrics: Metrics) -> Result<Self, Error> {
        let settings = config.research.clone();
        let corpus = Corpus::open(
            &settings.corpus_dir,
            settings.rescan_interval,
            metrics.clone(),
        )
        .await?;
        let fetcher = Fetcher::new(&settings, metrics.clone())?;
        let urls = settings.searxng_url.iter().chain(
            settings
                .tenants
                .values()
                .filter_map(|t| t.searxng_url.as_ref()),
        );
        let mut searxng = BTreeMap::new();
        for base in urls {
            if !searxng.contains_key(base) {
                let client = Searxng::new(base, settings.fetch_timeout, metrics.clone())?;
                searxng.insert(base.clone(), client);
            }
        }
        let providers = Providers::from_settings(&config.ai, &metrics.ai)?;
        let ai = Ops::new(providers, settings.summary_provider.clone());
        Ok(ResearchWorker {
            inner: Arc::new(Inner {
                settings,
                corpus,
                fetcher,
                searxng,
                ai,
            }),
        })
    }

    /// The indexed corpus.
    pub fn corpus(&self) -> &Corpus {
        &self.inner.corpus
    }

    /// Researches a topic for `tenant` (whose search service it uses); usage goes to `env`.
    pub async fn research<E: JobEnv>(
        &self,
        env: &E,
        tenant: &str,
        input: TopicInput,
    ) -> Result<Value, Error> {
        self.inner.research(env, tenant, input).await
    }
}

/// The job's input: the catalog's defaults applied, checked against its schema, then typed.
fn input(job: &Job) -> Result<TopicInput, Error> {
    let mut value: Value = if job.input.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&job.input).map_err(|e| Error::invalid("input", e.to_string()))?
    };
    if let Some(spec) = Catalog::builtin().get(op::TOPIC) {
        spec.input.apply_defaults(&mut value);
        if let Err(e) = spec.input.validate(&value) {
            let first = e.into_iter().next();
            return Err(match first {
                Some(p) => Error::invalid(p.path.clone(), p.message.clone()),
                None => Error::invalid("input", "does not match the operation's schema"),
            });
        }
    }
    serde_json::from_value(value).map_err(|e| Error::invalid("input", e.to_string()))
}

/// The job context as the AI operations see it.
struct Env<'a>(&'a JobContext);

impl JobEnv for Env<'_> {
    fn cancel(&self) -> &CancellationToken {
        &self.0.cancel
    }

    async fn event(&self, event_type: &str, data: Value) {
        if let Err(e) = self.0.event(event_type, data).await {
            warn!(error = %e, event_type, "cannot publish a progress event");
        }
    }

    async fn usage(
        &self,
        meter: &str,
        quantity: f64,
        unit: &str,
        attributes: HashMap<String, String>,
    ) -> Result<(), switchyard_ai::Error> {
        self.0
            .usage_with(meter, quantity, unit, attributes)
            .await
            .map_err(|e| switchyard_ai::Error::Bus(format!("cannot publish usage: {e}")))
    }
}

impl Handler for ResearchWorker {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn operations(&self) -> Vec<OperationInfo> {
        OperationInfo::of_kind(KIND)
    }

    #[instrument(skip_all, fields(job_id = %job.job_id, operation = %job.operation))]
    async fn handle(&self, ctx: JobContext, job: &Job) -> Result<Value, JobFailure> {
        let result = match job.operation.as_str() {
            op::TOPIC => match input(job) {
                Ok(input) => self.inner.research(&Env(&ctx), &job.tenant, input).await,
                Err(e) => Err(e),
            },
            other => Err(Error::invalid(
                "operation",
                format!("{other:?} is not a research operation"),
            )),
        };
        result.map_err(|e| {
            warn!(error = %e, "research failed");
            e.failure()
        })
    }
}

impl Inner {
    async fn research<E: JobEnv>(
        &self,
        env: &E,
        tenant: &str,
        input: TopicInput,
    ) -> Result<Value, Error> {
        let topic = input.topic.trim().to_owned();
        if topic.is_empty() {
            return Err(Error::invalid("topic", "must not be blank"));
        }
        if !(1..=50).contains(&input.max_sources) {
            return Err(Error::invalid("max_sources", "expected 1 to 50"));
        }
        let mut urls: Vec<String> = Vec::new();
        for (i, url) in input.sources.iter().enumerate() {
            let url = url.trim().to_owned();
            let web = reqwest::Url::parse(&url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if !web {
                return Err(Error::invalid(
                    format!("sources[{i}]"),
                    format!("{url:?} is not an http(s) URL"),
                ));
            }
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        let searxng = self
            .settings
            .searxng_for(tenant)
            .and_then(|base| self.searxng.get(base))
            .filter(|_| input.web_search);

        let corpus = async {
            if !input.corpus {
                return Ok(Vec::new());
            }
            self.corpus.refresh().await?;
            self.corpus_sources(&topic, input.max_sources)
        };
        let given = join_all(urls.iter().map(|u| self.fetcher.fetch(u, "url")));
        let searched = async {
            match searxng {
                Some(s) => Some(self.search_sources(s, &topic).await),
                None => None,
            }
        };
        let (corpus, given, searched) = tokio::join!(corpus, given, searched);
        let mut found: Vec<Found> = corpus?;
        let mut failures: Vec<SourceError> = Vec::new();
        let mut fetched_pages = 0u64;
        let mut fetched_bytes = 0u64;
        for result in given {
            match result {
                Ok(page) => {
                    fetched_pages += 1;
                    fetched_bytes += page.bytes;
                    found.push(self.page_source(&topic, page, "url"));
                }
                Err(e) => failures.push(e),
            }
        }
        if let Some(searched) = searched {
            match searched {
                Ok((sources, pages, bytes, skipped)) => {
                    found.extend(sources);
                    fetched_pages += pages;
                    fetched_bytes += bytes;
                    failures.extend(skipped);
                }
                Err(e) => failures.push(e),
            }
        }
        found.sort_by(|a, b| b.score.total_cmp(&a.score));
        found.truncate(input.max_sources);

        let difficulty = input.difficulty.as_str();
        let attributes = HashMap::from([("difficulty".to_owned(), difficulty.to_owned())]);
        env.usage(meter::QUERIES, 1.0, "query", attributes)
            .await
            .map_err(|e| Error::Usage(e.to_string()))?;
        if fetched_pages > 0 {
            env.usage(
                meter::SOURCES_FETCHED,
                fetched_pages as f64,
                "page",
                HashMap::new(),
            )
            .await
            .map_err(|e| Error::Usage(e.to_string()))?;
            env.usage(
                meter::BYTES_FETCHED,
                fetched_bytes as f64,
                "byte",
                HashMap::new(),
            )
            .await
            .map_err(|e| Error::Usage(e.to_string()))?;
        }

        let skipped: Vec<Value> = failures
            .iter()
            .map(|f| json!({ "location": f.location, "reason": f.failure.to_string() }))
            .collect();
        if found.is_empty() {
            if !failures.is_empty() && !input.allow_unread {
                return Err(Error::AllSourcesFailed(failures));
            }
            let mut searched = Vec::new();
            if input.corpus {
                searched.push("the local corpus".to_owned());
            }
            if !urls.is_empty() {
                searched.push(format!("{} given URL(s)", urls.len()));
            }
            if searxng.is_some() {
                searched.push("web search".to_owned());
            }
            let searched = if searched.is_empty() {
                "no sources (the corpus and web search are off and no URLs were given)".to_owned()
            } else {
                searched.join(", ")
            };
            info!(topic = %topic, "nothing found");
            return Ok(json!({
                "summary": format!("Nothing was found about \"{topic}\" in {searched}."),
                "key_points": [],
                "sources": [],
                "found": false,
                "skipped": skipped,
            }));
        }

        let evidence: Vec<String> = found
            .iter()
            .flat_map(|f| f.evidence.iter().cloned())
            .collect();
        let (summary, key_points) = self
            .summarize(env, &evidence, &topic, input.difficulty)
            .await?;
        let sources: Vec<Value> = found
            .iter()
            .map(|f| {
                json!({
                    "title": f.title,
                    "location": f.location,
                    "snippet": f.snippet,
                    "score": (f.score * 1000.0).round() / 1000.0,
                    "origin": f.origin,
                })
            })
            .collect();
        Ok(json!({
            "summary": summary,
            "key_points": key_points,
            "sources": sources,
            "found": true,
            "skipped": skipped,
        }))
    }

    /// The best corpus documents for `topic`, each with its best passages.
    fn corpus_sources(&self, topic: &str, max_sources: usize) -> Result<Vec<Found>, Error> {
        let hits = self.corpus.search(topic, max_sources * 4)?;
        let best = hits.first().map_or(1.0, |h| h.score.max(f32::EPSILON));
        let mut by_path: Vec<Found> = Vec::new();
        for hit in hits {
            if let Some(f) = by_path
                .iter_mut()
                .find(|f| f.location.ends_with(&format!("/{}", hit.path)))
            {
                if f.evidence.len() < PASSAGES_PER_SOURCE {
                    f.evidence.push(hit.text);
                }
                continue;
            }
            if by_path.len() == max_sources {
                continue;
            }
            let location = self.settings.corpus_dir.join(&hit.path);
            by_path.push(Found {
                title: hit.title,
                location: location.to_string_lossy().replace('\\', "/"),
                snippet: snippet(&hit.text),
                score: f64::from(hit.coverage * hit.score / best),
                origin: "corpus",
                evidence: vec![hit.text],
            });
        }
        Ok(by_path)
    }

    /// A fetched page as a source: its passages ranked by the topic's words.
    fn page_source(&self, topic: &str, page: Page, origin: &'static str) -> Found {
        let analyzer = self.corpus.analyzer();
        let wanted = terms(analyzer, topic);
        let mut ranked: Vec<(f64, usize, String)> = text::passages(&page.doc)
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let have = terms(analyzer, &p.text);
                let matched = wanted.iter().filter(|t| have.contains(*t)).count();
                let coverage = if wanted.is_empty() {
                    0.0
                } else {
                    matched as f64 / wanted.len() as f64
                };
                (coverage, i, p.text)
            })
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let score = ranked.first().map_or(0.0, |r| r.0);
        let evidence: Vec<String> = ranked
            .into_iter()
            .take(PASSAGES_PER_SOURCE)
            .map(|r| r.2)
            .collect();
        Found {
            title: page.doc.title,
            location: page.url,
            snippet: evidence.first().map(|t| snippet(t)).unwrap_or_default(),
            score,
            origin,
            evidence,
        }
    }

    /// Search results, each fetched through the guard; a result whose page cannot be read
    /// still counts with the search engine's snippet as its evidence.
    async fn search_sources(
        &self,
        searxng: &Searxng,
        topic: &str,
    ) -> Result<(Vec<Found>, u64, u64, Vec<SourceError>), SourceError> {
        let hits = searxng.search(topic, self.settings.search_results).await?;
        let pages = join_all(hits.iter().map(|h| self.fetcher.fetch(&h.url, "search"))).await;
        let analyzer = self.corpus.analyzer();
        let wanted = terms(analyzer, topic);
        let (mut found, mut n, mut bytes, mut skipped) = (Vec::new(), 0, 0, Vec::new());
        for (hit, page) in hits.into_iter().zip(pages) {
            match page {
                Ok(page) => {
                    n += 1;
                    bytes += page.bytes;
                    let mut source = self.page_source(topic, page, "search");
                    if !hit.title.trim().is_empty() {
                        source.title = hit.title;
                    }
                    found.push(source);
                }
                Err(e) => {
                    skipped.push(e);
                    let content = hit.content.trim();
                    if content.is_empty() {
                        continue;
                    }
                    let have = terms(analyzer, content);
                    let matched = wanted.iter().filter(|t| have.contains(*t)).count();
                    found.push(Found {
                        title: hit.title,
                        location: hit.url,
                        snippet: snippet(content),
                        score: matched as f64 / wanted.len().max(1) as f64,
                        origin: "search",
                        evidence: vec![content.to_owned()],
                    });
                }
            }
        }
        Ok((found, n, bytes, skipped))
    }

    async fn summarize<E: JobEnv>(
        &self,
        env: &E,
        evidence: &[String],
        topic: &str,
        difficulty: Difficulty,
    ) -> Result<(String, Vec<String>), Error> {
        if self.settings.summary_provider == LOCAL_PROVIDER {
            let s = summary::summarize(evidence, topic, self.corpus.analyzer(), difficulty);
            return Ok((s.summary, s.key_points));
        }
        // A hosted provider gets the evidence and the length; the level only sets the length.
        let output = self
            .ai
            .run(
                env,
                "ai.summarize",
                json!({
                    "text": evidence.join("\n\n"),
                    "max_sentences": difficulty.sentences(),
                    "provider": self.settings.summary_provider,
                }),
            )
            .await?;
        let summary = output["summary"].as_str().unwrap_or_default().to_owned();
        let key_points = output["key_points"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        Ok((summary, key_points))
    }
}

/// A passage as one line, cut at a word boundary.
fn snippet(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() <= SNIPPET_CHARS {
        return line;
    }
    let cut: String = line.chars().take(SNIPPET_CHARS).collect();
    let cut = cut.rsplit_once(' ').map_or(cut.as_str(), |(head, _)| head);
    format!("{cut}…")
}

/// Runs one replica of the research worker until `shutdown` is cancelled: indexes the corpus,
/// then consumes `research` jobs and answers `svc.research.topic` requests.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let worker_config = &config;
    let build = |registry: Registry| async move {
        let handler = ResearchWorker::build(worker_config, &registry).await?;
        info!(
            corpus_dir = %worker_config.research.corpus_dir.display(),
            searxng = worker_config.research.searxng_url.is_some(),
            searxng_tenants = worker_config.research.tenants.len(),
            "research worker ready"
        );
        Ok::<_, Error>(handler)
    };
    process::run_worker(&config, "switchyard-research", build, shutdown).await
}

/// The process exit code for an error: 2 for configuration, 1 otherwise.
pub fn exit_code(err: &Error) -> i32 {
    match err {
        Error::Runtime(e) => process::exit_code(e),
        Error::Config { .. } | Error::Corpus { .. } => process::EXIT_CONFIG,
        _ => process::EXIT_FAILURE,
    }
}
