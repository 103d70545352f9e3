-- Where each protocol consumer stands (the AppendRequest's tracking_info, GetTrackingInfo):
-- written in the transaction of the append that carries it, so that a consumer's effects and
-- its position never disagree. Run in the store's schema; idempotent.
CREATE TABLE IF NOT EXISTS tracking (
    source     text        PRIMARY KEY,
    position   bigint      NOT NULL CHECK (position >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);
