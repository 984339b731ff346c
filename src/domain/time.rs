//! Timestamps as Glance writes them: UTC, whole seconds, `YYYY-MM-DDTHH:MM:SSZ`.

use time::format_description::well_known::Iso8601;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset, macros::format_description};

/// Seconds since the Unix epoch, the unit timestamps are stored and compared in.
pub type Timestamp = i64;

pub fn now() -> Timestamp {
    OffsetDateTime::now_utc().unix_timestamp()
}

pub fn format(at: Timestamp) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    OffsetDateTime::from_unix_timestamp(at)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// An ISO 8601 date-time as filters accept it; without an offset it is UTC.
pub fn parse(text: &str) -> Option<Timestamp> {
    if let Ok(t) = OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(t.unix_timestamp());
    }
    PrimitiveDateTime::parse(text, &Iso8601::DEFAULT)
        .ok()
        .map(|t| t.assume_offset(UtcOffset::UTC).unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_in_glance_format() {
        assert_eq!(format(1_448_835_702), "2015-11-29T22:21:42Z");
        assert_eq!(parse("2015-11-29T22:21:42Z"), Some(1_448_835_702));
        assert_eq!(parse("2015-11-29T22:21:42"), Some(1_448_835_702));
        assert_eq!(parse("2015-11-29T23:21:42+01:00"), Some(1_448_835_702));
        assert_eq!(parse("yesterday"), None);
    }
}
