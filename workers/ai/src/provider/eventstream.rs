//! The AWS event-stream binary framing used by Bedrock's `ConverseStream`: each message is
//! a prelude (total length, headers length, CRC32 of both), typed headers, a payload and a
//! CRC32 of the whole message. Both CRCs are checked; a bad frame is a malformed response.

use std::collections::BTreeMap;

/// One decoded message: its string headers (`:event-type`, `:message-type`…) and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub headers: BTreeMap<String, String>,
    pub payload: Vec<u8>,
}

/// Why bytes are not an event-stream message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("event-stream frame of {0} bytes is out of range")]
    Length(u32),
    #[error("event-stream prelude checksum mismatch")]
    PreludeCrc,
    #[error("event-stream message checksum mismatch")]
    MessageCrc,
    #[error("event-stream header is malformed")]
    Header,
}

const PRELUDE: usize = 12;
const MAX_FRAME: u32 = 16 * 1024 * 1024;

/// Accumulates bytes and yields complete frames.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

fn be32(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[..4]);
    u32::from_be_bytes(b)
}

impl Decoder {
    /// Feeds a chunk; returns the frames it completed, or the first framing error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Frame>, FrameError> {
        self.buf.extend_from_slice(chunk);
        let mut frames = Vec::new();
        while self.buf.len() >= PRELUDE {
            let total = be32(&self.buf[0..4]);
            let headers_len = be32(&self.buf[4..8]) as usize;
            if !(16..=MAX_FRAME).contains(&total) || headers_len + 16 > total as usize {
                return Err(FrameError::Length(total));
            }
            if crc32fast::hash(&self.buf[0..8]) != be32(&self.buf[8..12]) {
                return Err(FrameError::PreludeCrc);
            }
            let total = total as usize;
            if self.buf.len() < total {
                break;
            }
            let frame: Vec<u8> = self.buf.drain(..total).collect();
            if crc32fast::hash(&frame[..total - 4]) != be32(&frame[total - 4..]) {
                return Err(FrameError::MessageCrc);
            }
            let headers = parse_headers(&frame[PRELUDE..PRELUDE + headers_len])?;
            let payload = frame[PRELUDE + headers_len..total - 4].to_vec();
            frames.push(Frame { headers, payload });
        }
        Ok(frames)
    }
}

/// Reads the headers, keeping string-valued ones and skipping the rest by their type's size.
fn parse_headers(mut bytes: &[u8]) -> Result<BTreeMap<String, String>, FrameError> {
    let mut headers = BTreeMap::new();
    let take = |bytes: &mut &[u8], n: usize| -> Result<Vec<u8>, FrameError> {
        if bytes.len() < n {
            return Err(FrameError::Header);
        }
        let (head, rest) = bytes.split_at(n);
        *bytes = rest;
        Ok(head.to_vec())
    };
    while !bytes.is_empty() {
        let name_len = take(&mut bytes, 1)?[0] as usize;
        let name =
            String::from_utf8(take(&mut bytes, name_len)?).map_err(|_| FrameError::Header)?;
        let kind = take(&mut bytes, 1)?[0];
        let fixed = match kind {
            0 | 1 => Some(0),
            2 => Some(1),
            3 => Some(2),
            4 => Some(4),
            5 | 8 => Some(8),
            9 => Some(16),
            6 | 7 => None,
            _ => return Err(FrameError::Header),
        };
        match fixed {
            Some(n) => {
                take(&mut bytes, n)?;
            }
            None => {
                let len = take(&mut bytes, 2)?;
                let len = u16::from_be_bytes([len[0], len[1]]) as usize;
                let value = take(&mut bytes, len)?;
                if kind == 7 {
                    let value = String::from_utf8(value).map_err(|_| FrameError::Header)?;
                    headers.insert(name, value);
                }
            }
        }
    }
    Ok(headers)
}

/// Encodes a message with string headers (what a server sends; used by tests and tools).
pub fn encode(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut h = Vec::new();
    for (name, value) in headers {
        h.push(name.len() as u8);
        h.extend_from_slice(name.as_bytes());
        h.push(7);
        h.extend_from_slice(&(value.len() as u16).to_be_bytes());
        h.extend_from_slice(value.as_bytes());
    }
    let total = (PRELUDE + h.len() + payload.len() + 4) as u32;
    let mut out = Vec::with_capacity(total as usize);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&(h.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_across_any_chunking() {
        let mut bytes = encode(
            &[
                (":event-type", "contentBlockDelta"),
                (":message-type", "event"),
            ],
            br#"{"delta":{"text":"Hel"}}"#,
        );
        bytes.extend(encode(&[(":event-type", "messageStop")], b"{}"));
        for size in 1..bytes.len() {
            let mut d = Decoder::default();
            let mut frames = Vec::new();
            for c in bytes.chunks(size) {
                frames.extend(d.push(c).expect("valid"));
            }
            assert_eq!(frames.len(), 2, "chunk size {size}");
            assert_eq!(frames[0].headers[":event-type"], "contentBlockDelta");
            assert_eq!(frames[0].payload, br#"{"delta":{"text":"Hel"}}"#);
            assert_eq!(frames[1].headers[":event-type"], "messageStop");
        }
    }

    /// Messages written by AWS's own event-stream tooling (`aws-c-event-stream`'s test-case
    /// writer), as published with their decoded form in `aws/aws-sdk-go` (Apache-2.0),
    /// `private/protocol/eventstream/testdata/{encoded,decoded}/positive/`: an oracle
    /// independent of [`encode`].
    const AWS_PAYLOAD_ONE_STR_HEADER: &str = "0000003d0000002007fd83960c636f6e74656e742d74797065\
        0700106170706c69636174696f6e2f6a736f6e7b27666f6f273a27626172277d8d9c08b1";
    const AWS_ALL_HEADERS: &str = "000000cc000000af0fae64ca0a6576656e742d74797065040000a00c0c\
        636f6e74656e742d747970650700106170706c69636174696f6e2f6a736f6e0a626f6f6c2066616c7365\
        0109626f6f6c207472756500046279746502cf08627974652062756606001449276d2061206c6974746c\
        6520746561706f74210974696d657374616d70080000000000845fed05696e74313603002a05696e7436\
        340500000000028757b20475756964090102030405060708090a0b0c0d0e0f107b27666f6f273a276261\
        72277daba5f10c";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn messages_written_by_aws_tooling_decode_to_their_published_form() {
        let one = unhex(AWS_PAYLOAD_ONE_STR_HEADER);
        assert_eq!(one.len(), 61);
        let all = unhex(AWS_ALL_HEADERS);
        assert_eq!(all.len(), 204);
        let expected = Frame {
            headers: [("content-type".to_owned(), "application/json".to_owned())].into(),
            payload: b"{'foo':'bar'}".to_vec(),
        };
        // `all_headers` holds one header of every type (bool, byte, int16/32/64, bytes,
        // timestamp, uuid): each is skipped by its size, and only the string is kept.
        let both = [one.clone(), all.clone()].concat();
        for size in 1..=both.len() {
            let mut d = Decoder::default();
            let mut frames = Vec::new();
            for c in both.chunks(size) {
                frames.extend(d.push(c).expect("valid"));
            }
            assert_eq!(
                frames,
                vec![expected.clone(), expected.clone()],
                "chunk size {size}"
            );
        }

        // The same bytes with one flipped are refused by the checksum that covers them.
        let mut bad_prelude = one.clone();
        bad_prelude[7] ^= 0x01;
        assert_eq!(
            Decoder::default().push(&bad_prelude),
            Err(FrameError::PreludeCrc)
        );
        let mut bad_payload = all;
        bad_payload[195] ^= 0x01;
        assert_eq!(
            Decoder::default().push(&bad_payload),
            Err(FrameError::MessageCrc)
        );
    }

    #[test]
    fn a_corrupted_frame_is_refused() {
        let mut bytes = encode(&[(":event-type", "messageStop")], b"{}");
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        assert_eq!(Decoder::default().push(&bytes), Err(FrameError::MessageCrc));
    }
}
