//! Where the `Date` value sits in an HTTP/1 response head as pingora wrote it, so that the
//! guarded stream can put the response's own `Date` back (pure; `stream.rs` does the writing).
//!
//! pingora's HTTP/1 server sets `Date` to its own clock on every final response it writes,
//! a stored one included, with no switch to turn that off. A cache must not: the `Date` of a
//! response served from the cache is the one it was stored with (RFC 9110 section 6.6.1; the
//! caching test suite's `other-date-update`), and `Age` says how long ago that was (RFC 9111
//! section 5.1). A relayed response keeps the app's `Date` too. pingora's HTTP/2 server sets
//! it as well, inside HPACK-coded frames that this cannot reach: over HTTP/2, `Date` is still
//! pingora's clock.

use std::ops::Range;
use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The end of a head, searched for once per response: built once (a finder's set-up costs
/// more than the search through a small head).
static HEAD_END: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\n\r\n"));
/// `Date` as pingora writes it.
static DATE_LINE: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\r\nDate: "));

/// What a write to the client starts with, for the `Date` to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Head {
    /// A final (non-1xx) response head, complete in the write; the byte range of its `Date`
    /// value, if it has one.
    Final(Option<Range<usize>>),
    /// An interim (1xx) response head: the final one is still to come.
    Interim,
    /// Anything else (a body, a head cut short).
    Other,
}

/// Read `bytes`, the start of a write to the client.
pub(super) fn head(bytes: &[u8]) -> Head {
    let Some(status) = bytes.strip_prefix(b"HTTP/1.").and_then(|r| r.get(2..5)) else {
        return Head::Other;
    };
    if !status.iter().all(u8::is_ascii_digit) {
        return Head::Other;
    }
    // pingora writes `Date: ` as this, in every final head: one vectorised pass (the hit
    // path) that finds it, checks that the head does not end before it, and finds the end
    // after it; any other spelling is read line by line below
    if status[0] != b'1' {
        if let Some(at) = DATE_LINE.find(bytes) {
            if HEAD_END.find(&bytes[..at + 2]).is_none() {
                let from = at + b"\r\nDate: ".len();
                let Some(end) = HEAD_END.find(&bytes[at..]).map(|e| at + e) else {
                    return Head::Other;
                };
                let line_end =
                    memchr::memchr(b'\r', &bytes[from..end + 2]).map_or(end, |i| from + i);
                let value = &bytes[from..line_end];
                let trail = value.len() - value.trim_ascii_end().len();
                return Head::Final(Some(from..line_end - trail));
            }
        }
    }
    let Some(end) = HEAD_END.find(bytes) else {
        return Head::Other;
    };
    if status[0] == b'1' {
        return Head::Interim;
    }
    let mut date = None;
    // each header line starts after a CRLF; the status line is skipped
    let mut at = bytes[..end].iter().position(|&b| b == b'\n').map(|i| i + 1);
    while let Some(start) = at.filter(|&s| s <= end) {
        let line_end = bytes[start..end + 2]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(end, |i| start + i);
        let line = &bytes[start..line_end];
        if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"date:") {
            let value = &line[5..];
            let lead = value.len() - value.trim_ascii_start().len();
            let trail = value.len() - value.trim_ascii_end().len();
            let from = start + 5 + lead;
            date = Some(from..(line_end - trail).max(from));
            break;
        }
        at = Some(line_end + 2);
    }
    Head::Final(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(bytes: &[u8]) -> Option<&[u8]> {
        match head(bytes) {
            Head::Final(Some(r)) => Some(&bytes[r]),
            _ => None,
        }
    }

    #[test]
    fn finds_the_date_value_of_a_final_head() {
        let h = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: Tue, 01 Dec 2026 12:00:00 GMT\r\nConnection: keep-alive\r\n\r\nhi";
        assert_eq!(value(h), Some(&b"Tue, 01 Dec 2026 12:00:00 GMT"[..]));
        let lower = b"HTTP/1.0 304 Not Modified\r\ndate:  x \r\n\r\n";
        assert_eq!(value(lower), Some(&b"x"[..]));
        let last = b"HTTP/1.1 404 Not Found\r\nA: 1\r\nDATE: y\r\n\r\n";
        assert_eq!(value(last), Some(&b"y"[..]));
        let empty = b"HTTP/1.1 200 OK\r\nDate:\r\n\r\n";
        assert_eq!(value(empty), Some(&b""[..]));
    }

    #[test]
    fn only_a_complete_final_head_counts() {
        assert_eq!(head(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\n"), Head::Final(None));
        // a field whose name merely ends in "date"
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nX-Date: 1\r\nUpdate: 2\r\n\r\n"),
            Head::Final(None)
        );
        assert_eq!(
            head(b"HTTP/1.1 103 Early Hints\r\nDate: x\r\n\r\n"),
            Head::Interim
        );
        assert_eq!(head(b"HTTP/1.1 100 Continue\r\n\r\n"), Head::Interim);
        assert_eq!(head(b"HTTP/1.1 200 OK\r\nDate: x\r\n"), Head::Other);
        assert_eq!(head(b"hello world"), Head::Other);
        assert_eq!(head(b"HTTP/1.1 2x0 OK\r\n\r\n"), Head::Other);
        assert_eq!(head(b"HTTP/1."), Head::Other);
        // a Date in the body is not the head's, in pingora's spelling or another
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\nDate: x\r\n"),
            Head::Final(None)
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nA: 1\r\n\r\nbody\r\nDate: x\r\n\r\n"),
            Head::Final(None)
        );
    }
}
