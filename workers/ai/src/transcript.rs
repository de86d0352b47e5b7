//! Transcript import: WebVTT (with `<v Name>` voice tags or `Name:` prefixes), SRT,
//! `Name: text` lines (optionally with `[hh:mm:ss]` stamps), and JSON segments; speaker
//! statistics; and the normalized `Name: text` form the other operations read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One stretch of speech.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end_seconds: Option<f64>,
    pub text: String,
}

/// A transcript's format; `Auto` detects it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Auto,
    Vtt,
    Srt,
    Lines,
    Json,
}

/// One speaker's share of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpeakerStats {
    pub name: String,
    /// Runs of consecutive segments by this speaker.
    pub turns: u32,
    pub talk_time_seconds: f64,
}

/// Why a transcript could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Guesses the format from the text's shape.
pub fn detect(text: &str) -> Format {
    let t = text.trim_start_matches('\u{feff}').trim_start();
    if t.starts_with("WEBVTT") {
        return Format::Vtt;
    }
    if (t.starts_with('[') || t.starts_with('{')) && serde_json::from_str::<Value>(t).is_ok() {
        return Format::Json;
    }
    let mut lines = t.lines().map(str::trim).filter(|l| !l.is_empty());
    if let (Some(first), Some(second)) = (lines.next(), lines.next())
        && first.parse::<u32>().is_ok()
        && second.contains("-->")
    {
        return Format::Srt;
    }
    Format::Lines
}

/// Parses `text` in `format` (detected when `Auto`) into segments.
pub fn parse(text: &str, format: Format) -> Result<Vec<Segment>, ParseError> {
    let text = text.trim_start_matches('\u{feff}');
    let format = match format {
        Format::Auto => detect(text),
        f => f,
    };
    let segments = match format {
        Format::Vtt => parse_cues(text, true)?,
        Format::Srt => parse_cues(text, false)?,
        Format::Json => parse_json(text)?,
        Format::Lines | Format::Auto => parse_lines(text),
    };
    if segments.is_empty() {
        return Err(ParseError(format!(
            "no speech found in the transcript (read as {format:?})"
        )));
    }
    Ok(segments)
}

/// `hh:mm:ss.mmm`, `mm:ss.mmm` (VTT) or `hh:mm:ss,mmm` (SRT) in seconds.
fn timestamp(text: &str) -> Option<f64> {
    let text = text.trim().replace(',', ".");
    let parts: Vec<&str> = text.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [h, m, s] => (
            h.parse::<f64>().ok()?,
            m.parse::<f64>().ok()?,
            s.parse::<f64>().ok()?,
        ),
        [m, s] => (0.0, m.parse::<f64>().ok()?, s.parse::<f64>().ok()?),
        _ => return None,
    };
    Some(h * 3600.0 + m * 60.0 + s)
}

/// WebVTT and SRT share a shape: blocks of (optional id), timing line, payload lines.
fn parse_cues(text: &str, vtt: bool) -> Result<Vec<Segment>, ParseError> {
    let mut segments = Vec::new();
    let normalized = text.replace("\r\n", "\n");
    for (n, block) in normalized.split("\n\n").enumerate() {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        let Some(timing_at) = lines.iter().position(|l| l.contains("-->")) else {
            // The WEBVTT header, NOTE, STYLE and REGION blocks carry no speech.
            continue;
        };
        let timing = lines[timing_at];
        let (from, to) = timing.split_once("-->").unwrap_or_default();
        let to = to.split_whitespace().next().unwrap_or_default();
        let (Some(start), Some(end)) = (timestamp(from), timestamp(to)) else {
            return Err(ParseError(format!(
                "cue {}: bad timing line {timing:?}; expected `00:00:01.000 --> 00:00:04.000`",
                n + 1
            )));
        };
        let mut current: Option<String> = None;
        let mut parts: Vec<(Option<String>, String)> = Vec::new();
        for line in &lines[timing_at + 1..] {
            let (voice, rest) = if vtt {
                voice_tag(line)
            } else {
                (None, (*line).to_owned())
            };
            let (speaker, said) = match voice {
                Some(v) => (Some(v), strip_tags(&rest)),
                None => {
                    let plain = strip_tags(&rest);
                    match split_speaker(&plain) {
                        Some((name, said)) => (Some(name.to_owned()), said.to_owned()),
                        None => (current.clone(), plain),
                    }
                }
            };
            current.clone_from(&speaker);
            match parts.last_mut() {
                Some((s, t)) if *s == speaker => {
                    t.push(' ');
                    t.push_str(said.trim());
                }
                _ => parts.push((speaker, said.trim().to_owned())),
            }
        }
        for (speaker, said) in parts {
            if said.is_empty() {
                continue;
            }
            segments.push(Segment {
                speaker,
                start_seconds: Some(start),
                end_seconds: Some(end),
                text: said,
            });
        }
    }
    Ok(segments)
}

/// `<v Alice>Hi</v>` or `<v.loud Alice>Hi` → (`Alice`, `Hi`).
fn voice_tag(line: &str) -> (Option<String>, String) {
    let trimmed = line.trim();
    if let Some(rest) = trimmed.strip_prefix("<v")
        && let Some(close) = rest.find('>')
    {
        let tag = &rest[..close];
        // `<v.class Name>`: the classes come first, then a space, then the name.
        let name = tag
            .split_once(' ')
            .map(|(_, name)| name.trim())
            .filter(|n| !n.is_empty());
        if let Some(name) = name {
            return (Some(name.to_owned()), rest[close + 1..].to_owned());
        }
    }
    (None, trimmed.to_owned())
}

/// Removes markup such as `<i>`, `</v>`, `<00:00:01.000>` and `{\an8}`.
fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut depth = 0;
    for c in text.chars() {
        match c {
            '<' | '{' => depth += 1,
            '>' | '}' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `Alice Smith: hello` → (`Alice Smith`, `hello`), when the prefix looks like a name: one to
/// four words, each starting with an uppercase letter or digit (`Speaker 2`), no sentence
/// punctuation.
pub fn split_speaker(line: &str) -> Option<(&str, &str)> {
    let (name, said) = line.split_once(':')?;
    let name = name.trim().trim_start_matches(['-', '>', '*']).trim();
    let words: Vec<&str> = name.split_whitespace().collect();
    let plausible = !words.is_empty()
        && words.len() <= 4
        && name.chars().count() <= 40
        && words.iter().all(|w| {
            w.chars()
                .next()
                .is_some_and(|c| c.is_uppercase() || c.is_ascii_digit())
                && w.chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '\'' | '’'))
        })
        // `10:30` is a time, not a speaker called 10.
        && !said.trim_start().starts_with(|c: char| c.is_ascii_digit());
    plausible.then(|| (name, said.trim()))
}

/// `Name: text` lines, optionally stamped `[00:01:02]` or `(01:02)`; a line without a
/// speaker continues the previous segment.
fn parse_lines(text: &str) -> Vec<Segment> {
    let mut segments: Vec<Segment> = Vec::new();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        let (stamp, line) = leading_stamp(line);
        match split_speaker(line) {
            Some((name, said)) => {
                if let (Some(start), Some(prev)) = (stamp, segments.last_mut())
                    && prev.end_seconds.is_none()
                    && prev.start_seconds.is_some()
                {
                    prev.end_seconds = Some(start);
                }
                segments.push(Segment {
                    speaker: Some(name.to_owned()),
                    start_seconds: stamp,
                    end_seconds: None,
                    text: said.to_owned(),
                });
            }
            None => match segments.last_mut() {
                Some(prev) if stamp.is_none() => {
                    prev.text.push(' ');
                    prev.text.push_str(line);
                }
                _ => segments.push(Segment {
                    speaker: None,
                    start_seconds: stamp,
                    end_seconds: None,
                    text: line.to_owned(),
                }),
            },
        }
    }
    segments.retain(|s| !s.text.trim().is_empty());
    segments
}

fn leading_stamp(line: &str) -> (Option<f64>, &str) {
    for (open, close) in [('[', ']'), ('(', ')')] {
        if let Some(rest) = line.strip_prefix(open)
            && let Some((inside, after)) = rest.split_once(close)
            && let Some(t) = timestamp(inside)
        {
            return (Some(t), after.trim());
        }
    }
    (None, line)
}

#[derive(Deserialize)]
struct JsonSegment {
    #[serde(alias = "name")]
    speaker: Option<String>,
    #[serde(alias = "start_seconds")]
    start: Option<f64>,
    #[serde(alias = "end_seconds")]
    end: Option<f64>,
    text: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum JsonTranscript {
    List(Vec<JsonSegment>),
    Wrapped { segments: Vec<JsonSegment> },
}

fn parse_json(text: &str) -> Result<Vec<Segment>, ParseError> {
    let parsed: JsonTranscript = serde_json::from_str(text).map_err(|e| {
        ParseError(format!(
            "not a JSON transcript ({e}); expected [{{\"speaker\", \"start\", \"end\", \"text\"}}, …] or {{\"segments\": […]}}"
        ))
    })?;
    let list = match parsed {
        JsonTranscript::List(l) | JsonTranscript::Wrapped { segments: l } => l,
    };
    Ok(list
        .into_iter()
        .filter(|s| !s.text.trim().is_empty())
        .map(|s| Segment {
            speaker: s.speaker.filter(|n| !n.trim().is_empty()),
            start_seconds: s.start,
            end_seconds: s.end,
            text: s.text.trim().to_owned(),
        })
        .collect())
}

/// Per-speaker turns and talk time, most talk time first (then most turns, then name).
/// Segments without a speaker count as `Speaker 1`.
pub fn speaker_stats(segments: &[Segment]) -> Vec<SpeakerStats> {
    let mut stats: BTreeMap<String, SpeakerStats> = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for s in segments {
        let name = s.speaker.as_deref().unwrap_or("Speaker 1");
        let entry = stats
            .entry(name.to_owned())
            .or_insert_with(|| SpeakerStats {
                name: name.to_owned(),
                turns: 0,
                talk_time_seconds: 0.0,
            });
        if previous != Some(name) {
            entry.turns += 1;
        }
        if let (Some(a), Some(b)) = (s.start_seconds, s.end_seconds) {
            entry.talk_time_seconds += (b - a).max(0.0);
        }
        previous = Some(name);
    }
    let mut list: Vec<SpeakerStats> = stats
        .into_values()
        .map(|mut s| {
            s.talk_time_seconds = (s.talk_time_seconds * 1000.0).round() / 1000.0;
            s
        })
        .collect();
    list.sort_by(|a, b| {
        b.talk_time_seconds
            .total_cmp(&a.talk_time_seconds)
            .then(b.turns.cmp(&a.turns))
            .then(a.name.cmp(&b.name))
    });
    list
}

/// One `Name: text` line per segment (plain text where the speaker is unknown).
pub fn normalized(segments: &[Segment]) -> String {
    let mut out = String::new();
    for s in segments {
        if let Some(name) = &s.speaker {
            out.push_str(name);
            out.push_str(": ");
        }
        out.push_str(&s.text);
        out.push('\n');
    }
    out
}

/// The end of the last timed segment, or 0.
pub fn duration(segments: &[Segment]) -> f64 {
    segments
        .iter()
        .filter_map(|s| s.end_seconds.or(s.start_seconds))
        .fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtt_voice_tags_and_prefixes_are_speakers() {
        let vtt = "WEBVTT\n\nNOTE made by hand\n\n1\n00:00:01.000 --> 00:00:04.500 align:start\n<v Alice Smith>Hello <i>all</i></v>\n\n00:00:05.000 --> 00:00:07.000\n<v.loud Bob>Hi.\n<v Alice Smith>Welcome.\n\n00:08.000 --> 00:09.000\nCarol: Thanks\n";
        let s = parse(vtt, Format::Auto).expect("parses");
        let who: Vec<(Option<&str>, &str)> = s
            .iter()
            .map(|s| (s.speaker.as_deref(), s.text.as_str()))
            .collect();
        assert_eq!(
            who,
            [
                (Some("Alice Smith"), "Hello all"),
                (Some("Bob"), "Hi."),
                (Some("Alice Smith"), "Welcome."),
                (Some("Carol"), "Thanks"),
            ]
        );
        assert_eq!(s[0].start_seconds, Some(1.0));
        assert_eq!(s[0].end_seconds, Some(4.5));
        assert_eq!(s[3].start_seconds, Some(8.0));
    }

    #[test]
    fn srt_and_lines_and_json_are_detected() {
        let srt = "1\r\n00:00:01,000 --> 00:00:02,500\r\nDana: One\r\n\r\n2\r\n00:00:03,000 --> 00:00:04,000\r\nsecond line\r\n";
        assert_eq!(detect(srt), Format::Srt);
        let s = parse(srt, Format::Auto).expect("srt");
        assert_eq!(s[0].speaker.as_deref(), Some("Dana"));
        assert_eq!(s[0].end_seconds, Some(2.5));
        assert_eq!(s[1].speaker, None);

        let lines = "[00:00:05] Eve: First.\nstill Eve\n[00:00:09] Frank: Second.\nNote: 10:30 is not a speaker\n";
        let s = parse(lines, Format::Auto).expect("lines");
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].text, "First. still Eve");
        assert_eq!(s[0].end_seconds, Some(9.0));
        assert_eq!(s[1].text, "Second. Note: 10:30 is not a speaker");

        let json = r#"{"segments":[{"speaker":"G","start":0,"end":2.5,"text":"a"},{"name":"H","text":"b"}]}"#;
        let s = parse(json, Format::Auto).expect("json");
        assert_eq!(s[1].speaker.as_deref(), Some("H"));
        assert!(parse("[1,2]", Format::Json).is_err());
    }

    #[test]
    fn lowercase_prefixes_are_not_speakers() {
        assert_eq!(split_speaker("note: buy milk"), None);
        assert_eq!(split_speaker("Meeting at 10:30"), None);
        assert_eq!(split_speaker("Speaker 2: yes"), Some(("Speaker 2", "yes")));
    }
}
