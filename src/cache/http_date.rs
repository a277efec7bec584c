//! HTTP-date as a cache reads it: `Expires`, `Date`, `Last-Modified`, `If-Modified-Since`.
//!
//! RFC 9110 section 5.6.7: recipients MUST accept all three formats, the IMF-fixdate
//! (`Sun, 06 Nov 1994 08:49:37 GMT`) and the obsolete RFC 850 (`Sunday, 06-Nov-94 08:49:37
//! GMT`) and asctime (`Sun Nov  6 08:49:37 1994`) forms. RFC 9111 section 4.2: a cache matches
//! them case-insensitively and takes a zone other than `GMT` as invalid. Anything else off the
//! grammar (two spaces, a one-digit hour, a four-digit year in the RFC 850 form) is invalid.
//!
//! `httpdate`, which pingora uses, matches case-sensitively and refuses a day name that does
//! not fit the date. The day name is redundant: here it must be one of the seven, but a wrong
//! one does not invalidate the date (the caching test suite's own asctime example,
//! `Thu Aug  8 02:01:18 2050`, names a Monday). A leap second (`:60`) reads as `:59`, the
//! nearest earlier time (section 4.2).
//!
//! Not here: what a date means for freshness (`freshness.rs`) or for a conditional request
//! (`conditional.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SHORT_DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] = [
    b"Monday",
    b"Tuesday",
    b"Wednesday",
    b"Thursday",
    b"Friday",
    b"Saturday",
    b"Sunday",
];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// A calendar date and time of day, UTC, as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

/// The instant an HTTP-date field value names (surrounding spaces and tabs allowed), or `None`
/// when it is not one. `now` places the two-digit year of the RFC 850 form: a year that would
/// be more than 50 years ahead of `now` is the century before (RFC 9110 section 5.6.7).
pub(crate) fn parse(value: &[u8], now: SystemTime) -> Option<SystemTime> {
    let s = value.trim_ascii();
    let civil = imf_fixdate(s)
        .or_else(|| rfc850(s, now))
        .or_else(|| asctime(s))?;
    to_system_time(civil)
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<Civil> {
    let (name, rest) = s.split_at_checked(3)?;
    one_of(name, &SHORT_DAYS)?;
    // "06 Nov 1994 08:49:37 GMT"
    let rest = rest.strip_prefix(b", ")?;
    if rest.len() != 24 || [rest[2], rest[6], rest[11], rest[20]] != [b' '; 4] {
        return None;
    }
    let (hour, minute, second) = time_of_day(&rest[12..20])?;
    gmt(&rest[21..])?;
    civil(
        digits(&rest[7..11])?,
        one_of(&rest[3..6], &MONTHS)? + 1,
        digits(&rest[..2])?,
        (hour, minute, second),
    )
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(s: &[u8], now: SystemTime) -> Option<Civil> {
    let comma = s.iter().position(|&b| b == b',')?;
    one_of(&s[..comma], &LONG_DAYS)?;
    // "06-Nov-94 08:49:37 GMT"
    let rest = s[comma..].strip_prefix(b", ")?;
    if rest.len() != 22 || [rest[2], rest[6], rest[9], rest[18]] != [b'-', b'-', b' ', b' '] {
        return None;
    }
    let (hour, minute, second) = time_of_day(&rest[10..18])?;
    gmt(&rest[19..])?;
    civil(
        full_year(digits(&rest[7..9])?, now),
        one_of(&rest[3..6], &MONTHS)? + 1,
        digits(&rest[..2])?,
        (hour, minute, second),
    )
}

/// `Sun Nov  6 08:49:37 1994` (the day of the month is two digits or a space and one digit)
fn asctime(s: &[u8]) -> Option<Civil> {
    if s.len() != 24 || [s[3], s[7], s[10], s[19]] != [b' '; 4] {
        return None;
    }
    one_of(&s[..3], &SHORT_DAYS)?;
    let day = match s[8] {
        b' ' => digits(&s[9..10])?,
        _ => digits(&s[8..10])?,
    };
    civil(
        digits(&s[20..24])?,
        one_of(&s[4..7], &MONTHS)? + 1,
        day,
        time_of_day(&s[11..19])?,
    )
}

/// The index of `word` in `names`, compared case-insensitively.
fn one_of(word: &[u8], names: &[&[u8]]) -> Option<u32> {
    let i = names.iter().position(|n| n.eq_ignore_ascii_case(word))?;
    u32::try_from(i).ok()
}

/// `HH:MM:SS`; a leap second reads as 59.
fn time_of_day(s: &[u8]) -> Option<(u32, u32, u32)> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    let (hour, minute, second): (u32, u32, u32) =
        (digits(&s[..2])?, digits(&s[3..5])?, digits(&s[6..])?);
    (hour < 24 && minute < 60 && second <= 60).then_some((hour, minute, second.min(59)))
}

fn gmt(s: &[u8]) -> Option<()> {
    s.eq_ignore_ascii_case(b"GMT").then_some(())
}

/// ASCII digits only (at most four here), as a number.
fn digits<T: From<u16>>(s: &[u8]) -> Option<T> {
    if s.is_empty() || s.len() > 4 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = s.iter().fold(0u16, |n, &d| n * 10 + u16::from(d - b'0'));
    Some(T::from(n))
}

fn civil(
    year: i64,
    month: u32,
    day: u32,
    (hour, minute, second): (u32, u32, u32),
) -> Option<Civil> {
    (day >= 1 && day <= days_in_month(year, month)).then_some(Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
    })
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A two-digit year in the century that puts it at most 50 years after `now`'s year.
fn full_year(yy: i64, now: SystemTime) -> i64 {
    let this_year = year_of(now);
    let mut year = (this_year.div_euclid(100) + 1) * 100 + yy;
    while year > this_year + 50 {
        year -= 100;
    }
    year
}

fn year_of(t: SystemTime) -> i64 {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    civil_from_days(secs.div_euclid(86_400)).0
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The year, month and day of a count of days since 1970-01-01 (the inverse of the above).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn to_system_time(c: Civil) -> Option<SystemTime> {
    let secs = days_from_civil(c.year, c.month, c.day) * 86_400
        + i64::from(c.hour) * 3600
        + i64::from(c.minute) * 60
        + i64::from(c.second);
    match u64::try_from(secs) {
        Ok(after) => UNIX_EPOCH.checked_add(Duration::from_secs(after)),
        Err(_) => UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-12-01, for the two-digit years of the RFC 850 form.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_796_083_200)
    }

    fn at(text: &str) -> Option<SystemTime> {
        parse(text.as_bytes(), now())
    }

    fn imf(text: &str) -> SystemTime {
        httpdate::parse_http_date(text).unwrap()
    }

    #[test]
    fn the_three_formats_name_the_same_instant() {
        let want = Some(imf("Sun, 06 Nov 1994 08:49:37 GMT"));
        for text in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Sun Nov 06 08:49:37 1994",
            "  Sun, 06 Nov 1994 08:49:37 GMT\t",
        ] {
            assert_eq!(at(text), want, "{text:?}");
        }
    }

    /// The caching test suite's `freshness-expires-*` values (tests/expires-parse.mjs).
    #[test]
    fn the_suites_valid_and_invalid_expires() {
        let aug_18 = Some(imf("Thu, 18 Aug 2050 02:01:18 GMT"));
        for (text, want) in [
            (
                "Tue, 19 Jan 2038 14:14:08 GMT",
                Some(imf("Tue, 19 Jan 2038 14:14:08 GMT")),
            ),
            (
                "Sun, 21 Nov 2286 04:46:39 GMT",
                Some(imf("Sun, 21 Nov 2286 04:46:39 GMT")),
            ),
            ("Thursday, 18-Aug-50 02:01:18 GMT", aug_18),
            // 2050-08-08 is a Monday: the day name is not checked against the date
            (
                "Thu Aug  8 02:01:18 2050",
                Some(imf("Mon, 08 Aug 2050 02:01:18 GMT")),
            ),
            ("THU, 18 Aug 2050 02:01:18 GMT", aug_18),
            ("Thu, 18 AUG 2050 02:01:18 GMT", aug_18),
            ("Thu, 18 Aug 2050 02:01:18 gMT", aug_18),
            ("Thu, 18 Aug 2050 02:01:18 UTC", None),
            ("Thu, 18 Aug 2050 02:01:18 AEST", None),
            ("Thu, 18 Aug 50 02:01:18 GMT", None),
            ("Thu 18 Aug 2050 02:01:18 GMT", None),
            ("Thu, 18  Aug  2050 02:01:18 GMT", None),
            ("Thu, 18-Aug-2050 02:01:18 GMT", None),
            ("Thu, 18 Aug 2050 02.01.18 GMT", None),
            ("Thu, 18 Aug 2050 2:01:18 GMT", None),
        ] {
            assert_eq!(at(text), want, "{text:?}");
        }
    }

    #[test]
    fn wrong_case_is_read_in_every_form() {
        let want = Some(imf("Sun, 06 Nov 1994 08:49:37 GMT"));
        for text in [
            "sun, 06 nov 1994 08:49:37 gmt",
            "SUNDAY, 06-NOV-94 08:49:37 GMT",
            "sunday, 06-Nov-94 08:49:37 Gmt",
            "SUN NOV  6 08:49:37 1994",
        ] {
            assert_eq!(at(text), want, "{text:?}");
        }
    }

    #[test]
    fn off_grammar_values_are_invalid() {
        for text in [
            "",
            "0",
            "-1",
            "garbage",
            "Sun, 06 Nov 1994 08:49:37",
            "Sun, 06 Nov 1994 08:49:37 GMT junk",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sux, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nox 1994 08:49:37 GMT",
            "Sunday, 06-Nov-1994 08:49:37 GMT",
            "Sun, 06-Nov-94 08:49:37 GMT",
            "Sunday 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 94",
            "Sun Nov 6 08:49:37 1994",
            "Sun, 06 Nov 1994 08:49:37 GMT\u{e9}",
            "Sun, 0x Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(at(text), None, "{text:?}");
        }
    }

    #[test]
    fn leap_days_leap_seconds_and_dates_before_1970() {
        assert_eq!(
            at("Tue, 29 Feb 2000 00:00:00 GMT"),
            Some(imf("Tue, 29 Feb 2000 00:00:00 GMT"))
        );
        assert_eq!(
            at("Wed, 31 Dec 2025 23:59:60 GMT"),
            Some(imf("Wed, 31 Dec 2025 23:59:59 GMT"))
        );
        assert_eq!(
            at("Wed, 31 Dec 1969 23:59:59 GMT"),
            UNIX_EPOCH.checked_sub(Duration::from_secs(1))
        );
        assert_eq!(at("Thu, 01 Jan 1970 00:00:00 GMT"), Some(UNIX_EPOCH));
    }

    #[test]
    fn a_two_digit_year_is_at_most_50_years_ahead() {
        // now is 2026: 76 is 2076 (50 years ahead), 77 would be 51 years ahead so is 1977
        assert_eq!(
            at("Sunday, 01-Nov-76 00:00:00 GMT"),
            Some(imf("Sun, 01 Nov 2076 00:00:00 GMT"))
        );
        assert_eq!(
            at("Tuesday, 01-Nov-77 00:00:00 GMT"),
            Some(imf("Tue, 01 Nov 1977 00:00:00 GMT"))
        );
        assert_eq!(
            at("Sunday, 01-Nov-26 00:00:00 GMT"),
            Some(imf("Sun, 01 Nov 2026 00:00:00 GMT"))
        );
        // at the end of a century the next one is near
        let in_2099 = UNIX_EPOCH + Duration::from_secs(4_070_908_800); // 2099-01-01
        assert_eq!(full_year(1, in_2099), 2101);
        assert_eq!(full_year(99, in_2099), 2099);
        assert_eq!(full_year(50, in_2099), 2050);
    }

    #[test]
    fn the_calendar_round_trips() {
        for days in [
            -719_468, -1, 0, 1, 10_957, 11_016, 11_017, 47_482, 2_932_896,
        ] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(year_of(now()), 2026);
    }
}
