DROP TABLE ingested_batches;
DROP TABLE usage_logs;
DROP FUNCTION usage_logs_drop_partitions_before(date);
DROP FUNCTION usage_logs_ensure_partitions(date, integer);
