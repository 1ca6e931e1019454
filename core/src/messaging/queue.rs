//! Namespace and queue-name validation. Queue names become table names inside pgmq
//! (`pgmq.q_<name>`), so only `[a-z0-9_]` and a bounded length ever reach SQL.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest namespace accepted (pgmq limits queue names to 47 characters, and ours are
/// `tasker_ns_<namespace>`).
pub const MAX_NAMESPACE_LEN: usize = 30;

const NAMESPACE_QUEUE_PREFIX: &str = "tasker_ns_";

/// Validate a namespace: starts with a letter, then `[a-z0-9_]`, at most 30 characters.
pub fn validate_namespace(namespace: &str) -> Result<()> {
    let mut chars = namespace.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && namespace.len() <= MAX_NAMESPACE_LEN
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "namespace {namespace:?} is invalid: use a lowercase letter followed by up to {} of [a-z0-9_]",
            MAX_NAMESPACE_LEN - 1
        )))
    }
}

/// A validated pgmq queue name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QueueName(Arc<str>);

impl QueueName {
    /// The queue that carries the steps of a namespace.
    pub fn for_namespace(namespace: &str) -> Result<Self> {
        validate_namespace(namespace)?;
        Ok(QueueName(Arc::from(format!(
            "{NAMESPACE_QUEUE_PREFIX}{namespace}"
        ))))
    }

    /// The namespace a namespace queue's name carries (`tasker_ns_orders` → `orders`).
    pub fn namespace_of(queue: &str) -> Option<&str> {
        queue.strip_prefix(NAMESPACE_QUEUE_PREFIX)
    }

    /// A fixed queue name of the engine itself (checked by a test).
    pub(crate) fn from_static(name: &'static str) -> Self {
        QueueName(Arc::from(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueName({})", self.0)
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_simple_namespaces() {
        for ns in [
            "a",
            "linear_workflow",
            "orders2",
            "a_b_c_d_e_f_g_h_i_j_k_l_m_n_o",
        ] {
            assert!(validate_namespace(ns).is_ok(), "{ns}");
        }
        assert_eq!(
            QueueName::for_namespace("orders").unwrap().as_str(),
            "tasker_ns_orders"
        );
    }

    #[test]
    fn rejects_anything_that_could_escape_an_identifier() {
        for ns in [
            "",
            "1abc",
            "_x",
            "Orders",
            "a-b",
            "a b",
            "a;drop table x",
            "a\"b",
            "é",
            "abcdefghijklmnopqrstuvwxyzabcde",
        ] {
            assert!(validate_namespace(ns).is_err(), "{ns:?}");
            assert!(QueueName::for_namespace(ns).is_err(), "{ns:?}");
        }
    }

    #[test]
    fn fixed_queue_names_are_valid_identifiers() {
        let name = crate::orchestration::requests::TASK_REQUESTS_QUEUE;
        assert!(name.len() < 48 && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
    }

    #[test]
    fn longest_queue_name_fits_pgmq() {
        let ns = "a".repeat(MAX_NAMESPACE_LEN);
        assert!(QueueName::for_namespace(&ns).unwrap().as_str().len() < 48);
    }
}
