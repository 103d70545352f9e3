//! The checks every backend makes before it touches its log, and the classification of an
//! append whose ids are stored already.

use crate::checkpoint::Checkpoint;
use crate::condition::AppendCondition;
use crate::error::{ArgumentProblem, Error, InvalidInput, Result};
use crate::event::{Event, validate_batch};
use crate::options::{Consistency, ReadOptions};
use crate::query::Query;
use crate::results::AppendResult;
use crate::snapshot::ReadSnapshot;
use crate::validate;
use uuid::Uuid;

/// Classifies an append some of whose ids are stored already (`stored`: id → its feed
/// checkpoint, which holds its position, and stored event): all of them with the same content is an idempotent replay; all of them but one
/// stored with other content is an idempotency conflict; some of them a duplicate.
pub(crate) fn replay_or_duplicate<'a>(
    events: &[Event],
    stored: impl Fn(&Uuid) -> Option<(Checkpoint, &'a Event)>,
) -> Result<AppendResult> {
    let found: Vec<Option<(Checkpoint, &Event)>> = events.iter().map(|e| stored(&e.id)).collect();
    if found.iter().any(Option::is_none) {
        let event_id = events
            .iter()
            .zip(&found)
            .find_map(|(e, f)| f.map(|_| e.id))
            .expect("some id is stored");
        return Err(Error::DuplicateEventId { event_id });
    }
    let mut positions = Vec::with_capacity(events.len());
    let mut last = None;
    for (event, (checkpoint, original)) in events.iter().zip(found.into_iter().flatten()) {
        if !event.same_content(original) {
            return Err(Error::IdempotencyConflict {
                event_id: event.id,
                position: checkpoint.position(),
            });
        }
        positions.push(checkpoint.position());
        last = last.max(Some(checkpoint));
    }
    Ok(AppendResult {
        positions,
        checkpoint: last.expect("an append has events"),
        replay: true,
    })
}

/// Checks a read's input the same way for every backend; `backend` names the store's, whose
/// checkpoints alone a read may have to include.
pub(crate) fn check_read(
    query: &Query,
    options: &ReadOptions,
    backend: &'static str,
) -> Result<(), InvalidInput> {
    query.validate()?;
    if let Consistency::Includes(checkpoint) = &options.consistency {
        own_checkpoint(checkpoint, backend)?;
    }
    options.from.map(validate::position).transpose()?;
    if let Some(limit) = options.limit
        && i64::try_from(limit).is_err()
    {
        return Err(ArgumentProblem::LimitOutOfRange(limit).into());
    }
    Ok(())
}

/// Checks an append's input the same way for every backend; `backend` names the store's, whose
/// snapshots alone it accepts.
pub(crate) fn check_append(
    events: &[Event],
    condition: Option<&AppendCondition>,
    max_batch_size: usize,
    backend: &'static str,
) -> Result<(), InvalidInput> {
    validate_batch(events, max_batch_size)?;
    condition.map(|c| check_condition(c, backend)).transpose()?;
    Ok(())
}

/// Checks a condition (of an append, or to read what would fail it) the same way for every
/// backend; `backend` names the store's, whose snapshots alone it accepts.
pub(crate) fn check_condition(
    condition: &AppendCondition,
    backend: &'static str,
) -> Result<(), InvalidInput> {
    condition.fail_if_events_match.validate()?;
    condition.after.map(validate::position).transpose()?;
    if let Some(found) = condition.snapshot.as_ref().map(ReadSnapshot::backend)
        && found != backend
    {
        return Err(ArgumentProblem::ForeignSnapshot {
            expected: backend,
            found,
        }
        .into());
    }
    Ok(())
}

/// Checks a feed's arguments: the query, a positive `limit`, and a checkpoint of `backend`.
pub(crate) fn check_feed(
    query: &Query,
    after: Option<&Checkpoint>,
    limit: usize,
    backend: &'static str,
) -> Result<()> {
    query.validate()?;
    if limit == 0 {
        return Err(InvalidInput::from(ArgumentProblem::ZeroFeedLimit).into());
    }
    after.map(|a| own_checkpoint(a, backend)).transpose()?;
    Ok(())
}

/// Refuses a checkpoint of another backend than `backend`.
fn own_checkpoint(checkpoint: &Checkpoint, backend: &'static str) -> Result<(), InvalidInput> {
    let found = checkpoint.backend();
    if found != backend {
        return Err(ArgumentProblem::ForeignCheckpoint {
            expected: backend,
            found,
        }
        .into());
    }
    Ok(())
}
