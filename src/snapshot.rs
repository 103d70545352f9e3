//! [`ReadSnapshot`]: what a read saw, carried into the condition of the append it decides.

use crate::backend::{MEMORY_NAME, POSTGRES_NAME};
use std::fmt;
use std::str::FromStr;

use crate::error::{InvalidInput, ParseProblem};
use crate::fnv;
use crate::query::Query;

/// What a read saw: the set of committed writes visible to it.
///
/// Every [`ReadResult`](crate::ReadResult) carries the snapshot it was read in, and the
/// [`AppendCondition`](crate::AppendCondition) derived from it
/// ([`ReadResult::append_condition`](crate::ReadResult::append_condition)) carries it on to the
/// append. There the guard fails for every matching event the read could not see, *whatever its
/// position*: positions are drawn when a row is inserted and transactions commit in any order,
/// so an event can become visible after a read that already returned a higher position.
///
/// For [`PgEventStore`](crate::PgEventStore) it is PostgreSQL's snapshot of the read statement
/// (`pg_current_snapshot()`: the oldest running transaction, the next transaction id, and the
/// transactions in progress); for [`MemoryEventStore`](crate::MemoryEventStore), whose reads
/// see a prefix of the log, the position of the newest event. A snapshot only means something to
/// the database (for PostgreSQL: the cluster) it was read from; a store refuses a snapshot of
/// the other backend.
///
/// It is opaque but serialisable as text, so a decision can cross a process boundary (a form
/// shown to a user, posted back later) and still be guarded by what was shown:
///
/// ```
/// use dcbstore::{Event, EventStore, MemoryEventStore, Query, QueryItem, ReadOptions, ReadSnapshot};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> dcbstore::Result<()> {
/// let store = MemoryEventStore::new();
/// store.append([Event::new("A", serde_json::json!({}))], None).await?;
/// let read = store.read(&Query::all(), ReadOptions::default()).await?;
/// let token = read.snapshot().to_string();
/// assert_eq!(token, "mem:1");
/// let back: ReadSnapshot = token.parse()?;
/// assert_eq!(&back, read.snapshot());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReadSnapshot(pub(crate) Snapshot);

/// The backend-specific content of a [`ReadSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Snapshot {
    /// The in-memory store: the read saw exactly the events up to this position.
    Memory { head: u64 },
    /// PostgreSQL: the read statement's snapshot.
    Postgres(PgSnapshot),
}

/// PostgreSQL's `pg_snapshot`: transactions below `xmin` are finished, those at or above `xmax`
/// had not started, and of those in between the ones in `xip` were in progress.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PgSnapshot {
    xmin: u64,
    xmax: u64,
    xip: Vec<u64>,
    /// Set by [`ReadResult::append_condition`](crate::ReadResult::append_condition): the
    /// [`fingerprint`] of the condition's query and `after` when the read returned every event
    /// of that query it could see above the events it skipped (all but a backward read from a
    /// position). A guard then needs to look only at what the snapshot could not see.
    covers: Option<u64>,
}

impl PgSnapshot {
    /// Parses PostgreSQL's text form `xmin:xmax:xip,xip,…`, and the mark of a derived condition
    /// after it (`:fingerprint`) when there is one.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        let xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let xip = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        let ordered = xmin <= xmax
            && xip.iter().all(|x| (xmin..xmax).contains(x))
            && xip.windows(2).all(|w| w[0] < w[1]);
        let covers = parts.next().map(str::parse).transpose().ok()?;
        (parts.next().is_none() && ordered).then_some(Self {
            xmin,
            xmax,
            xip,
            covers,
        })
    }

    /// The snapshot as PostgreSQL writes it (`xmin:xmax:xip`), for `::pg_snapshot`.
    #[cfg(feature = "postgres")]
    pub(crate) fn sql_text(&self) -> String {
        Self {
            covers: None,
            ..self.clone()
        }
        .to_string()
    }

    /// Whether a condition of `query` and `after` is the one derived from the read this snapshot
    /// comes from (see `covers`): then only events this snapshot could not see can fail it.
    #[cfg(feature = "postgres")]
    pub(crate) fn covers(&self, query: &Query, after: Option<u64>) -> bool {
        self.covers == Some(fingerprint(query, after))
    }

    /// The same snapshot, marked as covering the condition of `query` and `after`.
    pub(crate) fn covering(&self, query: &Query, after: Option<u64>) -> Self {
        Self {
            covers: Some(fingerprint(query, after)),
            ..self.clone()
        }
    }
}

/// A stable hash (FNV-1a) of a condition's query and `after`: what a snapshot covers.
fn fingerprint(query: &Query, after: Option<u64>) -> u64 {
    fnv::hash(format!("{query:?}|{after:?}").as_bytes())
}

impl fmt::Display for PgSnapshot {
    /// PostgreSQL's text form, as `pg_snapshot` reads it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:", self.xmin, self.xmax)?;
        for (i, x) in self.xip.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{x}")?;
        }
        if let Some(covers) = self.covers {
            write!(f, ":{covers}")?;
        }
        Ok(())
    }
}

impl ReadSnapshot {
    pub(crate) fn memory(head: u64) -> Self {
        Self(Snapshot::Memory { head })
    }

    pub(crate) fn postgres(snapshot: PgSnapshot) -> Self {
        Self(Snapshot::Postgres(snapshot))
    }

    /// The backend the snapshot comes from, for messages.
    pub(crate) fn backend(&self) -> &'static str {
        match self.0 {
            Snapshot::Memory { .. } => MEMORY_NAME,
            Snapshot::Postgres(_) => POSTGRES_NAME,
        }
    }
}

impl fmt::Display for ReadSnapshot {
    /// `mem:<head>` or `pg:<xmin>:<xmax>:<xip,…>` (with `:<mark>` when it is the snapshot of a
    /// condition derived from its read); [`FromStr`] reads it back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Snapshot::Memory { head } => write!(f, "mem:{head}"),
            Snapshot::Postgres(s) => write!(f, "pg:{s}"),
        }
    }
}

impl FromStr for ReadSnapshot {
    type Err = InvalidInput;

    /// Reads the text [`ReadSnapshot`]'s `Display` writes.
    ///
    /// # Errors
    ///
    /// [`ParseProblem::Snapshot`](crate::ParseProblem::Snapshot) for anything else.
    fn from_str(s: &str) -> Result<Self, InvalidInput> {
        let parsed = if let Some(head) = s.strip_prefix("mem:") {
            head.parse().ok().map(Self::memory)
        } else if let Some(pg) = s.strip_prefix("pg:") {
            PgSnapshot::parse(pg).map(Self::postgres)
        } else {
            None
        };
        parsed.ok_or_else(|| ParseProblem::Snapshot(s.chars().take(100).collect()).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_text_form_round_trips() {
        for text in [
            "5:5:",
            "100:120:100,107,119",
            "0:0:",
            "100:120:107:4711",
            "100:120::99",
        ] {
            let s = PgSnapshot::parse(text).expect(text);
            assert_eq!(s.to_string(), text);
            let token = ReadSnapshot::postgres(s).to_string();
            assert_eq!(token.parse::<ReadSnapshot>().unwrap().to_string(), token);
        }
    }

    #[test]
    fn malformed_snapshots_are_refused() {
        for bad in [
            "",
            "pg:",
            "pg:1:2",
            "pg:2:1:",
            "pg:1:5:7",
            "pg:1:5:3,2",
            "pg:1:5:x",
            "pg:1:5:2:",
            "pg:1:5::x",
            "pg:1:5::7:8",
            "mem:",
            "mem:-1",
            "other:1",
        ] {
            assert!(
                matches!(
                    bad.parse::<ReadSnapshot>(),
                    Err(InvalidInput::Parse(ParseProblem::Snapshot(_)))
                ),
                "{bad:?} accepted"
            );
        }
    }
}
