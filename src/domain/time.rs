//! Timestamps: kept in microseconds, so that what happens within one second keeps its order
//! (images list newest first in the order they were created), and shown as Glance shows
//! them: UTC, whole seconds, `YYYY-MM-DDTHH:MM:SSZ`.

use time::format_description::well_known::Iso8601;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset, macros::format_description};

/// Microseconds since the Unix epoch (UTC), the unit timestamps are stored and compared in.
pub type Timestamp = i64;

/// One second in `Timestamp` units.
pub const SECOND: Timestamp = 1_000_000;

pub fn now() -> Timestamp {
    let now = OffsetDateTime::now_utc();
    now.unix_timestamp() * SECOND + i64::from(now.microsecond())
}

/// The whole second `at` falls in, as Glance shows it.
pub fn format(at: Timestamp) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(at.div_euclid(SECOND))
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// An ISO 8601 date-time as filters accept it (without an offset it is UTC): the start of
/// the whole second it names. Filters compare whole seconds, as the times they are
/// compared with are shown.
pub fn parse(text: &str) -> Option<Timestamp> {
    let at = match OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        Ok(t) => t,
        Err(_) => PrimitiveDateTime::parse(text, &Iso8601::DEFAULT)
            .ok()?
            .assume_offset(UtcOffset::UTC),
    };
    Some(at.unix_timestamp() * SECOND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_glance_format() {
        let at = 1_448_835_702 * SECOND;
        assert_eq!(format(at), "2015-11-29T22:21:42Z");
        assert_eq!(parse("2015-11-29T22:21:42Z"), Some(at));
        assert_eq!(parse("2015-11-29T22:21:42"), Some(at));
        assert_eq!(parse("2015-11-29T23:21:42+01:00"), Some(at));
        assert_eq!(parse("yesterday"), None);
    }

    #[test]
    fn sub_second_precision_is_kept_and_shown_as_whole_seconds() {
        let at = 1_448_835_702 * SECOND;
        assert_eq!(format(at + SECOND - 1), "2015-11-29T22:21:42Z");
        assert_eq!(format(at + SECOND), "2015-11-29T22:21:43Z");
        assert_eq!(format(-1), "1969-12-31T23:59:59Z");
        assert_eq!(parse("2015-11-29T22:21:42.999999Z"), Some(at));
    }
}
