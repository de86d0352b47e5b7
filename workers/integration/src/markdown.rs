//! Markdown parsed once (with `pulldown-cmark`) into a small document model that the Notion
//! and Slack renderers share: blocks (headings, paragraphs, list items, to-dos, code, quotes,
//! dividers) holding styled text spans.

use pulldown_cmark::{CodeBlockKind, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

/// A run of text with one style.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Span {
    pub text: String,
    pub bold: bool,
    pub italic: bool,
    pub strike: bool,
    pub code: bool,
    pub link: Option<String>,
}

impl Span {
    pub fn plain(text: impl Into<String>) -> Self {
        Span {
            text: text.into(),
            ..Span::default()
        }
    }

    /// Whether `other` looks the same, so the two can be merged.
    pub fn same_style(&self, other: &Span) -> bool {
        self.bold == other.bold
            && self.italic == other.italic
            && self.strike == other.strike
            && self.code == other.code
            && self.link == other.link
    }
}

/// What kind of list an item is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Bulleted,
    /// Numbered from this number.
    Numbered(u64),
}

/// One block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Level 1 to 6 as written; renderers cap it at what they support.
    Heading(u8, Vec<Span>),
    Paragraph(Vec<Span>),
    /// A list item: its kind, its position in the list (0-based), its text, nested blocks.
    Item {
        kind: ListKind,
        index: u64,
        text: Vec<Span>,
        children: Vec<Block>,
    },
    /// A task-list item; `kind` and `index` as for [`Block::Item`].
    ToDo {
        checked: bool,
        kind: ListKind,
        index: u64,
        text: Vec<Span>,
        children: Vec<Block>,
    },
    Code {
        language: String,
        text: String,
    },
    Quote {
        text: Vec<Span>,
        children: Vec<Block>,
    },
    Divider,
}

/// An open container while parsing.
#[derive(Debug)]
enum Open {
    List {
        kind: ListKind,
        next: u64,
    },
    Item {
        kind: ListKind,
        index: u64,
        checked: Option<bool>,
        text: Vec<Span>,
        children: Vec<Block>,
    },
    Quote {
        text: Vec<Span>,
        children: Vec<Block>,
    },
}

#[derive(Debug, Default)]
struct Style {
    bold: u32,
    italic: u32,
    strike: u32,
    links: Vec<String>,
}

/// Parses CommonMark with strikethrough and task lists. A soft line break becomes
/// `soft_break`: a space where text reflows (Notion), a newline where line breaks are kept as
/// written (Slack).
pub fn parse(markdown: &str, soft_break: &str) -> Vec<Block> {
    let options = Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
    let mut root: Vec<Block> = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut inline: Vec<Span> = Vec::new();
    let mut style = Style::default();
    let mut code: Option<(String, String)> = None;
    let mut heading: Option<u8> = None;

    fn sink<'a>(stack: &'a mut [Open], root: &'a mut Vec<Block>) -> &'a mut Vec<Block> {
        for open in stack.iter_mut().rev() {
            match open {
                Open::Item { children, .. } | Open::Quote { children, .. } => return children,
                Open::List { .. } => continue,
            }
        }
        root
    }

    /// Text that ends (a paragraph, or an item's text before its nested list) goes to the
    /// innermost item or quote as its own text when it has none yet, else becomes a paragraph.
    fn flush(stack: &mut [Open], root: &mut Vec<Block>, inline: &mut Vec<Span>) {
        if inline.iter().all(|s| s.text.trim().is_empty()) {
            inline.clear();
            return;
        }
        let spans = std::mem::take(inline);
        if let Some(Open::Item { text, children, .. } | Open::Quote { text, children }) =
            stack.last_mut()
            && text.is_empty()
            && children.is_empty()
        {
            *text = spans;
            return;
        }
        sink(stack, root).push(Block::Paragraph(spans));
    }

    for event in Parser::new_ext(markdown, options) {
        match event {
            Event::Start(Tag::Paragraph) => {}
            Event::End(TagEnd::Paragraph) => flush(&mut stack, &mut root, &mut inline),
            Event::Start(Tag::Heading { level, .. }) => {
                flush(&mut stack, &mut root, &mut inline);
                heading = Some(match level {
                    HeadingLevel::H1 => 1,
                    HeadingLevel::H2 => 2,
                    HeadingLevel::H3 => 3,
                    HeadingLevel::H4 => 4,
                    HeadingLevel::H5 => 5,
                    HeadingLevel::H6 => 6,
                });
            }
            Event::End(TagEnd::Heading(_)) => {
                let level = heading.take().unwrap_or(1);
                let spans = std::mem::take(&mut inline);
                sink(&mut stack, &mut root).push(Block::Heading(level, spans));
            }
            Event::Start(Tag::BlockQuote(_)) => {
                flush(&mut stack, &mut root, &mut inline);
                stack.push(Open::Quote {
                    text: Vec::new(),
                    children: Vec::new(),
                });
            }
            Event::End(TagEnd::BlockQuote(_)) => {
                flush(&mut stack, &mut root, &mut inline);
                if let Some(Open::Quote { text, children }) = stack.pop() {
                    sink(&mut stack, &mut root).push(Block::Quote { text, children });
                }
            }
            Event::Start(Tag::CodeBlock(kind)) => {
                flush(&mut stack, &mut root, &mut inline);
                let language = match kind {
                    CodeBlockKind::Fenced(info) => info
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    CodeBlockKind::Indented => String::new(),
                };
                code = Some((language, String::new()));
            }
            Event::End(TagEnd::CodeBlock) => {
                if let Some((language, mut text)) = code.take() {
                    if text.ends_with('\n') {
                        text.pop();
                    }
                    sink(&mut stack, &mut root).push(Block::Code { language, text });
                }
            }
            Event::Start(Tag::List(start)) => {
                flush(&mut stack, &mut root, &mut inline);
                let kind = match start {
                    Some(n) => ListKind::Numbered(n),
                    None => ListKind::Bulleted,
                };
                stack.push(Open::List { kind, next: 0 });
            }
            Event::End(TagEnd::List(_)) => {
                stack.pop();
            }
            Event::Start(Tag::Item) => {
                let (kind, index) = match stack.last_mut() {
                    Some(Open::List { kind, next }) => {
                        *next += 1;
                        (*kind, *next - 1)
                    }
                    _ => (ListKind::Bulleted, 0),
                };
                stack.push(Open::Item {
                    kind,
                    index,
                    checked: None,
                    text: Vec::new(),
                    children: Vec::new(),
                });
            }
            Event::TaskListMarker(done) => {
                if let Some(Open::Item { checked, .. }) = stack.last_mut() {
                    *checked = Some(done);
                }
            }
            Event::End(TagEnd::Item) => {
                flush(&mut stack, &mut root, &mut inline);
                if let Some(Open::Item {
                    kind,
                    index,
                    checked,
                    text,
                    children,
                }) = stack.pop()
                {
                    let block = match checked {
                        Some(checked) => Block::ToDo {
                            checked,
                            kind,
                            index,
                            text,
                            children,
                        },
                        None => Block::Item {
                            kind,
                            index,
                            text,
                            children,
                        },
                    };
                    sink(&mut stack, &mut root).push(block);
                }
            }
            Event::Rule => {
                flush(&mut stack, &mut root, &mut inline);
                sink(&mut stack, &mut root).push(Block::Divider);
            }
            Event::Start(Tag::Emphasis) => style.italic += 1,
            Event::End(TagEnd::Emphasis) => style.italic = style.italic.saturating_sub(1),
            Event::Start(Tag::Strong) => style.bold += 1,
            Event::End(TagEnd::Strong) => style.bold = style.bold.saturating_sub(1),
            Event::Start(Tag::Strikethrough) => style.strike += 1,
            Event::End(TagEnd::Strikethrough) => style.strike = style.strike.saturating_sub(1),
            Event::Start(Tag::Link { dest_url, .. } | Tag::Image { dest_url, .. }) => {
                style.links.push(dest_url.into_string());
            }
            Event::End(TagEnd::Link | TagEnd::Image) => {
                style.links.pop();
            }
            Event::Text(text) => match &mut code {
                Some((_, buffer)) => buffer.push_str(&text),
                None => push(&mut inline, &style, &text, false),
            },
            Event::Code(text) => push(&mut inline, &style, &text, true),
            Event::Html(text) | Event::InlineHtml(text) => match &mut code {
                Some((_, buffer)) => buffer.push_str(&text),
                None => push(&mut inline, &style, text.trim_end_matches('\n'), false),
            },
            Event::SoftBreak => push(&mut inline, &style, soft_break, false),
            Event::HardBreak => push(&mut inline, &style, "\n", false),
            // Not enabled: tables, footnotes, math, metadata, definition lists.
            _ => {}
        }
    }
    flush(&mut stack, &mut root, &mut inline);
    // Unclosed containers cannot remain after the parser's last event, but be safe.
    while let Some(open) = stack.pop() {
        match open {
            Open::Item { text, children, .. } | Open::Quote { text, children } => {
                let s = sink(&mut stack, &mut root);
                if !text.is_empty() {
                    s.push(Block::Paragraph(text));
                }
                s.extend(children);
            }
            Open::List { .. } => {}
        }
    }
    root
}

fn push(inline: &mut Vec<Span>, style: &Style, text: &str, code: bool) {
    if text.is_empty() {
        return;
    }
    let span = Span {
        text: text.to_owned(),
        bold: style.bold > 0,
        italic: style.italic > 0,
        strike: style.strike > 0,
        code,
        link: style.links.last().cloned(),
    };
    match inline.last_mut() {
        Some(last) if last.same_style(&span) => last.text.push_str(text),
        _ => inline.push(span),
    }
}

/// The text of spans without styles.
pub fn plain_text(spans: &[Span]) -> String {
    spans.iter().map(|s| s.text.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_element_becomes_its_block() {
        let doc = parse(
            "# One\n\n## Two\n\n#### Four\n\nSome **bold** and *it* and `code` and [a link](https://x.test/a) and ~~gone~~.\n\n\
             - a\n- b\n  - nested\n\n3. three\n4. four\n\n- [ ] open\n- [x] done\n\n\
             ```rust\nfn main() {}\n```\n\n> quoted *text*\n\n---\n",
            " ",
        );
        assert_eq!(doc[0], Block::Heading(1, vec![Span::plain("One")]));
        assert_eq!(doc[1], Block::Heading(2, vec![Span::plain("Two")]));
        assert_eq!(doc[2], Block::Heading(4, vec![Span::plain("Four")]));
        let Block::Paragraph(spans) = &doc[3] else {
            panic!("{:?}", doc[3])
        };
        assert!(spans.iter().any(|s| s.bold && s.text == "bold"));
        assert!(spans.iter().any(|s| s.italic && s.text == "it"));
        assert!(spans.iter().any(|s| s.code && s.text == "code"));
        assert!(spans.iter().any(|s| s.strike && s.text == "gone"));
        assert!(
            spans
                .iter()
                .any(|s| s.text == "a link" && s.link.as_deref() == Some("https://x.test/a"))
        );
        let Block::Item {
            kind: ListKind::Bulleted,
            children,
            ..
        } = &doc[5]
        else {
            panic!("{:?}", doc[5])
        };
        assert!(matches!(&children[0], Block::Item { text, .. } if plain_text(text) == "nested"));
        assert!(matches!(
            &doc[6],
            Block::Item {
                kind: ListKind::Numbered(3),
                index: 0,
                ..
            }
        ));
        assert!(matches!(
            &doc[7],
            Block::Item {
                kind: ListKind::Numbered(3),
                index: 1,
                ..
            }
        ));
        assert!(matches!(&doc[8], Block::ToDo { checked: false, .. }));
        assert!(matches!(&doc[9], Block::ToDo { checked: true, .. }));
        assert_eq!(
            doc[10],
            Block::Code {
                language: "rust".into(),
                text: "fn main() {}".into()
            }
        );
        assert!(matches!(&doc[11], Block::Quote { text, .. } if plain_text(text) == "quoted text"));
        assert_eq!(doc[12], Block::Divider);
        assert_eq!(doc.len(), 13);
    }

    #[test]
    fn loose_list_items_keep_their_first_paragraph_as_text() {
        let doc = parse("- first\n\n  more\n\n- second\n", " ");
        let Block::Item { text, children, .. } = &doc[0] else {
            panic!()
        };
        assert_eq!(plain_text(text), "first");
        assert_eq!(children, &vec![Block::Paragraph(vec![Span::plain("more")])]);
    }
}
