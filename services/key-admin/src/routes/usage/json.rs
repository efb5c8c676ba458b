use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use storage::repositories::usage::{Granularity, UsageBucket};
use utoipa::ToSchema;
use uuid::Uuid;

/// The width of a bucket; buckets start on UTC minute, hour or day boundaries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GranularityParam {
    Minute,
    #[default]
    Hour,
    Day,
}

impl From<GranularityParam> for Granularity {
    fn from(value: GranularityParam) -> Self {
        match value {
            GranularityParam::Minute => Granularity::Minute,
            GranularityParam::Hour => Granularity::Hour,
            GranularityParam::Day => Granularity::Day,
        }
    }
}

/// The requests of one bucket: counted from `max(start, from)` to `min(start + width, to)`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Bucket {
    pub start: DateTime<Utc>,
    pub allowed: i64,
    pub denied: i64,
    /// Units spent by the allowed requests.
    pub cost: i64,
}

impl From<UsageBucket> for Bucket {
    fn from(bucket: UsageBucket) -> Self {
        Self {
            start: bucket.start,
            allowed: bucket.allowed,
            denied: bucket.denied,
            cost: bucket.cost,
        }
    }
}

/// Usage over time; buckets with no requests are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<Uuid>,
    pub granularity: GranularityParam,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub buckets: Vec<Bucket>,
}
