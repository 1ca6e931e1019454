//! Flow control declared in a template: concurrency limits (on the template or a step) and
//! rate limits (on a step). A limit counts per *key*: a constant, or a value read from the
//! task's context by a path (`context.account_id`). The key is resolved once, when a task is
//! created, and stored with each step (`tasker.workflow_steps.flow`); PostgreSQL enforces the
//! limit when a step is claimed, across every process (docs/flow-control.md).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// The key a task whose context lacks the path counts under.
pub const MISSING_KEY: &str = "<missing>";
/// Longest key value kept (a longer one is cut at this many characters).
pub const MAX_KEY_VALUE_CHARS: usize = 200;
/// Highest `limit` of either kind.
pub const MAX_LIMIT: u32 = 1_000_000;
/// Longest rate-limit window, in seconds.
pub const MAX_PER_SECONDS: f64 = 86_400.0;

/// `concurrency: { key:, limit:, name: }` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencyDoc {
    pub key: String,
    pub limit: u32,
    /// Limits with the same name (in any template) share their slots; by default a limit is
    /// its template's (or its step's) own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `rate_limit: { key:, limit:, per:, name: }` as written (`per` in seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitDoc {
    pub key: String,
    pub limit: u32,
    pub per: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Where a limit's key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Constant(String),
    /// Object keys from the context's top level down (`context.customer.id` → `["customer", "id"]`).
    Path(Vec<String>),
}

impl KeySource {
    /// Parse `key` as written in a template; `what` names the setting in errors.
    pub fn parse(key: &str, what: &str) -> std::result::Result<KeySource, String> {
        let looks_like_path =
            key.starts_with("context") || key.starts_with('$') || key.contains(['[', ']']);
        if looks_like_path {
            let segments: Option<Vec<String>> = key
                .strip_prefix("context.")
                .map(|rest| rest.split('.').map(str::to_owned).collect());
            match segments {
                Some(s)
                    if !s.is_empty()
                        && s.len() <= 8
                        && s.iter().all(|seg| {
                            !seg.is_empty()
                                && seg.len() <= 64
                                && seg
                                    .chars()
                                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
                        }) =>
                {
                    Ok(KeySource::Path(s))
                }
                _ => Err(format!(
                    "{what}.key {key:?} is not a path: write context.<field>[.<field>...] \
                     (letters, digits, '_' or '-'; at most 8 fields), or a constant key"
                )),
            }
        } else if !key.is_empty()
            && key.len() <= 128
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '/'))
        {
            Ok(KeySource::Constant(key.to_owned()))
        } else {
            Err(format!(
                "{what}.key {key:?} is invalid: a constant key is 1-128 letters, digits, '_', '-', \
                 '.', ':' or '/', and a path starts with \"context.\""
            ))
        }
    }

    /// The key's value for a task with this context (`"<missing>"` when the path is absent or
    /// null; a string as it is, anything else as its JSON text).
    pub fn resolve(&self, context: &Value) -> String {
        let value = match self {
            KeySource::Constant(c) => return c.clone(),
            KeySource::Path(path) => path.iter().try_fold(context, |v, seg| v.get(seg)),
        };
        let text = match value {
            None | Some(Value::Null) => return MISSING_KEY.to_owned(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        match text.char_indices().nth(MAX_KEY_VALUE_CHARS) {
            Some((cut, _)) => text[..cut].to_owned(),
            None => text,
        }
    }
}

/// A compiled limit: the scope its slots or starts are counted in, the key source, the limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    pub scope: Arc<str>,
    pub key: KeySource,
    pub limit: u32,
    /// The window of a rate limit, in seconds (None for a concurrency limit).
    pub per: Option<f64>,
}

impl Limit {
    fn full_key(&self, context: &Value) -> String {
        format!("{}:{}", self.scope, self.key.resolve(context))
    }
}

/// What limits a step: its own concurrency limit or its template's, and its rate limit.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepFlow {
    pub concurrency: Option<Limit>,
    pub rate: Option<Limit>,
}

impl StepFlow {
    pub fn is_empty(&self) -> bool {
        self.concurrency.is_none() && self.rate.is_none()
    }

    /// The step's limits with their keys resolved for a task's context, as stored with the
    /// step and read by `tasker.admit_flow`; None for a step without limits.
    pub fn resolve(&self, context: &Value) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        let mut out = serde_json::Map::new();
        if let Some(c) = &self.concurrency {
            out.insert(
                "concurrency".into(),
                json!({ "key": c.full_key(context), "limit": c.limit }),
            );
        }
        if let Some(r) = &self.rate {
            out.insert(
                "rate".into(),
                json!({ "key": r.full_key(context), "limit": r.limit, "per": r.per }),
            );
        }
        Some(Value::Object(out))
    }
}

/// Longest resolved key (scope, ':' and value) a task may give for its own limits.
pub const MAX_RESOLVED_KEY_CHARS: usize = 400;

/// Check limits a task gives for itself, resolved (`TaskRequest::flow`): the form
/// [`StepFlow::resolve`] produces, each key 1-400 characters, limits and windows within the
/// bounds a template has.
pub fn check_resolved(flow: &Value) -> std::result::Result<(), String> {
    let Some(o) = flow.as_object() else {
        return Err("flow must be an object with concurrency and/or rate".into());
    };
    if o.is_empty() {
        return Err("flow names no limit (give concurrency and/or rate)".into());
    }
    for (kind, limit) in o {
        let key = limit.get("key").and_then(Value::as_str).unwrap_or("");
        let n = limit.get("limit").and_then(Value::as_u64).unwrap_or(0);
        let fields: Vec<&str> = limit
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let allowed: &[&str] = match kind.as_str() {
            "concurrency" => &["key", "limit"],
            "rate" => &["key", "limit", "per"],
            other => return Err(format!("flow.{other} is not a limit (concurrency or rate)")),
        };
        if let Some(extra) = fields.iter().find(|f| !allowed.contains(f)) {
            return Err(format!(
                "flow.{kind}.{extra} is not a setting of a {kind} limit"
            ));
        }
        if key.is_empty() || key.chars().count() > MAX_RESOLVED_KEY_CHARS {
            return Err(format!(
                "flow.{kind}.key must be 1-{MAX_RESOLVED_KEY_CHARS} characters"
            ));
        }
        if !(1..=MAX_LIMIT as u64).contains(&n) {
            return Err(format!(
                "flow.{kind}.limit must be an Integer from 1 to {MAX_LIMIT}"
            ));
        }
        if kind == "rate" {
            let per = limit.get("per").and_then(Value::as_f64).unwrap_or(0.0);
            if !(0.001..=MAX_PER_SECONDS).contains(&per) {
                return Err(format!(
                    "flow.rate.per must be between 0.001 and {MAX_PER_SECONDS} seconds"
                ));
            }
        }
    }
    Ok(())
}

fn check_scope_name(name: &str, what: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what}.name {name:?} is invalid: use 1-128 letters, digits, '_', '-', '.' or '/'"
        ))
    }
}

/// Compile a concurrency limit; `scope` is its default scope.
pub(crate) fn concurrency(doc: &ConcurrencyDoc, scope: &str, step: Option<&str>) -> Result<Limit> {
    let fail = |m: String| Error::template(None, step, m);
    if doc.limit < 1 || doc.limit > MAX_LIMIT {
        return Err(fail(format!(
            "concurrency.limit must be between 1 and {MAX_LIMIT}, got {}",
            doc.limit
        )));
    }
    let key = KeySource::parse(&doc.key, "concurrency").map_err(fail)?;
    if let Some(n) = &doc.name {
        check_scope_name(n, "concurrency").map_err(fail)?;
    }
    Ok(Limit {
        scope: Arc::from(doc.name.as_deref().unwrap_or(scope)),
        key,
        limit: doc.limit,
        per: None,
    })
}

/// Compile a rate limit; `scope` is its default scope.
pub(crate) fn rate(doc: &RateLimitDoc, scope: &str, step: &str) -> Result<Limit> {
    let fail = |m: String| Error::template(None, Some(step), m);
    if doc.limit < 1 || doc.limit > MAX_LIMIT {
        return Err(fail(format!(
            "rate_limit.limit must be between 1 and {MAX_LIMIT}, got {}",
            doc.limit
        )));
    }
    if !(doc.per.is_finite() && doc.per >= 0.001 && doc.per <= MAX_PER_SECONDS) {
        return Err(fail(format!(
            "rate_limit.per must be a number of seconds between 0.001 and {MAX_PER_SECONDS}, got {}",
            doc.per
        )));
    }
    let key = KeySource::parse(&doc.key, "rate_limit").map_err(fail)?;
    if let Some(n) = &doc.name {
        check_scope_name(n, "rate_limit").map_err(fail)?;
    }
    Ok(Limit {
        scope: Arc::from(doc.name.as_deref().unwrap_or(scope)),
        key,
        limit: doc.limit,
        per: Some(doc.per),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_paths_or_constants() {
        assert_eq!(
            KeySource::parse("context.customer.id", "c"),
            Ok(KeySource::Path(vec!["customer".into(), "id".into()]))
        );
        assert_eq!(
            KeySource::parse("stripe-api", "c"),
            Ok(KeySource::Constant("stripe-api".into()))
        );
        for bad in [
            "context",
            "context.",
            "context..id",
            "context.a b",
            "$.id",
            "context[0]",
            "",
            "a b",
        ] {
            assert!(KeySource::parse(bad, "c").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_tasks_own_limits_are_checked() {
        assert!(check_resolved(&json!({"concurrency": {"key": "Job:a", "limit": 2}})).is_ok());
        assert!(check_resolved(&json!({"rate": {"key": "k", "limit": 5, "per": 1.5}})).is_ok());
        for bad in [
            json!([]),
            json!({}),
            json!({"speed": {"key": "k", "limit": 1}}),
            json!({"concurrency": {"key": "", "limit": 1}}),
            json!({"concurrency": {"key": "k", "limit": 0}}),
            json!({"concurrency": {"key": "k", "limit": 1, "per": 1}}),
            json!({"rate": {"key": "k", "limit": 1}}),
            json!({"concurrency": {"key": "x".repeat(401), "limit": 1}}),
        ] {
            assert!(check_resolved(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_resolve_from_the_context_with_a_fallback() {
        let k = KeySource::parse("context.account.id", "c").unwrap();
        assert_eq!(k.resolve(&json!({"account": {"id": "a1"}})), "a1");
        assert_eq!(k.resolve(&json!({"account": {"id": 42}})), "42");
        assert_eq!(k.resolve(&json!({"account": {}})), MISSING_KEY);
        assert_eq!(k.resolve(&json!({"account": "flat"})), MISSING_KEY);
        assert_eq!(k.resolve(&json!({"account": {"id": null}})), MISSING_KEY);
        let long = "x".repeat(500);
        assert_eq!(
            k.resolve(&json!({"account": {"id": long}})).len(),
            MAX_KEY_VALUE_CHARS
        );
    }
}
