//! Timestamps as text: the RFC 3339 form used in documents (`$date`) and in output.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Format ms since the Unix epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn iso8601_millis(ms: i64) -> String {
    let time = if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    };
    humantime::format_rfc3339_millis(time).to_string()
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
    }
}
