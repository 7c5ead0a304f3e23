//! A linearizability checker for per-key register histories: the Wing–Gong search with Lowe's
//! memoization (WGL, as in Go's porcupine), over a register model with put, get and
//! compare-and-swap.
//!
//! A history is the list of [`Operation`]s clients ran on one key, each with the time it was
//! invoked, the time it completed and what it returned. An operation whose outcome is unknown
//! (it timed out or failed in a way that does not say whether it took effect) has
//! `ret: None`: it may take effect at any point after its invocation, or never (its
//! completion is open-ended). [`check`] decides whether some total order of the operations
//! respects real time (an operation that completed before another was invoked comes first)
//! and the register's sequential behaviour.
//!
//! Compare-and-swap in kv compares versions; with every write of a key using a value written
//! nowhere else, the value identifies the write and so the version: the model compares values.

mod wgl;

#[cfg(test)]
mod tests;

pub use wgl::{check, check_with_budget, DEFAULT_BUDGET};

/// A register value; every write of a history writes a distinct one.
pub type Value = u64;

/// What a client asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Input {
    /// Write `value`.
    Put(Value),
    /// Read the register.
    Get,
    /// Write `new` if the register holds `expect` (`None`: the key is absent).
    Cas {
        /// The value (version) the caller last saw, or `None` for create-if-absent.
        expect: Option<Value>,
        /// The value to write.
        new: Value,
    },
}

/// What the server answered (ignored when the outcome is unknown).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Output {
    /// A put succeeded.
    Written,
    /// A get returned this state (`None`: not found).
    Read(Option<Value>),
    /// A compare-and-swap succeeded (`true`) or was refused because the state differed.
    Swapped(bool),
    /// Not known (the operation timed out or failed ambiguously).
    Unknown,
}

/// One operation of a history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The client (task) that ran it; clients run one operation at a time.
    pub client: usize,
    /// What it asked for.
    pub input: Input,
    /// Invocation time (any monotonic unit, e.g. ns since the run started).
    pub call: u64,
    /// Completion time; `None` when the outcome is unknown (it may or may not have happened).
    pub ret: Option<u64>,
    /// The answer (ignored when `ret` is `None`).
    pub output: Output,
}

impl Operation {
    /// True when the outcome is unknown.
    pub fn is_unknown(&self) -> bool {
        self.ret.is_none() || self.output == Output::Unknown
    }
}

/// The register's sequential behaviour: the state after `input` answered `output` in state
/// `state`, or `None` if that answer is impossible there. An unknown outcome always fits (a
/// compare-and-swap then applies only if it matches).
pub fn step(state: Option<Value>, input: Input, output: Output) -> Option<Option<Value>> {
    match (input, output) {
        (Input::Put(v), Output::Written | Output::Unknown) => Some(Some(v)),
        (Input::Get, Output::Read(seen)) => (seen == state).then_some(state),
        (Input::Get, Output::Unknown) => Some(state),
        (Input::Cas { expect, new }, Output::Swapped(true)) => {
            (state == expect).then_some(Some(new))
        }
        (Input::Cas { expect, .. }, Output::Swapped(false)) => (state != expect).then_some(state),
        (Input::Cas { expect, new }, Output::Unknown) => {
            Some(if state == expect { Some(new) } else { state })
        }
        _ => None,
    }
}

/// The verdict on one history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Some linearization exists.
    Linearizable,
    /// None exists. `op` is the index (in the history given) of an operation that could not
    /// be placed when the search got furthest, after `linearized` operations.
    Violation {
        /// Index of the operation the deepest attempt could not place.
        op: usize,
        /// How many operations the deepest attempt had placed.
        linearized: usize,
    },
    /// The search gave up after its step budget.
    Undecided,
}

/// Totals over several histories, for the one-line report of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Histories checked.
    pub histories: usize,
    /// Operations in them (unknown-outcome ones included).
    pub operations: usize,
    /// Operations whose outcome was unknown.
    pub unknown: usize,
    /// Histories with no linearization.
    pub violations: usize,
    /// Histories the search could not decide within its budget.
    pub undecided: usize,
}

impl Summary {
    /// Checks every history (one per key) and adds them up; `describe` is called for each
    /// violation with the key's index, the history and the verdict (to print it).
    pub fn check_all(
        histories: &[Vec<Operation>],
        mut describe: impl FnMut(usize, &[Operation], &Verdict),
    ) -> Summary {
        let mut s = Summary::default();
        for (i, h) in histories.iter().enumerate() {
            s.histories += 1;
            s.operations += h.len();
            s.unknown += h.iter().filter(|o| o.is_unknown()).count();
            match check(h) {
                Verdict::Linearizable => {}
                v @ Verdict::Violation { .. } => {
                    s.violations += 1;
                    describe(i, h, &v);
                }
                Verdict::Undecided => s.undecided += 1,
            }
        }
        s
    }
}
