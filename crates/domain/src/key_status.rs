//! A key's status, derived from its stored fields (never stored itself, so it cannot drift).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    Active,
    /// Reversible: `enabled = false`.
    Disabled,
    /// Past `expires_at`.
    Expired,
    /// Irreversible.
    Revoked,
    /// Gone from lists; usage history kept.
    Deleted,
}

/// The fields a status is derived from.
#[derive(Debug, Clone, Copy)]
pub struct StatusFields {
    pub enabled: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub deleted_at: Option<DateTime<Utc>>,
}

impl KeyStatus {
    /// The strongest state wins: deleted, then revoked, disabled, expired, active.
    pub fn derive(fields: StatusFields, now: DateTime<Utc>) -> Self {
        if fields.deleted_at.is_some() {
            KeyStatus::Deleted
        } else if fields.revoked_at.is_some() {
            KeyStatus::Revoked
        } else if !fields.enabled {
            KeyStatus::Disabled
        } else if fields.expires_at.is_some_and(|at| at <= now) {
            KeyStatus::Expired
        } else {
            KeyStatus::Active
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyStatus::Active => "active",
            KeyStatus::Disabled => "disabled",
            KeyStatus::Expired => "expired",
            KeyStatus::Revoked => "revoked",
            KeyStatus::Deleted => "deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn fields() -> StatusFields {
        StatusFields {
            enabled: true,
            expires_at: None,
            revoked_at: None,
            deleted_at: None,
        }
    }

    #[test]
    fn strongest_state_wins() {
        let now = Utc::now();
        assert_eq!(KeyStatus::derive(fields(), now), KeyStatus::Active);
        let expired = StatusFields {
            expires_at: Some(now - Duration::seconds(1)),
            ..fields()
        };
        assert_eq!(KeyStatus::derive(expired, now), KeyStatus::Expired);
        let disabled = StatusFields {
            enabled: false,
            ..expired
        };
        assert_eq!(KeyStatus::derive(disabled, now), KeyStatus::Disabled);
        let revoked = StatusFields {
            revoked_at: Some(now),
            ..disabled
        };
        assert_eq!(KeyStatus::derive(revoked, now), KeyStatus::Revoked);
        let deleted = StatusFields {
            deleted_at: Some(now),
            ..revoked
        };
        assert_eq!(KeyStatus::derive(deleted, now), KeyStatus::Deleted);
    }

    #[test]
    fn expiry_is_exclusive_of_the_future() {
        let now = Utc::now();
        let later = StatusFields {
            expires_at: Some(now + Duration::seconds(1)),
            ..fields()
        };
        assert_eq!(KeyStatus::derive(later, now), KeyStatus::Active);
    }
}
