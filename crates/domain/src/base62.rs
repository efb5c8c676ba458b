//! Fixed-width base62, the alphabet of key bodies: URL-safe, no separators, double-click
//! selects the whole key.

pub const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

pub fn is_base62(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
}

fn digit_value(byte: u8) -> Option<u64> {
    match byte {
        b'0'..=b'9' => Some(u64::from(byte - b'0')),
        b'A'..=b'Z' => Some(u64::from(byte - b'A') + 10),
        b'a'..=b'z' => Some(u64::from(byte - b'a') + 36),
        _ => None,
    }
}

/// Encodes `value` in exactly `width` digits, most significant first. The caller picks a
/// width whose range holds every value it encodes.
pub fn encode_fixed(mut value: u64, width: usize) -> String {
    let mut digits = vec![b'0'; width];
    for slot in digits.iter_mut().rev() {
        *slot = ALPHABET[(value % 62) as usize];
        value /= 62;
    }
    digits.into_iter().map(char::from).collect()
}

/// Decodes fixed-width base62; `None` on a foreign character or an overflow.
pub fn decode_fixed(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |acc, byte| {
        acc.checked_mul(62)?.checked_add(digit_value(byte)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_fixed_width() {
        for value in [0, 1, 61, 62, 1 << 40, (1 << 40) - 1] {
            let text = encode_fixed(value, 7);
            assert_eq!(text.len(), 7);
            assert_eq!(decode_fixed(&text), Some(value));
        }
    }

    #[test]
    fn refuses_foreign_characters() {
        assert_eq!(decode_fixed("ab_c"), None);
        assert_eq!(decode_fixed("é"), None);
    }
}
