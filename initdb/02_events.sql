-- The event log of one dcbstore schema. Names are unqualified: run with search_path set to the
-- store's schema. Idempotent: safe to run again.

CREATE TABLE IF NOT EXISTS events (
    -- Unique and increasing in append order; may have gaps (rolled back appends).
    position    bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event's id: its idempotency key.
    event_id    uuid        NOT NULL,
    event_type  text        NOT NULL CHECK (event_type <> ''),
    tags        text[]      NOT NULL DEFAULT '{}',
    payload     jsonb       NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    metadata    jsonb,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    -- The writing transaction: commits can become visible out of position order, and consumers
    -- of the global log read only below the oldest transaction still running.
    tx_id       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_event_id_key UNIQUE (event_id)
);

-- Reads and guards stay index-driven: by type (and position), by tag, by payload containment.
-- The GIN indexes update in place (fastupdate off): with a pending list, every guard check would
-- scan the entries appended since the last vacuum.
CREATE INDEX IF NOT EXISTS events_type_position_idx ON events (event_type, position);
CREATE INDEX IF NOT EXISTS events_tags_idx ON events USING gin (tags) WITH (fastupdate = off);
CREATE INDEX IF NOT EXISTS events_payload_idx ON events
    USING gin (payload jsonb_path_ops) WITH (fastupdate = off);
-- A decision's guard also fails for matching events its read could not see: those written by
-- transactions at or above the read snapshot's xmin and not visible in it (a range at the end).
-- The feed reads in (tx_id, position) order from a checkpoint: one index serves both (a bulk
-- load writes many events in one transaction, so tx_id alone would leave a sort per page).
CREATE INDEX IF NOT EXISTS events_tx_id_position_idx ON events (tx_id, position);
DROP INDEX IF EXISTS events_tx_id_idx;
ALTER INDEX events_tags_idx SET (fastupdate = off);
ALTER INDEX events_payload_idx SET (fastupdate = off);

-- Where each projection stands (PgEventStore::save_checkpoint_in): written in the same transaction
-- as the projection's read model, so that model and checkpoint never disagree.
CREATE TABLE IF NOT EXISTS checkpoints (
    name       text        PRIMARY KEY,
    checkpoint text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The version of this schema, so that PgEventStore::migrate() does nothing (and takes no lock)
-- when it is current. Bump it, here and in SCHEMA_VERSION (src/pg/mod.rs), with every change.
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer     PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schema_version (version) VALUES (3) ON CONFLICT DO NOTHING;
