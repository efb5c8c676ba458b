-- Transactional outbox: a change to a key or plan writes its row here in the same
-- transaction. The relay applies rows in id order to the Redis projection (projected_at),
-- then publishes their key events in the same order (processed_at). A crash repeats a step,
-- never skips one; a broker outage delays the events but not the projection.
CREATE TABLE outbox (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at    timestamptz NOT NULL DEFAULT now(),
    aggregate     text NOT NULL CHECK (aggregate IN ('key', 'plan')),
    aggregate_id  uuid NOT NULL,
    change        text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    projected_at  timestamptz,
    processed_at  timestamptz
);

CREATE INDEX outbox_pending_idx ON outbox (id) WHERE processed_at IS NULL;
