//! Template-based generation for the local provider: a LinkedIn post assembled from content
//! cards (hook, company line, the insights' central sentences, a question for the audience,
//! hashtags from the cards' most frequent words), and for any other prompt an extractive
//! brief of the material. Both are fixed structures filled from the input; the brief says
//! that it does not answer the prompt itself.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    summarize::{rank, summarize},
    text::{content_words, sentences},
};
use crate::{error::Error, prompts};

/// A content card as the cards worker returns it: `content` is a JSON object in the shape of
/// its type (company `{name, description…}`, audience `{description, roles…}`, voice
/// `{tone, style…}`, insight `{text, evidence…}`) or, from older callers, plain text.
#[derive(Debug, Default, Deserialize)]
struct Card {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    content: Value,
}

/// The fields of card content that carry prose, in the order they are read.
const PROSE_FIELDS: [&str; 5] = ["text", "description", "tone", "style", "evidence"];

impl Card {
    /// A string field of the content, trimmed, when it is there and not empty.
    fn field(&self, name: &str) -> Option<&str> {
        self.content
            .get(name)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    }

    /// A list-of-strings field of the content.
    fn list(&self, name: &str) -> Vec<&str> {
        self.content
            .get(name)
            .and_then(Value::as_array)
            .map(|items| {
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The card's prose: the text itself, or the prose fields of an object, then its other
    /// strings (lists included), as sentences.
    fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Object(map) => {
                let mut parts: Vec<String> = PROSE_FIELDS
                    .iter()
                    .filter_map(|f| self.field(f))
                    .map(sentence)
                    .collect();
                for (key, value) in map {
                    if PROSE_FIELDS.contains(&key.as_str()) {
                        continue;
                    }
                    match value {
                        Value::String(s) if !s.trim().is_empty() && key != "name" => {
                            parts.push(sentence(s.trim()))
                        }
                        Value::Array(_) => parts.extend(self.list(key).into_iter().map(sentence)),
                        _ => {}
                    }
                }
                parts.join(" ")
            }
            _ => String::new(),
        }
    }
}

/// `s` ending with sentence punctuation, so joined fields split into sentences.
fn sentence(s: &str) -> String {
    if s.ends_with(['.', '!', '?']) {
        s.to_owned()
    } else {
        format!("{s}.")
    }
}

/// `items` as prose: `a`, `a and b`, `a, b and c`.
fn joined(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// Generates from a named template (`linkedin_post`) or, for anything else, a brief of the
/// context.
pub fn generate(
    template: Option<&str>,
    prompt: Option<&str>,
    context: &Value,
) -> Result<String, Error> {
    match template {
        Some("linkedin_post") => linkedin_post(context),
        _ => brief(prompt, context),
    }
}

fn first_sentence(text: &str) -> Option<String> {
    sentences(text).into_iter().next().map(|s| s.text)
}

/// The most central sentence of a card (TextRank), or its first.
fn central_sentence(text: &str) -> Option<String> {
    rank(text)
        .into_iter()
        .next()
        .map(|r| r.sentence.text)
        .or_else(|| first_sentence(text))
}

fn linkedin_post(context: &Value) -> Result<String, Error> {
    let cards: Vec<Card> = context
        .get("cards")
        .cloned()
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| Error::invalid_input("context.cards", format!("not a list of cards: {e}")))?
        .unwrap_or_default();
    if cards.is_empty() {
        return Err(Error::invalid_input(
            "context.cards",
            "the linkedin_post template needs at least one card",
        ));
    }
    fn of<'c>(cards: &'c [Card], kind: &'c str) -> impl Iterator<Item = &'c Card> {
        cards
            .iter()
            .filter(move |c| c.kind.eq_ignore_ascii_case(kind))
    }
    let insights: Vec<&Card> = {
        let named: Vec<&Card> = of(&cards, "insight").collect();
        if named.is_empty() {
            // No insight card: whatever is not company/audience/voice carries the message.
            cards
                .iter()
                .filter(|c| {
                    !["company", "audience", "voice"].contains(&c.kind.to_lowercase().as_str())
                })
                .collect()
        } else {
            named
        }
    };
    let additional = context
        .get("additional_context")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let points: Vec<String> = insights
        .iter()
        .filter_map(|c| central_sentence(&c.text()))
        .take(3)
        .collect();
    let hook = insights
        .first()
        .map(|c| c.title.trim().to_owned())
        .filter(|t| !t.is_empty())
        .or_else(|| additional.and_then(first_sentence))
        .or_else(|| points.first().cloned())
        .unwrap_or_else(|| "A lesson worth sharing.".to_owned());
    let company_line = of(&cards, "company").next().and_then(|c| {
        // The description when there is one: the other fields (industry, website) are
        // labels, not prose to quote.
        let line = c
            .field("description")
            .and_then(first_sentence)
            .or_else(|| first_sentence(&c.text()));
        match (c.field("name"), line) {
            // The post names the company even when its description does not.
            (Some(name), Some(line)) if !line.contains(name) => Some(format!("{name}: {line}")),
            (Some(name), None) => Some(name.to_owned()),
            (_, line) => line,
        }
    });
    let audience = of(&cards, "audience")
        .next()
        .map(|c| {
            let roles = c.list("roles");
            if roles.is_empty() {
                c.title.trim().to_owned()
            } else {
                joined(&roles)
            }
        })
        .filter(|t| !t.is_empty());
    let voice = of(&cards, "voice")
        .next()
        .map(|c| format!("{} {}", c.title, c.text()).to_lowercase())
        .unwrap_or_default();
    let formal = ["formal", "professional", "authoritative", "corporate"]
        .iter()
        .any(|w| voice.contains(w))
        && !["casual", "playful", "friendly", "conversational"]
            .iter()
            .any(|w| voice.contains(w));
    let hashtags = hashtags(
        cards
            .iter()
            .filter(|c| !c.kind.eq_ignore_ascii_case("voice")),
    );
    prompts::render(
        "local/linkedin_post",
        json!({
            "hook": hook,
            "company_line": company_line,
            "points": points,
            "additional_context": additional,
            "audience": audience,
            "formal": formal,
            "hashtags": hashtags,
        }),
    )
}

/// The three most frequent content words of the cards, as hashtags.
fn hashtags<'a>(cards: impl Iterator<Item = &'a Card>) -> Vec<String> {
    let mut counts: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for card in cards {
        let text = format!("{} {}", card.title, card.text());
        for raw in text.split(|c: char| !c.is_alphanumeric()) {
            if raw.chars().count() < 4 || raw.chars().all(|c| c.is_ascii_digit()) {
                continue;
            }
            let Some(stem) = content_words(raw).into_iter().next() else {
                continue;
            };
            let entry = counts.entry(stem).or_insert((0, raw.to_owned()));
            entry.0 += 1;
        }
    }
    let mut ranked: Vec<(usize, String)> = counts.into_values().collect();
    ranked.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then(a.1.to_lowercase().cmp(&b.1.to_lowercase()))
    });
    ranked
        .into_iter()
        .take(3)
        .map(|(_, word)| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|f| f.to_uppercase().collect::<String>() + &chars.as_str().to_lowercase())
                .unwrap_or_default()
        })
        .collect()
}

fn brief(prompt: Option<&str>, context: &Value) -> Result<String, Error> {
    let text_of = |v: &Value| -> Vec<String> {
        match v {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        }
    };
    let title = context
        .get("topic")
        .or_else(|| context.get("title"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let sources: Vec<String> = context
        .get("sources")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .map(|s| match s {
                    Value::String(s) => s.clone(),
                    other => {
                        let title = other
                            .get("title")
                            .and_then(Value::as_str)
                            .unwrap_or("source");
                        match other
                            .get("url")
                            .or_else(|| other.get("location"))
                            .and_then(Value::as_str)
                        {
                            Some(url) => format!("{title} — {url}"),
                            None => title.to_owned(),
                        }
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let mut material = String::new();
    match context {
        Value::Object(map) => {
            for (key, value) in map {
                if ["sources", "topic", "title"].contains(&key.as_str()) {
                    continue;
                }
                for line in text_of(value) {
                    material.push_str(&line);
                    material.push('\n');
                }
            }
        }
        other => {
            for line in text_of(other) {
                material.push_str(&line);
                material.push('\n');
            }
        }
    }
    if material.trim().is_empty() {
        material = prompt.unwrap_or_default().to_owned();
    }
    if material.trim().is_empty() {
        return Err(Error::invalid_input(
            "context",
            "the local provider needs material to work from (context or prompt)",
        ));
    }
    let summary = summarize(&material, 5);
    let key_points = context
        .get("key_points")
        .map(text_of)
        .filter(|k| !k.is_empty())
        .unwrap_or(summary.key_points);
    prompts::render(
        "local/brief",
        json!({
            "title": title,
            "summary": summary.summary,
            "key_points": key_points,
            "sources": sources,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linkedin_post_is_built_from_the_cards() {
        let context = json!({
            "cards": [
                { "type": "company", "title": "Acme Freight", "content": "Acme Freight moves containers for 300 importers across Europe. It was founded in 2009." },
                { "type": "audience", "title": "logistics managers", "content": "People who plan inbound freight." },
                { "type": "voice", "title": "Friendly", "content": "Casual and direct, no jargon." },
                { "type": "insight", "title": "Late containers cost more than slow ones", "content": "Customers forgive slow delivery. Late containers break warehouse schedules and late containers cost importers twice the delay fees. Predictable container schedules beat fast container schedules." }
            ],
            "additional_context": "We are hiring planners."
        });
        let post = generate(Some("linkedin_post"), None, &context).expect("post");
        assert!(
            post.starts_with("Late containers cost more than slow ones"),
            "{post}"
        );
        assert!(
            post.contains("Acme Freight moves containers for 300 importers across Europe."),
            "{post}"
        );
        assert!(post.contains("→ "), "casual voice uses arrows: {post}");
        assert!(
            post.contains("A question for logistics managers: how do you see it?"),
            "{post}"
        );
        assert!(post.contains("We are hiring planners."), "{post}");
        assert!(post.contains("#Containers"), "{post}");
        assert!(generate(Some("linkedin_post"), None, &json!({ "cards": [] })).is_err());
    }

    #[test]
    fn cards_with_json_content_give_name_audience_and_voice() {
        let context = json!({
            "cards": [
                { "type": "company", "title": "Company", "content": {
                    "name": "Nordlicht Energy",
                    "industry": "energy",
                    "description": "We install heat pumps in old apartment buildings.",
                    "products": ["heat pumps", "retrofit planning"] } },
                { "type": "audience", "title": "Who we write for", "content": {
                    "description": "People who run residential buildings.",
                    "roles": ["property managers", "housing co-op boards"] } },
                { "type": "voice", "title": "Voice", "content": {
                    "tone": "professional", "style": "Plain words, short sentences." } },
                { "type": "insight", "title": "Old buildings are ready sooner than you think", "content": {
                    "text": "Most buildings from the 1960s need only larger radiators in a few rooms. A full insulation retrofit is rarely required before a heat pump.",
                    "evidence": "Measured in 140 installations." } }
            ]
        });
        let post = generate(Some("linkedin_post"), None, &context).expect("post");
        assert!(
            post.contains("Nordlicht Energy: We install heat pumps in old apartment buildings.\n"),
            "labels such as the industry stay out of the company line: {post}"
        );
        assert!(
            post.contains("property managers and housing co-op boards"),
            "{post}"
        );
        assert!(
            post.contains("• "),
            "a professional voice uses bullets: {post}"
        );
        assert!(post.contains("radiators"), "{post}");
    }

    #[test]
    fn a_free_prompt_gets_an_extractive_brief_that_says_what_it_is() {
        let context = json!({
            "topic": "Heat pumps",
            "summary": "Heat pumps move heat instead of burning fuel. Modern heat pumps work well in cold climates. Installation costs remain the main barrier for heat pumps.",
            "key_points": ["Efficient", "Costly to install"],
            "sources": [{ "title": "IEA report", "url": "https://example.org/iea" }]
        });
        let text = generate(None, Some("Analyse this"), &context).expect("brief");
        assert!(text.starts_with("# Heat pumps"), "{text}");
        assert!(text.contains("- Costly to install"), "{text}");
        assert!(
            text.contains("1. IEA report — https://example.org/iea"),
            "{text}"
        );
        assert!(text.contains("no language model"), "{text}");
    }
}
