//! Durations as humantime strings ("500ms", "2s", "1m") in both directions.

use std::time::Duration;

use serde::Serializer;

/// Parses a humantime duration, with a message fit for a config error.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|err| {
        format!("invalid duration {text:?}: {err} (write e.g. \"500ms\", \"2s\" or \"1m\")")
    })
}

/// Formats a duration as people write it in a config: "500ms", "1.5s",
/// "2s", "1m30s", "5m", "1h", one word (so `key=value` output stays one word
/// per value). Below a minute, seconds carry up to three decimals; from a
/// minute on, whole hours/minutes come first. [`parse`] reads it back.
pub(crate) fn format(d: Duration) -> String {
    if d.is_zero() {
        return "0s".into();
    }
    if d < Duration::from_millis(1) {
        return format!("{}us", d.as_micros());
    }
    if d < Duration::from_secs(1) {
        return trim_decimals(d.as_secs_f64() * 1000.0, "ms");
    }
    let total = d.as_secs();
    let (h, m) = (total / 3600, (total % 3600) / 60);
    let secs = (total % 60) as f64 + f64::from(d.subsec_nanos()) / 1e9;
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs > 0.0 || out.is_empty() {
        out.push_str(&trim_decimals(secs, "s"));
    }
    out
}

/// `value` with at most three decimals, trailing zeros dropped, then `unit`.
fn trim_decimals(value: f64, unit: &str) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{unit}")
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
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1250), "1.25s"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_micros(20), "20us"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(90_500), "1m30.5s"),
            (Duration::from_secs(300), "5m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3725), "1h2m5s"),
        ] {
            assert_eq!(format(d), text);
            assert_eq!(parse(text), Ok(d));
        }
    }
}
