//! Serde shapes of a template document and the compiled template.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::flow::{ConcurrencyDoc, RateLimitDoc, StepFlow};
use crate::error::{Error, Result};
use crate::schedule::{Schedule, ScheduleDoc};

/// Retry settings of a step. Defaults: retryable, 3 attempts in total, 1 s base, 30 s cap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    pub retryable: bool,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retryable: true,
            max_attempts: 3,
            backoff_base_ms: 1000,
            max_backoff_ms: 30_000,
        }
    }
}

/// Which Ruby class handles a step, and the configuration it receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandlerSpec {
    pub callable: String,
    #[serde(default = "empty_object")]
    pub initialization: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn default_timeout() -> u32 {
    300
}

/// One step as written in the document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDoc {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    pub handler: HandlerSpec,
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub retry: RetryPolicy,
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u32,
    /// At most `limit` of this step in progress per key (replaces the template's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyDoc>,
    /// At most `limit` starts of this step per key in any `per` seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitDoc>,
}

/// A template document as written (after strict parsing, before validation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateDoc {
    pub name: String,
    pub namespace: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    pub steps: Vec<StepDoc>,
    /// At most `limit` steps of this template's tasks in progress per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<ConcurrencyDoc>,
    /// Cron schedules that create tasks of this template.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ScheduleDoc>,
}

/// The top level with steps left raw, so a step's errors can name the step.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDoc {
    name: String,
    namespace: String,
    version: serde_yaml::Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    steps: Option<Vec<serde_yaml::Value>>,
    #[serde(default)]
    concurrency: Option<ConcurrencyDoc>,
    #[serde(default)]
    schedules: Vec<ScheduleDoc>,
}

/// A parser's complaint, cut short: it may quote the document, and a file that is not a
/// template (or holds secrets) must not be echoed back.
fn brief(e: impl std::fmt::Display) -> String {
    const MAX: usize = 200;
    let text = e.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

pub(crate) fn parse_doc(text: &str) -> Result<TemplateDoc> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        Error::template(None, None, format!("not valid YAML or JSON: {}", brief(e)))
    })?;
    let kind = match &value {
        serde_yaml::Value::Mapping(_) => None,
        serde_yaml::Value::Null => Some("nothing"),
        serde_yaml::Value::Bool(_) => Some("a boolean"),
        serde_yaml::Value::Number(_) => Some("a number"),
        serde_yaml::Value::String(_) => Some("a string"),
        serde_yaml::Value::Sequence(_) => Some("a list"),
        serde_yaml::Value::Tagged(_) => Some("a tagged value"),
    };
    if let Some(kind) = kind {
        return Err(Error::template(
            None,
            None,
            format!("not a task template: the document is {kind}, not a mapping with name, namespace, version and steps"),
        ));
    }
    let raw: RawDoc = serde_yaml::from_value(value)
        .map_err(|e| Error::template(None, None, format!("invalid template: {}", brief(e))))?;
    let version = match raw.version {
        serde_yaml::Value::String(s) => s,
        other => {
            return Err(Error::template(
                None,
                None,
                format!(
                    "version must be a string like \"1.0.0\" (quote it), got {}",
                    serde_yaml::to_string(&other).unwrap_or_default().trim()
                ),
            ))
        }
    };
    let raw_steps = raw.steps.unwrap_or_default();
    let mut steps = Vec::with_capacity(raw_steps.len());
    for (i, value) in raw_steps.into_iter().enumerate() {
        let label = value
            .get("name")
            .and_then(|n| n.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| format!("#{}", i + 1));
        let step: StepDoc = serde_yaml::from_value(value)
            .map_err(|e| Error::template(None, Some(&label), brief(e)))?;
        steps.push(step);
    }
    Ok(TemplateDoc {
        name: raw.name,
        namespace: raw.namespace,
        version,
        description: raw.description,
        steps,
        concurrency: raw.concurrency,
        schedules: raw.schedules,
    })
}

/// A validated step with its parents resolved to indices into [`Template::steps`].
#[derive(Debug, Clone, PartialEq)]
pub struct StepTemplate {
    pub name: Arc<str>,
    pub handler_class: Arc<str>,
    pub initialization: Arc<serde_json::Value>,
    pub parents: Vec<usize>,
    /// Names of the parents, shared by every event of this step.
    pub parent_names: Arc<[Arc<str>]>,
    /// Every ancestor's name (parents, their parents, ...), in step order, joined by commas
    /// (step names cannot contain one): stored with the step, so that a claim reads the
    /// results it depends on by name instead of walking the edges.
    pub ancestors: Arc<str>,
    /// How many steps depend on this one directly: the most a completion of it can release.
    pub child_count: u32,
    pub retry: RetryPolicy,
    pub timeout_seconds: u32,
    /// The step's concurrency and rate limits (empty for most steps).
    pub flow: Arc<StepFlow>,
}

/// A validated, compiled template. Steps are in topological order (parents before children).
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub namespace: Arc<str>,
    pub name: Arc<str>,
    pub version: Arc<str>,
    pub description: Option<String>,
    pub steps: Vec<StepTemplate>,
    /// The document this was compiled from (stored in `named_tasks.template`).
    pub doc: TemplateDoc,
    /// Position of each step in `steps`, by name.
    pub step_index: HashMap<Arc<str>, usize>,
    /// The cron schedules declared with it (checked: expression, timezone, context).
    pub schedules: Vec<Schedule>,
}

impl Template {
    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&StepTemplate> {
        self.step_index.get(name).map(|&i| &self.steps[i])
    }

    /// `(namespace, name, version)`.
    pub fn key(&self) -> (&str, &str, &str) {
        (&self.namespace, &self.name, &self.version)
    }

    /// Indices of steps without parents.
    pub fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        self.steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parents.is_empty())
            .map(|(i, _)| i)
    }

    /// Handler class names used by this template (deduplicated, in step order).
    pub fn handler_classes(&self) -> Vec<Arc<str>> {
        let mut out: Vec<Arc<str>> = Vec::new();
        for s in &self.steps {
            if !out.iter().any(|c| c == &s.handler_class) {
                out.push(s.handler_class.clone());
            }
        }
        out
    }

    /// The largest step timeout, used to size queue visibility timeouts.
    pub fn max_timeout_seconds(&self) -> u32 {
        self.steps
            .iter()
            .map(|s| s.timeout_seconds)
            .max()
            .unwrap_or(0)
    }
}
