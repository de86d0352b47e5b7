//! Readable text from Markdown, plain text and HTML, as a title and blocks (paragraphs, list
//! items, quotes) under their section headings; and passages, the units the index ranks.
//!
//! HTML keeps what a reader would read: `<article>` or else `<main>` or else `<body>`, without
//! `script`, `style`, `nav`, `header`, `footer`, `aside`, forms and embedded objects. Code
//! blocks are left out everywhere: they are not sentences a summary can use.

use pulldown_cmark::{Event, Options, Parser, Tag, TagEnd};
use scraper::{ElementRef, Html, Node, Selector};

/// A document's readable text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub title: String,
    pub blocks: Vec<Block>,
}

/// A paragraph-like piece of text and the heading it is under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub section: Option<String>,
    pub text: String,
}

/// A ranked unit: consecutive blocks of one section, about a paragraph or two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    pub section: Option<String>,
    pub text: String,
}

/// Passages shorter than this take in the next block of their section.
pub const MIN_PASSAGE_WORDS: usize = 40;
/// A passage is closed once it reaches this length.
pub const MAX_PASSAGE_WORDS: usize = 160;

/// Collects blocks: text is appended to the open block, which a block boundary closes.
#[derive(Debug, Default)]
struct Builder {
    title: Option<String>,
    section: Option<String>,
    current: String,
    blocks: Vec<Block>,
}

impl Builder {
    fn push_text(&mut self, text: &str) {
        for word in text.split_whitespace() {
            if !self.current.is_empty() {
                self.current.push(' ');
            }
            self.current.push_str(word);
        }
    }

    /// Joins text without a space where the source had none (`foo<b>bar</b>`).
    fn push_inline(&mut self, text: &str) {
        let starts_with_space = text.starts_with(char::is_whitespace);
        let ends_with_space = text.ends_with(char::is_whitespace);
        let normalised = text.split_whitespace().collect::<Vec<_>>().join(" ");
        if normalised.is_empty() {
            if starts_with_space && !self.current.is_empty() && !self.current.ends_with(' ') {
                self.current.push(' ');
            }
            return;
        }
        if starts_with_space && !self.current.is_empty() && !self.current.ends_with(' ') {
            self.current.push(' ');
        }
        self.current.push_str(&normalised);
        if ends_with_space {
            self.current.push(' ');
        }
    }

    fn flush(&mut self) {
        let text = self.current.trim().to_owned();
        self.current.clear();
        if !text.is_empty() {
            self.blocks.push(Block {
                section: self.section.clone(),
                text,
            });
        }
    }

    fn heading(&mut self, level: u8, text: String) {
        if text.is_empty() {
            return;
        }
        if level == 1 && self.title.is_none() {
            self.title = Some(text.clone());
        }
        self.section = Some(text);
    }

    fn finish(mut self, title: Option<String>, fallback_title: &str) -> Document {
        self.flush();
        let title = title
            .filter(|t| !t.trim().is_empty())
            .or(self.title)
            .unwrap_or_else(|| fallback_title.to_owned());
        Document {
            title: title.split_whitespace().collect::<Vec<_>>().join(" "),
            blocks: self.blocks,
        }
    }
}

/// Markdown: the first level-1 heading is the title; paragraphs, list items and quotes are
/// blocks; code blocks are dropped.
pub fn from_markdown(source: &str, fallback_title: &str) -> Document {
    let mut b = Builder::default();
    let mut heading: Option<(u8, String)> = None;
    let mut in_code = false;
    for event in Parser::new_ext(
        source,
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH,
    ) {
        match event {
            Event::Start(Tag::Heading { level, .. }) => {
                b.flush();
                heading = Some((level as u8, String::new()));
            }
            Event::End(TagEnd::Heading(_)) => {
                if let Some((level, text)) = heading.take() {
                    b.heading(level, text.trim().to_owned());
                }
            }
            Event::Start(Tag::CodeBlock(_)) => {
                b.flush();
                in_code = true;
            }
            Event::End(TagEnd::CodeBlock) => in_code = false,
            Event::Start(Tag::Paragraph | Tag::Item | Tag::BlockQuote(_) | Tag::TableRow)
            | Event::End(TagEnd::Paragraph | TagEnd::Item | TagEnd::BlockQuote(_))
            | Event::End(TagEnd::TableRow) => b.flush(),
            Event::Text(t) | Event::Code(t) => {
                if in_code {
                    continue;
                }
                match &mut heading {
                    Some((_, h)) => h.push_str(&t),
                    None => b.push_inline(&t),
                }
            }
            Event::SoftBreak | Event::HardBreak => match &mut heading {
                Some((_, h)) => h.push(' '),
                None => b.push_inline(" "),
            },
            Event::End(TagEnd::TableCell) => b.push_inline(" "),
            _ => {}
        }
    }
    b.finish(None, fallback_title)
}

/// Plain text: paragraphs are separated by blank lines; the first line is the title when it
/// is short and followed by a blank line.
pub fn from_plain(source: &str, fallback_title: &str) -> Document {
    let mut b = Builder::default();
    let mut title = None;
    let mut lines = source.lines().peekable();
    while lines.peek().is_some_and(|l| l.trim().is_empty()) {
        lines.next();
    }
    if let Some(first) = lines.peek().map(|l| l.trim().to_owned())
        && first.split_whitespace().count() <= 12
    {
        lines.next();
        if lines.peek().is_none_or(|l| l.trim().is_empty()) {
            title = Some(first);
        } else {
            b.push_text(&first);
        }
    }
    for line in lines {
        if line.trim().is_empty() {
            b.flush();
        } else {
            b.push_text(line);
        }
    }
    b.finish(title, fallback_title)
}

/// Elements whose content is not part of the readable text.
const SKIPPED: &[&str] = &[
    "script", "style", "nav", "header", "footer", "aside", "noscript", "template", "form", "svg",
    "iframe", "object", "embed", "canvas", "button", "select", "pre", "head",
];

/// Elements that start and end a block.
const BLOCKS: &[&str] = &[
    "p",
    "li",
    "blockquote",
    "dd",
    "dt",
    "td",
    "th",
    "tr",
    "figcaption",
    "div",
    "section",
    "article",
    "main",
    "body",
    "ul",
    "ol",
    "dl",
    "table",
    "br",
    "hr",
    "caption",
    "address",
];

/// HTML: the `<title>` (or the first `<h1>`) and the readable blocks of the main content.
pub fn from_html(source: &str, fallback_title: &str) -> Document {
    let html = Html::parse_document(source);
    let select = |css: &str| Selector::parse(css).ok();
    let title = select("title")
        .and_then(|s| html.select(&s).next())
        .map(|t| t.text().collect::<String>())
        .filter(|t| !t.trim().is_empty());
    let root = ["article", "main", "body"]
        .iter()
        .filter_map(|css| select(css))
        .find_map(|s| html.select(&s).next())
        .unwrap_or_else(|| html.root_element());
    let mut b = Builder::default();
    walk(root, &mut b);
    b.finish(title, fallback_title)
}

fn walk(element: ElementRef<'_>, b: &mut Builder) {
    for child in element.children() {
        match child.value() {
            Node::Text(t) => b.push_inline(t),
            Node::Element(e) => {
                let name = e.name();
                if SKIPPED.contains(&name) {
                    continue;
                }
                let Some(child) = ElementRef::wrap(child) else {
                    continue;
                };
                if let Some(level) = name
                    .strip_prefix('h')
                    .and_then(|n| n.parse::<u8>().ok())
                    .filter(|l| (1..=6).contains(l))
                {
                    b.flush();
                    let text = child.text().collect::<Vec<_>>().join(" ");
                    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
                    b.heading(level, text);
                    continue;
                }
                let block = BLOCKS.contains(&name);
                if block {
                    b.flush();
                }
                walk(child, b);
                if block {
                    b.flush();
                }
            }
            _ => {}
        }
    }
}

/// Groups a document's blocks into passages: consecutive blocks of one section until the
/// passage has [`MIN_PASSAGE_WORDS`], never past [`MAX_PASSAGE_WORDS`] by joining.
pub fn passages(doc: &Document) -> Vec<Passage> {
    let mut out: Vec<Passage> = Vec::new();
    let mut open: Option<(Passage, usize)> = None;
    for block in &doc.blocks {
        let words = block.text.split_whitespace().count();
        if let Some((p, n)) = &mut open {
            if p.section == block.section
                && *n < MIN_PASSAGE_WORDS
                && *n + words <= MAX_PASSAGE_WORDS
            {
                p.text.push('\n');
                p.text.push_str(&block.text);
                *n += words;
                continue;
            }
            if let Some((p, _)) = open.take() {
                out.push(p);
            }
        }
        open = Some((
            Passage {
                section: block.section.clone(),
                text: block.text.clone(),
            },
            words,
        ));
    }
    if let Some((p, _)) = open {
        out.push(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_keeps_the_article_and_drops_the_chrome() {
        let page = r#"<!doctype html><html><head><title>Backoff  explained</title>
            <style>p { color: red }</style><script>var tracking = 1;</script></head>
            <body><header>Site header</header><nav><a href="/">Home</a> <a href="/b">Blog</a></nav>
            <article><h1>Retries</h1><p>Exponential backoff <b>doubles</b> the delay.</p>
            <aside>Related posts</aside><ul><li>Add jitter.</li><li>Cap the delay.</li></ul>
            <pre><code>sleep(2 ** n)</code></pre></article>
            <footer>Copyright</footer><script>alert(1)</script></body></html>"#;
        let doc = from_html(page, "fallback");
        assert_eq!(doc.title, "Backoff explained");
        let texts: Vec<&str> = doc.blocks.iter().map(|b| b.text.as_str()).collect();
        assert_eq!(
            texts,
            [
                "Exponential backoff doubles the delay.",
                "Add jitter.",
                "Cap the delay."
            ]
        );
        assert_eq!(doc.blocks[0].section.as_deref(), Some("Retries"));
    }

    #[test]
    fn markdown_blocks_follow_their_headings_and_skip_code() {
        let doc = from_markdown(
            "# Idempotency\n\nAn operation is *idempotent* when\nrepeating it changes nothing.\n\n## Keys\n\n- Send an `Idempotency-Key`.\n\n```\ncurl -X POST\n```\n",
            "x",
        );
        assert_eq!(doc.title, "Idempotency");
        assert_eq!(
            doc.blocks,
            [
                Block {
                    section: Some("Idempotency".into()),
                    text: "An operation is idempotent when repeating it changes nothing.".into()
                },
                Block {
                    section: Some("Keys".into()),
                    text: "Send an Idempotency-Key.".into()
                },
            ]
        );
    }

    #[test]
    fn plain_text_takes_its_first_line_as_title_and_groups_short_paragraphs() {
        let doc = from_plain(
            "Rate limiting\n\nA token bucket refills.\n\nBursts drain it.\n",
            "f",
        );
        assert_eq!(doc.title, "Rate limiting");
        let p = passages(&doc);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].text, "A token bucket refills.\nBursts drain it.");
        let untitled = from_plain(
            "A long first line that is clearly a sentence and not a title of anything at all.\n",
            "notes",
        );
        assert_eq!(untitled.title, "notes");
        assert_eq!(untitled.blocks.len(), 1);
    }
}
