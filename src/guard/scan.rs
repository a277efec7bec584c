//! The watch over one request header's bytes, before pingora's parser sees them: pure
//! counting, no I/O. Line ends are LF with an optional CR, as httparse takes them, so the
//! header ends where pingora ends it; the tests check the fast path against byte-by-byte rules
//! over every short input.

use crate::config::LimitsConfig;

/// Why a request header was refused; the `reason` label of
/// `lacquer_client_limit_rejections_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitBreach {
    /// The header did not arrive within `header_timeout`: 408.
    HeaderTimeout,
    /// The request target is longer than `max_url_length`: 414.
    UrlTooLong,
    /// The header is larger than `max_header_size`: 431.
    HeaderTooLarge,
    /// More than `max_headers` fields: 431.
    TooManyHeaders,
}

impl LimitBreach {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            LimitBreach::HeaderTimeout => "header_timeout",
            LimitBreach::UrlTooLong => "url_too_long",
            LimitBreach::HeaderTooLarge => "header_too_large",
            LimitBreach::TooManyHeaders => "too_many_headers",
        }
    }

    /// The whole response sent before closing the connection.
    pub(super) fn response(self) -> &'static [u8] {
        match self {
            LimitBreach::HeaderTimeout => {
                b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            LimitBreach::UrlTooLong => {
                b"HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
            LimitBreach::HeaderTooLarge | LimitBreach::TooManyHeaders => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            }
        }
    }
}

/// Where the watch over one request header stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineState {
    /// Inside a line.
    Text,
    /// Just after a line feed.
    AfterLf,
    /// A line feed then a carriage return: a further line feed ends the header.
    AfterLfCr,
}

/// Counts over the bytes of one request header, as they arrive. Line ends are LF with an
/// optional CR, as httparse accepts them, so the header ends where pingora's parser ends it.
#[derive(Debug, Clone)]
pub(super) struct HeaderScan {
    bytes: usize,
    /// Lines completed, the request line included.
    lines: usize,
    /// Spaces seen on the request line (the target is between the first and the second).
    spaces: usize,
    target: usize,
    /// A byte other than CR or LF has been seen (empty lines before a request are skipped).
    content: bool,
    state: LineState,
}

/// What [`HeaderScan::feed`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// All bytes belong to an unfinished header.
    More,
    /// The header ended within the bytes fed, after this many of them (its last line feed
    /// included): what follows belongs to a body or to the next request.
    Complete(usize),
    /// A limit was passed.
    Breach(LimitBreach),
}

impl HeaderScan {
    pub(super) fn new() -> HeaderScan {
        HeaderScan {
            bytes: 0,
            lines: 0,
            spaces: 0,
            target: 0,
            content: false,
            state: LineState::AfterLf,
        }
    }

    pub(super) fn feed(&mut self, data: &[u8], limits: &LimitsConfig) -> Scan {
        let mut rest = data;
        while !rest.is_empty() {
            // within a line, ordinary bytes only add to the lengths: take a run of them in
            // one search instead of stepping through the state machine byte by byte (a header
            // field line runs to its LF; the request line stops at spaces and CR too)
            if self.state == LineState::Text {
                // (vectorised: a browser's header is half a kilobyte, read for every request)
                let run = if self.lines > 0 {
                    memchr::memchr(b'\n', rest)
                } else {
                    memchr::memchr3(b'\n', b' ', b'\r', rest)
                }
                .unwrap_or(rest.len());
                // the byte of the run at which each limit would be passed (1-based): the one
                // passed first is the answer, the size limit on a tie, as byte by byte
                let in_target = self.lines == 0 && self.spaces == 1;
                let size_at = (limits.max_header_size + 1).saturating_sub(self.bytes);
                let url_at = if in_target {
                    (limits.max_url_length + 1).saturating_sub(self.target)
                } else {
                    usize::MAX
                };
                if run >= size_at.min(url_at) {
                    return Scan::Breach(if size_at <= url_at {
                        LimitBreach::HeaderTooLarge
                    } else {
                        LimitBreach::UrlTooLong
                    });
                }
                self.bytes += run;
                if in_target {
                    self.target += run;
                }
                rest = &rest[run..];
                if rest.is_empty() {
                    break;
                }
            }
            let b = rest[0];
            rest = &rest[1..];
            self.bytes += 1;
            if self.bytes > limits.max_header_size {
                return Scan::Breach(LimitBreach::HeaderTooLarge);
            }
            match b {
                b'\n' => {
                    if !self.content {
                        continue;
                    }
                    if self.state != LineState::Text {
                        return Scan::Complete(data.len() - rest.len());
                    }
                    self.lines += 1;
                    // the request line is not a header field
                    if self.lines > limits.max_headers + 1 {
                        return Scan::Breach(LimitBreach::TooManyHeaders);
                    }
                    self.state = LineState::AfterLf;
                }
                b'\r' => {
                    if self.state == LineState::AfterLf && self.content {
                        self.state = LineState::AfterLfCr;
                    }
                }
                _ => {
                    self.content = true;
                    self.state = LineState::Text;
                    if self.lines == 0 {
                        if b == b' ' {
                            self.spaces += 1;
                        } else if self.spaces == 1 {
                            self.target += 1;
                            if self.target > limits.max_url_length {
                                return Scan::Breach(LimitBreach::UrlTooLong);
                            }
                        }
                    }
                }
            }
        }
        Scan::More
    }
}

/// What follows a request header on its connection, as far as its framing fields say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Body {
    /// This many bytes of body (none: what follows is the client's next request).
    Length(u64),
    /// Chunked, or framing this watch does not follow: pingora reads whatever follows.
    Unknown,
}

/// The body a whole request header announces: its one `Content-Length` (no
/// `Transfer-Encoding`), or none without either field.
pub(super) fn body_of(header: &[u8]) -> Body {
    let mut length = None;
    // (the request line is no field; a field line beginning with either name is taken for it)
    for line in header.split(|&b| b == b'\n').skip(1) {
        let field = |name: &[u8]| {
            (line.len() >= name.len() && line[..name.len()].eq_ignore_ascii_case(name))
                .then(|| &line[name.len()..])
        };
        if field(b"transfer-encoding").is_some() {
            return Body::Unknown;
        }
        if let Some(rest) = field(b"content-length") {
            if length.is_some() {
                return Body::Unknown;
            }
            let value = rest.trim_ascii().strip_prefix(b":").map(<[u8]>::trim_ascii);
            let n = value
                .filter(|v| !v.is_empty() && v.len() <= 18 && v.iter().all(u8::is_ascii_digit))
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
            match n {
                Some(n) => length = Some(n),
                None => return Body::Unknown,
            }
        }
    }
    Body::Length(length.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Limits small enough for a test to pass them: header size, header fields, target length.
    fn small_limits(
        max_header_size: usize,
        max_headers: usize,
        max_url_length: usize,
    ) -> LimitsConfig {
        LimitsConfig {
            max_header_size,
            max_headers,
            max_url_length,
            ..LimitsConfig::default()
        }
    }

    fn scan(data: &[u8], limits: &LimitsConfig) -> Scan {
        HeaderScan::new().feed(data, limits)
    }

    /// As [`scan`], fed one byte at a time (the end given from the start of `data`).
    fn scan_in_pieces(data: &[u8], limits: &LimitsConfig) -> Scan {
        let mut s = HeaderScan::new();
        for (i, b) in data.chunks(1).enumerate() {
            match s.feed(b, limits) {
                Scan::More => {}
                Scan::Complete(n) => return Scan::Complete(i + n),
                other => return other,
            }
        }
        Scan::More
    }

    #[test]
    fn header_ends_where_httparse_ends_it() {
        let l = LimitsConfig::default();
        for (text, want) in [
            (
                &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
                Scan::Complete(27),
            ),
            (b"GET / HTTP/1.1\nHost: a\n\n", Scan::Complete(24)),
            (b"GET / HTTP/1.1\r\nHost: a\n\r\n", Scan::Complete(26)),
            // what follows the header is not part of it
            (b"GET / HTTP/1.1\r\n\r\nGET /", Scan::Complete(18)),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", Scan::More),
            (b"GET / HTTP/1.1\r\nHost: a\r\n\r", Scan::More),
            // empty lines before a request do not end it
            (b"\r\n\r\n\nGET / HTTP/1.1\r\n", Scan::More),
            (b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", Scan::Complete(22)),
        ] {
            assert_eq!(scan(text, &l), want, "{:?}", String::from_utf8_lossy(text));
            assert_eq!(scan_in_pieces(text, &l), want, "byte by byte");
        }
    }

    #[test]
    fn a_body_is_what_the_framing_fields_say() {
        for (header, body) in [
            (&b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..], Body::Length(0)),
            (
                b"POST / HTTP/1.1\r\ncontent-LENGTH: 0\r\n\r\n",
                Body::Length(0),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:  12 \r\n\r\n",
                Body::Length(12),
            ),
            (
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
                Body::Unknown,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
                Body::Unknown,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                Body::Unknown,
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1, 1\r\n\r\n",
                Body::Unknown,
            ),
            // a target naming one is no field
            (b"GET /content-length HTTP/1.1\r\n\r\n", Body::Length(0)),
        ] {
            assert_eq!(body_of(header), body, "{}", header.escape_ascii());
        }
    }

    #[test]
    fn limits_are_exact() {
        let l = small_limits(64, 2, 10);
        let target = |n: usize| format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(n - 1));
        assert!(matches!(scan(target(10).as_bytes(), &l), Scan::Complete(_)));
        assert_eq!(
            scan(target(11).as_bytes(), &l),
            Scan::Breach(LimitBreach::UrlTooLong)
        );
        let two = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\n\r\n";
        assert_eq!(scan(two, &l), Scan::Complete(two.len()));
        let three = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n";
        assert_eq!(scan(three, &l), Scan::Breach(LimitBreach::TooManyHeaders));
        let exactly_64 = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(41));
        assert_eq!(exactly_64.len(), 64);
        assert_eq!(scan(exactly_64.as_bytes(), &l), Scan::Complete(64));
        let over = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(42));
        assert_eq!(
            scan(over.as_bytes(), &l),
            Scan::Breach(LimitBreach::HeaderTooLarge)
        );
    }

    /// The scan's rules stepped one byte at a time, the obvious way: the oracle for the
    /// run-skipping [`HeaderScan::feed`].
    fn byte_by_byte(data: &[u8], l: &LimitsConfig) -> Scan {
        let (mut bytes, mut lines, mut spaces, mut target) = (0, 0, 0, 0);
        let (mut content, mut state) = (false, LineState::AfterLf);
        for (i, &b) in data.iter().enumerate() {
            bytes += 1;
            if bytes > l.max_header_size {
                return Scan::Breach(LimitBreach::HeaderTooLarge);
            }
            match b {
                b'\n' if !content => {}
                b'\n' if state != LineState::Text => return Scan::Complete(i + 1),
                b'\n' => {
                    lines += 1;
                    if lines > l.max_headers + 1 {
                        return Scan::Breach(LimitBreach::TooManyHeaders);
                    }
                    state = LineState::AfterLf;
                }
                b'\r' => {
                    if state == LineState::AfterLf && content {
                        state = LineState::AfterLfCr;
                    }
                }
                _ => {
                    content = true;
                    state = LineState::Text;
                    if lines == 0 && b == b' ' {
                        spaces += 1;
                    } else if lines == 0 && spaces == 1 {
                        target += 1;
                        if target > l.max_url_length {
                            return Scan::Breach(LimitBreach::UrlTooLong);
                        }
                    }
                }
            }
        }
        Scan::More
    }

    #[test]
    fn the_scan_agrees_with_the_byte_by_byte_rules() {
        // every string over a small alphabet of the bytes that matter, up to a length, under
        // limits small enough to be passed
        let l = small_limits(6, 1, 2);
        let alphabet = [b'a', b' ', b'\r', b'\n'];
        for len in 0..=8u32 {
            for mut n in 0..alphabet.len().pow(len) {
                let mut input = Vec::new();
                for _ in 0..len {
                    input.push(alphabet[n % alphabet.len()]);
                    n /= alphabet.len();
                }
                assert_eq!(
                    scan(&input, &l),
                    byte_by_byte(&input, &l),
                    "{:?}",
                    String::from_utf8_lossy(&input)
                );
            }
        }
    }

    #[test]
    fn any_split_of_the_input_gives_the_same_answer() {
        let l = small_limits(64, 2, 10);
        let long = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(41));
        let over = format!("GET / HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(42));
        let url_first = format!("GET /{} HTTP/1.1\r\n\r\n", "u".repeat(70));
        let size_first = format!("GET /a HTTP/1.1\r\nx: {}\r\n\r\n", "v".repeat(70));
        let inputs: [&[u8]; 8] = [
            long.as_bytes(),
            over.as_bytes(),
            url_first.as_bytes(),
            size_first.as_bytes(),
            b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\n\r\n",
            b"GET / HTTP/1.1\r\na: x\ry\r\n\r\n",
            b"\r\nGET /abcdefghijk HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\r\n",
        ];
        assert_eq!(
            scan(url_first.as_bytes(), &l),
            Scan::Breach(LimitBreach::UrlTooLong)
        );
        assert_eq!(
            scan(size_first.as_bytes(), &l),
            Scan::Breach(LimitBreach::HeaderTooLarge)
        );
        for input in inputs {
            let whole = scan(input, &l);
            assert_eq!(
                whole,
                byte_by_byte(input, &l),
                "{:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!(scan_in_pieces(input, &l), whole);
            for cut in 0..input.len() {
                let mut s = HeaderScan::new();
                let got = match s.feed(&input[..cut], &l) {
                    Scan::More => match s.feed(&input[cut..], &l) {
                        Scan::Complete(n) => Scan::Complete(cut + n),
                        other => other,
                    },
                    other => other,
                };
                assert_eq!(
                    got,
                    whole,
                    "{:?} cut at {cut}",
                    String::from_utf8_lossy(input)
                );
            }
        }
    }

    #[test]
    fn the_url_limit_counts_only_the_target() {
        let l = LimitsConfig {
            max_url_length: 4,
            ..LimitsConfig::default()
        };
        assert_eq!(
            scan(b"PROPFIND /abc HTTP/1.1\r\n\r\n", &l),
            Scan::Complete(26)
        );
        assert_eq!(
            scan_in_pieces(b"GET /abcd HTTP/1.1\r\n\r\n", &l),
            Scan::Breach(LimitBreach::UrlTooLong)
        );
    }
}
