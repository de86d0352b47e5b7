//! Slack: Markdown → mrkdwn, and posting through `chat.postMessage` (bot token) or an
//! incoming webhook.
//!
//! Slack answers most Web API errors with HTTP 200 and `{"ok": false, "error": "…"}`; those
//! are mapped here: `ratelimited` (and HTTP 429) → a retry after `Retry-After`; Slack's own
//! transient errors → retry; everything else (`channel_not_found`, `invalid_auth`,
//! `not_in_channel`, `msg_too_long`…) → permanent, with Slack's code as the message.

use reqwest::header::CONTENT_TYPE;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_runtime::config::{Secret, SlackSettings};

use crate::{
    Error,
    http::{Http, Reply, body_text, endpoint, retry_after, status_error},
    markdown::{self, Block, ListKind, Span},
    metrics::System,
    status::{CHECK_TIMEOUT, Check},
};

/// Slack truncates `text` beyond 40,000 characters; we cut a little earlier, visibly.
const MAX_TEXT: usize = 39_000;

/// `integration.slack.post_message` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    pub channel: Option<String>,
    pub webhook_url: Option<String>,
    pub markdown: Option<String>,
    pub blocks: Option<Vec<Value>>,
}

/// The Slack client.
#[derive(Debug, Clone)]
pub struct Slack {
    bot_token: Option<Secret>,
    webhook_url: Option<Secret>,
    base_url: String,
    default_channel: Option<String>,
}

impl Slack {
    pub fn new(
        settings: &SlackSettings,
        bot_token: Option<Secret>,
        webhook_url: Option<Secret>,
    ) -> Self {
        Slack {
            bot_token,
            webhook_url,
            base_url: settings.base_url.clone(),
            default_channel: settings.default_channel.clone(),
        }
    }

    /// Checks the bot token with `auth.test` (read-only). An incoming webhook alone cannot be
    /// checked without posting a message, so it is reported as configured and unchecked.
    pub(crate) async fn check(&self, http: &Http) -> Check {
        const NAME: &str = "slack";
        let Some(token) = &self.bot_token else {
            return match self.webhook_url {
                Some(_) => Check::unchecked(
                    NAME,
                    "an incoming webhook is set; it cannot be checked without posting to it",
                ),
                None => Check::not_configured(
                    NAME,
                    "integration.slack.bot_token or integration.slack.webhook_url",
                ),
            };
        };
        let outcome = async {
            let url = endpoint(&self.base_url, &["api", "auth.test"])?;
            let request = http
                .client
                .post(url)
                .bearer_auth(token.expose())
                .timeout(CHECK_TIMEOUT);
            let me = http.call(System::Slack, request, web_api_body).await?;
            let user = me["user"].as_str().filter(|u| !u.is_empty());
            let team = me["team"].as_str().filter(|t| !t.is_empty());
            Ok(match (user, team) {
                (Some(u), Some(t)) => format!("authenticated as {u} in {t}"),
                (Some(u), None) => format!("authenticated as {u}"),
                _ => "authenticated".to_owned(),
            })
        }
        .await;
        Check::checked(NAME, outcome)
    }

    /// Posts the message; returns `{channel, ts}`.
    pub(crate) async fn post(&self, http: &Http, input: PostMessage) -> Result<Value, Error> {
        let text = input
            .markdown
            .as_deref()
            .map(to_mrkdwn)
            .filter(|t| !t.trim().is_empty());
        let blocks = input.blocks.filter(|b| !b.is_empty());
        if text.is_none() && blocks.is_none() {
            return Err(Error::invalid(
                "markdown",
                "give `markdown`, `blocks` or both; the message would be empty",
            ));
        }
        let channel = input
            .channel
            .filter(|c| !c.trim().is_empty())
            .or_else(|| self.default_channel.clone());

        if let Some(url) = input.webhook_url.filter(|u| !u.trim().is_empty()) {
            // A URL from job input: checked like any outgoing webhook.
            let url = http.check_url("webhook_url", &url).await?;
            return self
                .post_webhook(http, &http.guarded, url, text, blocks, channel)
                .await;
        }
        if let Some(token) = &self.bot_token {
            let Some(channel) = channel else {
                return Err(Error::invalid(
                    "channel",
                    "no channel given and integration.slack.default_channel is not set",
                ));
            };
            let mut body = json!({
                "channel": channel,
                "text": text.clone().unwrap_or_default(),
                "mrkdwn": true,
                "unfurl_links": false,
            });
            if let Some(blocks) = blocks {
                body["blocks"] = Value::Array(blocks);
            }
            let url = endpoint(&self.base_url, &["api", "chat.postMessage"])?;
            let request = http
                .client
                .post(url)
                .bearer_auth(token.expose())
                .header(CONTENT_TYPE, "application/json; charset=utf-8")
                .json(&body);
            return http.call(System::Slack, request, web_api_reply).await;
        }
        if let Some(url) = &self.webhook_url {
            let url = reqwest::Url::parse(url.expose()).map_err(|_| Error::Config {
                key: "integration.slack.webhook_url",
                message: "not a URL".into(),
            })?;
            return self
                .post_webhook(http, &http.client, url, text, blocks, channel)
                .await;
        }
        Err(Error::NotConfigured {
            what: "Slack",
            key: "integration.slack.bot_token or integration.slack.webhook_url",
        })
    }

    async fn post_webhook(
        &self,
        http: &Http,
        client: &reqwest::Client,
        url: reqwest::Url,
        text: Option<String>,
        blocks: Option<Vec<Value>>,
        channel: Option<String>,
    ) -> Result<Value, Error> {
        let mut body = json!({ "text": text.unwrap_or_default() });
        if let Some(blocks) = blocks {
            body["blocks"] = Value::Array(blocks);
        }
        let request = client.post(url).json(&body);
        http.call(System::Slack, request, |reply| {
            if reply.status.is_success() {
                // Webhooks report no channel or timestamp: the webhook decides the channel.
                Ok(json!({ "channel": channel.unwrap_or_default(), "ts": "" }))
            } else {
                let message = body_text(&reply.body);
                Err(status_error(System::Slack, &reply, message))
            }
        })
        .await
    }
}

/// Maps a `chat.postMessage` reply to `{channel, ts}`.
fn web_api_reply(reply: Reply) -> Result<Value, Error> {
    let body = web_api_body(reply)?;
    Ok(json!({
        "channel": body["channel"].as_str().unwrap_or_default(),
        "ts": body["ts"].as_str().unwrap_or_default(),
    }))
}

/// A Web API reply's body when Slack says `ok`; otherwise the error it is: HTTP status
/// first, then Slack's `error` code.
fn web_api_body(reply: Reply) -> Result<Value, Error> {
    let body: Option<Value> = serde_json::from_slice(&reply.body).ok();
    let code = body
        .as_ref()
        .and_then(|b| b["error"].as_str())
        .map(str::to_owned);
    if !reply.status.is_success() {
        let message = code.unwrap_or_else(|| body_text(&reply.body));
        return Err(status_error(System::Slack, &reply, message));
    }
    let Some(body) = body else {
        return Err(Error::BadResponse {
            system: System::Slack,
            message: format!("not JSON: {}", body_text(&reply.body)),
        });
    };
    if body["ok"].as_bool() == Some(true) {
        return Ok(body);
    }
    let code = code.unwrap_or_else(|| "unknown_error".into());
    let detail = body["response_metadata"]["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("; ")
        })
        .filter(|d| !d.is_empty());
    let message = match detail {
        Some(d) => format!("{code} ({d})"),
        None => code.clone(),
    };
    Err(match code.as_str() {
        "ratelimited" | "rate_limited" => Error::RateLimited {
            system: System::Slack,
            retry_after: retry_after(&reply.headers, std::time::SystemTime::now()),
        },
        "internal_error" | "fatal_error" | "request_timeout" => Error::Unavailable {
            system: System::Slack,
            message,
            maybe_applied: true,
        },
        "service_unavailable" | "team_added_to_org" => Error::Unavailable {
            system: System::Slack,
            message,
            maybe_applied: false,
        },
        _ => Error::Rejected {
            system: System::Slack,
            status: reply.status.as_u16(),
            message,
        },
    })
}

/// Markdown as Slack mrkdwn: `**bold**` → `*bold*`, `*italic*` → `_italic_`, `~~x~~` → `~x~`,
/// links → `<url|text>`, headings → bold lines, lists → `•`/`1.`/`☐`/`☑` lines, quotes →
/// `> `, code as is; `&`, `<`, `>` escaped, except Slack's own `<url|text>` forms written
/// into the Markdown. Line breaks are kept as written.
pub fn to_mrkdwn(markdown: &str) -> String {
    let doc = markdown::parse(markdown, "\n");
    let mut out = String::new();
    render_blocks(&doc, 0, &mut out);
    let out = out.trim_end().to_owned();
    if out.chars().count() > MAX_TEXT {
        let cut: String = out.chars().take(MAX_TEXT).collect();
        return format!("{cut}\n… (truncated)");
    }
    out
}

fn render_blocks(blocks: &[Block], depth: usize, out: &mut String) {
    let mut previous: Option<&Block> = None;
    for block in blocks {
        let same_list = previous.is_some_and(|p| continues_list(p, block));
        if depth == 0 && !(out.is_empty() || same_list) {
            // A blank line between blocks, none between items of one list.
            if !out.ends_with("\n\n") {
                out.push_str(if out.ends_with('\n') { "\n" } else { "\n\n" });
            }
        } else if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        render_block(block, depth, out);
        previous = Some(block);
    }
}

/// Whether `next` is the item after `previous` in the same list.
fn continues_list(previous: &Block, next: &Block) -> bool {
    let position = |b: &Block| match b {
        Block::Item { kind, index, .. } | Block::ToDo { kind, index, .. } => Some((*kind, *index)),
        _ => None,
    };
    match (position(previous), position(next)) {
        (Some((a, i)), Some((b, j))) => a == b && j == i + 1,
        _ => false,
    }
}

fn render_block(block: &Block, depth: usize, out: &mut String) {
    let indent = "    ".repeat(depth);
    match block {
        Block::Heading(_, spans) => {
            let text = spans_to_mrkdwn(spans);
            out.push_str(&indent);
            out.push_str(&wrap("*", text.trim()));
        }
        Block::Paragraph(spans) => {
            let text = spans_to_mrkdwn(spans);
            out.push_str(&indent_lines(&text, &indent));
        }
        Block::Item {
            kind,
            index,
            text,
            children,
        } => {
            let marker = match kind {
                ListKind::Bulleted => "•".to_owned(),
                ListKind::Numbered(start) => format!("{}.", start + index),
            };
            item(&indent, &marker, text, children, depth, out);
        }
        Block::ToDo {
            checked,
            text,
            children,
            ..
        } => {
            let marker = if *checked { "☑" } else { "☐" };
            item(&indent, marker, text, children, depth, out);
        }
        Block::Code { text, .. } => {
            out.push_str(&indent);
            out.push_str("```\n");
            out.push_str(&escape(text));
            out.push_str("\n```");
        }
        Block::Quote { text, children } => {
            let mut inner = spans_to_mrkdwn(text);
            if !children.is_empty() {
                let mut rest = String::new();
                render_blocks(children, 0, &mut rest);
                if !inner.is_empty() {
                    inner.push('\n');
                }
                inner.push_str(&rest);
            }
            let quoted: Vec<String> = inner.lines().map(|l| format!("{indent}> {l}")).collect();
            out.push_str(&quoted.join("\n"));
        }
        Block::Divider => {
            out.push_str(&indent);
            out.push_str("———");
        }
    }
}

fn item(
    indent: &str,
    marker: &str,
    text: &[Span],
    children: &[Block],
    depth: usize,
    out: &mut String,
) {
    let text = spans_to_mrkdwn(text);
    let continuation = format!("{indent}  ");
    let mut lines = text.lines();
    out.push_str(&format!(
        "{indent}{marker} {}",
        lines.next().unwrap_or_default()
    ));
    for line in lines {
        out.push('\n');
        out.push_str(&continuation);
        out.push_str(line);
    }
    if !children.is_empty() {
        out.push('\n');
        render_blocks(children, depth + 1, out);
    }
}

fn indent_lines(text: &str, indent: &str) -> String {
    if indent.is_empty() {
        return text.to_owned();
    }
    text.lines()
        .map(|l| format!("{indent}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn spans_to_mrkdwn(spans: &[Span]) -> String {
    let mut out = String::new();
    for span in spans {
        let mut text = if span.code {
            format!("`{}`", escape(&span.text))
        } else {
            escape_keeping_slack_links(&span.text)
        };
        if span.strike {
            text = wrap("~", &text);
        }
        if span.italic {
            text = wrap("_", &text);
        }
        if span.bold {
            text = wrap("*", &text);
        }
        if let Some(url) = &span.link {
            text = link(url, &span.text, &text);
        }
        out.push_str(&text);
    }
    out
}

fn link(url: &str, raw_text: &str, styled: &str) -> String {
    let linkable =
        url.starts_with("http://") || url.starts_with("https://") || url.starts_with("mailto:");
    if !linkable {
        return styled.to_owned();
    }
    // An autolink such as `<https://x|Title>` is already Slack's own link syntax.
    if raw_text == url {
        return format!("<{}>", escape(url));
    }
    format!(
        "<{}|{}>",
        escape(url).replace('|', "%7C"),
        styled.replace('|', "¦")
    )
}

/// Wraps text in a mrkdwn marker, keeping surrounding whitespace outside (Slack only formats
/// markers that touch the text).
fn wrap(marker: &str, text: &str) -> String {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return text.to_owned();
    }
    let start = text.len() - text.trim_start().len();
    let end = text.trim_end().len();
    format!(
        "{}{marker}{trimmed}{marker}{}",
        &text[..start],
        &text[end..]
    )
}

/// Escapes the three characters Slack needs escaped.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Escapes text but keeps Slack's own `<https://…|text>`, `<mailto:…>`, `<#C…>`, `<@U…>` and
/// `<!here>` forms that a template wrote on purpose.
fn escape_keeping_slack_links(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('<') {
        out.push_str(&escape(&rest[..open]));
        let after = &rest[open..];
        match after.find('>') {
            Some(close) if is_slack_form(&after[1..close]) => {
                out.push_str(&after[..=close]);
                rest = &after[close + 1..];
            }
            // `<docs/a.md|Title>`: Slack's link form around something Slack cannot link
            // (a corpus path): keep the title and show the location.
            Some(close) if is_link_form(&after[1..close]) => {
                let (target, title) = after[1..close].split_once('|').unwrap_or_default();
                out.push_str(&format!("{} ({})", escape(title), escape(target)));
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str("&lt;");
                rest = &after[1..];
            }
        }
    }
    out.push_str(&escape(rest));
    out
}

fn is_link_form(inner: &str) -> bool {
    match inner.split_once('|') {
        Some((target, title)) => {
            !target.is_empty()
                && !title.trim().is_empty()
                && !target.contains(char::is_whitespace)
                && !inner.contains('<')
        }
        None => false,
    }
}

fn is_slack_form(inner: &str) -> bool {
    let target = inner.split('|').next().unwrap_or_default();
    !inner.contains('<')
        && !target.contains(char::is_whitespace)
        && (target.starts_with("http://")
            || target.starts_with("https://")
            || target.starts_with("mailto:")
            || target.starts_with('#')
            || target.starts_with('@')
            || target.starts_with('!'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_becomes_mrkdwn() {
        let md = "# Title\n\nSome **bold**, *italic*, ~~old~~, `a<b` and [docs](https://x.test/a?b=1&c=2).\n\n\
                  - one\n- two\n  - deeper\n\n1. first\n2. second\n\n- [x] done\n- [ ] open\n\n\
                  ```rust\nlet x = a && b;\n```\n\n> wise words\n\n---\n\nTom & Jerry <3\n";
        assert_eq!(
            to_mrkdwn(md),
            "*Title*\n\n\
             Some *bold*, _italic_, ~old~, `a&lt;b` and <https://x.test/a?b=1&amp;c=2|docs>.\n\n\
             • one\n• two\n    • deeper\n\n\
             1. first\n2. second\n\n\
             ☑ done\n☐ open\n\n\
             ```\nlet x = a &amp;&amp; b;\n```\n\n\
             > wise words\n\n\
             ———\n\n\
             Tom &amp; Jerry &lt;3"
        );
    }

    #[test]
    fn slack_links_written_by_templates_survive() {
        let md = "*Research: rust*\n\n• point one\n• point two\n\n1. <https://x.test/a|A Title> and <docs/b.md|B>\n";
        assert_eq!(
            to_mrkdwn(md),
            "_Research: rust_\n\n• point one\n• point two\n\n1. <https://x.test/a|A Title> and B (docs/b.md)"
        );
    }

    #[test]
    fn markers_hug_the_text() {
        assert_eq!(to_mrkdwn("a** b **c"), "a** b **c");
        assert_eq!(wrap("*", " x "), " *x* ");
    }
}
