//! Writing step messages inside a state change's transaction, through the queue's circuit
//! breaker: a failing queue never rolls back the state change it belongs to.

use std::time::Duration;

use sqlx::PgConnection;

use crate::error::Result;
use crate::messaging::{queue::QueueName, StepMessage};
use crate::resilience::{BreakerRegistry, CircuitState};
use crate::store::queues;

pub(crate) struct QueueWriter {
    /// One breaker per queue, around its pgmq operations.
    pub breakers: BreakerRegistry,
    /// How long a queue write waits for a lock on the queue table.
    pub lock_timeout: Duration,
}

impl QueueWriter {
    /// Send step messages inside `conn`'s transaction through the queue's breaker. Returns
    /// whether they were sent; when not (breaker open, queue failing) the transaction is still
    /// good and the steps stay enqueued without a message, for the recovery loop.
    pub async fn send_guarded(
        &self,
        conn: &mut PgConnection,
        queue: &QueueName,
        namespace: &str,
        messages: &[StepMessage],
    ) -> Result<bool> {
        let breaker = self.breakers.get(queue.as_str());
        let Ok(permit) = breaker.try_acquire() else {
            return Ok(false);
        };
        match queues::write_queue(conn, queue, namespace, messages, None, self.lock_timeout).await {
            Ok(None) => {
                permit.success();
                Ok(true)
            }
            Ok(Some(error)) => {
                permit.failure();
                tracing::warn!(queue = %queue, error, "sending step messages failed; the recovery loop sends them later");
                Ok(false)
            }
            Err(e) => {
                permit.release();
                Err(e)
            }
        }
    }

    /// Namespaces whose queue breaker is not closed (their work waits until it closes).
    pub fn blocked_namespaces(&self) -> Vec<String> {
        self.breakers
            .all()
            .iter()
            .filter(|b| b.state() != CircuitState::Closed)
            .filter_map(|b| QueueName::namespace_of(b.name()).map(str::to_owned))
            .collect()
    }

    /// Whether a queue's breaker is open (a half-open one admits a trial).
    pub fn is_open(&self, queue: &QueueName) -> bool {
        self.breakers.get(queue.as_str()).state() == CircuitState::Open
    }
}
