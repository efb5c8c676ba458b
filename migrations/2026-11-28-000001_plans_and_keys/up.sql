-- Plans and API keys: the source of truth that key-admin projects into Redis.

CREATE TABLE plans (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- [{"name","algorithm","limit","window_ms","burst"?}], validated by crates/domain.
    limits      jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(limits) = 'array'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- A plan that only deleted keys still reference is hidden rather than removed, so
    -- their usage history keeps its plan.
    deleted_at  timestamptz
);

CREATE UNIQUE INDEX plans_name_idx ON plans (name) WHERE deleted_at IS NULL;

CREATE TABLE api_keys (
    id                  uuid PRIMARY KEY,
    plan_id             uuid NOT NULL REFERENCES plans (id) ON DELETE RESTRICT,
    name                text,
    owner_id            text,
    prefix              text NOT NULL,
    -- The first characters of the raw key, for display. Never the whole key.
    start               text NOT NULL CHECK (length(start) <= 8),
    -- Keyed BLAKE3 of the raw key (hex). The check keeps a raw key from ever landing here.
    key_hash            text NOT NULL UNIQUE CHECK (key_hash ~ '^[0-9a-f]{64}$'),
    -- During a rotation's grace period the old secret still works until this time.
    previous_key_hash   text UNIQUE CHECK (previous_key_hash ~ '^[0-9a-f]{64}$'),
    previous_key_expires_at timestamptz,
    -- Per-key limits that replace the plan's; NULL means "the plan's limits".
    limits              jsonb CHECK (limits IS NULL OR jsonb_typeof(limits) = 'array'),
    -- {"remaining", "refill"?: {"amount","interval_ms"}}; the live balance lives in Redis.
    credits             jsonb CHECK (credits IS NULL OR jsonb_typeof(credits) = 'object'),
    metadata            jsonb NOT NULL DEFAULT '{}'
                        CHECK (jsonb_typeof(metadata) = 'object' AND octet_length(metadata::text) <= 4096),
    enabled             boolean NOT NULL DEFAULT true,
    expires_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    rotated_at          timestamptz,
    revoked_at          timestamptz,
    deleted_at          timestamptz,
    CHECK ((previous_key_hash IS NULL) = (previous_key_expires_at IS NULL))
);

-- List filters page by id within an owner or a plan.
CREATE INDEX api_keys_owner_id_idx ON api_keys (owner_id, id) WHERE deleted_at IS NULL;
CREATE INDEX api_keys_plan_id_idx ON api_keys (plan_id, id);
