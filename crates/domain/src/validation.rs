//! Field-level validation errors, shaped for the `errors` list of a problem+json answer.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("invalid input: {}", .0.iter().map(|e| format!("{}: {}", e.field, e.message)).collect::<Vec<_>>().join("; "))]
pub struct ValidationErrors(pub Vec<FieldError>);

impl ValidationErrors {
    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when nothing was pushed, so a validator can end with `errors.into_result()`.
    pub fn into_result(self) -> Result<(), ValidationErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

/// Whether a JSON value holds a NUL character anywhere (in a key or a string): PostgreSQL
/// can store neither in `text` nor in `jsonb`, so such input is refused up front.
pub fn contains_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(contains_nul),
        serde_json::Value::Object(map) => {
            map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v))
        }
        _ => false,
    }
}

/// Numbers beyond this magnitude come back out of PostgreSQL's `jsonb` (which keeps every
/// digit) as text no JSON reader turns into a double, so they are refused up front.
pub const MAX_JSON_NUMBER: f64 = 1e300;

/// Whether a JSON value holds a number beyond ±`MAX_JSON_NUMBER` anywhere.
pub fn contains_extreme_number(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.as_f64().is_none_or(|f| f.abs() > MAX_JSON_NUMBER),
        serde_json::Value::Array(items) => items.iter().any(contains_extreme_number),
        serde_json::Value::Object(map) => map.values().any(contains_extreme_number),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nul_in_keys_and_nested_strings() {
        assert!(!contains_nul(&serde_json::json!({"a": ["b", {"c": 1}]})));
        assert!(contains_nul(&serde_json::json!({"a": ["b", {"c": "x\0"}]})));
        assert!(contains_nul(&serde_json::json!({"k\0": 1})));
    }

    #[test]
    fn finds_numbers_jsonb_cannot_give_back() {
        assert!(!contains_extreme_number(
            &serde_json::json!({"a": [1, -2.5, 1e300, u64::MAX]})
        ));
        assert!(contains_extreme_number(
            &serde_json::json!({"a": [{"b": 1.7976931348623157e308}]})
        ));
    }
}
