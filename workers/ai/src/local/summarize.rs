//! Extractive summarization with TextRank (Mihalcea & Tarau, 2004): sentences are nodes,
//! edges weigh shared content words normalised by sentence length, and PageRank over that
//! graph ranks the sentences. The summary is the top sentences in document order; the key
//! points are the top sentences in rank order.
//!
//! It picks sentences, it does not write new ones: a baseline that works offline, not a
//! language model.

use super::text::{Sentence, content_words, sentences};

/// Sentences with fewer content words are left out (greetings, "okay, thanks").
const MIN_CONTENT_WORDS: usize = 3;
const DAMPING: f64 = 0.85;
const MAX_ITERATIONS: usize = 100;
const TOLERANCE: f64 = 1e-6;
/// Key points listed at most.
const MAX_KEY_POINTS: usize = 5;

/// A sentence and its TextRank score.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub sentence: Sentence,
    pub score: f64,
}

/// Ranks the text's sentences, best first (ties: earlier first).
pub fn rank(text: &str) -> Vec<Ranked> {
    let candidates: Vec<(Sentence, Vec<String>)> = sentences(text)
        .into_iter()
        .map(|s| {
            let mut words = content_words(&s.text);
            words.sort();
            (s, words)
        })
        .filter(|(_, w)| w.len() >= MIN_CONTENT_WORDS)
        .collect();
    let n = candidates.len();
    let mut weights = vec![vec![0.0f64; n]; n];
    for i in 0..n {
        for j in (i + 1)..n {
            let w = similarity(&candidates[i].1, &candidates[j].1);
            weights[i][j] = w;
            weights[j][i] = w;
        }
    }
    let out_sums: Vec<f64> = weights.iter().map(|row| row.iter().sum()).collect();
    let mut scores = vec![1.0f64; n];
    for _ in 0..MAX_ITERATIONS {
        let mut next = vec![1.0 - DAMPING; n];
        for (i, slot) in next.iter_mut().enumerate() {
            let mut inflow = 0.0;
            for j in 0..n {
                if weights[j][i] > 0.0 && out_sums[j] > 0.0 {
                    inflow += weights[j][i] / out_sums[j] * scores[j];
                }
            }
            *slot += DAMPING * inflow;
        }
        let delta: f64 = next.iter().zip(&scores).map(|(a, b)| (a - b).abs()).sum();
        scores = next;
        if delta < TOLERANCE {
            break;
        }
    }
    let mut ranked: Vec<Ranked> = candidates
        .into_iter()
        .zip(scores)
        .map(|((sentence, _), score)| Ranked { sentence, score })
        .collect();
    ranked.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.sentence.index.cmp(&b.sentence.index))
    });
    ranked
}

/// Shared words over the sum of the logs of the lengths (the TextRank paper's measure).
/// Both lists are sorted.
fn similarity(a: &[String], b: &[String]) -> f64 {
    let (mut i, mut j, mut shared) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                shared += 1;
                i += 1;
                j += 1;
            }
        }
    }
    let norm = (a.len() as f64).ln() + (b.len() as f64).ln();
    if shared == 0 || norm <= 0.0 {
        0.0
    } else {
        shared as f64 / norm
    }
}

/// A summary of at most `max_sentences` sentences and the key points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub summary: String,
    pub key_points: Vec<String>,
}

pub fn summarize(text: &str, max_sentences: usize) -> Summary {
    let ranked = rank(text);
    let mut top: Vec<&Ranked> = ranked.iter().take(max_sentences.max(1)).collect();
    top.sort_by_key(|r| r.sentence.index);
    let summary = if top.is_empty() {
        // Nothing long enough to rank: the text is its own summary.
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    } else {
        top.iter()
            .map(|r| r.sentence.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let key_points = ranked
        .iter()
        .take(MAX_KEY_POINTS.min(max_sentences.max(1)))
        .map(|r| match &r.sentence.speaker {
            Some(name) => format!("{name}: {}", r.sentence.text),
            None => r.sentence.text.clone(),
        })
        .collect();
    Summary {
        summary,
        key_points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_central_sentence_outranks_an_off_topic_one() {
        let text = "The payment service handles card payments for the shop. \
            Card payments fail when the payment service times out. \
            The weather in Lisbon was lovely on Tuesday afternoon. \
            We will add retries to the payment service for failed card payments.";
        let ranked = rank(text);
        assert_eq!(ranked.len(), 4);
        assert!(ranked.last().unwrap().sentence.text.contains("Lisbon"));
        let s = summarize(text, 2);
        assert!(!s.summary.contains("Lisbon"), "{}", s.summary);
        assert_eq!(s.key_points.len(), 2);
    }

    #[test]
    fn short_texts_summarize_to_themselves() {
        assert_eq!(summarize("Okay.  Thanks!", 3).summary, "Okay. Thanks!");
    }
}
