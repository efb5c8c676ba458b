//! The messages between services (API.md, "On the wire"). Each carries `"v": 1`; a reader
//! refuses any other version instead of guessing, so a poison message is recognised as such.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The only schema version this build reads and writes; serialises as the number `1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct V1;

impl TryFrom<u64> for V1 {
    type Error = String;

    fn try_from(v: u64) -> Result<Self, Self::Error> {
        if v == 1 {
            Ok(V1)
        } else {
            Err(format!(
                "unsupported event version {v}; this build reads v1"
            ))
        }
    }
}

impl From<V1> for u64 {
    fn from(_: V1) -> u64 {
        1
    }
}

/// Most entries one batch may carry; a limiter splits larger flushes.
pub const MAX_BATCH_ENTRIES: usize = 10_000;

/// Longest `source` (a limiter's instance name) a batch may carry, in bytes.
pub const MAX_SOURCE_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("not a valid event: {0}")]
    Malformed(String),
    #[error("impossible value: {0}")]
    Impossible(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    pub v: V1,
    pub batch_id: Uuid,
    /// The limiter instance that counted these requests.
    pub source: String,
    pub entries: Vec<UsageEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageEntry {
    pub key_id: Uuid,
    /// Start of the minute (UTC, seconds and below zero).
    pub minute: DateTime<Utc>,
    pub allowed: u64,
    pub denied: u64,
    /// Units spent by the allowed requests.
    pub cost: u64,
}

impl UsageBatch {
    /// Parses and checks a batch; any error makes the message a poison message.
    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        let batch: UsageBatch =
            serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))?;
        batch.check()?;
        Ok(batch)
    }

    pub fn check(&self) -> Result<(), EventError> {
        // The instance name of a limiter; Postgres text refuses NUL, so a control character
        // would fail the write every time instead of being refused here once.
        if self.source.is_empty()
            || self.source.len() > MAX_SOURCE_LEN
            || self.source.chars().any(char::is_control)
        {
            return Err(EventError::Impossible(format!(
                "source must be 1 to {MAX_SOURCE_LEN} bytes without control characters"
            )));
        }
        if self.entries.is_empty() || self.entries.len() > MAX_BATCH_ENTRIES {
            return Err(EventError::Impossible(format!(
                "a batch holds 1 to {MAX_BATCH_ENTRIES} entries, this one {}",
                self.entries.len()
            )));
        }
        for entry in &self.entries {
            if entry.minute.second() != 0 || entry.minute.nanosecond() != 0 {
                return Err(EventError::Impossible(format!(
                    "minute {} is not the start of a minute",
                    entry.minute
                )));
            }
            if entry.allowed == 0 && entry.denied == 0 {
                return Err(EventError::Impossible("an entry with no requests".into()));
            }
            // Postgres stores bigint; the sums saturate there instead of failing.
            if entry.allowed > i64::MAX as u64
                || entry.denied > i64::MAX as u64
                || entry.cost > i64::MAX as u64
            {
                return Err(EventError::Impossible("a count beyond i64".into()));
            }
            // Limiters stamp minutes with Redis's clock; anything outside this range is not
            // a real minute, and Postgres could not store every such date.
            if !(1970..=9999).contains(&entry.minute.year()) {
                return Err(EventError::Impossible(format!(
                    "minute {} is outside the years 1970 to 9999",
                    entry.minute
                )));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyChange {
    Updated,
    Revoked,
    Deleted,
    Rotated,
    PlanUpdated,
}

/// Published on the `keymeter.keys` fanout after the Redis projection changed, so every
/// limiter drops its cached copy of the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyEvent {
    pub v: V1,
    pub key_id: Uuid,
    pub change: KeyChange,
}

impl KeyEvent {
    pub fn new(key_id: Uuid, change: KeyChange) -> Self {
        Self {
            v: V1,
            key_id,
            change,
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EventError> {
        serde_json::from_slice(bytes).map_err(|e| EventError::Malformed(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BATCH: &str = r#"{"v":1,"batch_id":"0190c0de-0000-7000-8000-000000000001","source":"limiter-a",
        "entries":[{"key_id":"0190c0de-0000-7000-8000-000000000002","minute":"2026-11-28T10:05:00Z","allowed":3,"denied":1,"cost":7}]}"#;

    #[test]
    fn decodes_the_documented_batch_and_writes_it_back() {
        let batch = UsageBatch::decode(BATCH.as_bytes()).expect("documented shape decodes");
        assert_eq!(batch.entries[0].allowed, 3);
        let json = serde_json::to_value(&batch).expect("serialises");
        assert_eq!(json["v"], 1);
        assert_eq!(json["entries"][0]["minute"], "2026-11-28T10:05:00Z");
    }

    #[test]
    fn refuses_other_versions_and_shapes() {
        let v2 = BATCH.replace(r#""v":1"#, r#""v":2"#);
        assert!(matches!(
            UsageBatch::decode(v2.as_bytes()),
            Err(EventError::Malformed(m)) if m.contains("version 2")
        ));
        assert!(UsageBatch::decode(b"not json").is_err());
        let extra = BATCH.replace(r#""source""#, r#""extra":1,"source""#);
        assert!(UsageBatch::decode(extra.as_bytes()).is_err());
        let negative = BATCH.replace(r#""allowed":3"#, r#""allowed":-3"#);
        assert!(UsageBatch::decode(negative.as_bytes()).is_err());
        let huge = BATCH.replace(r#""cost":7"#, r#""cost":9223372036854775808"#);
        assert!(matches!(
            UsageBatch::decode(huge.as_bytes()),
            Err(EventError::Impossible(_))
        ));
        let ancient = BATCH.replace("2026-11-28T10:05:00Z", "-5000-01-01T00:00:00Z");
        assert!(matches!(
            UsageBatch::decode(ancient.as_bytes()),
            Err(EventError::Impossible(_))
        ));
    }

    #[test]
    fn refuses_impossible_values() {
        let mid_minute = BATCH.replace("10:05:00Z", "10:05:30Z");
        assert!(matches!(
            UsageBatch::decode(mid_minute.as_bytes()),
            Err(EventError::Impossible(_))
        ));
        let empty = BATCH.replace(r#""allowed":3,"denied":1"#, r#""allowed":0,"denied":0"#);
        assert!(matches!(
            UsageBatch::decode(empty.as_bytes()),
            Err(EventError::Impossible(_))
        ));
    }

    #[test]
    fn refuses_a_source_postgres_could_not_store() {
        let batch = UsageBatch::decode(BATCH.as_bytes()).unwrap();
        let long = "l".repeat(MAX_SOURCE_LEN + 1);
        for source in ["", "a\u{0}b", "line\nbreak", long.as_str()] {
            let bad = UsageBatch {
                source: source.to_owned(),
                ..batch.clone()
            };
            assert!(
                matches!(bad.check(), Err(EventError::Impossible(_))),
                "{source:?}"
            );
        }
        let nul_in_json = BATCH.replacen(
            &format!("\"source\":\"{}\"", batch.source),
            "\"source\":\"a\\u0000\"",
            1,
        );
        assert_ne!(nul_in_json, BATCH, "the JSON has a NUL in its source");
        assert!(matches!(
            UsageBatch::decode(nul_in_json.as_bytes()),
            Err(EventError::Impossible(_))
        ));
    }

    #[test]
    fn key_event_round_trips() {
        let event = KeyEvent::new(Uuid::nil(), KeyChange::PlanUpdated);
        let json = serde_json::to_string(&event).expect("serialises");
        assert_eq!(
            json,
            r#"{"v":1,"key_id":"00000000-0000-0000-0000-000000000000","change":"plan_updated"}"#
        );
        assert_eq!(KeyEvent::decode(json.as_bytes()), Ok(event));
    }
}
