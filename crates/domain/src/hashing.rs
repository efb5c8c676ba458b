//! Keyed BLAKE3 hashing. Only these hashes are stored; the pepper (the hashing key) lives in
//! configuration alone, so a copy of the database or of Redis cannot be used to test guesses.

use std::fmt;

use crate::api_key::ApiKey;

pub const PEPPER_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PepperError {
    #[error("must be 64 hex characters ({PEPPER_LEN} bytes), got {0} characters")]
    WrongLength(usize),
    #[error("must be hex (0-9, a-f)")]
    NotHex,
}

/// The 32-byte server secret. `Debug` hides it.
#[derive(Clone)]
pub struct Pepper([u8; PEPPER_LEN]);

impl Pepper {
    pub fn from_hex(text: &str) -> Result<Self, PepperError> {
        let text = text.trim();
        if text.len() != PEPPER_LEN * 2 {
            return Err(PepperError::WrongLength(text.len()));
        }
        let mut bytes = [0u8; PEPPER_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| PepperError::NotHex)?;
        Ok(Self(bytes))
    }

    pub fn from_bytes(bytes: [u8; PEPPER_LEN]) -> Self {
        Self(bytes)
    }

    pub fn hash_key(&self, key: &ApiKey) -> KeyHash {
        KeyHash(
            blake3::keyed_hash(&self.0, key.expose().as_bytes())
                .to_hex()
                .to_string(),
        )
    }

    /// Admin tokens are free-form secrets (the bootstrap token is the operator's choice), so
    /// they are hashed raw, in their own domain so a token can never match a key hash.
    pub fn hash_admin_token(&self, token: &str) -> KeyHash {
        let mut hasher = blake3::Hasher::new_keyed(&self.0);
        hasher.update(b"keymeter admin token\0");
        hasher.update(token.as_bytes());
        KeyHash(hasher.finalize().to_hex().to_string())
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// A keyed hash in lowercase hex (64 characters): what Postgres and Redis index keys by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// Wraps a hash read back from a store.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }
}

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api_key::KeyPrefix;

    fn pepper(byte: u8) -> Pepper {
        Pepper::from_bytes([byte; PEPPER_LEN])
    }

    #[test]
    fn pepper_from_hex_checks_length_and_digits() {
        assert!(Pepper::from_hex(&"ab".repeat(32)).is_ok());
        assert_eq!(
            Pepper::from_hex("abcd").err(),
            Some(PepperError::WrongLength(4))
        );
        assert_eq!(
            Pepper::from_hex(&"zz".repeat(32)).err(),
            Some(PepperError::NotHex)
        );
    }

    #[test]
    fn hash_depends_on_the_pepper_and_the_key() {
        let key = ApiKey::generate(&KeyPrefix::default());
        let other = ApiKey::generate(&KeyPrefix::default());
        assert_eq!(pepper(1).hash_key(&key), pepper(1).hash_key(&key));
        assert_ne!(pepper(1).hash_key(&key), pepper(2).hash_key(&key));
        assert_ne!(pepper(1).hash_key(&key), pepper(1).hash_key(&other));
        assert_eq!(pepper(1).hash_key(&key).as_str().len(), 64);
    }

    #[test]
    fn admin_token_hashes_are_separate_from_key_hashes() {
        let key = ApiKey::generate(&KeyPrefix::default());
        assert_ne!(
            pepper(1).hash_key(&key),
            pepper(1).hash_admin_token(key.expose())
        );
    }

    #[test]
    fn debug_hides_the_pepper() {
        assert_eq!(format!("{:?}", pepper(7)), "Pepper(<redacted>)");
    }
}
