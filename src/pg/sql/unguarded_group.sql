-- The unguarded appends of one group, in one statement. $1 is a JSONB array of their events in
-- order, each with the index of its append in "append". An append writes its events only if
-- none of its event ids is stored yet (else it is a replay, a conflict or a duplicate, which the
-- caller tells apart from the stored rows). Positions are drawn in array order.
-- Returns, per event, the columns every append statement returns (sql::APPENDED): position,
-- event_id, existed, then (for stored events) event_type, tags, payload, metadata, and the writing
-- transaction as text (tx); and last the index of its append ("append").
-- __SCHEMA__ is replaced by the store's validated, quoted schema name.
WITH "batch" AS (
    SELECT *
    FROM ROWS FROM (
        jsonb_to_recordset($1) AS ("append" int, event_id uuid, event_type text, tags text[],
                                   payload jsonb, metadata jsonb)
    ) WITH ORDINALITY AS b("append", event_id, event_type, tags, payload, metadata, ord)
), "existing" AS MATERIALIZED (
    SELECT b."append", e."position", e.event_id, e.event_type, e.tags, e.payload, e.metadata,
           e.tx_id
    FROM "batch" b
    JOIN __SCHEMA__."events" e ON e.event_id = b.event_id
), "inserted" AS (
    INSERT INTO __SCHEMA__."events" (event_id, event_type, tags, payload, metadata)
    SELECT b.event_id, b.event_type, b.tags, b.payload, b.metadata
    FROM "batch" b
    WHERE NOT EXISTS (SELECT 1 FROM "existing" x WHERE x."append" = b."append")
    ORDER BY b.ord
    RETURNING "position", event_id, tx_id
)
SELECT i."position", i.event_id, FALSE AS existed, NULL::text AS event_type, NULL::text[] AS tags,
       NULL::jsonb AS payload, NULL::jsonb AS metadata, i.tx_id::text AS tx, b."append"
FROM "inserted" i
JOIN "batch" b ON b.event_id = i.event_id
UNION ALL
SELECT "position", event_id, TRUE, event_type, tags, payload, metadata, tx_id::text, "append"
FROM "existing"
