//! The local summary: TextRank over the evidence passages (the AI crate's `local` provider),
//! re-weighted for the reader's level and for the topic.
//!
//! - `beginner`: six sentences; definitions and background ("X is a …", "X refers to …") are
//!   preferred and come first; short, plain sentences are preferred over long ones dense with
//!   numbers, acronyms and symbols.
//! - `intermediate`: four sentences, TextRank order weighted by relevance to the topic.
//! - `advanced`: three sentences; definitions are demoted (the reader knows them), longer and
//!   denser sentences preferred.
//!
//! It picks sentences, it does not write new ones.

use std::collections::HashSet;

use serde::Deserialize;
use switchyard_ai::local::summarize::rank;
use tantivy::tokenizer::TextAnalyzer;

use crate::corpus::terms;

/// The reader's level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Difficulty {
    Beginner,
    #[default]
    Intermediate,
    Advanced,
}

impl Difficulty {
    /// Sentences in the summary.
    pub fn sentences(self) -> usize {
        match self {
            Difficulty::Beginner => 6,
            Difficulty::Intermediate => 4,
            Difficulty::Advanced => 3,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Difficulty::Beginner => "beginner",
            Difficulty::Intermediate => "intermediate",
            Difficulty::Advanced => "advanced",
        }
    }
}

/// Key points listed at most.
const KEY_POINTS: usize = 5;

/// A summary and its key points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub summary: String,
    pub key_points: Vec<String>,
}

struct Candidate {
    text: String,
    index: usize,
    score: f64,
    definitional: bool,
}

/// Whether a sentence defines or introduces something.
pub fn is_definitional(sentence: &str) -> bool {
    let s = format!(" {} ", sentence.to_lowercase());
    [
        " is a ",
        " is an ",
        " is the ",
        " are a ",
        " refers to ",
        " means ",
        " is when ",
        " is defined as ",
        " describes ",
        " is called ",
    ]
    .iter()
    .any(|p| s.contains(p))
}

/// The share of a sentence's words that look technical: digits, acronyms, symbols.
fn technical_density(sentence: &str) -> f64 {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    if words.is_empty() {
        return 0.0;
    }
    let technical = words
        .iter()
        .filter(|w| {
            w.chars().any(|c| c.is_ascii_digit())
                || w.chars().filter(char::is_ascii_uppercase).count() >= 2
                || w.chars().any(|c| "_/=(){}<>`:#".contains(c))
        })
        .count();
    technical as f64 / words.len() as f64
}

/// Summarizes `evidence` (passages, best first) for a reader at `difficulty`, preferring
/// sentences that share words with `topic`.
pub fn summarize(
    evidence: &[String],
    topic: &str,
    analyzer: &TextAnalyzer,
    difficulty: Difficulty,
) -> Summary {
    let text = evidence.join("\n");
    let ranked = rank(&text);
    let top = ranked.first().map_or(1.0, |r| r.score.max(f64::EPSILON));
    let wanted = terms(analyzer, topic);
    let mut candidates: Vec<Candidate> = ranked
        .into_iter()
        .map(|r| {
            let sentence = r.sentence.text;
            let words = sentence.split_whitespace().count() as f64;
            let have = terms(analyzer, &sentence);
            let relevance = if wanted.is_empty() {
                0.0
            } else {
                wanted.iter().filter(|t| have.contains(*t)).count() as f64 / wanted.len() as f64
            };
            let definitional = is_definitional(&sentence);
            let technical = technical_density(&sentence);
            let base = r.score / top * (1.0 + relevance);
            let score = match difficulty {
                Difficulty::Beginner => {
                    let length = if words <= 22.0 {
                        1.2
                    } else if words <= 32.0 {
                        1.0
                    } else {
                        0.6
                    };
                    base * length * (1.0 - 0.6 * technical) * if definitional { 1.8 } else { 1.0 }
                }
                Difficulty::Intermediate => base,
                Difficulty::Advanced => {
                    base * (1.0 + 0.5 * (words.min(40.0) / 40.0))
                        * (1.0 + 0.5 * technical)
                        * if definitional { 0.4 } else { 1.0 }
                }
            };
            Candidate {
                text: sentence,
                index: r.sentence.index,
                score,
                definitional,
            }
        })
        .collect();
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    // The same sentence can appear in two sources (a page quoting the corpus).
    let mut seen = HashSet::new();
    candidates.retain(|c| seen.insert(c.text.to_lowercase()));

    let mut chosen: Vec<&Candidate> = candidates.iter().take(difficulty.sentences()).collect();
    match difficulty {
        // Background first, then the rest in the order of the sources.
        Difficulty::Beginner => chosen.sort_by_key(|c| (!c.definitional, c.index)),
        _ => chosen.sort_by_key(|c| c.index),
    }
    let summary = chosen
        .iter()
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let key_points = candidates
        .iter()
        .take(KEY_POINTS)
        .map(|c| c.text.clone())
        .collect();
    Summary {
        summary,
        key_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::analyzer;

    const EVIDENCE: &[&str] = &[
        "A circuit breaker is a pattern that stops calls to a failing dependency.\nWhen the error rate over a rolling window of 20 calls exceeds 50%, the breaker opens and calls fail fast for a configured cool-down such as 30s.\nThe circuit breaker protects the caller from waiting on a dependency that cannot answer.",
        "After the cool-down, a half-open circuit breaker lets one probe request through to the dependency; a success closes the breaker and a failure reopens it with the cool-down restarted.\nCircuit breaker state is usually kept per dependency and per process, so each replica decides on its own evidence.\nA breaker means the failing dependency gets time to recover.",
        "Tuning a circuit breaker trades false trips against slow detection: a short window with a low threshold (e.g. 5 failures in 10s) opens quickly on a transient blip, while a long window keeps sending calls into an outage.\nBreakers pair well with retries with backoff, timeouts and bulkheads.",
    ];

    fn run(d: Difficulty) -> Summary {
        let evidence: Vec<String> = EVIDENCE.iter().map(|s| (*s).to_owned()).collect();
        summarize(&evidence, "circuit breaker", &analyzer(), d)
    }

    fn sentences(s: &Summary) -> usize {
        switchyard_ai::local::text::sentences(&s.summary).len()
    }

    fn words_per_sentence(s: &Summary) -> f64 {
        s.summary.split_whitespace().count() as f64 / sentences(s) as f64
    }

    #[test]
    fn difficulty_shapes_length_and_level() {
        let beginner = run(Difficulty::Beginner);
        let intermediate = run(Difficulty::Intermediate);
        let advanced = run(Difficulty::Advanced);
        assert!(
            sentences(&beginner) > sentences(&intermediate),
            "{beginner:?}"
        );
        assert!(
            sentences(&intermediate) > sentences(&advanced),
            "{advanced:?}"
        );
        // Beginners get the definition first; advanced readers do not get it at all.
        assert!(
            beginner
                .summary
                .starts_with("A circuit breaker is a pattern"),
            "{beginner:?}"
        );
        assert!(
            !advanced.summary.contains("A circuit breaker is a pattern"),
            "{advanced:?}"
        );
        assert!(
            words_per_sentence(&advanced) > words_per_sentence(&beginner),
            "{advanced:?} vs {beginner:?}"
        );
        assert!(!advanced.key_points.is_empty());
        assert!(advanced.key_points.len() <= KEY_POINTS);
    }
}
