//! Validation of a parsed template document and compilation into a [`Template`].

use std::collections::HashMap;
use std::sync::Arc;

use super::flow::{self, StepFlow};
use super::model::{StepTemplate, Template, TemplateDoc};
use crate::error::{Error, Result};
use crate::messaging::queue::validate_namespace;

const MAX_NAME_LEN: usize = 128;

pub(crate) fn compile(doc: TemplateDoc) -> Result<Template> {
    validate_namespace(&doc.namespace).map_err(|e| Error::template(None, None, e.to_string()))?;
    check_name("name", &doc.name, None)?;
    check_version(&doc.version)?;
    if doc.steps.is_empty() {
        return Err(Error::template(None, None, "template has no steps"));
    }

    let mut index: HashMap<&str, usize> = HashMap::with_capacity(doc.steps.len());
    for (i, step) in doc.steps.iter().enumerate() {
        check_name("step name", &step.name, Some(&step.name))?;
        if index.insert(step.name.as_str(), i).is_some() {
            return Err(Error::template(
                None,
                Some(&step.name),
                "duplicate step name",
            ));
        }
    }

    let mut parents: Vec<Vec<usize>> = Vec::with_capacity(doc.steps.len());
    for step in &doc.steps {
        let at = Some(step.name.as_str());
        check_callable(&step.handler.callable, &step.name)?;
        if !step.handler.initialization.is_object() {
            return Err(Error::template(
                None,
                at,
                "handler.initialization must be a mapping",
            ));
        }
        let r = &step.retry;
        if r.max_attempts == 0 {
            return Err(Error::template(
                None,
                at,
                "retry.max_attempts must be at least 1",
            ));
        }
        if r.backoff_base_ms > r.max_backoff_ms {
            return Err(Error::template(
                None,
                at,
                "retry.backoff_base_ms must not exceed retry.max_backoff_ms",
            ));
        }
        if r.max_backoff_ms > i32::MAX as u64 || r.max_attempts > 10_000 {
            return Err(Error::template(None, at, "retry settings out of range"));
        }
        if step.timeout_seconds == 0 || step.timeout_seconds > 86_400 {
            return Err(Error::template(
                None,
                at,
                "timeout_seconds must be between 1 and 86400",
            ));
        }
        let mut ps = Vec::with_capacity(step.dependencies.len());
        for dep in &step.dependencies {
            let Some(&p) = index.get(dep.as_str()) else {
                return Err(Error::template(
                    None,
                    at,
                    format!("unknown dependency '{dep}'"),
                ));
            };
            if dep == &step.name {
                return Err(Error::template(None, at, "a step cannot depend on itself"));
            }
            if ps.contains(&p) {
                return Err(Error::template(
                    None,
                    at,
                    format!("dependency '{dep}' listed twice"),
                ));
            }
            ps.push(p);
        }
        parents.push(ps);
    }

    let order = topological_order(&doc, &parents)?;
    let mut new_index = vec![0usize; order.len()];
    for (new, &old) in order.iter().enumerate() {
        new_index[old] = new;
    }
    let names: Vec<Arc<str>> = doc
        .steps
        .iter()
        .map(|s| Arc::from(s.name.as_str()))
        .collect();
    let names_in_order: Vec<Arc<str>> = order.iter().map(|&old| names[old].clone()).collect();
    let mut steps: Vec<StepTemplate> = order
        .iter()
        .map(|&old| {
            let s = &doc.steps[old];
            StepTemplate {
                name: names[old].clone(),
                handler_class: Arc::from(s.handler.callable.as_str()),
                initialization: Arc::new(s.handler.initialization.clone()),
                parents: parents[old].iter().map(|&p| new_index[p]).collect(),
                parent_names: parents[old].iter().map(|&p| names[p].clone()).collect(),
                ancestors: Arc::from(""),
                child_count: 0,
                retry: s.retry.clone(),
                timeout_seconds: s.timeout_seconds,
                flow: Arc::new(StepFlow::default()),
            }
        })
        .collect();
    compile_flow(&doc, &order, &mut steps)?;
    let schedules = compile_schedules(&doc)?;
    for i in 0..steps.len() {
        for p in steps[i].parents.clone() {
            steps[p].child_count += 1;
        }
    }
    // Parents come before children, so each step's ancestors are known when it is reached.
    let mut ancestry: Vec<Vec<bool>> = Vec::with_capacity(steps.len());
    for (i, step) in steps.iter_mut().enumerate() {
        let mut mine = vec![false; i];
        for &p in &step.parents {
            mine[p] = true;
            for (a, &is) in ancestry[p].iter().enumerate() {
                mine[a] |= is;
            }
        }
        let joined: Vec<&str> = (0..i)
            .filter(|&a| mine[a])
            .map(|a| &*names_in_order[a])
            .collect();
        step.ancestors = Arc::from(joined.join(",").as_str());
        ancestry.push(mine);
    }
    let step_index = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.clone(), i))
        .collect();

    Ok(Template {
        namespace: Arc::from(doc.namespace.as_str()),
        name: Arc::from(doc.name.as_str()),
        version: Arc::from(doc.version.as_str()),
        description: doc.description.clone(),
        steps,
        doc,
        step_index,
        schedules,
    })
}

/// A flow-control or schedule error, naming the template (and the step, when it has one).
fn in_template(doc: &TemplateDoc, e: Error) -> Error {
    match e {
        Error::Template { location, message } => Error::Template {
            location,
            message: format!("template {}/{}: {message}", doc.namespace, doc.name),
        },
        other => other,
    }
}

/// Each step's limits: its own concurrency limit or else the template's, and its rate limit.
/// A template's limit is counted per template (its steps share it), a step's per step, unless
/// a `name` makes them shared.
fn compile_flow(doc: &TemplateDoc, order: &[usize], steps: &mut [StepTemplate]) -> Result<()> {
    let scope = format!("{}/{}", doc.namespace, doc.name);
    let template_limit = doc
        .concurrency
        .as_ref()
        .map(|c| flow::concurrency(c, &scope, None))
        .transpose()
        .map_err(|e| in_template(doc, e))?;
    for (step, &old) in steps.iter_mut().zip(order) {
        let written = &doc.steps[old];
        let step_scope = format!("{scope}/{}", written.name);
        let concurrency = match &written.concurrency {
            Some(c) => Some(flow::concurrency(c, &step_scope, Some(&written.name))),
            None => template_limit.clone().map(Ok),
        }
        .transpose()
        .map_err(|e| in_template(doc, e))?;
        let rate = written
            .rate_limit
            .as_ref()
            .map(|r| flow::rate(r, &step_scope, &written.name))
            .transpose()
            .map_err(|e| in_template(doc, e))?;
        step.flow = Arc::new(StepFlow { concurrency, rate });
    }
    Ok(())
}

fn compile_schedules(doc: &TemplateDoc) -> Result<Vec<crate::schedule::Schedule>> {
    let target = (
        doc.namespace.as_str(),
        doc.name.as_str(),
        doc.version.as_str(),
    );
    let mut out: Vec<crate::schedule::Schedule> = Vec::with_capacity(doc.schedules.len());
    for s in &doc.schedules {
        let compiled =
            crate::schedule::compile_in_template(s, target).map_err(|e| in_template(doc, e))?;
        if out.iter().any(|o| o.name == compiled.name) {
            return Err(in_template(
                doc,
                Error::template(
                    None,
                    None,
                    format!("schedule {:?} is declared twice", s.name),
                ),
            ));
        }
        out.push(compiled);
    }
    Ok(out)
}

/// Kahn's algorithm, stable with respect to declaration order; a leftover step is on a cycle.
fn topological_order(doc: &TemplateDoc, parents: &[Vec<usize>]) -> Result<Vec<usize>> {
    let n = parents.len();
    let mut remaining: Vec<usize> = parents.iter().map(Vec::len).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (child, ps) in parents.iter().enumerate() {
        for &p in ps {
            children[p].push(child);
        }
    }
    let mut order = Vec::with_capacity(n);
    let mut ready: std::collections::BTreeSet<usize> =
        (0..n).filter(|&i| remaining[i] == 0).collect();
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &c in &children[i] {
            remaining[c] -= 1;
            if remaining[c] == 0 {
                ready.insert(c);
            }
        }
    }
    if order.len() < n {
        let on_cycle = (0..n).find(|&i| remaining[i] > 0).unwrap_or(0);
        return Err(Error::template(
            None,
            Some(&doc.steps[on_cycle].name),
            "dependency cycle detected",
        ));
    }
    Ok(order)
}

fn check_name(what: &str, value: &str, step: Option<&str>) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::template(
            None,
            step,
            format!(
                "{what} {value:?} is invalid: use 1-{MAX_NAME_LEN} letters, digits, '_', '-' or '.'"
            ),
        ))
    }
}

/// `MAJOR.MINOR.PATCH`, digits only.
fn check_version(version: &str) -> Result<()> {
    let parts: Vec<&str> = version.split('.').collect();
    let ok = parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(Error::template(
            None,
            None,
            format!("version {version:?} is invalid: expected MAJOR.MINOR.PATCH, e.g. \"1.0.0\""),
        ))
    }
}

/// A Ruby constant path such as `Billing::ChargeCardHandler`.
fn check_callable(callable: &str, step: &str) -> Result<()> {
    let ok = !callable.is_empty()
        && callable.len() <= 256
        && callable.split("::").all(|seg| {
            let mut chars = seg.chars();
            matches!(chars.next(), Some(c) if c.is_ascii_uppercase())
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(Error::template(
            None,
            Some(step),
            format!("handler.callable {callable:?} is not a Ruby constant name like \"Billing::ChargeHandler\""),
        ))
    }
}

#[cfg(test)]
mod tests {
    use crate::error::Error;
    use crate::template::parse_str;

    const LINEAR: &str = r#"
name: mathematical_sequence
namespace: linear_workflow
version: "1.0.0"
steps:
  - name: s1
    handler: { callable: Demo::S1 }
  - name: s2
    handler: { callable: Demo::S2, initialization: { factor: 2 } }
    dependencies: [s1]
    retry: { max_attempts: 5 }
    timeout_seconds: 10
"#;

    fn err(text: &str) -> String {
        match parse_str(text, Some("t.yaml")) {
            Err(e @ Error::Template { .. }) => e.to_string(),
            other => panic!("expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn parses_and_applies_defaults() {
        let t = parse_str(LINEAR, None).unwrap();
        assert_eq!(
            t.key(),
            ("linear_workflow", "mathematical_sequence", "1.0.0")
        );
        assert_eq!(t.steps.len(), 2);
        assert_eq!(t.steps[0].retry.max_attempts, 3);
        assert_eq!(t.steps[0].retry.backoff_base_ms, 1000);
        assert_eq!(t.steps[0].retry.max_backoff_ms, 30_000);
        assert!(t.steps[0].retry.retryable);
        assert_eq!(t.steps[0].timeout_seconds, 300);
        assert_eq!(t.steps[1].retry.max_attempts, 5);
        assert_eq!(t.steps[1].parents, vec![0]);
        assert_eq!(t.steps[1].initialization["factor"], 2);
        assert_eq!(t.roots().collect::<Vec<_>>(), vec![0]);
    }

    #[test]
    fn orders_steps_topologically() {
        let t = parse_str(
            r#"{"name":"d","namespace":"n","version":"1.0.0","steps":[
              {"name":"end","handler":{"callable":"E"},"dependencies":["b","c"]},
              {"name":"b","handler":{"callable":"B"},"dependencies":["start"]},
              {"name":"c","handler":{"callable":"C"},"dependencies":["start"]},
              {"name":"start","handler":{"callable":"S"}}]}"#,
            None,
        )
        .unwrap();
        let names: Vec<&str> = t.steps.iter().map(|s| &*s.name).collect();
        assert_eq!(names, vec!["start", "b", "c", "end"]);
        assert_eq!(t.steps[3].parents, vec![1, 2]);
        let ancestors: Vec<&str> = t.steps.iter().map(|s| &*s.ancestors).collect();
        assert_eq!(ancestors, vec!["", "start", "start", "start,b,c"]);
        let children: Vec<u32> = t.steps.iter().map(|s| s.child_count).collect();
        assert_eq!(children, vec![2, 1, 1, 0]);
    }

    #[test]
    fn rejects_unknown_dependency_naming_file_and_step() {
        let e = err(&LINEAR.replace("[s1]", "[nope]"));
        assert_eq!(e, "t.yaml: step 's2': unknown dependency 'nope'");
    }

    #[test]
    fn rejects_cycles() {
        let e = err(&LINEAR.replace(
            "handler: { callable: Demo::S1 }",
            "handler: { callable: Demo::S1 }\n    dependencies: [s2]",
        ));
        assert!(e.contains("dependency cycle"), "{e}");
        assert!(e.starts_with("t.yaml: step 's"), "{e}");
    }

    #[test]
    fn rejects_self_dependency() {
        let e = err(&LINEAR.replace("[s1]", "[s2]"));
        assert!(e.contains("step 's2'"), "{e}");
    }

    #[test]
    fn rejects_duplicate_step_names() {
        let e = err(&LINEAR.replace("name: s2", "name: s1").replace("[s1]", "[]"));
        assert_eq!(e, "t.yaml: step 's1': duplicate step name");
    }

    #[test]
    fn rejects_empty_templates() {
        let e = err("name: x\nnamespace: n\nversion: \"1.0.0\"\nsteps: []\n");
        assert_eq!(e, "t.yaml: template has no steps");
        let e = err("name: x\nnamespace: n\nversion: \"1.0.0\"\n");
        assert_eq!(e, "t.yaml: template has no steps");
    }

    #[test]
    fn rejects_unknown_keys_at_top_and_in_steps() {
        let e = err(&format!("{LINEAR}colour: blue\n"));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = err(&LINEAR.replace("timeout_seconds: 10", "timeout_secs: 10"));
        assert!(e.starts_with("t.yaml: step 's2': "), "{e}");
        assert!(e.contains("unknown field `timeout_secs`"), "{e}");
    }

    #[test]
    fn rejects_bad_versions() {
        for v in ["\"1.0\"", "\"v1.0.0\"", "1.0", "\"1.0.x\""] {
            let e = err(&LINEAR.replace("\"1.0.0\"", v));
            assert!(e.starts_with("t.yaml: version"), "{v}: {e}");
        }
    }

    #[test]
    fn rejects_bad_namespace_and_callable() {
        let e = err(&LINEAR.replace("linear_workflow", "Linear-Workflow"));
        assert!(e.contains("namespace"), "{e}");
        let e = err(&LINEAR.replace("Demo::S1", "system('rm')"));
        assert!(
            e.contains("step 's1'") && e.contains("handler.callable"),
            "{e}"
        );
    }

    #[test]
    fn rejects_bad_retry_settings() {
        let e = err(&LINEAR.replace("max_attempts: 5", "max_attempts: 0"));
        assert!(e.contains("step 's2': retry.max_attempts"), "{e}");
        let e = err(&LINEAR.replace("timeout_seconds: 10", "timeout_seconds: 0"));
        assert!(e.contains("timeout_seconds"), "{e}");
    }

    #[test]
    fn compiles_flow_limits_per_step_with_the_templates_as_default() {
        let t = parse_str(
            &LINEAR
                .replace(
                    "steps:\n",
                    "concurrency: { key: context.account_id, limit: 2 }\nsteps:\n",
                )
                .replace(
                    "timeout_seconds: 10",
                    "timeout_seconds: 10\n    rate_limit: { key: api, limit: 20, per: 1 }\n    concurrency: { key: context.a.b, limit: 3, name: shared }",
                ),
            None,
        )
        .unwrap();
        let ctx = serde_json::json!({"account_id": "acct_1", "a": {"b": 7}});
        assert_eq!(
            t.steps[0].flow.resolve(&ctx),
            Some(
                serde_json::json!({"concurrency": {"key": "linear_workflow/mathematical_sequence:acct_1", "limit": 2}})
            )
        );
        assert_eq!(
            t.steps[1].flow.resolve(&ctx),
            Some(serde_json::json!({
                "concurrency": {"key": "shared:7", "limit": 3},
                "rate": {"key": "linear_workflow/mathematical_sequence/s2:api", "limit": 20, "per": 1.0}}))
        );
        assert_eq!(
            parse_str(LINEAR, None).unwrap().steps[0].flow.resolve(&ctx),
            None
        );
    }

    #[test]
    fn rejects_bad_flow_limits_and_schedules_naming_template_and_step() {
        let with_step = |extra: &str| {
            err(&LINEAR.replace(
                "timeout_seconds: 10",
                &format!("timeout_seconds: 10\n    {extra}"),
            ))
        };
        let e = with_step("concurrency: { key: context.id, limit: 0 }");
        assert_eq!(
            e,
            "t.yaml: step 's2': template linear_workflow/mathematical_sequence: concurrency.limit must be between 1 and 1000000, got 0"
        );
        let e = with_step("rate_limit: { key: \"context..id\", limit: 5, per: 1 }");
        assert!(
            e.contains("step 's2'") && e.contains("is not a path"),
            "{e}"
        );
        let e = with_step("rate_limit: { key: k, limit: 5, per: 0 }");
        assert!(e.contains("rate_limit.per"), "{e}");
        let with_schedule = |s: &str| err(&format!("{LINEAR}schedules:\n  - {s}\n"));
        let e = with_schedule("{ name: n, cron: \"61 * * * *\" }");
        assert!(
            e.starts_with(
                "t.yaml: template linear_workflow/mathematical_sequence: schedule \"n\": cron"
            ),
            "{e}"
        );
        let e = with_schedule("{ name: n, cron: \"* * * * *\", timezone: Mars/Base }");
        assert!(e.contains("timezone \"Mars/Base\" is unknown"), "{e}");
        let e = with_schedule("{ name: n, cron: \"* * * * *\", missed: twice }");
        assert!(e.contains("expected `skip` or `fire_once`"), "{e}");
    }

    #[test]
    fn rejects_non_mapping_documents() {
        let e = err("- just\n- a list\n");
        assert!(
            e.starts_with("t.yaml: not a task template: the document is a list"),
            "{e}"
        );
        // A file that is not a template is named, never echoed.
        let e = err("DATABASE_PASSWORD=hunter2 and the rest of a secrets file\n");
        assert!(e.contains("the document is a string"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}
