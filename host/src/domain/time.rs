//! Timestamps: the range a recorded time may take, and its text form, the RFC 3339 form used in
//! documents (`$date`) and in output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// 9999-12-31T23:59:59.999Z, the last instant an Extended JSON `$date` string can hold. Event
/// times are validated into `0..=MAX_TIMESTAMP_MS` so that each one has a text form.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Format ms since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`. The text holds 1970 to 9999
/// only: a time outside is clamped to the nearest bound (event times are validated into that
/// range; a document's other dates take the canonical Extended JSON form instead).
pub fn iso8601_millis(ms: i64) -> String {
    let ms = ms.clamp(0, MAX_TIMESTAMP_MS);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs()))
        .to_string()
}

/// Now, in ms since the Unix epoch.
pub fn now_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_like_the_guest_sdk() {
        assert_eq!(
            super::iso8601_millis(1_734_602_400_123),
            "2024-12-19T10:00:00.123Z"
        );
        assert_eq!(super::iso8601_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601_millis(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::iso8601_millis(i64::MAX), "9999-12-31T23:59:59.999Z");
    }
}
