//! Per-key credits: each allowed request spends `cost`; a refill resets the balance to
//! `amount` every `interval_ms` (it does not accumulate).

use serde::{Deserialize, Serialize};

use crate::limits::{MAX_LIMIT, MAX_WINDOW_MS};
use crate::validation::ValidationErrors;

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credits {
    #[cfg_attr(feature = "openapi", schema(maximum = 1_000_000_000_000_i64))]
    pub remaining: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refill: Option<Refill>,
}

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refill {
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub amount: u64,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1000, maximum = 2_678_400_000_i64)
    )]
    pub interval_ms: u64,
}

impl Credits {
    pub fn validate(&self, field: &str) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if self.remaining > MAX_LIMIT {
            errors.push(
                format!("{field}.remaining"),
                format!("must be at most {MAX_LIMIT}"),
            );
        }
        if let Some(refill) = &self.refill {
            if refill.amount == 0 || refill.amount > MAX_LIMIT {
                errors.push(
                    format!("{field}.refill.amount"),
                    format!("must be from 1 to {MAX_LIMIT}"),
                );
            }
            if !(1000..=MAX_WINDOW_MS).contains(&refill.interval_ms) {
                errors.push(
                    format!("{field}.refill.interval_ms"),
                    format!("must be from 1000 (1 s) to {MAX_WINDOW_MS} (31 days)"),
                );
            }
        }
        errors.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_api_example() {
        let credits: Credits = serde_json::from_str(
            r#"{"remaining": 1000, "refill": {"amount": 1000, "interval_ms": 86400000}}"#,
        )
        .expect("example parses");
        assert!(credits.validate("credits").is_ok());
    }

    #[test]
    fn refuses_bad_refills() {
        let credits = Credits {
            remaining: 5,
            refill: Some(Refill {
                amount: 0,
                interval_ms: 10,
            }),
        };
        let errors = credits
            .validate("credits")
            .err()
            .map(|e| e.0)
            .unwrap_or_default();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            vec!["credits.refill.amount", "credits.refill.interval_ms"]
        );
    }
}
