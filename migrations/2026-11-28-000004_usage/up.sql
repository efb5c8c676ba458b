-- Usage per key and minute, range-partitioned by day (UTC). usage-ingest keeps partitions
-- created ahead and drops those past retention with the two functions below.
CREATE TABLE usage_logs (
    key_id   uuid NOT NULL,
    minute   timestamptz NOT NULL,
    allowed  bigint NOT NULL DEFAULT 0 CHECK (allowed >= 0),
    denied   bigint NOT NULL DEFAULT 0 CHECK (denied >= 0),
    cost     bigint NOT NULL DEFAULT 0 CHECK (cost >= 0),
    PRIMARY KEY (key_id, minute)
) PARTITION BY RANGE (minute);

-- Creates the daily partitions for [first_day, first_day + days) that do not exist yet, in
-- the schema usage_logs lives in; returns how many it created.
CREATE FUNCTION usage_logs_ensure_partitions(first_day date, days integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    parent_schema text;
    day date;
    part text;
    created integer := 0;
BEGIN
    SELECT n.nspname INTO parent_schema
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.oid = 'usage_logs'::regclass;
    FOR i IN 0 .. days - 1 LOOP
        day := first_day + i;
        part := 'usage_logs_' || to_char(day, 'YYYYMMDD');
        IF to_regclass(format('%I.%I', parent_schema, part)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE %I.%I PARTITION OF %I.usage_logs FOR VALUES FROM (%L) TO (%L)',
                parent_schema, part, parent_schema,
                (day::timestamp AT TIME ZONE 'UTC'),
                ((day + 1)::timestamp AT TIME ZONE 'UTC'));
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END;
$$;

-- Drops the daily partitions that end on or before `cutoff`; returns how many it dropped.
CREATE FUNCTION usage_logs_drop_partitions_before(cutoff date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    child record;
    dropped integer := 0;
BEGIN
    FOR child IN
        SELECT n.nspname AS schema_name, c.relname AS table_name
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE i.inhparent = 'usage_logs'::regclass
          AND c.relname ~ '^usage_logs_[0-9]{8}$'
          AND to_date(substring(c.relname from 12), 'YYYYMMDD') < cutoff
    LOOP
        EXECUTE format('DROP TABLE %I.%I', child.schema_name, child.table_name);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END;
$$;

SELECT usage_logs_ensure_partitions((now() AT TIME ZONE 'UTC')::date - 1, 9);

-- Batches already counted: a redelivered batch finds its id here and changes nothing.
CREATE TABLE ingested_batches (
    batch_id     uuid PRIMARY KEY,
    source       text NOT NULL,
    entries      integer NOT NULL,
    ingested_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ingested_batches_ingested_at_idx ON ingested_batches (ingested_at);
