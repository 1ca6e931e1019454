//! Task templates: the YAML (or JSON) files that declare a workflow's DAG of steps.
//!
//! A template is parsed strictly (unknown keys are errors), validated (duplicate steps,
//! unknown dependencies, cycles, bad identifiers) and compiled into a [`Template`] whose steps
//! are in topological order with their parents resolved to indices.

pub mod flow;
mod model;
mod validate;

pub use model::{HandlerSpec, RetryPolicy, StepTemplate, Template, TemplateDoc};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Parse and validate one template from YAML or JSON text. `file` names the source in errors.
pub fn parse_str(text: &str, file: Option<&str>) -> Result<Template> {
    let doc = model::parse_doc(text).map_err(|e| match file {
        Some(f) => e.in_file(f),
        None => e,
    })?;
    validate::compile(doc).map_err(|e| match file {
        Some(f) => e.in_file(f),
        None => e,
    })
}

/// Validate and compile an already parsed document (e.g. one stored in the database).
pub fn compile_doc(doc: TemplateDoc) -> Result<Template> {
    validate::compile(doc)
}

/// Parse one template file.
pub fn load_file(path: &Path) -> Result<Template> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::template(Some(&shown), None, format!("cannot read file: {e}")))?;
    parse_str(&text, Some(&shown))
}

/// Load every template found under the given paths. A path may be a file or a directory;
/// directories are searched recursively for `*.yml`, `*.yaml` and `*.json`, in sorted order.
/// Two templates with the same namespace, name and version are an error.
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Vec<Template>> {
    let mut files = Vec::new();
    for p in paths {
        collect_files(p.as_ref(), &mut files)?;
    }
    let mut templates: Vec<Template> = Vec::with_capacity(files.len());
    for f in files {
        let t = load_file(&f)?;
        if templates.iter().any(|o| o.key() == t.key()) {
            return Err(Error::template(
                Some(&f.display().to_string()),
                None,
                format!(
                    "template {}/{}@{} is defined twice",
                    t.namespace, t.name, t.version
                ),
            ));
        }
        templates.push(t);
    }
    Ok(templates)
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let shown = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::template(
            Some(&shown),
            None,
            format!("template path not readable: {e}"),
        )
    })?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::template(Some(&shown), None, format!("cannot list directory: {e}")))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_files(&entry, out)?;
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}
