//! The record key-admin projects into Redis for each API key and the limiter reads on a
//! cache miss: everything a check needs, in one value, so a lookup is one GET.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::credits::Refill;
use crate::events::V1;
use crate::limits::Limit;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub v: V1,
    pub key_id: Uuid,
    pub plan_id: Uuid,
    pub owner_id: Option<String>,
    pub enabled: bool,
    pub revoked: bool,
    pub expires_at: Option<DateTime<Utc>>,
    /// The key's own limits when it overrides them, else its plan's.
    pub limits: Vec<Limit>,
    /// Present when the key has credits; the live balance is a counter of its own.
    pub credits: Option<CreditsConfig>,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditsConfig {
    pub refill: Option<Refill>,
}

impl KeyRecord {
    pub fn encode(&self) -> String {
        // A record of plain data always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Algorithm;

    #[test]
    fn round_trips() {
        let record = KeyRecord {
            v: V1,
            key_id: Uuid::now_v7(),
            plan_id: Uuid::now_v7(),
            owner_id: Some("acme".into()),
            enabled: true,
            revoked: false,
            expires_at: None,
            limits: vec![Limit {
                name: "per_second".into(),
                algorithm: Algorithm::TokenBucket,
                limit: 10,
                window_ms: 1000,
                burst: Some(20),
            }],
            credits: Some(CreditsConfig { refill: None }),
            metadata: serde_json::json!({"tier": "gold"}),
        };
        assert_eq!(KeyRecord::decode(&record.encode()).ok(), Some(record));
    }
}
