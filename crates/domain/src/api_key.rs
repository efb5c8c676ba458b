//! The API key format: `<prefix>_<body>`.
//!
//! `body` is 24 base62 characters from a CSPRNG (24 × log2(62) ≈ 142 bits) followed by a
//! 7-character checksum: the first 40 bits of BLAKE3 over `<prefix>_<random>`. A typo or a
//! made-up key is refused here, before any store is asked. Any change to a checksum digit
//! is always caught (fixed-width base62 is one-to-one); any other change slips through with
//! probability 2⁻⁴⁰.

use std::fmt;

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::base62;

pub const DEFAULT_PREFIX: &str = "km";
pub const RANDOM_LEN: usize = 24;
pub const CHECKSUM_LEN: usize = 7;
pub const BODY_LEN: usize = RANDOM_LEN + CHECKSUM_LEN;
pub const MAX_PREFIX_LEN: usize = 32;
const SEGMENT_MAX_LEN: usize = 16;
/// How many leading characters of a raw key are kept for display.
pub const START_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("the key is empty")]
    Empty,
    #[error("the key has no prefix separated by '_'")]
    NoPrefix,
    #[error(
        "the prefix must be segments of [a-z][a-z0-9]{{0,15}} joined by '_', at most {MAX_PREFIX_LEN} characters"
    )]
    BadPrefix,
    #[error("the key body must be {BODY_LEN} base62 characters")]
    BadBody,
    #[error("the key checksum does not match")]
    BadChecksum,
}

/// A validated key prefix such as `sk_live`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn parse(text: &str) -> Result<Self, KeyFormatError> {
        let valid_segment = |segment: &str| {
            let bytes = segment.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= SEGMENT_MAX_LEN
                && bytes[0].is_ascii_lowercase()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if text.len() > MAX_PREFIX_LEN || !text.split('_').all(valid_segment) {
            return Err(KeyFormatError::BadPrefix);
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self(DEFAULT_PREFIX.to_owned())
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A raw API key whose shape and checksum are valid. It is a secret: its `Debug` hides it,
/// and it has no `Display` or `Serialize`, so it cannot reach a log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    raw: String,
    prefix_len: usize,
}

impl ApiKey {
    /// A new key with fresh randomness from the thread-local CSPRNG (ChaCha, seeded by the OS).
    pub fn generate(prefix: &KeyPrefix) -> Self {
        let random: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(RANDOM_LEN)
            .map(char::from)
            .collect();
        let checksum = checksum(prefix.as_str(), &random);
        Self {
            raw: format!("{prefix}_{random}{checksum}"),
            prefix_len: prefix.as_str().len(),
        }
    }

    /// Checks shape and checksum only; whether the key exists is the store's business.
    pub fn parse(raw: &str) -> Result<Self, KeyFormatError> {
        if raw.is_empty() {
            return Err(KeyFormatError::Empty);
        }
        let (prefix, body) = raw.rsplit_once('_').ok_or(KeyFormatError::NoPrefix)?;
        KeyPrefix::parse(prefix)?;
        if body.len() != BODY_LEN || !body.bytes().all(base62::is_base62) {
            return Err(KeyFormatError::BadBody);
        }
        let (random, given) = body.split_at(RANDOM_LEN);
        if given != checksum(prefix, random) {
            return Err(KeyFormatError::BadChecksum);
        }
        Ok(Self {
            raw: raw.to_owned(),
            prefix_len: prefix.len(),
        })
    }

    /// The whole secret, for hashing and for the one answer that hands it out.
    pub fn expose(&self) -> &str {
        &self.raw
    }

    pub fn prefix(&self) -> &str {
        &self.raw[..self.prefix_len]
    }

    /// The first characters, kept in clear so a person can tell keys apart.
    pub fn start(&self) -> &str {
        &self.raw[..START_LEN.min(self.raw.len())]
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}…)", self.start())
    }
}

fn checksum(prefix: &str, random: &str) -> String {
    let mut hasher = blake3::Hasher::new();
    hasher.update(prefix.as_bytes());
    hasher.update(b"_");
    hasher.update(random.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first[3..].copy_from_slice(&digest.as_bytes()[..5]);
    base62::encode_fixed(u64::from_be_bytes(first), CHECKSUM_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix_strategy() -> impl Strategy<Value = KeyPrefix> {
        proptest::string::string_regex("[a-z][a-z0-9]{0,7}(_[a-z][a-z0-9]{0,7}){0,2}")
            .expect("valid regex")
            .prop_map(|p| KeyPrefix::parse(&p).expect("strategy makes valid prefixes"))
    }

    #[test]
    fn default_prefix_key_has_expected_shape() {
        let key = ApiKey::generate(&KeyPrefix::default());
        assert!(key.expose().starts_with("km_"));
        assert_eq!(key.expose().len(), 3 + BODY_LEN);
        assert_eq!(key.prefix(), "km");
        assert_eq!(key.start(), &key.expose()[..8]);
    }

    #[test]
    fn debug_does_not_reveal_the_secret() {
        let key = ApiKey::generate(&KeyPrefix::default());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[8..]));
    }

    #[test]
    fn refuses_malformed_keys_with_the_reason() {
        assert_eq!(ApiKey::parse(""), Err(KeyFormatError::Empty));
        assert_eq!(ApiKey::parse("nounderscore"), Err(KeyFormatError::NoPrefix));
        assert_eq!(
            ApiKey::parse("Sk_0123456789012345678901234567890"),
            Err(KeyFormatError::BadPrefix)
        );
        assert_eq!(ApiKey::parse("km_short"), Err(KeyFormatError::BadBody));
        assert_eq!(
            ApiKey::parse("km_000000000000000000000000-000000"),
            Err(KeyFormatError::BadBody)
        );
        assert_eq!(
            ApiKey::parse("km_0000000000000000000000000000000"),
            Err(KeyFormatError::BadChecksum)
        );
    }

    #[test]
    fn prefix_rules() {
        assert!(KeyPrefix::parse("sk_live").is_ok());
        assert!(KeyPrefix::parse("a1").is_ok());
        assert!(KeyPrefix::parse("").is_err());
        assert!(KeyPrefix::parse("1a").is_err());
        assert!(KeyPrefix::parse("sk__live").is_err());
        assert!(
            KeyPrefix::parse("abcdefghijklmnopq").is_err(),
            "17 characters in one segment"
        );
        assert!(KeyPrefix::parse(&"a_".repeat(20)).is_err());
    }

    proptest! {
        #[test]
        fn parse_round_trips_generate(prefix in prefix_strategy()) {
            let key = ApiKey::generate(&prefix);
            let parsed = ApiKey::parse(key.expose()).expect("a generated key parses");
            prop_assert_eq!(parsed.expose(), key.expose());
            prop_assert_eq!(parsed.prefix(), prefix.as_str());
        }

        #[test]
        fn any_one_character_change_is_refused(
            prefix in prefix_strategy(),
            position in any::<prop::sample::Index>(),
            replacement in proptest::char::range('!', '~'),
        ) {
            let key = ApiKey::generate(&prefix);
            let raw = key.expose();
            let at = position.index(raw.len());
            prop_assume!(raw.as_bytes()[at] != replacement as u8);
            let mut changed = raw.to_owned();
            changed.replace_range(at..=at, &replacement.to_string());
            prop_assert!(ApiKey::parse(&changed).is_err(), "accepted {}", changed);
        }

        #[test]
        fn any_truncation_is_refused(prefix in prefix_strategy(), cut in any::<prop::sample::Index>()) {
            let key = ApiKey::generate(&prefix);
            let raw = key.expose();
            let keep = cut.index(raw.len());
            prop_assert!(ApiKey::parse(&raw[..keep]).is_err());
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,80}") {
            let _ = ApiKey::parse(&text);
        }
    }
}
