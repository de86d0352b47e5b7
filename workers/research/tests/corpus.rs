//! The shipped corpus answers the topics in `corpus/cases.yaml` with the expected document
//! first, finds nothing for a topic it does not cover, and re-indexes only what changed.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;
use switchyard_research::{Error, ResearchWorker, corpus::Corpus, metrics::Metrics};
use switchyard_runtime::Config;

fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    topic: String,
    top: Option<String>,
    #[serde(default)]
    none: bool,
}

async fn open(dir: &std::path::Path) -> Corpus {
    Corpus::open(dir, Duration::ZERO, Metrics::unregistered().unwrap())
        .await
        .expect("corpus")
}

#[tokio::test]
async fn shipped_topics_rank_their_document_first() {
    let text = std::fs::read_to_string(shipped().join("cases.yaml")).unwrap();
    let cases: Vec<Case> = serde_yaml_ng::from_str(&text).unwrap();
    assert!(cases.len() >= 10, "{cases:?}");
    let corpus = open(&shipped()).await;
    let mut wrong = Vec::new();
    for case in &cases {
        let hits = corpus.search(&case.topic, 5).unwrap();
        if case.none {
            if !hits.is_empty() {
                wrong.push(format!(
                    "{:?}: expected nothing, got {}",
                    case.topic, hits[0].path
                ));
            }
            continue;
        }
        let expected = case.top.as_deref().expect("top or none");
        match hits.first() {
            Some(hit) if hit.path == expected => {}
            Some(hit) => wrong.push(format!(
                "{:?}: expected {expected}, got {} ({:?})",
                case.topic,
                hit.path,
                hits.iter().map(|h| &h.path).collect::<Vec<_>>()
            )),
            None => wrong.push(format!("{:?}: nothing found", case.topic)),
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn html_chrome_is_not_indexed() {
    let corpus = open(&shipped()).await;
    // "not part of the text" is in a <script>, "Written for" in a <footer>.
    assert!(corpus.search("console log not part", 5).unwrap().is_empty());
    let hits = corpus.search("transactional outbox relay", 3).unwrap();
    assert_eq!(hits[0].title, "The transactional outbox pattern");
    assert!(
        hits.iter().all(|h| !h.text.contains("Written for")),
        "{hits:?}"
    );
}

#[tokio::test]
async fn added_changed_and_removed_files_are_reindexed_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(shipped()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    let corpus = open(dir.path()).await;
    let again = corpus.rescan().await.unwrap();
    assert_eq!((again.indexed, again.removed), (0, 0), "{again:?}");
    assert_eq!(again.unchanged, 13);

    assert!(corpus.search("quokka sightings", 5).unwrap().is_empty());
    let path = dir.path().join("crdts.md");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(
        "\n## Field notes\n\nA quokka sightings log merges entries from every island replica.\n",
    );
    std::fs::write(&path, text).unwrap();
    std::fs::remove_file(dir.path().join("raft-consensus.txt")).unwrap();
    std::fs::write(
        dir.path().join("bloom-filters.txt"),
        "Bloom filters\n\nA bloom filter answers set membership with false positives but no false negatives.\n",
    )
    .unwrap();

    let report = corpus.rescan().await.unwrap();
    assert_eq!(
        (report.indexed, report.removed, report.unchanged),
        (2, 1, 11),
        "{report:?}"
    );
    assert_eq!(
        corpus.search("quokka sightings", 5).unwrap()[0].path,
        "crdts.md"
    );
    assert_eq!(
        corpus.search("bloom filter membership", 5).unwrap()[0].path,
        "bloom-filters.txt"
    );
    let raft = corpus.search("Raft leader election", 5).unwrap();
    assert!(
        raft.iter().all(|h| h.path != "raft-consensus.txt"),
        "{raft:?}"
    );
    // The changed file's old passages are gone, not duplicated.
    let crdt = corpus.search("grow-only counter G-Counter", 10).unwrap();
    assert_eq!(
        crdt.iter().filter(|h| h.path == "crdts.md").count(),
        1,
        "{crdt:?}"
    );
}

#[tokio::test]
async fn a_missing_corpus_dir_fails_the_start_naming_the_key() {
    let mut config = Config::default();
    config.research.corpus_dir = PathBuf::from("no/such/corpus");
    let err = ResearchWorker::build_with(&config, Metrics::unregistered().unwrap())
        .await
        .expect_err("started without a corpus");
    assert!(matches!(err, Error::Corpus { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("research.corpus_dir: cannot read the corpus directory no/such/corpus"),
        "{text}"
    );
    assert_eq!(switchyard_research::exit_code(&err), 2);
}
