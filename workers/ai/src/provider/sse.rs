//! A server-sent events decoder (the WHATWG `text/event-stream` format) for streamed chat
//! answers: bytes in, complete events out, whatever the chunk boundaries.

/// One event: its `event:` name (empty when absent) and its `data:` lines joined by `\n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub event: String,
    pub data: String,
}

/// Accumulates bytes and yields complete events.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
}

impl Decoder {
    /// Feeds a chunk; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=end).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line);
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    events.push(Event {
                        event: std::mem::take(&mut self.event),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // a comment, e.g. a keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {} // id, retry: not needed for one response
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_chunking() {
        let stream = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: ping\n\ndata: x\ndata: y\n\ndata: [DONE]\n\n";
        for size in 1..stream.len() {
            let mut d = Decoder::default();
            let events: Vec<Event> = stream.chunks(size).flat_map(|c| d.push(c)).collect();
            assert_eq!(
                events,
                vec![
                    Event {
                        event: "message_start".into(),
                        data: "{\"a\":1}".into()
                    },
                    Event {
                        event: String::new(),
                        data: "x\ny".into()
                    },
                    Event {
                        event: String::new(),
                        data: "[DONE]".into()
                    },
                ],
                "chunk size {size}"
            );
        }
    }
}
