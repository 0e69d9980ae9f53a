//! Stream framing for SIP over TCP/TLS (RFC 3261 §18.3): split a byte stream into messages by
//! Content-Length, skip CRLF keep-alives (RFC 5626 §3.5.1 `CRLFCRLF` ping / `CRLF` pong), and
//! bound the size of one message.
//!
//! The framer only cuts bytes; each message is then parsed with
//! [`super::parse::parse_message`]. After a [`FramingError`] the stream cannot be resynchronised:
//! the connection must be closed (a 400 may be sent first when the head allows it).

use thiserror::Error;

use super::headers;
use super::parse::{expand_compact, find_head_end};

/// Default bound on one message (head plus body).
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramingError {
    #[error("stream message without Content-Length")]
    MissingContentLength,
    #[error("bad Content-Length on stream: {0}")]
    BadContentLength(String),
    #[error("message exceeds {limit} bytes")]
    TooLarge { limit: usize },
}

/// Accumulates stream bytes and yields one complete message at a time.
#[derive(Debug)]
pub struct StreamFramer {
    buf: Vec<u8>,
    max: usize,
    failed: bool,
}

impl Default for StreamFramer {
    fn default() -> Self {
        StreamFramer::new(DEFAULT_MAX_MESSAGE)
    }
}

impl StreamFramer {
    /// A framer refusing messages larger than `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        StreamFramer { buf: Vec::new(), max: max_message, failed: false }
    }

    /// Appends received bytes. Ignored once the framer has failed.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// True after an error was returned; the connection should be closed.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Bytes held that do not yet form a complete message.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete message (start line through body), `None` when more bytes are needed.
    /// An error is returned once; afterwards the framer is failed and yields `None`.
    pub fn next_message(&mut self) -> Option<Result<Vec<u8>, FramingError>> {
        if self.failed {
            return None;
        }
        self.skip_keepalives();
        match self.frame_len() {
            Ok(Some(n)) => Some(Ok(self.buf.drain(..n).collect())),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                self.buf = Vec::new();
                Some(Err(e))
            }
        }
    }

    /// Drops CR/LF before a start line (keep-alives; RFC 3261 §7.5 says to ignore them).
    fn skip_keepalives(&mut self) {
        let n = self.buf.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
        self.buf.drain(..n);
    }

    /// Length of the first complete message, if all of it has arrived.
    fn frame_len(&self) -> Result<Option<usize>, FramingError> {
        let too_large = FramingError::TooLarge { limit: self.max };
        let Some((head_end, body_start)) = find_head_end(&self.buf) else {
            return if self.buf.len() > self.max { Err(too_large) } else { Ok(None) };
        };
        let body = content_length(&self.buf[..head_end])?;
        let total = body_start.checked_add(body).ok_or(too_large.clone())?;
        if total > self.max {
            return Err(too_large);
        }
        Ok((self.buf.len() >= total).then_some(total))
    }
}

/// The Content-Length of a head (folded lines included); it is mandatory on streams.
fn content_length(head: &[u8]) -> Result<usize, FramingError> {
    let head = String::from_utf8_lossy(head);
    let mut found: Option<usize> = None;
    let mut lines = head.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)).peekable();
    lines.next(); // start line
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else { continue };
        if !expand_compact(name.trim()).eq_ignore_ascii_case("Content-Length") {
            continue;
        }
        let mut value = value.to_string();
        while let Some(cont) = lines.next_if(|l| l.starts_with([' ', '\t'])) {
            value.push_str(cont);
        }
        let n = headers::content_length(&value)
            .map_err(|e| FramingError::BadContentLength(e.to_string()))?;
        if found.is_some_and(|f| f != n) {
            return Err(FramingError::BadContentLength("conflicting values".into()));
        }
        found = Some(n);
    }
    found.ok_or(FramingError::MissingContentLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"OPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 5\r\n\r\nhello";
    const B: &[u8] = b"BYE sip:b@example.com SIP/2.0\r\nContent-Length:\r\n 0\r\n\r\n";

    fn stream() -> Vec<u8> {
        [b"\r\n\r\n".as_slice(), A, b"\r\n\r\n", b"\r\n", B, b"\r\n"].concat()
    }

    fn drain(f: &mut StreamFramer, out: &mut Vec<Vec<u8>>) {
        while let Some(m) = f.next_message() {
            out.push(m.unwrap());
        }
    }

    #[test]
    fn whole_stream_at_once() {
        let mut f = StreamFramer::default();
        f.push(&stream());
        let mut out = Vec::new();
        drain(&mut f, &mut out);
        assert_eq!(out, vec![A.to_vec(), B.to_vec()]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn split_at_every_byte_boundary() {
        let s = stream();
        for cut in 0..=s.len() {
            let mut f = StreamFramer::default();
            let mut out = Vec::new();
            f.push(&s[..cut]);
            drain(&mut f, &mut out);
            f.push(&s[cut..]);
            drain(&mut f, &mut out);
            assert_eq!(out, vec![A.to_vec(), B.to_vec()], "cut at {cut}");
        }
    }

    #[test]
    fn byte_by_byte() {
        let mut f = StreamFramer::default();
        let mut out = Vec::new();
        for b in stream() {
            f.push(&[b]);
            drain(&mut f, &mut out);
        }
        assert_eq!(out, vec![A.to_vec(), B.to_vec()]);
    }

    #[test]
    fn missing_content_length_is_fatal_once() {
        let mut f = StreamFramer::default();
        f.push(b"OPTIONS sip:a SIP/2.0\r\nVia: x\r\n\r\n");
        assert_eq!(f.next_message(), Some(Err(FramingError::MissingContentLength)));
        assert!(f.is_failed());
        f.push(A);
        assert_eq!(f.next_message(), None);
    }

    #[test]
    fn bad_and_conflicting_lengths() {
        let mut f = StreamFramer::default();
        f.push(b"X sip:a SIP/2.0\r\nContent-Length: -1\r\n\r\n");
        assert!(matches!(f.next_message(), Some(Err(FramingError::BadContentLength(_)))));
        let mut f = StreamFramer::default();
        f.push(b"X sip:a SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab");
        assert!(matches!(f.next_message(), Some(Err(FramingError::BadContentLength(_)))));
    }

    #[test]
    fn size_limit() {
        let mut f = StreamFramer::new(100);
        f.push(b"X sip:a SIP/2.0\r\nContent-Length: 1000\r\n\r\n");
        assert_eq!(f.next_message(), Some(Err(FramingError::TooLarge { limit: 100 })));
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 101]);
        assert_eq!(f.next_message(), Some(Err(FramingError::TooLarge { limit: 100 })));
        let mut f = StreamFramer::new(100);
        f.push(&[b'a'; 100]);
        assert_eq!(f.next_message(), None);
    }
}
