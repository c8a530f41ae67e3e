//! Server-Sent Events (`text/event-stream`): the encoder the agent writes its watch stream
//! with, and the incremental parser every client reads it with.
//!
//! The parser follows the WHATWG rules a client needs: lines end with `\n`, `\r\n` or `\r`; a
//! blank line dispatches the event; lines starting with `:` are comments (the agent's
//! keep-alives); `retry:` and unknown fields are ignored; an event without `data:` is dropped,
//! as is an unterminated event at the end of the stream; a byte-order mark opening the stream
//! is skipped.

use bytes::Bytes;

/// Largest line, or event data, the parser accepts; more is an error rather than unbounded
/// memory.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// The keep-alive the agent sends when it has had nothing to say for a while (a comment).
pub const KEEP_ALIVE: &[u8] = b":\n\n";

/// One SSE event: `event`, `id` and a single `data` line. `data` must hold no line break
/// (compact JSON has none).
pub fn frame(event: &str, id: u64, data: &[u8]) -> Bytes {
    let id = id.to_string();
    let mut out = Vec::with_capacity(data.len() + event.len() + id.len() + 24);
    for part in [
        b"event: ".as_slice(),
        event.as_bytes(),
        b"\nid: ",
        id.as_bytes(),
        b"\ndata: ",
        data,
        b"\n\n",
    ] {
        out.extend_from_slice(part);
    }
    Bytes::from(out)
}

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field (`message` when absent or empty).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last `id:` field seen, if any (it persists across events, as the spec says).
    pub id: Option<String>,
}

/// Why a byte stream cannot be read as SSE.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// A line, or an event's data, grew over [`MAX_EVENT_BYTES`].
    #[error("server-sent event larger than {} MiB", MAX_EVENT_BYTES >> 20)]
    TooLarge,
}

/// Incremental parser: feed it chunks as they arrive, get whole events back.
#[derive(Debug, Default)]
pub struct Parser {
    /// The line being read.
    line: Vec<u8>,
    /// The last byte was a CR, so an LF right after it ends nothing.
    after_cr: bool,
    /// Whether the first line (which may open with a byte-order mark) is done.
    seen_first_line: bool,
    /// `event:` of the event being built.
    event: Option<String>,
    /// `data:` lines of the event being built, each followed by `\n`.
    data: String,
    /// Whether any `data:` field was seen for the event being built.
    has_data: bool,
    /// Last event id.
    id: Option<String>,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Consumes `chunk` and returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, ParseError> {
        let mut out = Vec::new();
        let mut rest = chunk;
        while !rest.is_empty() {
            if self.after_cr && rest[0] == b'\n' {
                self.after_cr = false;
                rest = &rest[1..];
                continue;
            }
            self.after_cr = false;
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(pos) => {
                    self.extend_line(&rest[..pos])?;
                    self.after_cr = rest[pos] == b'\r';
                    rest = &rest[pos + 1..];
                    let line = std::mem::take(&mut self.line);
                    if let Some(event) = self.line_done(&line)? {
                        out.push(event);
                    }
                }
                None => {
                    self.extend_line(rest)?;
                    rest = &[];
                }
            }
        }
        Ok(out)
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        if self.line.len() + bytes.len() > MAX_EVENT_BYTES {
            return Err(ParseError::TooLarge);
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<Event>, ParseError> {
        let mut line = line;
        if !self.seen_first_line {
            self.seen_first_line = true;
            line = line.strip_prefix("\u{feff}".as_bytes()).unwrap_or(line);
        }
        if line.is_empty() {
            let event = self.event.take();
            if !std::mem::take(&mut self.has_data) {
                return Ok(None);
            }
            let mut data = std::mem::take(&mut self.data);
            data.pop(); // the `\n` after the last data line
            return Ok(Some(Event {
                event: event
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "message".to_string()),
                data,
                id: self.id.clone(),
            }));
        }
        if line[0] == b':' {
            return Ok(None); // comment / keep-alive
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event = Some(value.to_string()),
            "data" => {
                if self.data.len() + value.len() >= MAX_EVENT_BYTES {
                    return Err(ParseError::TooLarge);
                }
                self.has_data = true;
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id = Some(value.to_string()),
            _ => {} // `retry` and unknown fields are ignored
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests;
