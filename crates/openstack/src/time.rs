//! OpenStack's timestamps, which come in three spellings: Keystone's
//! `2026-11-23T15:05:00.000000Z`, Nova's `2026-11-23T14:05:04.000000` (UTC without a zone) and
//! RFC 3339 `2026-11-23T14:08:23Z`. All are UTC.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};

/// Parses any of the spellings above; `None` for anything else.
pub(crate) fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f"))
        .ok()
        .map(|naive| naive.and_utc())
}

/// serde `deserialize_with` for an optional timestamp. An unreadable value becomes `None`
/// rather than failing the whole list it is part of.
pub(crate) fn optional_timestamp<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let text = Option::<String>::deserialize(deserializer)?;
    Ok(text.as_deref().and_then(parse_timestamp))
}

/// The `changes-since` spelling Nova accepts (ISO 8601 with a zone).
pub(crate) fn format_timestamp(time: &DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_openstack_spellings_parse_to_the_same_instant() {
        let keystone = parse_timestamp("2026-11-23T15:05:00.000000Z").unwrap();
        let nova = parse_timestamp("2026-11-23T15:05:00.000000").unwrap();
        let rfc = parse_timestamp("2026-11-23T15:05:00Z").unwrap();
        assert_eq!(keystone, nova);
        assert_eq!(nova, rfc);
        assert_eq!(format_timestamp(&rfc), "2026-11-23T15:05:00Z");
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
