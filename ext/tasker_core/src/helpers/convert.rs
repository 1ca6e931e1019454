//! Ruby objects ↔ JSON values, exactly: Integers of any size stay exact (big ones travel as
//! their decimal digits, kept verbatim by serde_json's arbitrary precision and by jsonb), Hash
//! keys come back as Strings, and anything without a JSON form PostgreSQL can store is refused
//! with its path: deeper than `limits::MAX_JSON_DEPTH`, text that is not UTF-8 or holds a NUL
//! byte, Integers beyond `limits::MAX_INTEGER_DIGITS`.

use magnus::{
    r_hash::ForEach, value::ReprValue, Error, Float, Integer, RArray, RHash, RString, Ruby, Symbol,
    Value,
};
use serde_json::{Map, Number, Value as Json};
use tasker_core::limits::{MAX_INTEGER_DIGITS, MAX_JSON_DEPTH};

/// Where a value sits inside the converted object, kept on the stack and only formatted for
/// an error message: converting allocates nothing for paths.
#[derive(Clone, Copy)]
enum Seg<'a> {
    Root(&'a str),
    Key(&'a str),
    Index(usize),
}

#[derive(Clone, Copy)]
struct Path<'a> {
    seg: Seg<'a>,
    parent: Option<&'a Path<'a>>,
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.parent {
            write!(f, "{p}")?;
        }
        match self.seg {
            Seg::Root(s) => f.write_str(s),
            Seg::Key(k) => write!(f, "[{k:?}]"),
            Seg::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// Convert a Ruby value to JSON. Errors are `TaskerCore::Errors::ValidationError` naming the
/// path of the offending element (e.g. `result["items"][2]`).
pub fn to_json(ruby: &Ruby, value: Value, what: &str) -> Result<Json, Error> {
    let root = Path {
        seg: Seg::Root(what),
        parent: None,
    };
    convert(ruby, value, &root, 0)
}

fn invalid(ruby: &Ruby, path: &Path<'_>, why: String) -> Error {
    crate::errors::error(ruby, "ValidationError", format!("{path}: {why}"))
}

/// Text PostgreSQL can store (`what` says which part of the value it is, for the message).
fn storable(ruby: &Ruby, path: &Path<'_>, s: RString, what: &str) -> Result<String, Error> {
    crate::args::storable(s).map_err(|why| invalid(ruby, path, format!("{what} {why}")))
}

/// A container (Hash or Array) inside `depth` others: refused past [`MAX_JSON_DEPTH`].
fn check_depth(ruby: &Ruby, path: &Path<'_>, depth: usize) -> Result<(), Error> {
    if depth >= MAX_JSON_DEPTH {
        return Err(invalid(
            ruby,
            path,
            format!("nested deeper than {MAX_JSON_DEPTH} levels (a cycle?)"),
        ));
    }
    Ok(())
}

fn convert(ruby: &Ruby, value: Value, path: &Path<'_>, depth: usize) -> Result<Json, Error> {
    if value.is_nil() {
        return Ok(Json::Null);
    }
    if value.is_kind_of(ruby.class_true_class()) {
        return Ok(Json::Bool(true));
    }
    if value.is_kind_of(ruby.class_false_class()) {
        return Ok(Json::Bool(false));
    }
    if let Some(i) = Integer::from_value(value) {
        if let Ok(n) = i.to_i64() {
            return Ok(Json::Number(n.into()));
        }
        let digits: String = i.funcall("to_s", ())?;
        let count = digits.trim_start_matches('-').len();
        if count > MAX_INTEGER_DIGITS {
            return Err(invalid(
                ruby,
                path,
                format!("an Integer of {count} digits is beyond what PostgreSQL can store ({MAX_INTEGER_DIGITS} digits)"),
            ));
        }
        return digits
            .parse::<Number>()
            .map(Json::Number)
            .map_err(|e| invalid(ruby, path, format!("integer not representable: {e}")));
    }
    if let Some(f) = Float::from_value(value) {
        let x = f.to_f64();
        return Number::from_f64(x)
            .map(Json::Number)
            .ok_or_else(|| invalid(ruby, path, format!("{x} has no JSON representation")));
    }
    if let Some(s) = RString::from_value(value) {
        return storable(ruby, path, s, "string").map(Json::String);
    }
    if let Some(sym) = Symbol::from_value(value) {
        return storable(ruby, path, sym.to_r_string()?, "symbol").map(Json::String);
    }
    if let Some(arr) = RArray::from_value(value) {
        check_depth(ruby, path, depth)?;
        let mut out = Vec::with_capacity(arr.len());
        for (i, item) in arr.into_iter().enumerate() {
            let here = Path {
                seg: Seg::Index(i),
                parent: Some(path),
            };
            out.push(convert(ruby, item, &here, depth + 1)?);
        }
        return Ok(Json::Array(out));
    }
    if let Some(hash) = RHash::from_value(value) {
        check_depth(ruby, path, depth)?;
        let mut out = Map::new();
        let mut failure: Option<Error> = None;
        hash.foreach(|k: Value, v: Value| {
            let key = if let Some(s) = RString::from_value(k) {
                storable(ruby, path, s, "a hash key")
            } else if let Some(sym) = Symbol::from_value(k) {
                sym.to_r_string()
                    .and_then(|s| storable(ruby, path, s, "a hash key"))
            } else {
                failure = Some(invalid(
                    ruby,
                    path,
                    format!(
                        "hash keys must be Strings or Symbols, got {}",
                        class_name(k)
                    ),
                ));
                return Ok(ForEach::Stop);
            };
            let key = match key {
                Ok(k) => k,
                Err(e) => {
                    failure = Some(e);
                    return Ok(ForEach::Stop);
                }
            };
            let here = Path {
                seg: Seg::Key(&key),
                parent: Some(path),
            };
            match convert(ruby, v, &here, depth + 1) {
                Ok(j) => {
                    out.insert(key, j);
                    Ok(ForEach::Continue)
                }
                Err(e) => {
                    failure = Some(e);
                    Ok(ForEach::Stop)
                }
            }
        })?;
        return match failure {
            Some(e) => Err(e),
            None => Ok(Json::Object(out)),
        };
    }
    Err(invalid(
        ruby,
        path,
        format!("a {} has no JSON form (use Hash, Array, String, Symbol, Integer, Float, true, false or nil)", class_name(value)),
    ))
}

fn class_name(v: Value) -> String {
    // SAFETY-free: class names are plain Ruby strings.
    v.class().inspect()
}

/// Convert JSON to Ruby: objects become Hashes with String keys; integers stay exact.
pub fn to_ruby(ruby: &Ruby, json: &Json) -> Result<Value, Error> {
    Ok(match json {
        Json::Null => ruby.qnil().as_value(),
        Json::Bool(b) => {
            if *b {
                ruby.qtrue().as_value()
            } else {
                ruby.qfalse().as_value()
            }
        }
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                ruby.integer_from_i64(i).as_value()
            } else if let Some(u) = n.as_u64() {
                ruby.integer_from_u64(u).as_value()
            } else {
                let text = n.to_string();
                if is_integer_literal(&text) {
                    ruby.module_kernel().funcall("Integer", (text,))?
                } else {
                    ruby.float_from_f64(n.as_f64().unwrap_or(f64::NAN))
                        .as_value()
                }
            }
        }
        Json::String(s) => ruby.str_new(s).as_value(),
        Json::Array(items) => {
            let arr = ruby.ary_new_capa(items.len());
            for item in items {
                arr.push(to_ruby(ruby, item)?)?;
            }
            arr.as_value()
        }
        Json::Object(map) => {
            let hash = ruby.hash_new();
            for (k, v) in map {
                hash.aset(ruby.str_new(k), to_ruby(ruby, v)?)?;
            }
            hash.as_value()
        }
    })
}

fn is_integer_literal(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}
