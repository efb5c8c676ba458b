//! Named rate limits and their validation rules (API.md, "Limits").

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::validation::ValidationErrors;

pub const MIN_WINDOW_MS: u64 = 1;
pub const MAX_WINDOW_MS: u64 = 31 * 24 * 60 * 60 * 1000;
/// Counters run in Lua, whose numbers are doubles: stay well inside exact integers.
pub const MAX_LIMIT: u64 = 1_000_000_000_000;
/// A sliding log keeps one sorted-set entry per unit in the window, so it is for small limits.
pub const MAX_SLIDING_LOG_LIMIT: u64 = 100_000;
pub const MAX_LIMITS_PER_PLAN: usize = 16;
pub const MAX_NAME_LEN: usize = 32;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Exact: every unit in the window is remembered (Redis sorted set).
    SlidingLog,
    /// Two fixed windows weighted by overlap: O(1) memory, approximate.
    SlidingWindow,
    /// GCRA: `limit` per `window_ms` on average, up to `burst` at once.
    TokenBucket,
    FixedWindow,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Unique within the plan (or the key's own limits).
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_]{1,32}$"))]
    pub name: String,
    pub algorithm: Algorithm,
    /// Units per window (`sliding_log`: at most 100000).
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub limit: u64,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 2_678_400_000_i64))]
    pub window_ms: u64,
    /// `token_bucket` only: units at once (default `limit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub burst: Option<u64>,
}

impl Limit {
    /// The most units the limit lets through at once: `burst` for a token bucket, else `limit`.
    pub fn capacity(&self) -> u64 {
        match self.algorithm {
            Algorithm::TokenBucket => self.burst.unwrap_or(self.limit),
            _ => self.limit,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Checks a plan's (or a key's override) list of limits; `field` is the JSON path of the list.
pub fn validate_limits(field: &str, limits: &[Limit]) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if limits.len() > MAX_LIMITS_PER_PLAN {
        errors.push(field, format!("at most {MAX_LIMITS_PER_PLAN} limits"));
    }
    let mut seen = HashSet::new();
    for (i, limit) in limits.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        if !valid_name(&limit.name) {
            errors.push(at("name"), "must match [a-z0-9_]{1,32}");
        } else if !seen.insert(limit.name.as_str()) {
            errors.push(at("name"), format!("duplicate limit name {:?}", limit.name));
        }
        if limit.limit == 0 || limit.limit > MAX_LIMIT {
            errors.push(at("limit"), format!("must be from 1 to {MAX_LIMIT}"));
        } else if limit.algorithm == Algorithm::SlidingLog && limit.limit > MAX_SLIDING_LOG_LIMIT {
            errors.push(
                at("limit"),
                format!("sliding_log keeps every unit, so at most {MAX_SLIDING_LOG_LIMIT}; use sliding_window for larger limits"),
            );
        }
        if !(MIN_WINDOW_MS..=MAX_WINDOW_MS).contains(&limit.window_ms) {
            errors.push(
                at("window_ms"),
                format!("must be from {MIN_WINDOW_MS} to {MAX_WINDOW_MS} (31 days)"),
            );
        }
        match (limit.algorithm, limit.burst) {
            (Algorithm::TokenBucket, Some(burst)) if burst == 0 || burst > MAX_LIMIT => {
                errors.push(at("burst"), format!("must be from 1 to {MAX_LIMIT}"));
            }
            (Algorithm::TokenBucket, _) | (_, None) => {}
            (_, Some(_)) => errors.push(at("burst"), "only token_bucket takes a burst"),
        }
    }
    errors.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(name: &str, algorithm: Algorithm, limit: u64, window_ms: u64) -> Limit {
        Limit {
            name: name.to_owned(),
            algorithm,
            limit,
            window_ms,
            burst: None,
        }
    }

    fn fields(result: Result<(), ValidationErrors>) -> Vec<String> {
        result
            .err()
            .map(|e| e.0.into_iter().map(|f| f.field).collect())
            .unwrap_or_default()
    }

    #[test]
    fn accepts_the_api_example() {
        let parsed: Limit = serde_json::from_str(
            r#"{"name": "per_second", "algorithm": "token_bucket", "limit": 10, "window_ms": 1000, "burst": 20}"#,
        )
        .expect("example parses");
        assert_eq!(parsed.capacity(), 20);
        assert!(validate_limits("limits", &[parsed]).is_ok());
    }

    #[test]
    fn refuses_unknown_fields_and_algorithms() {
        assert!(
            serde_json::from_str::<Limit>(
                r#"{"name":"a","algorithm":"fixed_window","limit":1,"window_ms":1,"extra":1}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<Limit>(
                r#"{"name":"a","algorithm":"leaky","limit":1,"window_ms":1}"#
            )
            .is_err()
        );
    }

    #[test]
    fn names_each_bad_field() {
        let bad = vec![
            limit("Per-Second", Algorithm::FixedWindow, 1, 1000),
            limit("ok", Algorithm::FixedWindow, 0, 1000),
            limit("ok", Algorithm::FixedWindow, 5, 0),
            limit(
                "big",
                Algorithm::SlidingLog,
                MAX_SLIDING_LOG_LIMIT + 1,
                1000,
            ),
            limit("long", Algorithm::FixedWindow, 5, MAX_WINDOW_MS + 1),
            Limit {
                burst: Some(3),
                ..limit("burst", Algorithm::FixedWindow, 5, 1000)
            },
            Limit {
                burst: Some(0),
                ..limit("zero_burst", Algorithm::TokenBucket, 5, 1000)
            },
        ];
        assert_eq!(
            fields(validate_limits("limits", &bad)),
            vec![
                "limits[0].name",
                "limits[1].limit",
                "limits[2].name",
                "limits[2].window_ms",
                "limits[3].limit",
                "limits[4].window_ms",
                "limits[5].burst",
                "limits[6].burst",
            ]
        );
    }

    #[test]
    fn window_bounds_are_inclusive() {
        let ok = [
            limit("a", Algorithm::FixedWindow, 1, MIN_WINDOW_MS),
            limit("b", Algorithm::SlidingWindow, MAX_LIMIT, MAX_WINDOW_MS),
        ];
        assert!(validate_limits("limits", &ok).is_ok());
    }

    #[test]
    fn caps_the_number_of_limits() {
        let many: Vec<_> = (0..=MAX_LIMITS_PER_PLAN)
            .map(|i| limit(&format!("l{i}"), Algorithm::FixedWindow, 1, 1000))
            .collect();
        assert_eq!(fields(validate_limits("limits", &many)), vec!["limits"]);
    }
}
