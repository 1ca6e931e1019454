//! The bounds every value crossing into the engine is held to, defined once. The extension
//! enforces them at the boundary (and hands them to Ruby as `TaskerCore::Native::LIMITS`), so
//! nothing PostgreSQL or the engine cannot hold is ever accepted and then failed on later.

use std::time::Duration;

/// Deepest nesting of arrays and objects accepted in a context, result, metadata or request
/// (the top-level value is level 1). Well inside `serde_json`'s recursion limit of 128, which
/// also applies when stored values are read back (a step's dependency results are wrapped two
/// levels deeper), so everything accepted can be read again.
pub const MAX_JSON_DEPTH: usize = 100;

/// Most decimal digits of an Integer: PostgreSQL's `numeric` (and so `jsonb`) holds at most
/// 131,072 digits before the decimal point.
pub const MAX_INTEGER_DIGITS: usize = 131_072;

/// The longest duration a setting or argument in seconds may have: one year. Longer waits
/// are written as `Float::INFINITY` where "no limit" makes sense.
pub const MAX_SECONDS: f64 = 31_536_000.0;

/// Longest text recorded with a step's failure (message, class, code, one backtrace line), in
/// bytes.
pub const MAX_FAILURE_TEXT_BYTES: usize = 16 * 1024;

/// Most backtrace lines recorded with a step's failure.
pub const MAX_BACKTRACE_LINES: usize = 50;

/// Most items a list call returns or takes at once.
pub const MAX_LIST_LIMIT: i64 = 10_000;

/// Why a number of seconds was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondsError {
    /// NaN, negative, or infinite where no limit is not allowed.
    NotANonNegativeNumber,
    /// Finite but longer than [`MAX_SECONDS`].
    TooLong,
}

impl std::fmt::Display for SecondsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecondsError::NotANonNegativeNumber => {
                f.write_str("must be a number of seconds, at least 0")
            }
            SecondsError::TooLong => write!(f, "must be at most {MAX_SECONDS} seconds (one year)"),
        }
    }
}

/// A number of seconds as a duration: `Ok(None)` for `+∞` when `infinite_ok` (no limit), an
/// error for NaN, negative values, infinity otherwise, and anything over [`MAX_SECONDS`].
pub fn seconds(secs: f64, infinite_ok: bool) -> Result<Option<Duration>, SecondsError> {
    if secs == f64::INFINITY && infinite_ok {
        return Ok(None);
    }
    if !secs.is_finite() || secs < 0.0 {
        return Err(SecondsError::NotANonNegativeNumber);
    }
    if secs > MAX_SECONDS {
        return Err(SecondsError::TooLong);
    }
    Ok(Some(Duration::from_secs_f64(secs)))
}

/// A duration computed from untrusted or stored numbers, clamped into `[0, max]` (NaN is 0):
/// never panics, unlike [`Duration::from_secs_f64`].
pub fn clamped_seconds(secs: f64, max: Duration) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
}

/// Whether PostgreSQL can store `value` as `jsonb` and the engine read it back: no deeper than
/// [`MAX_JSON_DEPTH`], no NUL in any string or key, no number beyond `numeric`'s range. The
/// extension checks Ruby values the same way while converting them; this is the check for JSON
/// that arrives as JSON (task requests sent with plain SQL).
pub fn storable_json(value: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    fn walk(v: &Value, depth: usize) -> Result<(), String> {
        match v {
            Value::Array(_) | Value::Object(_) if depth >= MAX_JSON_DEPTH => {
                Err(format!("nested deeper than {MAX_JSON_DEPTH} levels"))
            }
            Value::Array(items) => items.iter().try_for_each(|i| walk(i, depth + 1)),
            Value::Object(map) => map.iter().try_for_each(|(k, v)| {
                if k.contains('\0') {
                    return Err("a key contains a NUL byte, which PostgreSQL cannot store".into());
                }
                walk(v, depth + 1)
            }),
            Value::String(s) if s.contains('\0') => {
                Err("a string contains a NUL byte, which PostgreSQL cannot store".into())
            }
            Value::Number(n) => {
                let text = n.to_string();
                let digits = text
                    .trim_start_matches('-')
                    .split(['.', 'e', 'E'])
                    .next()
                    .unwrap_or("");
                if digits.len() > MAX_INTEGER_DIGITS {
                    return Err(format!(
                        "a number has more than {MAX_INTEGER_DIGITS} digits"
                    ));
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    walk(value, 0)
}

/// An RFC 3339 time (`2026-12-01T10:00:00Z`, any offset) given for `what`, in UTC.
pub fn parse_time(what: &str, text: &str) -> crate::Result<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            let shown: String = text.chars().take(64).collect();
            crate::Error::InvalidInput(format!("{what} is not an RFC 3339 time: {shown:?}"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storable_json_holds_the_same_bounds_as_the_boundary() {
        let mut deep = serde_json::json!(1);
        for _ in 0..MAX_JSON_DEPTH {
            deep = serde_json::json!([deep]);
        }
        assert!(storable_json(&deep).is_ok());
        assert!(storable_json(&serde_json::json!([deep])).is_err());
        assert!(storable_json(&serde_json::json!({"a\0": 1})).is_err());
        assert!(storable_json(&serde_json::json!({"a": "x\0y"})).is_err());
        assert!(storable_json(&serde_json::json!({"a": "xy", "n": 12})).is_ok());
    }

    #[test]
    fn seconds_refuses_what_cannot_be_a_duration() {
        assert_eq!(seconds(1.5, false), Ok(Some(Duration::from_millis(1500))));
        assert_eq!(seconds(0.0, false), Ok(Some(Duration::ZERO)));
        assert_eq!(seconds(f64::INFINITY, true), Ok(None));
        assert_eq!(
            seconds(f64::INFINITY, false),
            Err(SecondsError::NotANonNegativeNumber)
        );
        assert_eq!(
            seconds(f64::NEG_INFINITY, true),
            Err(SecondsError::NotANonNegativeNumber)
        );
        assert_eq!(
            seconds(f64::NAN, true),
            Err(SecondsError::NotANonNegativeNumber)
        );
        assert_eq!(
            seconds(-1.0, true),
            Err(SecondsError::NotANonNegativeNumber)
        );
        assert_eq!(seconds(1e300, true), Err(SecondsError::TooLong));
        assert_eq!(
            seconds(MAX_SECONDS, false).unwrap(),
            Some(Duration::from_secs(31_536_000))
        );
    }

    #[test]
    fn clamped_seconds_never_panics() {
        let max = Duration::from_secs(3600);
        assert_eq!(clamped_seconds(1e300, max), max);
        assert_eq!(clamped_seconds(f64::INFINITY, max), max);
        assert_eq!(clamped_seconds(f64::NAN, max), Duration::ZERO);
        assert_eq!(clamped_seconds(-5.0, max), Duration::ZERO);
        assert_eq!(clamped_seconds(2.5, max), Duration::from_millis(2500));
    }
}
