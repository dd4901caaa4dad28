//! Bounds on a multipart body that multer does not set. multer buffers a part's header section
//! until its blank line, without limit, so one request whose part header never ends would grow
//! the API by all it sends; and skipping to the next part reads the rest of the current one,
//! however long. [`guard_part_headers`] sits between the request body and multer: it follows the
//! body's framing (delimiter, header section, data) without copying it, and ends the body with
//! an error once a header section passes [`MAX_PART_HEADER`], or once a refused body has been
//! drained by as much as it was allowed ([`BodyGuard::drain_at_most`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::pattern::StreamMatcher;

/// The longest header section of one part (its `Content-Disposition`, `Content-Type`, ...).
pub(crate) const MAX_PART_HEADER: usize = 8 * 1024;

/// The handler's side of a guarded body: whether a part header overflowed (multer's error
/// does not say), and how much more of it may be read.
#[derive(Clone, Debug)]
pub(crate) struct BodyGuard(Arc<GuardState>);

#[derive(Debug)]
struct GuardState {
    header_overflowed: AtomicBool,
    /// Bytes the body may still yield.
    budget: AtomicU64,
}

impl Default for BodyGuard {
    fn default() -> Self {
        Self(Arc::new(GuardState {
            header_overflowed: AtomicBool::new(false),
            budget: AtomicU64::new(u64::MAX),
        }))
    }
}

impl BodyGuard {
    pub(crate) fn header_overflowed(&self) -> bool {
        self.0.header_overflowed.load(Ordering::Relaxed)
    }

    /// From now on the body ends after at most `bytes` more.
    pub(crate) fn drain_at_most(&self, bytes: u64) {
        self.0.budget.fetch_min(bytes, Ordering::Relaxed);
    }

    /// Takes `len` bytes from the budget; false once it is spent.
    fn spend(&self, len: u64) -> bool {
        let spend = |budget: u64| budget.checked_sub(len);
        let state = &self.0.budget;
        state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, spend)
            .is_ok()
    }
}

/// `body`, ended with an error as soon as one part's header section is longer than `limit`
/// bytes, or `guard`'s budget is spent.
pub(crate) fn guard_part_headers(
    body: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    boundary: &str,
    limit: usize,
    guard: BodyGuard,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let mut framing = Framing::new(boundary, limit);
    body.map(move |chunk| {
        let chunk = chunk?;
        if guard.header_overflowed() || framing.scan(&chunk).is_err() {
            guard.0.header_overflowed.store(true, Ordering::Relaxed);
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("a multipart part header is longer than {limit} bytes"),
            ));
        }
        if !guard.spend(chunk.len() as u64) {
            let why = "the rest of a refused body is not read";
            return Err(std::io::Error::other(why));
        }
        Ok(chunk)
    })
}

/// A header section passed the limit.
#[derive(Debug, PartialEq)]
pub(crate) struct HeaderTooLong;

/// Where the body is, as multer reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Section {
    /// Before the first `--boundary`, which multer looks for anywhere.
    Preamble,
    /// The rest of a delimiter's line: `--` ends the body, else padding and CRLF.
    BoundaryLine,
    /// A part's headers, up to the blank line.
    Header,
    /// A part's data, up to the next `CRLF--boundary`.
    Data,
    /// After the closing delimiter: multer reads no further.
    Epilogue,
}

/// Follows a multipart body the way multer reads it, counting what multer buffers whole: the
/// preamble, a delimiter's line and a part's headers (data is streamed, not buffered).
#[derive(Debug)]
pub(crate) struct Framing {
    section: Section,
    first_delimiter: StreamMatcher,
    delimiter: StreamMatcher,
    line_end: StreamMatcher,
    blank_line: StreamMatcher,
    /// Bytes since the last delimiter (or the start), while not in data.
    buffered: usize,
    /// The first bytes of a delimiter's line.
    line_start: Vec<u8>,
    limit: usize,
}

impl Framing {
    pub(crate) fn new(boundary: &str, limit: usize) -> Self {
        Self {
            section: Section::Preamble,
            first_delimiter: StreamMatcher::new(format!("--{boundary}").into_bytes()),
            delimiter: StreamMatcher::new(format!("\r\n--{boundary}").into_bytes()),
            line_end: StreamMatcher::new(b"\r\n".to_vec()),
            blank_line: StreamMatcher::new(b"\r\n\r\n".to_vec()),
            buffered: 0,
            line_start: Vec::with_capacity(2),
            limit,
        }
    }

    /// Follows `chunk`, the next bytes of the body.
    pub(crate) fn scan(&mut self, mut chunk: &[u8]) -> Result<(), HeaderTooLong> {
        while !chunk.is_empty() {
            let (consumed, found) = match self.section {
                Section::Epilogue => return Ok(()),
                Section::Preamble => self.first_delimiter.feed(chunk),
                Section::BoundaryLine => self.line_end.feed(chunk),
                Section::Header => self.blank_line.feed(chunk),
                Section::Data => self.delimiter.feed(chunk),
            };
            if self.section == Section::BoundaryLine {
                let wanted = 2 - self.line_start.len().min(2);
                self.line_start
                    .extend_from_slice(&chunk[..consumed.min(wanted)]);
                if self.line_start == b"--" {
                    self.section = Section::Epilogue;
                    return Ok(());
                }
            }
            if self.section != Section::Data {
                self.buffered += consumed;
                if self.buffered > self.limit {
                    return Err(HeaderTooLong);
                }
            }
            if found {
                self.section = match self.section {
                    Section::Preamble | Section::Data => {
                        self.buffered = 0;
                        self.line_start.clear();
                        Section::BoundaryLine
                    }
                    Section::BoundaryLine => Section::Header,
                    Section::Header => Section::Data,
                    Section::Epilogue => Section::Epilogue,
                };
            }
            chunk = &chunk[consumed..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(body: &[u8], piece: usize, limit: usize) -> Result<(), HeaderTooLong> {
        let mut framing = Framing::new("XyZ", limit);
        body.chunks(piece).try_for_each(|chunk| framing.scan(chunk))
    }

    #[test]
    fn part_headers_are_measured_whatever_the_chunking() {
        let header = |len: usize| {
            format!(
                "Content-Disposition: form-data; name=\"{}\"",
                "a".repeat(len)
            )
        };
        let body = |len: usize| {
            format!(
                "--XyZ\r\n{}\r\n\r\nsome data\r\n--X\r\n--XyZ\r\n{}\r\n\r\n\r\n\r\n--XyZ--\r\n",
                header(10),
                header(len)
            )
        };
        // Counted from the delimiter: "\r\n" + header + "\r\n\r\n".
        let section = |len: usize| header(len).len() + 6;
        let cases = [
            (body(100), section(100), Ok(())),
            (body(100), section(100) - 1, Err(HeaderTooLong)),
            (body(5000), 4096, Err(HeaderTooLong)),
        ];
        for (body, limit, expected) in cases {
            for piece in [1, 2, 3, 7, 64, body.len()] {
                assert_eq!(
                    scan_in_pieces(body.as_bytes(), piece, limit),
                    expected,
                    "limit {limit}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn what_multer_buffers_whole_is_bounded_and_an_epilogue_is_not() {
        let endless = "x".repeat(9000);
        let cases = [
            // A preamble before the first delimiter (multer finds it anywhere).
            (format!("preamble--XyZ\r\n{endless}"), Err(HeaderTooLong)),
            (format!("{endless}--XyZ\r\n\r\n"), Err(HeaderTooLong)),
            // The delimiter's own line break is not the start of the blank line.
            (format!("--XyZ\r\n\r\n{endless}"), Err(HeaderTooLong)),
            // Padding after a delimiter is part of its line.
            (format!("--XyZ{endless}\r\n\r\n"), Err(HeaderTooLong)),
            (
                format!("--XyZ\r\nName: a\r\n\r\ndata\r\n--XyZ--\r\n{endless}"),
                Ok(()),
            ),
        ];
        for (body, expected) in cases {
            for piece in [1, 5, 4096, body.len()] {
                let got = scan_in_pieces(body.as_bytes(), piece, 8192);
                assert_eq!(got, expected, "{}…, pieces of {piece}", &body[..24]);
            }
        }
    }

    #[test]
    fn a_header_that_never_ends_trips_the_limit_and_data_does_not() {
        let mut framing = Framing::new("b", 8192);
        framing
            .scan(b"--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n")
            .expect("short header");
        // Data, however long, is not a header; nor are near-delimiters in it.
        for _ in 0..1000 {
            framing.scan(&[b'\r'; 1024]).expect("data");
            framing.scan(b"\r\n--a\r\n-\r\n").expect("data");
        }
        framing
            .scan(b"\r\n--b\r\nX-Endless: ")
            .expect("a new header starts");
        let endless = [b'x'; 1024];
        let tripped = (0..16).map(|_| framing.scan(&endless)).find(Result::is_err);
        assert_eq!(tripped, Some(Err(HeaderTooLong)));
    }
}
