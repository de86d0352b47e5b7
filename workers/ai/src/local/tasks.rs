//! Rule-based action items. A sentence is a task when it commits someone to an action:
//!
//! - the speaker commits: "I'll send…", "I will…", "I can…", "I'm going to…", "let me…"
//!   → assigned to the speaker;
//! - someone is named: "Bob will…", "Bob to…", "Bob needs to…", "Bob, can you…",
//!   "@bob please…" → assigned to them (matched to a speaker's full name when one fits);
//! - a marker: "Action item: …", "TODO: …";
//! - a shared need: "we need to…", "we have to…", "someone should…" → unassigned.
//!
//! The verb after the trigger must be an action ("I'll be out" and "I think" are not
//! tasks). The title is that verb phrase as an imperative, without the date and priority
//! words. Due dates come from [`super::dates`]; priority from words such as "urgent",
//! "ASAP", "high priority", "no rush".

use serde::Serialize;
use time::Date;

use super::{dates, text::Sentence};

/// One action item, in the shape of `ai.extract_tasks`'s output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub title: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub due: Option<String>,
    pub priority: &'static str,
    pub source_quote: String,
}

/// Verbs that do not make an action item.
const NOT_ACTIONS: &[&str] = &[
    "be",
    "have",
    "think",
    "guess",
    "bet",
    "see",
    "say",
    "talk",
    "mention",
    "admit",
    "feel",
    "love",
    "like",
    "hope",
    "agree",
    "believe",
    "imagine",
    "wonder",
    "remember",
    "tell",
    "hear",
    "keep",
    "probably",
    "definitely",
    "not",
    "never",
    "also",
    "just",
    "still",
    "always",
    "need",
    "want",
    "get",
    "go",
    "come",
    "do",
];

/// Words that start a sentence but are not names.
const NOT_NAMES: &[&str] = &[
    "i",
    "we",
    "you",
    "they",
    "he",
    "she",
    "it",
    "this",
    "that",
    "these",
    "those",
    "there",
    "then",
    "so",
    "and",
    "but",
    "also",
    "maybe",
    "the",
    "our",
    "my",
    "your",
    "everyone",
    "someone",
    "somebody",
    "nobody",
    "anyone",
    "who",
    "what",
    "which",
    "when",
    "where",
    "why",
    "how",
    "ok",
    "okay",
    "yes",
    "no",
    "yeah",
    "sure",
    "great",
    "thanks",
    "next",
    "if",
    "once",
    "after",
    "before",
    "today",
    "tomorrow",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "let's",
    "lets",
    "i'll",
    "i'm",
    "i've",
    "i'd",
    "we'll",
    "we're",
    "you'll",
    "will",
    "can",
    "could",
    "would",
    "should",
    "let",
    "good",
    "fine",
    "morning",
    "hi",
    "hello",
    "thank",
    "please",
    "action",
    "todo",
    "all",
    "one",
    "each",
];

/// Finds the action items in `sentences`; `speakers` are the known speaker names (to
/// complete "Bob" to "Bob Lee").
pub fn extract(sentences: &[Sentence], meeting: Option<Date>, speakers: &[String]) -> Vec<Task> {
    let mut tasks: Vec<Task> = Vec::new();
    for s in sentences {
        let Some((assignee, phrase)) = trigger(s, speakers) else {
            continue;
        };
        let due = dates::find(&s.text, meeting);
        let title = title(&phrase, due.as_ref().map(|d| d.phrase.as_str()));
        if title.split_whitespace().count() < 2 {
            continue;
        }
        let key = title.to_lowercase();
        if tasks.iter().any(|t| t.title.to_lowercase() == key) {
            continue;
        }
        tasks.push(Task {
            title,
            assignee,
            due: due.map(|d| d.date.to_string()),
            priority: priority(&s.text),
            source_quote: match &s.speaker {
                Some(name) => format!("{name}: {}", s.text),
                None => s.text.clone(),
            },
        });
    }
    tasks
}

/// Who is committed and the words from the action verb on.
fn trigger(s: &Sentence, speakers: &[String]) -> Option<(Option<String>, String)> {
    let text = s.text.trim();
    let lower = text.to_lowercase();
    let question = text.ends_with('?');
    let after = |prefix_len: usize| text[prefix_len..].trim().to_owned();

    for marker in ["action item:", "action:", "todo:", "to do:", "to-do:"] {
        if let Some(at) = lower.find(marker) {
            let rest = after(at + marker.len());
            let (who, rest) = named_subject(&rest, speakers)
                .map(|(w, r)| (Some(w), r))
                .unwrap_or((mention(&rest, speakers), rest));
            return Some((who, strip_mention(&rest)));
        }
    }
    if let Some(who) = mention(text, speakers) {
        // "…, @maria please fix X": the request follows the mention.
        let after_mention = text
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once(char::is_whitespace))
            .map(|(_, rest)| rest.trim_start_matches([',', ':', ' ']).to_owned())
            .filter(|rest| !rest.is_empty())
            .unwrap_or_else(|| strip_mention(text));
        let rest = strip_request(&after_mention);
        return action(&rest).map(|a| (Some(who), a));
    }
    if !question {
        for commit in [
            "i'll make sure to ",
            "i'll go ahead and ",
            "i will go ahead and ",
            "i'll ",
            "i will ",
            "i can ",
            "i'm going to ",
            "i am going to ",
            "i'm gonna ",
            "let me ",
            "i need to ",
            "i have to ",
        ] {
            if let Some(at) = find_word(&lower, commit)
                && let Some(a) = action(&after(at + commit.len()))
            {
                return Some((s.speaker.clone(), a));
            }
        }
    }
    // "Bob, can you …" / "Bob, please …"
    if let Some((name, rest)) = text.split_once(',')
        && let Some(who) = as_name(name.trim(), speakers)
    {
        let asked = strip_request(rest.trim());
        if asked != rest.trim() {
            return action(&asked).map(|a| (Some(who), a));
        }
    }
    if let Some((who, rest)) = named_subject(text, speakers)
        && !question
    {
        return action(&rest).map(|a| (Some(who), a));
    }
    if !question {
        for need in [
            "we need to ",
            "we have to ",
            "we must ",
            "someone needs to ",
            "someone should ",
            "somebody needs to ",
        ] {
            if let Some(at) = find_word(&lower, need) {
                return action(&after(at + need.len())).map(|a| (None, a));
            }
        }
    }
    None
}

/// Finds `needle` where it starts a word.
fn find_word(haystack: &str, needle: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = haystack[from..].find(needle) {
        let at = from + i;
        let starts_word = at == 0
            || haystack[..at]
                .chars()
                .last()
                .is_some_and(|c| !c.is_alphanumeric() && c != '\'');
        if starts_word {
            return Some(at);
        }
        from = at + needle.len();
    }
    None
}

/// "Bob will …", "Bob to …", "Bob needs to …", "Bob is going to …" anywhere in the text.
fn named_subject(text: &str, speakers: &[String]) -> Option<(String, String)> {
    let words: Vec<&str> = text.split_whitespace().collect();
    for i in 0..words.len() {
        let word = words[i].trim_matches(|c: char| !c.is_alphanumeric() && c != '\'');
        let Some(who) = as_name(word, speakers) else {
            continue;
        };
        let rest = words[i + 1..].join(" ");
        let lower = rest.to_lowercase();
        for link in [
            "will ",
            "'ll ",
            "to ",
            "needs to ",
            "should ",
            "is going to ",
            "can ",
            "has to ",
        ] {
            if let Some(r) = lower.strip_prefix(link) {
                let cut = rest.len() - r.len();
                return Some((who, rest[cut..].to_owned()));
            }
        }
    }
    None
}

/// `word` as a person's name: a known speaker (or their first name), or a capitalized word
/// that is not a common sentence opener.
fn as_name(word: &str, speakers: &[String]) -> Option<String> {
    let word = word.trim_start_matches('@');
    if word.is_empty() || word.contains(' ') && !speakers.iter().any(|s| s == word) {
        return None;
    }
    if let Some(full) = speakers.iter().find(|s| {
        s.eq_ignore_ascii_case(word)
            || s.split_whitespace()
                .next()
                .is_some_and(|first| first.eq_ignore_ascii_case(word))
    }) {
        return Some(full.clone());
    }
    let capitalized = word.chars().next().is_some_and(char::is_uppercase)
        && word
            .chars()
            .skip(1)
            .all(|c| c.is_lowercase() || c == '-' || c == '\'');
    (capitalized && word.len() > 1 && !NOT_NAMES.contains(&word.to_lowercase().as_str()))
        .then(|| word.to_owned())
}

/// The first `@name` in the text, completed to a speaker's name when one fits.
fn mention(text: &str, speakers: &[String]) -> Option<String> {
    let at = text.find('@')?;
    let name: String = text[at + 1..]
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == '-' || *c == '.')
        .collect();
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return None;
    }
    if let Some(full) = speakers.iter().find(|s| {
        s.split_whitespace()
            .next()
            .is_some_and(|first| first.eq_ignore_ascii_case(name))
            || s.replace(' ', "").eq_ignore_ascii_case(name)
    }) {
        return Some(full.clone());
    }
    let mut chars = name.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().collect::<String>() + chars.as_str())
}

fn strip_mention(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| !w.starts_with('@'))
        .collect::<Vec<_>>()
        .join(" ")
        .trim_start_matches([',', ':', ' '])
        .to_owned()
}

/// Drops a polite request opener: "can you", "could you", "please"…
fn strip_request(text: &str) -> String {
    let mut rest = text.trim().to_owned();
    loop {
        let lower = rest.to_lowercase();
        let opener = [
            "can you ",
            "could you ",
            "would you ",
            "will you ",
            "please ",
            "pls ",
            "you'll ",
            "you will ",
        ]
        .iter()
        .find(|o| lower.starts_with(**o));
        match opener {
            Some(o) => rest = rest[o.len()..].trim_start().to_owned(),
            None => return rest,
        }
    }
}

/// The words from the action verb on, if the first word is an action verb.
fn action(rest: &str) -> Option<String> {
    let rest = rest.trim();
    let mut words = rest.split_whitespace();
    let mut first = words.next()?.to_lowercase();
    let mut rest = rest;
    // "I'll also send", "I'll just check", "I'll go ahead and"
    while [
        "also",
        "just",
        "quickly",
        "then",
        "personally",
        "definitely",
    ]
    .contains(&first.as_str())
    {
        rest = rest[rest.find(char::is_whitespace)?..].trim_start();
        first = rest.split_whitespace().next()?.to_lowercase();
    }
    let verb = first.trim_matches(|c: char| !c.is_alphanumeric());
    if verb.is_empty() || NOT_ACTIONS.contains(&verb) || verb.ends_with("ed") && verb.len() > 4 {
        return None;
    }
    Some(rest.to_owned())
}

/// The verb phrase as an imperative title: the date phrase and priority words removed,
/// trailing filler and punctuation dropped, first letter capitalized.
fn title(phrase: &str, date_phrase: Option<&str>) -> String {
    let mut t = phrase.to_owned();
    if let Some(d) = date_phrase
        && let Some(at) = t.to_lowercase().find(&d.to_lowercase())
    {
        t.replace_range(at..at + d.len(), "");
    }
    for filler in [
        "as soon as possible",
        "asap",
        "urgently",
        "as a high priority",
        "as a priority",
        "high priority",
        "top priority",
        "low priority",
        "when you get a chance",
        "if you can",
        "if possible",
        "no rush",
    ] {
        while let Some(at) = t.to_lowercase().find(filler) {
            t.replace_range(at..at + filler.len(), "");
        }
    }
    let mut t = t
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace(" ,", ",");
    // "update the roadmap, it is important": a comment after a comma is not the task.
    const COMMENTS: &[&str] = &[
        "it ", "that ", "this ", "which ", "so ", "because ", "but ", "since ", "as ", "if ",
        "thanks", "please", "okay", "ok", "right",
    ];
    if let Some(at) = t.match_indices(", ").map(|(i, _)| i).find(|i| {
        let after = t[i + 2..].to_lowercase();
        COMMENTS.iter().any(|c| after.starts_with(c))
    }) {
        t.truncate(at);
    }
    loop {
        let trimmed = t
            .trim_end_matches(['.', '!', '?', ',', ';', ':', ' ', '-'])
            .to_owned();
        let lower = trimmed.to_lowercase();
        let cut = [
            " please", " okay", " ok", " too", " then", " and", " as well", " for us", " right",
        ]
        .iter()
        .find(|s| lower.ends_with(**s))
        .map(|s| trimmed.len() - s.len());
        t = match cut {
            Some(n) => trimmed[..n].to_owned(),
            None => {
                t = trimmed;
                break;
            }
        };
    }
    let mut chars = t.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

/// `urgent`, `high`, `low` or `normal` from the words of the sentence.
fn priority(text: &str) -> &'static str {
    let lower = text.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| find_word(&lower, w).is_some());
    if has(&[
        "urgent",
        "urgently",
        "asap",
        "as soon as possible",
        "immediately",
        "critical",
        "blocker",
        "blocking",
    ]) {
        "urgent"
    } else if has(&[
        "high priority",
        "top priority",
        "important",
        "priority",
        "first thing",
    ]) {
        "high"
    } else if has(&[
        "low priority",
        "no rush",
        "when you get a chance",
        "nice to have",
        "eventually",
        "whenever",
    ]) {
        "low"
    } else {
        "normal"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::local::text::sentences;

    fn tasks(text: &str) -> Vec<Task> {
        let speakers = vec!["Alice Moreau".to_owned(), "Bob Lee".to_owned()];
        extract(&sentences(text), dates::parse_iso("2025-03-12"), &speakers)
    }

    #[test]
    fn commitments_name_their_owner_date_and_priority() {
        let t = tasks(
            "Alice Moreau: I'll send the revised budget to finance by Friday.\n\
             Alice Moreau: Bob, can you update the onboarding doc when you get a chance?\n\
             Bob Lee: I'll be out on Monday.\n\
             Bob Lee: @alice please review the pricing page ASAP.\n\
             Bob Lee: We need to renew the SSL certificate before 2025-03-20.",
        );
        let view: Vec<(&str, Option<&str>, Option<&str>, &str)> = t
            .iter()
            .map(|t| {
                (
                    t.title.as_str(),
                    t.assignee.as_deref(),
                    t.due.as_deref(),
                    t.priority,
                )
            })
            .collect();
        assert_eq!(
            view,
            [
                (
                    "Send the revised budget to finance",
                    Some("Alice Moreau"),
                    Some("2025-03-14"),
                    "normal"
                ),
                ("Update the onboarding doc", Some("Bob Lee"), None, "low"),
                (
                    "Review the pricing page",
                    Some("Alice Moreau"),
                    None,
                    "urgent"
                ),
                (
                    "Renew the SSL certificate",
                    None,
                    Some("2025-03-20"),
                    "normal"
                ),
            ]
        );
        assert_eq!(
            t[0].source_quote,
            "Alice Moreau: I'll send the revised budget to finance by Friday."
        );
    }

    #[test]
    fn chatter_is_not_a_task() {
        assert!(tasks("Alice Moreau: I think that went well. I'll be honest, I liked it. Will you be there?").is_empty());
    }
}
