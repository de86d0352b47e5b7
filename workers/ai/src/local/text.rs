//! Sentence splitting and word normalisation shared by the local algorithms.

use crate::transcript::split_speaker;

/// A sentence and who said it (for transcripts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sentence {
    pub speaker: Option<String>,
    pub text: String,
    /// Position in the document, from 0.
    pub index: usize,
}

/// Abbreviations whose period does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "inc", "ltd",
    "co", "approx", "no", "fig", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept",
    "oct", "nov", "dec",
];

/// Splits a text into sentences. Lines that look like `Name: text` keep their speaker;
/// Markdown headings, bullets and numbering are stripped; each line ends a sentence.
pub fn sentences(text: &str) -> Vec<Sentence> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let line = strip_markdown(raw.trim());
        if line.is_empty() {
            continue;
        }
        let (speaker, body) = match split_speaker(line) {
            Some((name, said)) => (Some(name.to_owned()), said),
            None => (None, line),
        };
        for s in split_line(body) {
            out.push(Sentence {
                speaker: speaker.clone(),
                text: s,
                index: out.len(),
            });
        }
    }
    out
}

fn strip_markdown(line: &str) -> &str {
    let line = line.trim_start_matches('#').trim_start();
    let line = line
        .strip_prefix("- ")
        .or_else(|| line.strip_prefix("* "))
        .or_else(|| line.strip_prefix("> "))
        .unwrap_or(line);
    // "1. " / "12) "
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    if digits > 0
        && let Some(rest) = line[digits..]
            .strip_prefix(". ")
            .or_else(|| line[digits..].strip_prefix(") "))
    {
        return rest.trim();
    }
    line.trim()
}

fn split_line(line: &str) -> Vec<String> {
    let chars: Vec<char> = line.chars().collect();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '.' | '!' | '?') {
            let mut end = i + 1;
            while end < chars.len()
                && matches!(chars[end], '.' | '!' | '?' | '"' | '\'' | ')' | '”' | '’')
            {
                end += 1;
            }
            let at_space = end < chars.len() && chars[end].is_whitespace();
            let next_starts = chars[end..]
                .iter()
                .find(|c| !c.is_whitespace())
                .is_some_and(|c| {
                    c.is_uppercase() || c.is_ascii_digit() || matches!(c, '"' | '“' | '@')
                });
            let word: String = chars[start..i]
                .iter()
                .rev()
                .take_while(|c| !c.is_whitespace())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let abbreviation = c == '.'
                && ABBREVIATIONS.contains(&word.trim_start_matches('(').to_lowercase().as_str());
            if at_space && next_starts && !abbreviation {
                let s: String = chars[start..end].iter().collect();
                if !s.trim().is_empty() {
                    out.push(s.trim().to_owned());
                }
                start = end;
            }
            i = end;
        } else {
            i += 1;
        }
    }
    let rest: String = chars[start..].iter().collect();
    if !rest.trim().is_empty() {
        out.push(rest.trim().to_owned());
    }
    out
}

/// Common English words that carry no topic.
const STOPWORDS: &[&str] = &[
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
    "can", "could", "did", "do", "does", "doing", "don't", "down", "during", "each", "few", "for",
    "from", "further", "get", "got", "had", "has", "have", "having", "he", "her", "here", "hers",
    "him", "his", "how", "i", "i'll", "i'm", "i've", "if", "in", "into", "is", "it", "it's", "its",
    "just", "let", "like", "me", "more", "most", "my", "no", "nor", "not", "now", "of", "off",
    "ok", "okay", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own",
    "really", "right", "same", "she", "should", "so", "some", "such", "than", "that", "that's",
    "the", "their", "them", "then", "there", "these", "they", "this", "those", "through", "to",
    "too", "um", "uh", "under", "until", "up", "very", "was", "we", "we'll", "we're", "were",
    "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would",
    "yeah", "yes", "you", "you're", "your", "yours", "going", "think", "know", "thing", "things",
    "well", "actually", "maybe", "one", "sure", "thanks", "great", "good", "mean", "kind", "sort",
    "lot", "want", "need",
];

pub fn is_stopword(word: &str) -> bool {
    STOPWORDS.contains(&word)
}

/// Content words of `text`: lowercased, stopwords dropped, a light suffix stemming so
/// `release`/`releases`/`released` meet.
pub fn content_words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .map(|w| w.trim_matches('\'').to_lowercase())
        .filter(|w| w.chars().count() > 1 && !is_stopword(w))
        .map(|w| stem(&w))
        .collect()
}

fn stem(word: &str) -> String {
    let mut base = word;
    for suffix in ["ing", "ed", "es", "s"] {
        if let Some(b) = word.strip_suffix(suffix)
            && b.chars().count() >= 3
            && !word.ends_with("ss")
        {
            base = b;
            break;
        }
    }
    match base.strip_suffix('e') {
        Some(b) if b.chars().count() >= 3 => b.to_owned(),
        _ => base.to_owned(),
    }
}

/// A rough token count (about four characters per token for English), for usage figures of
/// the local provider.
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_respect_abbreviations_decimals_and_speakers() {
        let s = sentences(
            "Alice: We met Dr. Smith today. Revenue grew 3.5 percent! Is that right?\n## Next\n- Ship it by Friday.",
        );
        let texts: Vec<&str> = s.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "We met Dr. Smith today.",
                "Revenue grew 3.5 percent!",
                "Is that right?",
                "Next",
                "Ship it by Friday."
            ]
        );
        assert_eq!(s[2].speaker.as_deref(), Some("Alice"));
        assert_eq!(s[4].speaker, None);
        assert_eq!(s[4].index, 4);
    }

    #[test]
    fn content_words_drop_stopwords_and_meet_on_stems() {
        assert_eq!(
            content_words("The releases were released; release!"),
            ["releas", "releas", "releas"]
        );
    }
}
