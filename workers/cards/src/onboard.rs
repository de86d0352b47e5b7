//! Onboarding: a tenant's answers to the onboarding questions become its first cards —
//! company, audience, voice and insight, one per topic the answers cover.
//!
//! Long prose answers are shortened with the AI worker's `local` provider (extractive TextRank
//! summarization from `switchyard-ai`, used as a library): it needs no key and no network and
//! gives the same summary for the same answer, so onboarding stays deterministic and a
//! redelivered job writes the same cards. The full answer is kept in the card where the type
//! has room for it (an insight's `evidence`).

use serde_json::{Map, Value, json};
use switchyard_ai::local::summarize;

use crate::{Error, store::NewCard, types};

/// Answers longer than this many characters are summarized.
pub const SUMMARIZE_ABOVE: usize = 400;
/// Sentences in a summary.
pub const SUMMARY_SENTENCES: usize = 2;

/// The questions, by id: which card and which content field each answer fills, and whether
/// the answer is a list.
const QUESTIONS: [(&str, &str, &str, bool); 16] = [
    ("company_name", types::COMPANY, "name", false),
    ("company_description", types::COMPANY, "description", false),
    ("industry", types::COMPANY, "industry", false),
    ("website", types::COMPANY, "website", false),
    ("products", types::COMPANY, "products", true),
    ("audience", types::AUDIENCE, "description", false),
    ("audience_roles", types::AUDIENCE, "roles", true),
    ("pains", types::AUDIENCE, "pains", true),
    ("goals", types::AUDIENCE, "goals", true),
    ("tone", types::VOICE, "tone", false),
    ("style", types::VOICE, "style", false),
    ("dos", types::VOICE, "dos", true),
    ("donts", types::VOICE, "donts", true),
    ("insight", types::INSIGHT, "text", false),
    ("evidence", types::INSIGHT, "evidence", false),
    ("source", types::INSIGHT, "source", false),
];

/// The question whose answer a card of each type cannot do without.
const REQUIRED: [(&str, &str); 4] = [
    (types::COMPANY, "company_name"),
    (types::AUDIENCE, "audience"),
    (types::VOICE, "tone"),
    (types::INSIGHT, "insight"),
];

/// The question ids, for error messages.
pub fn question_ids() -> Vec<&'static str> {
    QUESTIONS.iter().map(|q| q.0).collect()
}

/// What every empty answer is told.
const EMPTY: &str = "empty; leave the question out or answer it";

/// A string answer trimmed, or a list answer's items joined (`field` names it in errors). An
/// answer that says nothing (blank, an empty list, `null`) is refused rather than dropped, so
/// every answer given is used.
fn text(field: &str, value: &Value) -> Result<String, Error> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        Value::String(_) => Err(Error::invalid(field, EMPTY)),
        Value::Array(_) => Ok(list(field, value)?.join("; ")),
        _ => Err(Error::invalid(
            field,
            "expected a string or a list of strings",
        )),
    }
}

/// Whether a list item says something: more than white space and bullet marks.
fn says_something(item: &str) -> bool {
    item.chars()
        .any(|c| !c.is_whitespace() && !LIST_MARKS.contains(&c))
}

/// Bullet marks a list item may start with.
const LIST_MARKS: [char; 3] = ['-', '*', '•'];

/// A list answer; a string answer is split on new lines, `;` and `,`, its parts without their
/// bullet marks. A list item must not be blank.
fn list(field: &str, value: &Value) -> Result<Vec<String>, Error> {
    let items: Vec<String> = match value {
        Value::String(s) => s
            .split(['\n', ';', ','])
            .filter(|p| says_something(p))
            .map(|p| p.trim().trim_start_matches(LIST_MARKS).trim().to_owned())
            .collect(),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
                Value::String(_) => Err(Error::invalid(format!("{field}[{i}]"), EMPTY)),
                _ => Err(Error::invalid(format!("{field}[{i}]"), "expected a string")),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(Error::invalid(
                field,
                "expected a string or a list of strings",
            ));
        }
    };
    if items.is_empty() {
        return Err(Error::invalid(field, EMPTY));
    }
    Ok(items)
}

/// `text` shortened to its most central sentences when it is long.
pub fn shorten(text: &str) -> String {
    if text.chars().count() <= SUMMARIZE_ABOVE {
        return text.to_owned();
    }
    let summary = summarize::summarize(text, SUMMARY_SENTENCES).summary;
    if summary.trim().is_empty() {
        text.to_owned()
    } else {
        summary
    }
}

/// A title from prose: its first sentence, at most 80 characters (cut at a word).
fn title_of(text: &str) -> String {
    let first = text
        .split_inclusive(['.', '!', '?', '\n'])
        .next()
        .unwrap_or(text)
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .trim();
    // Only punctuation before the first stop: the whole text is the title.
    let first = if first.is_empty() { text.trim() } else { first };
    if first.chars().count() <= 80 {
        return first.to_owned();
    }
    let mut out = String::new();
    for word in first.split_whitespace() {
        if out.chars().count() + word.chars().count() + 1 > 77 {
            break;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.push('…');
    out
}

/// The cards the answers make, in the order company, audience, voice, insight (topics the
/// answers do not cover are left out). Unknown question ids are refused, so a typo does not
/// silently drop an answer.
pub fn cards(answers: &Map<String, Value>) -> Result<Vec<NewCard>, Error> {
    let known = question_ids();
    for key in answers.keys() {
        if !known.contains(&key.as_str()) {
            return Err(Error::invalid(
                format!("answers.{key}"),
                format!("unknown question; expected one of {}", known.join(", ")),
            ));
        }
    }
    let mut out = Vec::new();
    for (card_type, required) in REQUIRED {
        let mut content = Map::new();
        for (question, of_type, field, is_list) in QUESTIONS {
            if of_type != card_type {
                continue;
            }
            let Some(value) = answers.get(question) else {
                continue;
            };
            let path = format!("answers.{question}");
            if is_list {
                content.insert(field.to_owned(), json!(list(&path, value)?));
            } else {
                content.insert(field.to_owned(), Value::String(text(&path, value)?));
            }
        }
        if content.is_empty() {
            continue;
        }
        let Some(main) = answers
            .get(required)
            .map(|v| text(&format!("answers.{required}"), v))
            .transpose()?
        else {
            return Err(Error::invalid(
                format!("answers.{required}"),
                format!("missing; the {card_type} card needs it"),
            ));
        };
        let title = match card_type {
            types::COMPANY => title_of(&main),
            types::AUDIENCE => content
                .get("roles")
                .and_then(|r| r.as_array())
                .and_then(|r| r.first())
                .and_then(Value::as_str)
                .map(title_of)
                .unwrap_or_else(|| title_of(&main)),
            _ => title_of(&main),
        };
        // Long prose becomes its summary; an insight keeps the full answer as evidence.
        for field in ["description", "text"] {
            if let Some(Value::String(long)) = content.get(field).cloned() {
                let short = shorten(&long);
                if short != long {
                    if card_type == types::INSIGHT && !content.contains_key("evidence") {
                        content.insert("evidence".into(), Value::String(long));
                    }
                    content.insert(field.to_owned(), Value::String(short));
                }
            }
        }
        if card_type == types::INSIGHT && !content.contains_key("source") {
            content.insert("source".into(), Value::String("onboarding".into()));
        }
        out.push(NewCard {
            card_type: card_type.to_owned(),
            title,
            content: Value::Object(content),
        });
    }
    if out.is_empty() {
        return Err(Error::invalid(
            "answers",
            format!(
                "no answers to make cards from; answer at least one of {}",
                REQUIRED.map(|r| r.1).join(", ")
            ),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn answers_become_the_four_cards_in_their_shapes() {
        let made = cards(&answers(json!({
            "company_name": "Acme Freight",
            "company_description": "Acme Freight moves containers for 300 importers.",
            "products": "Ocean freight, customs brokerage",
            "audience": "Logistics managers at mid-size importers",
            "audience_roles": ["Logistics manager", "Head of supply chain"],
            "tone": "friendly and direct",
            "dos": ["use numbers"],
            "insight": "Late containers cost more than slow ones."
        })))
        .unwrap();
        let types: Vec<&str> = made.iter().map(|c| c.card_type.as_str()).collect();
        assert_eq!(types, ["company", "audience", "voice", "insight"]);
        assert_eq!(made[0].title, "Acme Freight");
        assert_eq!(made[0].content["name"], "Acme Freight");
        assert_eq!(
            made[0].content["products"],
            json!(["Ocean freight", "customs brokerage"])
        );
        assert_eq!(made[1].title, "Logistics manager");
        assert_eq!(made[2].content["tone"], "friendly and direct");
        assert_eq!(made[3].content["source"], "onboarding");
        for c in &made {
            types::check_content("content", &c.card_type, &c.content, None).unwrap();
        }
    }

    #[test]
    fn long_answers_are_summarized_and_the_insight_keeps_the_full_text() {
        let long = "Customers forgive slow delivery when it is predictable. \
            Late containers break warehouse schedules and cost importers twice the delay fees. \
            Our data from 4,000 shipments shows predictable schedules beat fast ones. \
            Weather matters less than port congestion for most routes we run. \
            Importers who plan with buffers lose less money than those who chase speed. \
            The cheapest container is the one that arrives when the warehouse expects it.";
        let made = cards(&answers(json!({"insight": long}))).unwrap();
        let text = made[0].content["text"].as_str().unwrap();
        assert!(text.len() < long.len(), "{text}");
        assert_eq!(made[0].content["evidence"], long);
        // Deterministic: the same answer gives the same card.
        assert_eq!(cards(&answers(json!({"insight": long}))).unwrap(), made);
    }

    #[test]
    fn unknown_questions_and_missing_required_answers_name_the_field() {
        let Err(Error::InvalidInput { field, .. }) =
            cards(&answers(json!({"company_nme": "Acme"})))
        else {
            panic!("a typo is refused");
        };
        assert_eq!(field, "answers.company_nme");
        let Err(Error::InvalidInput { field, .. }) =
            cards(&answers(json!({"industry": "freight"})))
        else {
            panic!("a company card needs a name");
        };
        assert_eq!(field, "answers.company_name");
        assert!(cards(&answers(json!({}))).is_err());
        let Err(Error::InvalidInput { field, .. }) =
            cards(&answers(json!({"tone": "calm", "dos": ["a", 1]})))
        else {
            panic!("a non-string item is refused");
        };
        assert_eq!(field, "answers.dos[1]");
    }

    #[test]
    fn an_answer_that_says_nothing_is_refused_by_name() {
        for (answer, field) in [
            (json!({"tone": "calm", "style": "  "}), "answers.style"),
            (json!({"tone": "calm", "dos": []}), "answers.dos"),
            (json!({"tone": "calm", "dos": ", ; -"}), "answers.dos"),
            (json!({"tone": "calm", "dos": ["a", " "]}), "answers.dos[1]"),
            (json!({"tone": null}), "answers.tone"),
            (json!({"tone": " ", "insight": "x"}), "answers.tone"),
        ] {
            let Err(Error::InvalidInput { field: got, .. }) = cards(&answers(answer.clone()))
            else {
                panic!("{answer} is refused");
            };
            assert_eq!(got, field, "{answer}");
        }
        // Bullet marks go, words stay.
        let made = cards(&answers(json!({"tone": "calm", "dos": "- a-b\n* c"}))).unwrap();
        assert_eq!(made[0].content["dos"], json!(["a-b", "c"]));
    }

    #[test]
    fn a_title_is_never_empty() {
        assert_eq!(title_of("."), ".");
        assert_eq!(title_of("?! Acme"), "?! Acme");
        assert_eq!(title_of("Acme. Freight."), "Acme");
        let made = cards(&answers(json!({"company_name": "..."}))).unwrap();
        assert_eq!(made[0].title, "...");
    }

    /// The questions here are the ones the catalog (and so the API document) lists.
    #[test]
    fn the_questions_are_the_catalogs() {
        use switchyard_catalog::cards::{ONBOARDING_LIST_QUESTIONS, ONBOARDING_TOPICS};
        let mut from_catalog: Vec<(&str, bool)> = Vec::new();
        for (first, others) in ONBOARDING_TOPICS {
            for q in std::iter::once(first).chain(others.iter().copied()) {
                from_catalog.push((q, ONBOARDING_LIST_QUESTIONS.contains(&q)));
            }
        }
        let here: Vec<(&str, bool)> = QUESTIONS.iter().map(|q| (q.0, q.3)).collect();
        assert_eq!(here, from_catalog);
        let firsts: Vec<&str> = REQUIRED.iter().map(|r| r.1).collect();
        let catalog_firsts: Vec<&str> = ONBOARDING_TOPICS.iter().map(|t| t.0).collect();
        assert_eq!(firsts, catalog_firsts);
    }
}
