//! The range of provider timestamps we accept, and checked conversions into it.
//!
//! chrono represents instants far beyond any real call (±262,000 years), but shifting an
//! instant near its limits into a time zone overflows and panics. Bounding every timestamp we
//! read to years 1970..=9999 keeps all later date arithmetic (zones, "morgen", "+14 Tage") far
//! from those limits. `schemas/json/retell_webhook.schema.json` states the same bounds, and a
//! test checks that the two agree.

use chrono::{DateTime, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;

/// 1970-01-01T00:00:00.000Z in ms since the epoch.
pub const MIN_MS: i64 = 0;
/// 9999-12-31T23:59:59.999Z in ms since the epoch.
pub const MAX_MS: i64 = 253_402_300_799_999;
/// The largest integer a JSON number holds exactly (2^53 - 1): the bound of durations.
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// `ms` since the epoch as an instant, if it lies within [`MIN_MS`]..=[`MAX_MS`].
pub fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    (MIN_MS..=MAX_MS)
        .contains(&ms)
        .then(|| DateTime::from_timestamp_millis(ms))
        .flatten()
}

/// Whether `at` lies within the accepted range.
pub fn in_range(at: DateTime<Utc>) -> bool {
    (MIN_MS..=MAX_MS).contains(&at.timestamp_millis())
}

/// The calendar day of `at` in `zone`, without chrono's panicking `with_timezone`: `None`
/// when the shift would leave chrono's range.
pub fn local_date(at: DateTime<Utc>, zone: Tz) -> Option<NaiveDate> {
    let offset = zone.offset_from_utc_datetime(&at.naive_utc()).fix();
    at.naive_utc()
        .checked_add_signed(chrono::Duration::seconds(i64::from(
            offset.local_minus_utc(),
        )))
        .map(|local| local.date())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_the_instants_they_claim() {
        assert_eq!(
            from_ms(MIN_MS).unwrap().to_rfc3339(),
            "1970-01-01T00:00:00+00:00"
        );
        assert_eq!(
            from_ms(MAX_MS).unwrap().to_rfc3339(),
            "9999-12-31T23:59:59.999+00:00"
        );
        assert_eq!(from_ms(MIN_MS - 1), None);
        assert_eq!(from_ms(MAX_MS + 1), None);
        assert_eq!(from_ms(i64::MAX), None);
    }

    #[test]
    fn local_date_at_chronos_limits_is_none_not_a_panic() {
        let zone: Tz = "Pacific/Kiritimati".parse().unwrap();
        assert_eq!(local_date(DateTime::<Utc>::MAX_UTC, zone), None);
        let at = from_ms(MAX_MS).unwrap();
        assert!(local_date(at, zone).is_some());
    }
}
