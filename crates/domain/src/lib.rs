//! keymeter's pure types and rules: the API key format, keyed hashing, plans and limits,
//! admin scopes and the events on the wire. Nothing here does I/O, so every rule is unit
//! tested without a server.

pub mod admin_token;
pub mod api_key;
pub mod base62;
pub mod credits;
pub mod events;
pub mod hashing;
pub mod key_status;
pub mod limits;
pub mod projection;
pub mod scope;
pub mod validation;

pub use api_key::{ApiKey, KeyFormatError, KeyPrefix};
pub use credits::{Credits, Refill};
pub use events::{EventError, KeyChange, KeyEvent, UsageBatch, UsageEntry};
pub use hashing::{KeyHash, Pepper, PepperError};
pub use key_status::{KeyStatus, StatusFields};
pub use limits::{Algorithm, Limit, validate_limits};
pub use projection::{CreditsConfig, KeyRecord};
pub use scope::Scope;
pub use validation::{FieldError, ValidationErrors, contains_extreme_number, contains_nul};
