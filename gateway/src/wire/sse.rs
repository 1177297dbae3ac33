//! An incremental server-sent-events parser for upstream streams. It tolerates what real providers
//! send: `: keep-alive` comments while queued, leading blank lines, CRLF line ends, and events split
//! across reads at any byte.

use std::collections::VecDeque;

use bytes::{Buf, BytesMut};

#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, when present.
    pub name: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    buffer: BytesMut,
    name: Option<String>,
    data: Option<String>,
}

impl SseParser {
    /// Feeds bytes and returns the events they complete. Whole lines are read where they
    /// arrived; only an unfinished line is kept (a provider's chunk usually ends on an event).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut events = VecDeque::new();
        self.push_into(chunk, &mut events);
        events.into()
    }

    /// [`SseParser::push`] onto the back of a queue the caller keeps: a stream reads its
    /// events through one queue, not a new list each read.
    pub fn push_into(&mut self, chunk: &[u8], events: &mut VecDeque<Event>) {
        if self.buffer.is_empty() {
            let used = self.lines(chunk, events);
            self.buffer.extend_from_slice(&chunk[used..]);
        } else {
            self.buffer.extend_from_slice(chunk);
            let buffer = std::mem::take(&mut self.buffer);
            let used = self.lines(&buffer, events);
            self.buffer = buffer;
            self.buffer.advance(used);
        }
    }

    /// Reads every whole line of `text` into `events`; returns how many bytes they took.
    fn lines(&mut self, text: &[u8], events: &mut VecDeque<Event>) -> usize {
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', text) {
            let mut line = &text[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if let Some(event) = self.line(line) {
                events.push_back(event);
            }
            start = end + 1;
        }
        start
    }

    /// True when bytes of an unfinished event are buffered (a stream ending now was cut).
    pub fn has_partial(&self) -> bool {
        self.data.is_some() || self.buffer.has_remaining()
    }

    fn line(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            let data = self.data.take()?;
            return Some(Event {
                name: self.name.take(),
                data,
            });
        }
        if line[0] == b':' {
            return None;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // Valid UTF-8 is checked a word at a time; only a broken sequence takes the lossy path.
        let value = match std::str::from_utf8(value) {
            Ok(text) => std::borrow::Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(value),
        };
        match field {
            b"data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            b"event" => self.name = Some(value.into_owned()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(events: Vec<Event>) -> Vec<String> {
        events.into_iter().map(|e| e.data).collect()
    }

    #[test]
    fn a_kept_queue_takes_each_reads_events_behind_those_not_yet_taken() {
        let mut p = SseParser::default();
        let mut queue = VecDeque::new();
        p.push_into(b"data: 1\n\ndata: 2\n\ndata: 3", &mut queue);
        assert_eq!(queue.pop_front().unwrap().data, "1");
        p.push_into(b"\n\ndata: 4\n\n", &mut queue);
        let rest: Vec<String> = queue.into_iter().map(|e| e.data).collect();
        assert_eq!(rest, ["2", "3", "4"]);
    }

    #[test]
    fn tolerates_comments_blank_lines_and_crlf() {
        let mut p = SseParser::default();
        let out = p.push(b"\n\n: keep-alive\n\ndata: {\"a\":1}\r\n\r\ndata: [DONE]\n\n");
        assert_eq!(data(out), ["{\"a\":1}", "[DONE]"]);
        assert!(!p.has_partial());
    }

    #[test]
    fn events_split_at_any_byte_reassemble() {
        let text = b"event: x\ndata: hello\ndata: world\n\ndata: {\"b\":2}\n\n";
        for split in 0..text.len() {
            let mut p = SseParser::default();
            let mut out = p.push(&text[..split]);
            out.extend(p.push(&text[split..]));
            assert_eq!(out.len(), 2, "split at {split}");
            assert_eq!(out[0].name.as_deref(), Some("x"));
            assert_eq!(out[0].data, "hello\nworld");
            assert_eq!(out[1].data, "{\"b\":2}");
        }
    }

    #[test]
    fn broken_utf8_is_replaced_and_a_line_split_after_a_whole_one_is_kept() {
        let mut p = SseParser::default();
        let out = p.push(b"data: a\xffb\n\ndata: par");
        assert_eq!(data(out), ["a\u{fffd}b"]);
        assert!(p.has_partial());
        assert_eq!(data(p.push(b"tial\n\n")), ["partial"]);
        assert!(!p.has_partial());
    }

    #[test]
    fn reports_a_partial_event() {
        let mut p = SseParser::default();
        assert!(p.push(b"data: {\"a\"").is_empty());
        assert!(p.has_partial());
    }
}
