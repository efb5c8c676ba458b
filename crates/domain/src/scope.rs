//! Admin token scopes. `admin` covers every other scope; the others cover only themselves.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Scope {
    #[serde(rename = "plans:read")]
    PlansRead,
    #[serde(rename = "plans:write")]
    PlansWrite,
    #[serde(rename = "keys:read")]
    KeysRead,
    #[serde(rename = "keys:write")]
    KeysWrite,
    #[serde(rename = "usage:read")]
    UsageRead,
    #[serde(rename = "audit:read")]
    AuditRead,
    #[serde(rename = "admin")]
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 7] = [
        Scope::PlansRead,
        Scope::PlansWrite,
        Scope::KeysRead,
        Scope::KeysWrite,
        Scope::UsageRead,
        Scope::AuditRead,
        Scope::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::PlansRead => "plans:read",
            Scope::PlansWrite => "plans:write",
            Scope::KeysRead => "keys:read",
            Scope::KeysWrite => "keys:write",
            Scope::UsageRead => "usage:read",
            Scope::AuditRead => "audit:read",
            Scope::Admin => "admin",
        }
    }

    /// Whether a token holding `granted` may use a route that needs `self`.
    pub fn is_granted_by(self, granted: &[Scope]) -> bool {
        granted.iter().any(|g| *g == Scope::Admin || *g == self)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scope {0:?}; known scopes: plans:read, plans:write, keys:read, keys:write, usage:read, audit:read, admin"
)]
pub struct UnknownScope(pub String);

impl FromStr for Scope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| UnknownScope(text.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_covers_everything_and_others_only_themselves() {
        for scope in Scope::ALL {
            assert!(scope.is_granted_by(&[Scope::Admin]));
            assert!(scope.is_granted_by(&[scope]));
        }
        assert!(!Scope::KeysWrite.is_granted_by(&[Scope::KeysRead]));
        assert!(!Scope::Admin.is_granted_by(&[Scope::KeysWrite, Scope::PlansWrite]));
        assert!(!Scope::KeysRead.is_granted_by(&[]));
    }

    #[test]
    fn parses_and_prints_the_wire_names() {
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
            assert_eq!(
                serde_json::to_string(&scope).ok(),
                Some(format!("\"{scope}\""))
            );
        }
        assert!("keys:delete".parse::<Scope>().is_err());
    }
}
