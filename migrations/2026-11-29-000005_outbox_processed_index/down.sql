DROP INDEX outbox_processed_idx;
