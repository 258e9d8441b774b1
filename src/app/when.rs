//! Timestamps and dates as the pages show and read them, written with chrono's accessors
//! instead of its strftime machinery, which would otherwise ship in the browser bundle.

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

/// `2026-12-02 10:04`.
pub fn minutes(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02} {:02}:{:02}", t.year(), t.month(), t.day(), t.hour(), t.minute())
}

/// `2026-12-02 10:04:40`.
pub fn seconds(t: DateTime<Utc>) -> String {
    format!("{} {}", day(t), clock(t))
}

/// `10:04:40`.
pub fn clock(t: DateTime<Utc>) -> String {
    format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
}

/// `2026-12-02`.
pub fn day(t: DateTime<Utc>) -> String {
    format!("{:04}-{:02}-{:02}", t.year(), t.month(), t.day())
}

/// A `YYYY-MM-DD` date (surrounding blanks ignored), or `None`.
pub fn parse_day(text: &str) -> Option<NaiveDate> {
    let mut parts = text.trim().split('-');
    let mut number = |digits: usize| -> Option<u32> {
        parts.next().filter(|p| p.len() == digits && p.bytes().all(|b| b.is_ascii_digit())).and_then(|p| p.parse().ok())
    };
    let (year, month, day) = (number(4)?, number(2)?, number(2)?);
    if parts.next().is_some() {
        return None;
    }
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_match_the_strftime_forms_they_replace() {
        let t = DateTime::parse_from_rfc3339("2026-03-04T05:06:07.890Z").unwrap_or_default().with_timezone(&Utc);
        assert_eq!(minutes(t), t.format("%Y-%m-%d %H:%M").to_string());
        assert_eq!(seconds(t), t.format("%Y-%m-%d %H:%M:%S").to_string());
        assert_eq!(clock(t), t.format("%H:%M:%S").to_string());
        assert_eq!(day(t), "2026-03-04");
    }

    #[test]
    fn reads_only_well_formed_days() {
        assert_eq!(parse_day(" 2026-02-28 "), NaiveDate::from_ymd_opt(2026, 2, 28));
        for bad in
            ["", "2026-02-30", "2026-2-28", "26-02-28", "2026-02-28-01", "2026-02-2x", "+026-02-28", "2026/02/28"]
        {
            assert_eq!(parse_day(bad), None, "{bad:?}");
        }
    }
}
