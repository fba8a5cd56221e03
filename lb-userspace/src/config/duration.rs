//! Durations as humantime strings ("500ms", "2s", "1m") in both directions.

use std::time::Duration;

use serde::Serializer;

/// Parses a humantime duration, with a message fit for a config error.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| {
        format!("invalid duration {text:?}: {err} (write e.g. \"500ms\", \"2s\" or \"1m\")")
    })
}

/// Formats a duration the way the config file writes it ("2s", "1s 500ms").
pub(crate) fn format(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `serialize_with` helper: a duration as a humantime string.
pub(crate) fn serialize<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_duration(*d))
}
