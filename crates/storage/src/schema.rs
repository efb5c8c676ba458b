// Mirrors ../../migrations; `diesel print-schema` (see diesel.toml) regenerates it.

diesel::table! {
    plans (id) {
        id -> Uuid,
        name -> Text,
        limits -> Jsonb,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    api_keys (id) {
        id -> Uuid,
        plan_id -> Uuid,
        name -> Nullable<Text>,
        owner_id -> Nullable<Text>,
        prefix -> Text,
        start -> Text,
        key_hash -> Text,
        previous_key_hash -> Nullable<Text>,
        previous_key_expires_at -> Nullable<Timestamptz>,
        limits -> Nullable<Jsonb>,
        credits -> Nullable<Jsonb>,
        metadata -> Jsonb,
        enabled -> Bool,
        expires_at -> Nullable<Timestamptz>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        rotated_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    admin_tokens (id) {
        id -> Uuid,
        name -> Text,
        token_hash -> Text,
        scopes -> Array<Text>,
        created_at -> Timestamptz,
        expires_at -> Nullable<Timestamptz>,
        deleted_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        at -> Timestamptz,
        actor -> Text,
        action -> Text,
        target_type -> Text,
        target_id -> Text,
        changes -> Jsonb,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        created_at -> Timestamptz,
        aggregate -> Text,
        aggregate_id -> Uuid,
        change -> Text,
        payload -> Jsonb,
        attempts -> Int4,
        last_error -> Nullable<Text>,
        projected_at -> Nullable<Timestamptz>,
        processed_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    usage_logs (key_id, minute) {
        key_id -> Uuid,
        minute -> Timestamptz,
        allowed -> Int8,
        denied -> Int8,
        cost -> Int8,
    }
}

diesel::table! {
    ingested_batches (batch_id) {
        batch_id -> Uuid,
        source -> Text,
        entries -> Int4,
        ingested_at -> Timestamptz,
    }
}

diesel::joinable!(api_keys -> plans (plan_id));

diesel::allow_tables_to_appear_in_same_query!(
    plans,
    api_keys,
    admin_tokens,
    audit_log,
    outbox,
    usage_logs,
    ingested_batches,
);
