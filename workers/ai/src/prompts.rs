//! The prompt templates, versioned files in `prompts/` compiled into the binary and rendered
//! with minijinja. Code refers to them by name only.

use std::sync::LazyLock;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::error::Error;

/// `(name, source)` of every template.
const TEMPLATES: &[(&str, &str)] = &[
    ("system", include_str!("../prompts/system.j2")),
    ("generate", include_str!("../prompts/generate.j2")),
    ("linkedin_post", include_str!("../prompts/linkedin_post.j2")),
    (
        "research_analysis",
        include_str!("../prompts/research_analysis.j2"),
    ),
    ("summarize", include_str!("../prompts/summarize.j2")),
    ("extract_tasks", include_str!("../prompts/extract_tasks.j2")),
    ("fix_json", include_str!("../prompts/fix_json.j2")),
    (
        "local/linkedin_post",
        include_str!("../prompts/local/linkedin_post.j2"),
    ),
    ("local/brief", include_str!("../prompts/local/brief.j2")),
];

/// The templates a job may name in `ai.generate`'s `template`.
pub const GENERATE_TEMPLATES: &[&str] = &["linkedin_post", "research_analysis"];

static ENV: LazyLock<Result<Environment<'static>, String>> = LazyLock::new(|| {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Chainable);
    // Prompts are plain text: nothing is escaped, and the trailing newline of a file is not
    // part of the prompt.
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.set_fuel(Some(1_000_000));
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(env)
});

/// Renders template `name` with `context`.
pub fn render(name: &str, context: impl Serialize) -> Result<String, Error> {
    let env = ENV.as_ref().map_err(|message| Error::Template {
        name: name.to_owned(),
        message: message.clone(),
    })?;
    let template = env.get_template(name).map_err(|e| Error::Template {
        name: name.to_owned(),
        message: e.to_string(),
    })?;
    template
        .render(minijinja::value::Serde(context))
        .map(|s| s.trim().to_owned())
        .map_err(|e| Error::Template {
            name: name.to_owned(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_template_compiles_and_renders_with_an_empty_context() {
        for (name, _) in TEMPLATES {
            render(name, json!({})).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn the_summarize_prompt_carries_the_text_and_limit() {
        let p = render(
            "summarize",
            json!({ "text": "Alpha beta.", "max_sentences": 3 }),
        )
        .expect("renders");
        assert!(
            p.contains("at most 3 sentences") && p.contains("Alpha beta."),
            "{p}"
        );
        assert!(!p.contains("version:"), "comments are not sent: {p}");
    }
}
