//! Durations as humantime strings ("500ms", "2s", "1m") in both directions.

use std::time::Duration;

use serde::Serializer;

/// Parses a humantime duration, with a message fit for a config error.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| {
        format!("invalid duration {text:?}: {err} (write e.g. \"500ms\", \"2s\" or \"1m\")")
    })
}

/// Formats a duration as humantime does, without the spaces ("2s",
/// "1s500ms"), so `key=value` output stays one word per value. [`parse`]
/// reads the result back.
pub(crate) fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string().replace(' ', "")
}

/// `serialize_with` helper: a duration as a humantime string (see [`format`]).
pub(crate) fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format(*d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_compact_and_round_trips() {
        for (d, text) in [
            (Duration::ZERO, "0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_secs(2), "2s"),
            (Duration::from_millis(1500), "1s500ms"),
            (Duration::from_secs(90), "1m30s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }
}
