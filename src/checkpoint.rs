//! [`Checkpoint`]: where a consumer of the feed stands, and its text form.

use std::fmt;
use std::str::FromStr;

use crate::backend::{MEMORY_NAME, POSTGRES_NAME};
use crate::input::{InvalidInput, ParseProblem};

/// Where a consumer of [`EventStore::feed`](crate::EventStore::feed) stands: every event before
/// it in feed order has been delivered, none after it.
///
/// Opaque but serialisable as text, so that a consumer can store it (e.g. beside its read model)
/// and resume from it after a restart. It may hold more than a position: for PostgreSQL it is
/// the writing transaction and the position of the last event delivered.
///
/// ```
/// use dcbstore::Checkpoint;
/// let stored = "mem:42";
/// let checkpoint: Checkpoint = stored.parse()?;
/// assert_eq!(checkpoint.to_string(), stored);
/// assert!("42".parse::<Checkpoint>().is_err());
/// # Ok::<(), dcbstore::InvalidInput>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Checkpoint(pub(crate) Mark);

/// The backend-specific content of a [`Checkpoint`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Mark {
    /// The in-memory store: every event up to this position.
    Memory { position: u64 },
    /// PostgreSQL: every event before (`tx`, `position`) in (transaction id, position) order.
    Postgres { tx: u64, position: u64 },
}

impl Checkpoint {
    pub(crate) fn memory(position: u64) -> Self {
        Self(Mark::Memory { position })
    }

    pub(crate) fn postgres(tx: u64, position: u64) -> Self {
        Self(Mark::Postgres { tx, position })
    }

    /// The position of the event it marks (for a feed page's `next`, the bound it stands at).
    pub(crate) fn position(&self) -> u64 {
        match self.0 {
            Mark::Memory { position } | Mark::Postgres { position, .. } => position,
        }
    }

    /// Whether everything up to `other` in feed order lies at or before this checkpoint: a
    /// consumer standing here has seen the event `other` marks. `false` for checkpoints of
    /// different backends, which have no common order.
    pub(crate) fn covers(&self, other: &Checkpoint) -> bool {
        self.backend() == other.backend() && *self >= *other
    }

    /// The backend the checkpoint belongs to, for messages.
    pub(crate) fn backend(&self) -> &'static str {
        match self.0 {
            Mark::Memory { .. } => MEMORY_NAME,
            Mark::Postgres { .. } => POSTGRES_NAME,
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Mark::Memory { position } => write!(f, "mem:{position}"),
            Mark::Postgres { tx, position } => write!(f, "pg:{tx}:{position}"),
        }
    }
}

impl FromStr for Checkpoint {
    type Err = InvalidInput;

    fn from_str(s: &str) -> Result<Self, InvalidInput> {
        let invalid = || InvalidInput::from(ParseProblem::Checkpoint(s.to_string()));
        let number = |n: &str| n.parse::<u64>().map_err(|_| invalid());
        match s.split(':').collect::<Vec<_>>()[..] {
            ["mem", position] => Ok(Self::memory(number(position)?)),
            ["pg", tx, position] => Ok(Self::postgres(number(tx)?, number(position)?)),
            _ => Err(invalid()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip_and_bad_ones_are_refused() {
        for text in ["mem:0", "mem:17", "pg:0:0", "pg:123456:789"] {
            assert_eq!(text.parse::<Checkpoint>().unwrap().to_string(), text);
        }
        for bad in ["", "mem:", "mem:x", "pg:1", "pg:1:2:3", "sql:1", "mem:-1"] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn postgres_checkpoints_order_by_transaction_then_position() {
        assert!(Checkpoint::postgres(5, 100) < Checkpoint::postgres(6, 1));
        assert!(Checkpoint::postgres(5, 1) < Checkpoint::postgres(5, 2));
    }
}
