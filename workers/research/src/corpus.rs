//! The local corpus: a directory of Markdown, text and HTML files, split into passages and
//! indexed with tantivy (BM25) in memory.
//!
//! The directory is scanned at start and again when a job arrives and the last scan is older
//! than the rescan interval. A scan only lists the files and compares each one's size and
//! modification time with what was indexed: added and changed files are re-indexed (their old
//! passages deleted by path), removed ones deleted, the rest untouched.
//!
//! Words are lowercased, English stop words dropped and the rest stemmed, for the index, the
//! query and the relevance check alike. BM25 ranks any passage sharing one word with the
//! topic; [`Corpus::search`] keeps only passages that contain at least half of the topic's
//! words, so a topic the corpus does not cover finds nothing instead of noise.

use std::{
    collections::{HashMap, HashSet},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use tantivy::{
    Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term,
    collector::TopDocs,
    doc,
    query::QueryParser,
    schema::{
        Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
    },
    tokenizer::{
        Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter,
        TextAnalyzer,
    },
};
use tracing::{debug, info};

use crate::{Error, metrics::Metrics, text};

/// The configuration key named in errors about the directory.
const KEY: &str = "research.corpus_dir";
const TOKENIZER: &str = "research";
/// The index writer's memory budget, in bytes (tantivy's minimum for one thread is 15 MB).
const WRITER_BUDGET: usize = 20_000_000;

/// One passage found for a topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The file's path relative to the corpus directory, with `/` separators.
    pub path: String,
    pub title: String,
    pub section: Option<String>,
    pub text: String,
    /// BM25.
    pub score: f32,
    /// The share of the topic's words the passage contains, 0 to 1.
    pub coverage: f32,
}

/// What a scan changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScanReport {
    pub indexed: usize,
    pub removed: usize,
    pub unchanged: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    modified: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct ScanState {
    files: HashMap<String, Stamp>,
    last: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    path: Field,
    title: Field,
    section: Field,
    body: Field,
}

/// The indexed corpus; cheap to clone.
#[derive(Clone)]
pub struct Corpus {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    analyzer: TextAnalyzer,
    state: tokio::sync::Mutex<ScanState>,
    rescan_interval: Duration,
    metrics: Metrics,
}

impl std::fmt::Debug for Corpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Corpus")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

/// Lowercase, no stop words, stemmed: one analysis for documents, queries and checks.
pub fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// The distinct analysed words of `text`.
pub fn terms(analyzer: &TextAnalyzer, text: &str) -> HashSet<String> {
    let mut analyzer = analyzer.clone();
    let mut stream = analyzer.token_stream(text);
    let mut out = HashSet::new();
    while stream.advance() {
        out.insert(stream.token().text.clone());
    }
    out
}

impl Corpus {
    /// Indexes `dir`, which must be a readable directory.
    pub async fn open(
        dir: &Path,
        rescan_interval: Duration,
        metrics: Metrics,
    ) -> Result<Self, Error> {
        let unreadable = |message: String| Error::Corpus {
            key: KEY,
            path: dir.display().to_string(),
            message,
        };
        let meta = std::fs::metadata(dir).map_err(|e| unreadable(e.to_string()))?;
        if !meta.is_dir() {
            return Err(unreadable("not a directory".into()));
        }
        let mut sb = Schema::builder();
        let indexed = TextOptions::default().set_stored().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            path: sb.add_text_field("path", STRING | STORED),
            title: sb.add_text_field("title", indexed.clone()),
            section: sb.add_text_field("section", STORED),
            body: sb.add_text_field("body", indexed),
        };
        let index = Index::create_in_ram(sb.build());
        let analyzer = analyzer();
        index.tokenizers().register(TOKENIZER, analyzer.clone());
        let writer = index.writer_with_num_threads(1, WRITER_BUDGET)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let corpus = Corpus {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                index,
                reader,
                writer: Mutex::new(writer),
                fields,
                analyzer,
                state: tokio::sync::Mutex::new(ScanState::default()),
                rescan_interval,
                metrics,
            }),
        };
        let report = corpus.rescan().await?;
        info!(
            dir = %dir.display(),
            files = report.indexed,
            passages = corpus.inner.metrics.passages.get(),
            "corpus indexed"
        );
        Ok(corpus)
    }

    /// The analyzer of the index.
    pub fn analyzer(&self) -> &TextAnalyzer {
        &self.inner.analyzer
    }

    /// Rescans when the last scan is older than the rescan interval.
    pub async fn refresh(&self) -> Result<ScanReport, Error> {
        let state = self.inner.state.lock().await;
        if state
            .last
            .is_some_and(|at| at.elapsed() < self.inner.rescan_interval)
        {
            return Ok(ScanReport::default());
        }
        self.scan_locked(state).await
    }

    /// Rescans now: re-indexes added and changed files, drops removed ones.
    pub async fn rescan(&self) -> Result<ScanReport, Error> {
        let state = self.inner.state.lock().await;
        self.scan_locked(state).await
    }

    async fn scan_locked(
        &self,
        mut state: tokio::sync::MutexGuard<'_, ScanState>,
    ) -> Result<ScanReport, Error> {
        let inner = self.inner.clone();
        let known = std::mem::take(&mut state.files);
        let (result, files) = tokio::task::spawn_blocking(move || inner.scan(known))
            .await
            .map_err(|e| Error::Corpus {
                key: KEY,
                path: self.inner.dir.display().to_string(),
                message: format!("the scan stopped: {e}"),
            })?;
        state.files = files;
        if result.is_ok() {
            state.last = Some(Instant::now());
        }
        result
    }

    /// The passages best matching `topic`, best first, at most `limit`.
    pub fn search(&self, topic: &str, limit: usize) -> Result<Vec<Hit>, Error> {
        let inner = &self.inner;
        let f = inner.fields;
        // Query syntax (`AND`, `-x`, `field:`) is not for job input: words only.
        let words: String = topic
            .chars()
            .map(|c| if c.is_alphanumeric() { c } else { ' ' })
            .collect::<String>()
            .to_lowercase();
        let wanted = terms(&inner.analyzer, &words);
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut parser = QueryParser::for_index(&inner.index, vec![f.title, f.body]);
        parser.set_field_boost(f.title, 2.0);
        let (query, _) = parser.parse_query_lenient(&words);
        let searcher = inner.reader.searcher();
        let top = searcher.search(
            &query,
            &TopDocs::with_limit(limit.saturating_mul(5).max(20)).order_by_score(),
        )?;
        let mut hits = Vec::new();
        for (score, address) in top {
            let d: TantivyDocument = searcher.doc(address)?;
            let get = |field: Field| {
                d.get_first(field)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
            };
            let title = get(f.title).unwrap_or_default();
            let section = get(f.section);
            let text = get(f.body).unwrap_or_default();
            let have = terms(
                &inner.analyzer,
                &format!("{title} {} {text}", section.as_deref().unwrap_or_default()),
            );
            let matched = wanted.iter().filter(|t| have.contains(*t)).count();
            if matched * 2 < wanted.len() || matched == 0 {
                continue;
            }
            hits.push(Hit {
                path: get(f.path).unwrap_or_default(),
                title,
                section,
                text,
                score,
                coverage: matched as f32 / wanted.len() as f32,
            });
            if hits.len() == limit {
                break;
            }
        }
        Ok(hits)
    }
}

impl Inner {
    /// Lists the directory and brings the index in line with it; returns the new file list
    /// (the old one when the directory cannot be read, so nothing is dropped by mistake).
    fn scan(
        &self,
        known: HashMap<String, Stamp>,
    ) -> (Result<ScanReport, Error>, HashMap<String, Stamp>) {
        let mut found = Vec::new();
        if let Err(e) = list(&self.dir, &self.dir, &mut found) {
            let err = Error::Corpus {
                key: KEY,
                path: self.dir.display().to_string(),
                message: e.to_string(),
            };
            return (Err(err), known);
        }
        let mut report = ScanReport::default();
        let mut files = HashMap::new();
        let mut writer = match self.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        for (rel, stamp) in found {
            if known.get(&rel) == Some(&stamp) {
                report.unchanged += 1;
                files.insert(rel, stamp);
                continue;
            }
            writer.delete_term(Term::from_field_text(self.fields.path, &rel));
            match self.add_file(&writer, &rel) {
                Ok(()) => {
                    report.indexed += 1;
                    files.insert(rel, stamp);
                }
                Err(e) => {
                    // One unreadable file must not hide the rest; it is tried again next scan.
                    tracing::warn!(path = %rel, error = %e, "cannot index a corpus file");
                }
            }
        }
        for rel in known.keys().filter(|k| !files.contains_key(*k)) {
            if !self.dir.join(rel).exists() {
                writer.delete_term(Term::from_field_text(self.fields.path, rel));
                report.removed += 1;
            }
        }
        if report.indexed + report.removed > 0 {
            if let Err(e) = writer.commit().and_then(|_| self.reader.reload()) {
                return (Err(e.into()), files);
            }
            self.metrics
                .files_indexed
                .with_label_values(&["indexed"])
                .inc_by(report.indexed as u64);
            self.metrics
                .files_indexed
                .with_label_values(&["removed"])
                .inc_by(report.removed as u64);
            let passages = self.reader.searcher().num_docs();
            self.metrics
                .passages
                .set(i64::try_from(passages).unwrap_or(i64::MAX));
            debug!(
                indexed = report.indexed,
                removed = report.removed,
                passages,
                "corpus updated"
            );
        }
        (Ok(report), files)
    }

    fn add_file(&self, writer: &IndexWriter, rel: &str) -> Result<(), Error> {
        let path = self.dir.join(rel);
        let bytes = std::fs::read(&path).map_err(|e| Error::Corpus {
            key: KEY,
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let source = String::from_utf8_lossy(&bytes);
        let stem = Path::new(rel)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(rel)
            .replace(['-', '_'], " ");
        let doc = match extension(rel).as_deref() {
            Some("md" | "markdown") => text::from_markdown(&source, &stem),
            Some("html" | "htm") => text::from_html(&source, &stem),
            _ => text::from_plain(&source, &stem),
        };
        let f = self.fields;
        for p in text::passages(&doc) {
            let mut d = doc!(
                f.path => rel,
                f.title => doc.title.as_str(),
                f.body => p.text.as_str(),
            );
            if let Some(section) = &p.section {
                d.add_text(f.section, section);
            }
            writer.add_document(d)?;
        }
        Ok(())
    }
}

fn extension(path: &str) -> Option<String> {
    Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// The corpus files under `dir`, as paths relative to `root` with `/` separators. Hidden
/// files and directories are skipped; so are symbolic links (they could lead out of the
/// corpus).
fn list(root: &Path, dir: &Path, out: &mut Vec<(String, Stamp)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let kind = entry.file_type()?;
        let path = entry.path();
        if kind.is_dir() {
            list(root, &path, out)?;
        } else if kind.is_file() {
            let Ok(rel) = path.strip_prefix(root) else {
                continue;
            };
            let rel = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/");
            if !matches!(
                extension(&rel).as_deref(),
                Some("md" | "markdown" | "txt" | "html" | "htm")
            ) {
                continue;
            }
            let meta = entry.metadata()?;
            out.push((
                rel,
                Stamp {
                    len: meta.len(),
                    modified: meta.modified().ok(),
                },
            ));
        }
    }
    Ok(())
}
