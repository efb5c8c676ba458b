//! Admin tokens: bearer secrets for the admin API, hashed with the pepper like API keys.

use rand::Rng;
use rand::distr::Alphanumeric;

pub const ADMIN_TOKEN_PREFIX: &str = "kmadmin_";
/// 40 × log2(62) ≈ 238 bits.
const RANDOM_LEN: usize = 40;
/// The bootstrap token is the operator's choice; this is the least it must carry.
pub const MIN_BOOTSTRAP_TOKEN_LEN: usize = 32;

/// A fresh admin token from the thread-local CSPRNG.
pub fn generate_admin_token() -> String {
    let random: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(RANDOM_LEN)
        .map(char::from)
        .collect();
    format!("{ADMIN_TOKEN_PREFIX}{random}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = generate_admin_token();
        let b = generate_admin_token();
        assert_ne!(a, b);
        assert!(a.starts_with(ADMIN_TOKEN_PREFIX));
        assert_eq!(a.len(), ADMIN_TOKEN_PREFIX.len() + RANDOM_LEN);
    }
}
