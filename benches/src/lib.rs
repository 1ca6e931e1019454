//! Shared pieces of the benchmarks: percentiles and the example workflows' arithmetic as a
//! Rust handler.

use serde_json::Value;
use tasker_core::{StepEvent, StepOutcome};

/// p-th percentile (0..=100) of sorted samples, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The example DAGs' rule in Rust: a root squares `even_number`; other steps square the
/// product of their parents' results.
pub fn square_of_parents(event: &StepEvent) -> StepOutcome {
    let as_u128 = |v: &Value| v.to_string().parse::<u128>().unwrap_or(0);
    let base: u128 = if event.parent_names.is_empty() {
        event.context.get("even_number").map(as_u128).unwrap_or(0)
    } else {
        event
            .parent_names
            .iter()
            .map(|p| event.dependency_result(p).map(as_u128).unwrap_or(0))
            .product()
    };
    let squared = base.saturating_mul(base);
    StepOutcome::Success {
        result: serde_json::from_str(&squared.to_string()).unwrap_or(Value::Null),
        metadata: Value::Object(Default::default()),
    }
}

/// A handler that does nothing.
pub fn noop(_event: &StepEvent) -> StepOutcome {
    StepOutcome::Success {
        result: Value::Object(Default::default()),
        metadata: Value::Object(Default::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
    }
}
