-- key-admin deletes relayed rows older than its retention, oldest first; without this the
-- hourly prune reads the whole table to find nothing.
CREATE INDEX outbox_processed_idx ON outbox (processed_at) WHERE processed_at IS NOT NULL;
