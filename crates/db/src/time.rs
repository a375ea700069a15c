//! The one rule for timestamps going into the database.

use chrono::{DateTime, Timelike, Utc};

/// `t` truncated to whole microseconds, the precision both backends store (`DATETIME(6)`
/// on MySQL). Values compared against stored timestamps, or returned to callers as "what
/// was stored", go through this so that a value read back equals the value written.
pub fn db_time(t: DateTime<Utc>) -> DateTime<Utc> {
    let nanos = t.nanosecond();
    t.with_nanosecond(nanos - nanos % 1_000).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_time_drops_sub_microsecond_digits_only() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456789Z").unwrap().with_timezone(&Utc);
        assert_eq!(db_time(t).to_rfc3339(), "2026-01-02T03:04:05.123456+00:00");
        assert_eq!(db_time(db_time(t)), db_time(t));
    }
}
