//! Task and step state machines as pure transition tables (ARCHITECTURE §5): the states, the
//! names stored for them, and which changes are legal. Operator controls check each change
//! against these tables before making it (an illegal one is an error, never a no-op); the step
//! cycle's changes are made inside the SQL functions of `migrations/…_step_cycle.up.sql`,
//! along the same edges (`core/tests/sql_functions.rs` checks the rows they leave).

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

macro_rules! states {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            /// The lowercase name stored in the database and shown to Ruby.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self, Error> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(Error::InvalidInput(format!(
                        concat!("unknown ", stringify!($name), " {:?}"), other))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states!(
    /// State of a workflow step.
    StepState {
        Pending => "pending",
        Enqueued => "enqueued",
        InProgress => "in_progress",
        WaitingForRetry => "waiting_for_retry",
        Complete => "complete",
        Error => "error",
        Cancelled => "cancelled",
        ResolvedManually => "resolved_manually",
    }
);

states!(
    /// State of a task.
    TaskState {
        Pending => "pending",
        InProgress => "in_progress",
        Complete => "complete",
        Error => "error",
        Cancelled => "cancelled",
    }
);

impl StepState {
    /// Whether the step machine allows `self → to`.
    pub fn can_transition_to(self, to: StepState) -> bool {
        use StepState::*;
        matches!(
            (self, to),
            (Pending, Enqueued)
                | (Enqueued, InProgress)
                | (InProgress, InProgress)
                | (InProgress, Complete)
                | (InProgress, WaitingForRetry)
                | (InProgress, Error)
                | (WaitingForRetry, Enqueued)
                | (Error, Enqueued)
                | (Error, ResolvedManually)
                | (Pending | Enqueued | WaitingForRetry, Cancelled)
        )
    }

    /// Complete or resolved: children may run.
    pub fn satisfies_dependents(self) -> bool {
        matches!(self, StepState::Complete | StepState::ResolvedManually)
    }

    /// Work is queued, running or scheduled to run again.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            StepState::Enqueued | StepState::InProgress | StepState::WaitingForRetry
        )
    }

    /// Check a transition, producing a descriptive error when it is not allowed.
    pub fn check_transition(self, to: StepState) -> Result<(), Error> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(Error::InvalidTransition(format!(
                "step cannot move from {self} to {to}"
            )))
        }
    }
}

impl TaskState {
    /// Whether the task machine allows `self → to`.
    pub fn can_transition_to(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, InProgress)
                | (InProgress, Complete)
                | (InProgress, Error)
                | (Error, InProgress)
                | (Pending | InProgress | Error, Cancelled)
        )
    }

    /// complete, error or cancelled.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Complete | TaskState::Error | TaskState::Cancelled
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_STEPS: [StepState; 8] = [
        StepState::Pending,
        StepState::Enqueued,
        StepState::InProgress,
        StepState::WaitingForRetry,
        StepState::Complete,
        StepState::Error,
        StepState::Cancelled,
        StepState::ResolvedManually,
    ];

    #[test]
    fn names_round_trip() {
        for s in ALL_STEPS {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), s);
        }
        assert!("done".parse::<StepState>().is_err());
        assert_eq!(
            "in_progress".parse::<TaskState>().unwrap(),
            TaskState::InProgress
        );
    }

    #[test]
    fn step_table_matches_the_architecture() {
        let allowed: Vec<(StepState, StepState)> = ALL_STEPS
            .iter()
            .flat_map(|&a| ALL_STEPS.iter().map(move |&b| (a, b)))
            .filter(|(a, b)| a.can_transition_to(*b))
            .collect();
        use StepState::*;
        assert_eq!(
            allowed,
            vec![
                (Pending, Enqueued),
                (Pending, Cancelled),
                (Enqueued, InProgress),
                (Enqueued, Cancelled),
                (InProgress, InProgress),
                (InProgress, WaitingForRetry),
                (InProgress, Complete),
                (InProgress, Error),
                (WaitingForRetry, Enqueued),
                (WaitingForRetry, Cancelled),
                (Error, Enqueued),
                (Error, ResolvedManually),
            ]
        );
    }

    #[test]
    fn terminal_steps_never_leave_except_by_operator() {
        assert!(StepState::Complete
            .check_transition(StepState::Enqueued)
            .is_err());
        assert!(StepState::Cancelled
            .check_transition(StepState::Enqueued)
            .is_err());
        assert!(StepState::InProgress
            .check_transition(StepState::Cancelled)
            .is_err());
    }

    #[test]
    fn task_table() {
        use TaskState::*;
        assert!(Pending.can_transition_to(InProgress));
        assert!(InProgress.can_transition_to(Complete));
        assert!(Error.can_transition_to(InProgress));
        assert!(!Complete.can_transition_to(InProgress));
        assert!(!Cancelled.can_transition_to(InProgress));
        assert!(Complete.is_terminal() && Error.is_terminal() && Cancelled.is_terminal());
        assert!(!InProgress.is_terminal());
    }
}
