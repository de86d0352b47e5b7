//! Notion: Markdown → blocks within Notion's limits, and the page creation calls.
//!
//! Limits honoured (Notion's "Request limits"): a rich-text `content` or link `url` of at most
//! 2,000 characters, at most 100 rich-text items per block, at most 100 blocks in any
//! `children` array, two levels of nesting per request, at most 1,000 blocks and about 500 KB
//! per request. A page with more than 100 top-level blocks is created with the first chunk and
//! the rest appended with `PATCH /v1/blocks/{page_id}/children`, one chunk per call; the effect
//! record remembers how many chunks went in, so a retry resumes there.

use reqwest::{Method, header::CONTENT_TYPE};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_runtime::config::{NotionSettings, Secret};

use crate::{
    Error,
    effects::Effects,
    http::{Http, Reply, body_text, check_id, endpoint, status_error},
    markdown::{self, Block, ListKind, Span},
    metrics::System,
    status::{CHECK_TIMEOUT, Check},
};

/// Most characters (UTF-16 code units, as Notion counts them) in one rich-text item.
pub const MAX_TEXT: usize = 2000;
/// Most rich-text items in one block.
pub const MAX_RICH_TEXT_ITEMS: usize = 100;
/// Most blocks in one `children` array.
pub const MAX_CHILDREN: usize = 100;
/// Most blocks in one request, nested ones included.
const MAX_BLOCKS_PER_REQUEST: usize = 1000;
/// Serialized size budget of one request's blocks, under Notion's 500 KB.
const MAX_CHUNK_BYTES: usize = 400 * 1024;

/// Notion's code block languages; anything else is sent as `plain text`.
const LANGUAGES: &[&str] = &[
    "abap",
    "arduino",
    "bash",
    "basic",
    "c",
    "clojure",
    "coffeescript",
    "c++",
    "c#",
    "css",
    "dart",
    "diff",
    "docker",
    "elixir",
    "elm",
    "erlang",
    "flow",
    "fortran",
    "f#",
    "gherkin",
    "glsl",
    "go",
    "graphql",
    "groovy",
    "haskell",
    "html",
    "java",
    "javascript",
    "json",
    "julia",
    "kotlin",
    "latex",
    "less",
    "lisp",
    "livescript",
    "lua",
    "makefile",
    "markdown",
    "markup",
    "matlab",
    "mermaid",
    "nix",
    "objective-c",
    "ocaml",
    "pascal",
    "perl",
    "php",
    "plain text",
    "powershell",
    "prolog",
    "protobuf",
    "python",
    "r",
    "reason",
    "ruby",
    "rust",
    "sass",
    "scala",
    "scheme",
    "scss",
    "shell",
    "sql",
    "swift",
    "typescript",
    "vb.net",
    "verilog",
    "vhdl",
    "visual basic",
    "webassembly",
    "xml",
    "yaml",
    "java/c/c++/c#",
];

/// `integration.notion.create_page` input.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePage {
    pub parent_id: String,
    pub title: String,
    pub markdown: String,
}

/// The Notion client.
#[derive(Debug, Clone)]
pub struct Notion {
    token: Option<Secret>,
    base_url: String,
    version: String,
}

/// How far an earlier delivery got, kept in the effect record.
#[derive(Debug, Clone, Default, serde::Serialize, Deserialize)]
struct Progress {
    page_id: String,
    url: String,
    /// Chunks in the page: the first with the creation, then one per append.
    chunks_done: usize,
    chunks: usize,
}

impl Notion {
    pub fn new(settings: &NotionSettings, token: Option<Secret>) -> Self {
        Notion {
            token,
            base_url: settings.base_url.clone(),
            version: settings.version.clone(),
        }
    }

    fn request(
        &self,
        http: &Http,
        method: Method,
        url: reqwest::Url,
    ) -> Result<reqwest::RequestBuilder, Error> {
        let token = self.token.as_ref().ok_or(Error::NotConfigured {
            what: "Notion",
            key: "integration.notion.token (or token_file)",
        })?;
        Ok(http
            .client
            .request(method, url)
            .bearer_auth(token.expose())
            .header("Notion-Version", &self.version)
            .header(CONTENT_TYPE, "application/json"))
    }

    /// Checks the token with `GET /v1/users/me` (read-only); says which bot it is.
    pub(crate) async fn check(&self, http: &Http) -> Check {
        const NAME: &str = "notion";
        if self.token.is_none() {
            return Check::not_configured(NAME, "integration.notion.token (or token_file)");
        }
        let outcome = async {
            let url = endpoint(&self.base_url, &["v1", "users", "me"])?;
            let request = self.request(http, Method::GET, url)?.timeout(CHECK_TIMEOUT);
            let me = http.call(System::Notion, request, parse_reply).await?;
            let name = me["name"].as_str().filter(|n| !n.is_empty());
            let workspace = me["bot"]["workspace_name"]
                .as_str()
                .filter(|w| !w.is_empty());
            Ok(match (name, workspace) {
                (Some(n), Some(w)) => format!("authenticated as {n} in {w}"),
                (Some(n), None) => format!("authenticated as {n}"),
                _ => "authenticated".to_owned(),
            })
        }
        .await;
        Check::checked(NAME, outcome)
    }

    /// Creates the page (resuming from `progress` when an earlier delivery got part way) and
    /// returns `{page_id, url}`.
    pub(crate) async fn create_page(
        &self,
        http: &Http,
        effects: &Effects,
        job_id: &str,
        input: CreatePage,
        progress: Option<Value>,
    ) -> Result<Value, Error> {
        let parent = input.parent_id.trim().to_owned();
        check_id("parent_id", &parent)?;
        let blocks = to_blocks(&markdown::parse(&input.markdown, " "));
        let chunks = chunk(blocks);
        let mut progress: Progress = progress
            .and_then(|p| serde_json::from_value(p).ok())
            .filter(|p: &Progress| !p.page_id.is_empty() && p.chunks == chunks.len())
            .unwrap_or_default();

        if progress.page_id.is_empty() {
            let body = json!({
                "parent": { "page_id": parent },
                "properties": { "title": { "title": rich_text(&[Span::plain(input.title.trim())]) } },
                "children": chunks.first().cloned().unwrap_or_default(),
            });
            let url = endpoint(&self.base_url, &["v1", "pages"])?;
            let request = self.request(http, Method::POST, url)?.json(&body);
            let page: Value = http.call(System::Notion, request, parse_reply).await?;
            let page_id = page["id"].as_str().unwrap_or_default().to_owned();
            if page_id.is_empty() {
                return Err(Error::BadResponse {
                    system: System::Notion,
                    message: "the created page has no id".into(),
                });
            }
            progress = Progress {
                url: page["url"].as_str().unwrap_or_default().to_owned(),
                page_id,
                chunks_done: 1,
                chunks: chunks.len(),
            };
            effects.progress(job_id, &json!(progress)).await?;
        }
        for (i, children) in chunks.iter().enumerate().skip(progress.chunks_done) {
            let url = endpoint(
                &self.base_url,
                &["v1", "blocks", &progress.page_id, "children"],
            )?;
            let request = self
                .request(http, Method::PATCH, url)?
                .json(&json!({ "children": children }));
            http.call(System::Notion, request, parse_reply).await?;
            progress.chunks_done = i + 1;
            effects.progress(job_id, &json!(progress)).await?;
        }
        Ok(json!({ "page_id": progress.page_id, "url": progress.url }))
    }
}

/// A 2xx reply's JSON, or the error Notion's body describes (`{"code", "message"}`).
fn parse_reply(reply: Reply) -> Result<Value, Error> {
    if reply.status.is_success() {
        return serde_json::from_slice(&reply.body).map_err(|e| Error::BadResponse {
            system: System::Notion,
            message: e.to_string(),
        });
    }
    let body: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    let message = match (body["code"].as_str(), body["message"].as_str()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        _ => body_text(&reply.body),
    };
    // 409 conflict_error: "the transaction could not be completed … try again".
    if reply.status == reqwest::StatusCode::CONFLICT {
        return Err(Error::Unavailable {
            system: System::Notion,
            message,
            maybe_applied: false,
        });
    }
    Err(status_error(System::Notion, &reply, message))
}

/// Notion blocks for a document. Nesting deeper than one level is flattened into the first
/// level (a request may carry two levels), and children beyond 100 follow their parent.
pub fn to_blocks(doc: &[Block]) -> Vec<Value> {
    let mut out = Vec::new();
    for block in doc {
        render(block, 0, &mut out);
    }
    out
}

fn render(block: &Block, depth: usize, out: &mut Vec<Value>) {
    match block {
        Block::Heading(level, spans) => {
            let ty = match level {
                1 => "heading_1",
                2 => "heading_2",
                _ => "heading_3",
            };
            push_text_blocks(ty, spans, json!({}), Vec::new(), depth, out);
        }
        Block::Paragraph(spans) => {
            push_text_blocks("paragraph", spans, json!({}), Vec::new(), depth, out)
        }
        Block::Item {
            kind,
            text,
            children,
            ..
        } => {
            let ty = match kind {
                ListKind::Bulleted => "bulleted_list_item",
                ListKind::Numbered(_) => "numbered_list_item",
            };
            push_text_blocks(ty, text, json!({}), children.clone(), depth, out);
        }
        Block::ToDo {
            checked,
            text,
            children,
            ..
        } => push_text_blocks(
            "to_do",
            text,
            json!({ "checked": checked }),
            children.clone(),
            depth,
            out,
        ),
        Block::Quote { text, children } => {
            push_text_blocks("quote", text, json!({}), children.clone(), depth, out)
        }
        Block::Code { language, text } => {
            let language = notion_language(language);
            let spans = [Span::plain(text.as_str())];
            let items = rich_text(&spans);
            let parts: Vec<Vec<Value>> = if items.is_empty() {
                vec![Vec::new()]
            } else {
                items
                    .chunks(MAX_RICH_TEXT_ITEMS)
                    .map(<[Value]>::to_vec)
                    .collect()
            };
            for part in parts {
                out.push(json!({
                    "object": "block",
                    "type": "code",
                    "code": { "rich_text": part, "language": language },
                }));
            }
        }
        Block::Divider => out.push(json!({ "object": "block", "type": "divider", "divider": {} })),
    }
}

/// Pushes a block of type `ty` (split in several when its text needs more than 100 rich-text
/// items), with `children` nested under the last part at depth 0, flattened after it deeper.
fn push_text_blocks(
    ty: &str,
    spans: &[Span],
    extra: Value,
    children: Vec<Block>,
    depth: usize,
    out: &mut Vec<Value>,
) {
    let items = rich_text(spans);
    let parts: Vec<Vec<Value>> = if items.is_empty() {
        vec![Vec::new()]
    } else {
        items
            .chunks(MAX_RICH_TEXT_ITEMS)
            .map(<[Value]>::to_vec)
            .collect()
    };
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        let mut body = extra.clone();
        body["rich_text"] = Value::Array(part);
        let mut block = json!({ "object": "block", "type": ty });
        let mut nested = Vec::new();
        if i == last && depth == 0 {
            for child in &children {
                render(child, 1, &mut nested);
            }
        }
        let overflow = if nested.len() > MAX_CHILDREN {
            nested.split_off(MAX_CHILDREN)
        } else {
            Vec::new()
        };
        if !nested.is_empty() {
            body["children"] = Value::Array(nested);
        }
        block[ty] = body;
        out.push(block);
        out.extend(overflow);
    }
    if depth > 0 {
        for child in &children {
            render(child, depth, out);
        }
    }
}

/// Rich-text items for spans: adjacent spans of one style merged, text split so that no item
/// holds more than 2,000 characters, links kept only where Notion accepts them.
pub fn rich_text(spans: &[Span]) -> Vec<Value> {
    let mut merged: Vec<Span> = Vec::new();
    for span in spans.iter().filter(|s| !s.text.is_empty()) {
        match merged.last_mut() {
            Some(last) if last.same_style(span) => last.text.push_str(&span.text),
            _ => merged.push(span.clone()),
        }
    }
    let mut out = Vec::new();
    for span in &merged {
        let link = span.link.as_deref().filter(|u| linkable(u));
        for piece in split_utf16(&span.text, MAX_TEXT) {
            let mut text = json!({ "content": piece });
            if let Some(url) = link {
                text["link"] = json!({ "url": url });
            }
            out.push(json!({
                "type": "text",
                "text": text,
                "annotations": {
                    "bold": span.bold,
                    "italic": span.italic,
                    "strikethrough": span.strike,
                    "underline": false,
                    "code": span.code,
                    "color": "default",
                },
            }));
        }
    }
    out
}

/// Notion accepts absolute http(s) and mailto links up to 2,000 characters; a relative link
/// (e.g. a corpus path) would fail the whole request, so it stays plain text.
fn linkable(url: &str) -> bool {
    url.encode_utf16().count() <= MAX_TEXT
        && (url.starts_with("https://") || url.starts_with("http://") || url.starts_with("mailto:"))
        && reqwest::Url::parse(url).is_ok()
}

/// `text` in pieces of at most `max` UTF-16 code units, never splitting a character.
pub fn split_utf16(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut units = 0;
    for (i, c) in text.char_indices() {
        let n = c.len_utf16();
        if units + n > max {
            pieces.push(&text[start..i]);
            start = i;
            units = 0;
        }
        units += n;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

fn notion_language(language: &str) -> &'static str {
    let lower = language.to_ascii_lowercase();
    let name = match lower.as_str() {
        "" | "text" | "txt" | "plain" | "plaintext" => "plain text",
        "sh" | "zsh" | "console" | "shell-session" => "shell",
        "js" | "jsx" | "node" => "javascript",
        "ts" | "tsx" => "typescript",
        "py" | "python3" => "python",
        "rs" => "rust",
        "yml" => "yaml",
        "md" => "markdown",
        "cpp" | "cxx" | "cc" | "hpp" => "c++",
        "cs" | "csharp" => "c#",
        "golang" => "go",
        "dockerfile" => "docker",
        "kt" => "kotlin",
        "rb" => "ruby",
        "ps1" | "pwsh" => "powershell",
        "proto" => "protobuf",
        "tf" | "hcl" | "toml" | "ini" => "plain text",
        other => other,
    };
    LANGUAGES
        .iter()
        .find(|l| **l == name)
        .copied()
        .unwrap_or("plain text")
}

/// Splits top-level blocks into request-sized chunks: at most 100 blocks each, at most 1,000
/// blocks counting nested ones, and within the size budget. Never empty: a page with no body
/// still gets one (empty) chunk.
pub fn chunk(blocks: Vec<Value>) -> Vec<Vec<Value>> {
    let mut chunks: Vec<Vec<Value>> = Vec::new();
    let mut current: Vec<Value> = Vec::new();
    let (mut count, mut bytes) = (0usize, 0usize);
    for block in blocks {
        let nested = block
            .as_object()
            .and_then(|o| o.values().find_map(|v| v.get("children")))
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        let size = block.to_string().len();
        let full = current.len() == MAX_CHILDREN
            || count + 1 + nested > MAX_BLOCKS_PER_REQUEST
            || bytes + size > MAX_CHUNK_BYTES;
        if full && !current.is_empty() {
            chunks.push(std::mem::take(&mut current));
            count = 0;
            bytes = 0;
        }
        count += 1 + nested;
        bytes += size;
        current.push(block);
    }
    if !current.is_empty() || chunks.is_empty() {
        chunks.push(current);
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_split_at_two_thousand_utf16_units() {
        let text = "é".repeat(4500);
        let pieces = split_utf16(&text, MAX_TEXT);
        assert_eq!(
            pieces.iter().map(|p| p.chars().count()).collect::<Vec<_>>(),
            [2000, 2000, 500]
        );
        // An emoji is two UTF-16 units and is never cut in half.
        let emoji = "😀".repeat(1001);
        let pieces = split_utf16(&emoji, MAX_TEXT);
        assert_eq!(pieces[0].encode_utf16().count(), 2000);
        assert_eq!(pieces[1], "😀");
    }

    #[test]
    fn relative_links_stay_text_and_languages_map() {
        let items = rich_text(&[
            Span {
                text: "doc".into(),
                link: Some("docs/a.md".into()),
                ..Span::default()
            },
            Span {
                text: "web".into(),
                link: Some("https://x.test".into()),
                ..Span::default()
            },
        ]);
        assert!(items[0]["text"].get("link").is_none());
        assert_eq!(items[1]["text"]["link"]["url"], "https://x.test");
        assert_eq!(notion_language("rs"), "rust");
        assert_eq!(notion_language("Python"), "python");
        assert_eq!(notion_language("brainfuck"), "plain text");
    }

    #[test]
    fn deep_nesting_is_flattened_to_what_one_request_carries() {
        let doc = markdown::parse("- a\n  - b\n    - c\n", " ");
        let blocks = to_blocks(&doc);
        assert_eq!(blocks.len(), 1);
        let children = blocks[0]["bulleted_list_item"]["children"]
            .as_array()
            .unwrap();
        assert_eq!(children.len(), 2, "{children:#?}");
        for child in children {
            assert!(child["bulleted_list_item"].get("children").is_none());
        }
    }

    #[test]
    fn chunks_hold_at_most_a_hundred_blocks() {
        let blocks: Vec<Value> = (0..250)
            .map(|i| json!({ "type": "paragraph", "paragraph": { "i": i } }))
            .collect();
        let chunks = chunk(blocks);
        assert_eq!(
            chunks.iter().map(Vec::len).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        assert_eq!(chunk(Vec::new()), vec![Vec::<Value>::new()]);
    }
}
