//! Cache-Control directives as written, every occurrence kept, and delta-seconds read strictly.
//!
//! pingora's `CacheControl` keeps the last occurrence of a directive and reads delta-seconds
//! leniently (`+60` is 60, `4294967296x` overflows to `i32::MAX`). A shared cache must not
//! store longer than the origin said: here a repeated directive takes its first value (RFC
//! 9111 section 4.2.1), an invalid delta-seconds is invalid (the response is stale), a valid
//! one too large to represent is 2^31 (section 1.2.2), and a bare `private` or `no-cache`
//! counts even when a qualified `private="..."` / `no-cache="..."` comes with it.
//!
//! A targeted field (`CDN-Cache-Control`, RFC 9213 section 2.1) is read differently: as one
//! Structured Field Dictionary (RFC 8941), so a repeated key takes its last value, keys are
//! lower-case, and the field is ignored as a whole (`Cache-Control` and `Expires` apply) when
//! it is empty, is not a valid Dictionary, or gives a lifetime directive a value that is not
//! a non-negative Integer (`max-age="60"`, `max-age=1.5`). The other directives count in any
//! form: a restriction is never dropped for its value's type, and `private` / `no-cache` are
//! qualified only by a String or Token (a list of field names), bare otherwise.
//!
//! Not here: which directives decide what (`freshness.rs`).

use pingora_http::ResponseHeader;
use sfv::{BareItem, ListEntry};

/// The greatest delta-seconds value (RFC 9111 section 1.2.2).
pub(crate) const DELTA_MAX: u64 = 1 << 31;

/// The directives whose value is delta-seconds: in a targeted field each must be a
/// non-negative Integer, or the field is invalid.
const LIFETIMES: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// The directives of one header field (all its lines), in order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Directives(Vec<(String, Option<String>)>);

impl Directives {
    /// The directives of every `name` line of `resp`, or `None` when there is none.
    pub(crate) fn of(resp: &ResponseHeader, name: &str) -> Option<Directives> {
        let mut lines = resp.headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut list = Vec::new();
        for line in lines {
            parse_line(&String::from_utf8_lossy(line.as_bytes()), &mut list);
        }
        Some(Directives(list))
    }

    /// The directives of a targeted field (RFC 9213 section 2.1): every `name` line of `resp`
    /// joined and read as one Structured Field Dictionary. `None` when there is no such line,
    /// or the field is to be ignored (see the module doc): empty, not a Dictionary, or a
    /// lifetime directive whose value is not a non-negative Integer.
    pub(crate) fn targeted(resp: &ResponseHeader, name: &str) -> Option<Directives> {
        let lines: Vec<&[u8]> = resp
            .headers
            .get_all(name)
            .iter()
            .map(|l| l.as_bytes())
            .collect();
        if lines.is_empty() {
            return None;
        }
        // RFC 8941 section 4.2: the lines of a field are combined with commas, then parsed
        let dict = sfv::Parser::parse_dictionary(&lines.join(&b", "[..])).ok()?;
        if dict.is_empty() {
            return None;
        }
        let mut list = Vec::with_capacity(dict.len());
        for (key, member) in dict {
            // parameters are ignored (RFC 9213 section 2.1)
            let item = match member {
                ListEntry::Item(item) => Some(item.bare_item),
                ListEntry::InnerList(_) => None,
            };
            let value = if LIFETIMES.contains(&key.as_str()) {
                match item {
                    Some(BareItem::Integer(n)) if n >= 0 => Some(n.to_string()),
                    _ => return None,
                }
            } else {
                match item {
                    Some(BareItem::String(v) | BareItem::Token(v)) => Some(v),
                    _ => None,
                }
            };
            list.push((key, value));
        }
        Some(Directives(list))
    }

    /// Parse header text (one or more comma-separated directives).
    #[cfg(test)]
    pub(crate) fn parse(text: &str) -> Directives {
        let mut list = Vec::new();
        parse_line(text, &mut list);
        Directives(list)
    }

    /// Whether the directive is there in any form.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// Whether the directive is there without a value (`private`, not `private="x"`).
    pub(crate) fn has_bare(&self, name: &str) -> bool {
        self.0.iter().any(|(n, v)| n == name && v.is_none())
    }

    /// The values of every occurrence of `name` that has one (`private="a, b"` gives `a, b`).
    pub(crate) fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
    }

    /// The first occurrence of `name` read as delta-seconds: `None` when absent,
    /// `Some(None)` when present but invalid.
    pub(crate) fn delta_seconds(&self, name: &str) -> Option<Option<u64>> {
        let (_, value) = self.0.iter().find(|(n, _)| n == name)?;
        Some(value.as_deref().and_then(parse_delta_seconds))
    }
}

fn parse_line(text: &str, out: &mut Vec<(String, Option<String>)>) {
    let mut rest = text;
    while !rest.is_empty() {
        // one directive up to a comma outside quotes
        let mut in_quotes = false;
        let mut escaped = false;
        let mut end = rest.len();
        for (i, c) in rest.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                ',' if !in_quotes => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let item = rest[..end].trim();
        rest = rest.get(end + 1..).unwrap_or("");
        if item.is_empty() {
            continue;
        }
        let (name, value) = match item.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim()))),
            None => (item, None),
        };
        out.push((name.to_ascii_lowercase(), value));
    }
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => v.to_string(),
    }
}

/// `1*DIGIT`; too large a number is [`DELTA_MAX`]; anything else is invalid.
pub(crate) fn parse_delta_seconds(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(v.parse::<u64>().map_or(DELTA_MAX, |n| n.min(DELTA_MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_seconds_are_strict_and_capped() {
        for (text, want) in [
            ("60", Some(60)),
            ("0", Some(0)),
            ("+60", None),
            ("-1", None),
            ("6 0", None),
            ("", None),
            ("4294967296x", None),
            ("99999999999999999999999", Some(DELTA_MAX)),
            ("4294967296", Some(DELTA_MAX)),
        ] {
            assert_eq!(parse_delta_seconds(text), want, "{text:?}");
        }
    }

    #[test]
    fn the_first_occurrence_counts_and_bare_forms_are_kept() {
        let d =
            Directives::parse(r#"max-age=0, Max-Age=31536000, private="set-cookie, x", private"#);
        assert_eq!(d.delta_seconds("max-age"), Some(Some(0)));
        assert!(d.has_bare("private"));
        assert!(d.has("private"));
        assert_eq!(d.delta_seconds("s-maxage"), None);
        let quoted = Directives::parse(r#"max-age="30", no-cache="a,b""#);
        assert_eq!(quoted.delta_seconds("max-age"), Some(Some(30)));
        assert!(!quoted.has_bare("no-cache"));
        assert!(quoted.has("no-cache"));
        assert_eq!(quoted.values("no-cache").collect::<Vec<_>>(), vec!["a,b"]);
        assert_eq!(
            Directives::parse("max-age=junk").delta_seconds("max-age"),
            Some(None)
        );
    }

    #[test]
    fn a_targeted_field_is_one_structured_dictionary() {
        let targeted = |lines: &[&str]| {
            let mut r = ResponseHeader::build(200, None).unwrap();
            for l in lines {
                r.append_header("cdn-cache-control", *l).unwrap();
            }
            Directives::targeted(&r, "cdn-cache-control")
        };
        let d = targeted(&[
            r#"max-age=60;x=1, no-cache="a, b", private, foo=bar"#,
            "s-maxage=5",
        ])
        .unwrap();
        assert_eq!(d.delta_seconds("max-age"), Some(Some(60)));
        assert_eq!(d.delta_seconds("s-maxage"), Some(Some(5)));
        assert_eq!(d.values("no-cache").collect::<Vec<_>>(), vec!["a, b"]);
        assert!(d.has_bare("private"));
        assert_eq!(d.values("foo").collect::<Vec<_>>(), vec!["bar"]);
        for invalid in [
            &[""][..],
            &["max-age=\"60\""],
            &["max-age=6.0"],
            &["Max-Age=60"],
            &["max-age=60", "&"],
            &["max-age=1234567890123456"],
        ] {
            assert_eq!(targeted(invalid), None, "{invalid:?}");
        }
        assert_eq!(targeted(&[]), None);
    }
}
