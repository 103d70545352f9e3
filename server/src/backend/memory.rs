//! The in-memory backend: dcbstore's `MemoryEventStore`, and the consumers' positions in a map.

use std::collections::HashMap;

use dcbstore::{AppendCondition, Event, EventStore, MemoryEventStore};
use tokio::sync::Mutex;

use super::{BackendError, Tracking};

/// An in-memory store: everything is lost when the server stops.
#[derive(Default)]
pub(crate) struct Memory {
    pub(crate) store: MemoryEventStore,
    /// Held through a tracked append, so that its check, its append and its update are one step.
    tracking: Mutex<HashMap<String, u64>>,
}

impl Memory {
    pub(crate) async fn append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
        tracking: Option<Tracking>,
    ) -> Result<u64, BackendError> {
        let Some(tracking) = tracking else {
            return Ok(self.store.append(events, condition).await?.last_position());
        };
        let mut positions = self.tracking.lock().await;
        if let Some(&recorded) = positions.get(&tracking.source)
            && tracking.position <= recorded
        {
            return Err(BackendError::TrackingNotIncreasing {
                name: tracking.source,
                position: tracking.position,
                recorded,
            });
        }
        let written = self.store.append(events, condition).await?;
        positions.insert(tracking.source, tracking.position);
        Ok(written.last_position())
    }

    pub(crate) async fn tracking(&self, source: &str) -> Option<u64> {
        self.tracking.lock().await.get(source).copied()
    }
}
