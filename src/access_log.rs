//! The access log: one line per client request, in the combined log format (extended with the
//! duration, cache status, upstream and upstream time) or as JSON lines, to stdout or a file.
//!
//! Lines are formatted on the request's thread and handed to one writer thread through a
//! bounded queue, so a slow disk never stalls a request: when the queue is full the line is
//! dropped and counted in `dropped()`.

use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderName};
use pingora_http::RequestHeader;

pub use crate::config::{LogFormat as Format, LogTarget as Target};

/// One finished client request.
pub struct Entry<'a> {
    /// When the request arrived.
    pub time: SystemTime,
    /// The client's address (the TCP peer, or what a trusted proxy said).
    pub client: Option<IpAddr>,
    /// Method.
    pub method: &'a str,
    /// Host as requested.
    pub host: &'a str,
    /// Path and query as requested.
    pub target: &'a str,
    /// Status sent (0 if none was).
    pub status: u16,
    /// Body bytes sent.
    pub bytes: usize,
    /// Time to the last byte.
    pub duration: Duration,
    /// Cache outcome label.
    pub cache_status: &'a str,
    /// The app server asked, if any.
    pub upstream: Option<&'a str>,
    /// Time to the app server's response header.
    pub upstream_time: Option<Duration>,
    /// `Referer`.
    pub referer: Option<&'a str>,
    /// `User-Agent`.
    pub user_agent: Option<&'a str>,
}

/// The parts of a line that come from the request: `req` as the cache saw it, and the target
/// as received when preparing the request changed it.
pub(crate) struct RequestFields<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    pub(crate) target: std::borrow::Cow<'a, str>,
    pub(crate) referer: Option<&'a str>,
    pub(crate) user_agent: Option<&'a str>,
}

impl<'a> RequestFields<'a> {
    /// The fields of `req`.
    pub(crate) fn of(
        req: &'a RequestHeader,
        original_target: Option<&'a str>,
    ) -> RequestFields<'a> {
        let field = |name: HeaderName| req.headers.get(name).and_then(|v| v.to_str().ok());
        RequestFields {
            method: req.method.as_str(),
            host: field(header::HOST).unwrap_or(""),
            target: match original_target {
                Some(t) => std::borrow::Cow::Borrowed(t),
                None => String::from_utf8_lossy(req.raw_path()),
            },
            referer: field(header::REFERER),
            user_agent: field(header::USER_AGENT),
        }
    }
}

/// When a request that took `duration` until now arrived.
pub(crate) fn arrival(duration: Duration) -> SystemTime {
    SystemTime::now()
        .checked_sub(duration)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The access log writer.
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    format: Format,
}

impl AccessLog {
    /// Open the log (a file is created if missing) and start its writer thread.
    pub fn start(target: &Target, format: Format) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = match target {
            Target::Off => return Ok(AccessLog { tx: None, format }),
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(65_536);
        std::thread::Builder::new()
            .name("lacquer-access-log".into())
            .spawn(move || {
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(line.as_bytes());
                    // write what is queued, then flush once: lines appear promptly without a
                    // syscall per line under load
                    while let Ok(more) = rx.try_recv() {
                        let _ = buf.write_all(more.as_bytes());
                    }
                    let _ = buf.flush();
                }
            })?;
        Ok(AccessLog {
            tx: Some(tx),
            format,
        })
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Log one request.
    pub fn log(&self, e: &Entry<'_>) {
        let Some(tx) = &self.tx else { return };
        let line = match self.format {
            Format::Combined => combined(e),
            Format::Json => json(e),
        };
        if tx.try_send(line).is_err() {
            crate::metrics::metrics().access_log_dropped.inc();
        }
    }
}

/// A value for a quoted log field: quotes, backslashes and control bytes escaped, so a client
/// cannot forge log lines.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
            c => out.push(c),
        }
    }
    out
}

/// The combined log format, extended.
pub fn combined(e: &Entry<'_>) -> String {
    let client = e.client.map_or_else(|| "-".to_string(), |c| c.to_string());
    format!(
        "{client} - - [{}] \"{} {} HTTP/1.1\" {} {} \"{}\" \"{}\" {:.6} {} {} {}\n",
        clf_time(e.time),
        quoted(e.method),
        quoted(e.target),
        e.status,
        e.bytes,
        quoted(e.referer.unwrap_or("-")),
        quoted(e.user_agent.unwrap_or("-")),
        e.duration.as_secs_f64(),
        e.cache_status,
        e.upstream.unwrap_or("-"),
        e.upstream_time
            .map_or_else(|| "-".to_string(), |t| format!("{:.6}", t.as_secs_f64())),
    )
}

/// One JSON object.
pub fn json(e: &Entry<'_>) -> String {
    let v = serde_json::json!({
        "time": iso_time(e.time),
        "client": e.client.map(|c| c.to_string()),
        "method": e.method,
        "host": e.host,
        "url": e.target,
        "status": e.status,
        "bytes": e.bytes,
        "duration": e.duration.as_secs_f64(),
        "cache_status": e.cache_status,
        "upstream": e.upstream,
        "upstream_time": e.upstream_time.map(|t| t.as_secs_f64()),
        "referer": e.referer,
        "user_agent": e.user_agent,
    });
    format!("{v}\n")
}

/// (year, month, day) of a day count since 1970-01-01 (Howard Hinnant's civil_from_days).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn split(t: SystemTime) -> (i64, u32, u32, u64, u64, u64, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, mo, day) = civil((secs / 86_400) as i64);
    let rem = secs % 86_400;
    (
        y,
        mo,
        day,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis(),
    )
}

/// `21/Nov/2026:13:40:28 +0000`.
pub fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, _) = split(t);
    let month = MONTHS.get(mo as usize - 1).copied().unwrap_or("Jan");
    format!("{d:02}/{month}/{y}:{h:02}:{mi:02}:{s:02} +0000")
}

/// `2026-11-21T13:40:28.123Z`.
pub fn iso_time(t: SystemTime) -> String {
    let (y, mo, d, h, mi, s, ms) = split(t);
    format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{ms:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry<'static> {
        Entry {
            time: UNIX_EPOCH + Duration::from_millis(1_795_268_428_123),
            client: Some("10.0.0.7".parse().unwrap()),
            method: "GET",
            host: "shop.example",
            target: "/a?b=\"1\"",
            status: 200,
            bytes: 1234,
            duration: Duration::from_micros(412),
            cache_status: "hit",
            upstream: None,
            upstream_time: None,
            referer: None,
            user_agent: Some("curl/8\n127.0.0.1 - - forged"),
        }
    }

    #[test]
    fn times() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_268_428_123);
        assert_eq!(clf_time(t), "21/Nov/2026:13:40:28 +0000");
        assert_eq!(iso_time(t), "2026-11-21T13:40:28.123Z");
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            clf_time(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "29/Feb/2000:00:00:00 +0000"
        );
    }

    #[test]
    fn combined_lines_cannot_be_forged() {
        let line = combined(&entry());
        assert_eq!(
            line,
            "10.0.0.7 - - [21/Nov/2026:13:40:28 +0000] \"GET /a?b=\\\"1\\\" HTTP/1.1\" 200 1234 \"-\" \"curl/8\\x0a127.0.0.1 - - forged\" 0.000412 hit - -\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn json_lines_parse() {
        let line = json(&entry());
        let v: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(v["cache_status"], "hit");
        assert_eq!(v["status"], 200);
        assert_eq!(v["host"], "shop.example");
        assert_eq!(v["upstream"], serde_json::Value::Null);
    }
}
