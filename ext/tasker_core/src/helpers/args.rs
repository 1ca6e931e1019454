//! Arguments from Ruby, checked before they reach the core: numbers of seconds and counts
//! within `tasker_core::limits`, text that PostgreSQL can store. A refusal is a
//! `TaskerCore::Errors::<class>` naming the argument, never a panic or a raw `TypeError`.

use std::time::Duration;

use magnus::{value::ReprValue, Error, Float, Integer, RHash, RString, Ruby, TryConvert, Value};
use tasker_core::limits;

use crate::errors::error;

/// A number of seconds (`what` names it in the message). `infinite_ok`: `Float::INFINITY`
/// means "no limit" and gives `None`.
pub fn seconds(
    ruby: &Ruby,
    class: &str,
    what: &str,
    value: Value,
    infinite_ok: bool,
) -> Result<Option<Duration>, Error> {
    let secs = number(value).ok_or_else(|| {
        error(
            ruby,
            class,
            format!(
                "{what} must be a number of seconds, got {}",
                describe(value)
            ),
        )
    })?;
    limits::seconds(secs, infinite_ok).map_err(|why| {
        let hint = if infinite_ok {
            " (Float::INFINITY for no limit)"
        } else {
            ""
        };
        error(ruby, class, format!("{what} {why}{hint}, got {secs}"))
    })
}

/// [`seconds`] where "no limit" is not allowed.
pub fn finite_seconds(
    ruby: &Ruby,
    class: &str,
    what: &str,
    value: Value,
) -> Result<Duration, Error> {
    Ok(seconds(ruby, class, what, value, false)?.unwrap_or(Duration::ZERO))
}

/// An Integer in `min..=max`.
pub fn integer(
    ruby: &Ruby,
    class: &str,
    what: &str,
    value: Value,
    min: i64,
    max: i64,
) -> Result<i64, Error> {
    Integer::from_value(value)
        .and_then(|i| i.to_i64().ok())
        .filter(|i| (min..=max).contains(i))
        .ok_or_else(|| {
            error(
                ruby,
                class,
                format!(
                    "{what} must be an Integer from {min} to {max}, got {}",
                    describe(value)
                ),
            )
        })
}

/// A Ruby String as text PostgreSQL can store (valid UTF-8, no NUL byte), or why it is not:
/// the one definition of that rule at the boundary (`convert` uses it for JSON strings and keys).
pub fn storable(s: RString) -> Result<String, &'static str> {
    let text = s.to_string().map_err(|_| "is not valid UTF-8")?;
    if text.contains('\0') {
        return Err("contains a NUL byte, which PostgreSQL cannot store");
    }
    Ok(text)
}

/// Text PostgreSQL can store: a String (or Symbol) of valid UTF-8 without NUL bytes.
pub fn text(ruby: &Ruby, class: &str, what: &str, value: Value) -> Result<String, Error> {
    let s = if let Some(s) = RString::from_value(value) {
        s
    } else if let Some(sym) = magnus::Symbol::from_value(value) {
        sym.to_r_string()?
    } else {
        return Err(error(
            ruby,
            class,
            format!("{what} must be a String, got {}", describe(value)),
        ));
    };
    storable(s).map_err(|why| error(ruby, class, format!("{what} {why}")))
}

/// [`text`] for an optional value: nil gives `None`.
pub fn optional_text(
    ruby: &Ruby,
    class: &str,
    what: &str,
    value: Value,
) -> Result<Option<String>, Error> {
    if value.is_nil() {
        return Ok(None);
    }
    text(ruby, class, what, value).map(Some)
}

/// `hash[key]` (nil when absent), for the checks above.
pub fn get(hash: RHash, key: &str) -> Value {
    hash.get(key)
        .unwrap_or_else(|| Ruby::get_with(hash).qnil().as_value())
}

/// `hash[key]` converted by magnus, a conversion failure named as `class`.
pub fn fetch<T: TryConvert>(ruby: &Ruby, class: &str, hash: RHash, key: &str) -> Result<T, Error> {
    hash.fetch::<_, T>(key)
        .map_err(|e| error(ruby, class, format!("{key}: {e}")))
}

fn number(value: Value) -> Option<f64> {
    if let Some(f) = Float::from_value(value) {
        return Some(f.to_f64());
    }
    // Integer#to_f: a Bignum beyond f64's range is ±Infinity, refused like any infinity.
    let i = Integer::from_value(value)?;
    i.funcall::<_, _, f64>("to_f", ()).ok()
}

fn describe(value: Value) -> String {
    if value.is_nil() {
        return "nil".into();
    }
    let text = value.inspect().chars().take(40).collect::<String>();
    format!("{text} ({})", value.class().inspect())
}
