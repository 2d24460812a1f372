//! UTC calendar time for file names and records, without a date crate: the civil-from-days
//! conversion of the proleptic Gregorian calendar.

use std::time::{SystemTime, UNIX_EPOCH};

/// A UTC instant split into calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Utc {
    pub year: i64,
    pub month: i64,
    pub day: i64,
    pub hour: u64,
    pub minute: u64,
    pub second: u64,
    pub millis: u32,
}

impl Utc {
    pub fn of(t: SystemTime) -> Utc {
        let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        // Days since 1970-01-01 to a civil date, by 400-year eras (146 097 days each).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Utc { year, month, day, hour: rem / 3600, minute: rem % 3600 / 60, second: rem % 60, millis: since.subsec_millis() }
    }

    /// `YYYY-MM-DD`.
    pub fn date(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// `HHMMSS`, for file names.
    pub fn compact_time(&self) -> String {
        format!("{:02}{:02}{:02}", self.hour, self.minute, self.second)
    }

    /// RFC 3339 with milliseconds: `2026-12-06T05:01:02.123Z`.
    pub fn rfc3339(&self) -> String {
        format!("{}T{:02}:{:02}:{:02}.{:03}Z", self.date(), self.hour, self.minute, self.second, self.millis)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn known_instants() {
        let at = |s: u64, ms: u64| Utc::of(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(at(0, 0).rfc3339(), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (a leap day of a century leap year), 23:59:59.999.
        assert_eq!(at(951_868_799, 999).rfc3339(), "2000-02-29T23:59:59.999Z");
        // 2026-12-06T05:01:16Z, and the file-name forms.
        let t = at(1_796_533_276, 5);
        assert_eq!((t.date(), t.compact_time(), t.rfc3339()), ("2026-12-06".into(), "050116".into(), "2026-12-06T05:01:16.005Z".into()));
        assert_eq!(at(4_107_542_400, 0).date(), "2100-03-01", "2100 is not a leap year");
    }
}
