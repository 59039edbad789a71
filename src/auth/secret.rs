//! 128-bit random secrets (tokens, session ids, ack links) and their stored hashes.
//!
//! A 128-bit random secret cannot be guessed, so a fast hash (SHA-256) is enough to make a
//! stolen database useless; slow password hashing is only needed for passwords.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix that makes a focalpoint secret recognisable in logs and secret scanners.
const PREFIX: &str = "fp_";

/// A new secret: `fp_` and 32 hex digits (128 bits from the OS generator).
pub fn generate() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!("{PREFIX}{}", hex::encode(bytes))
}

pub fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Cheap shape check before any lookup.
pub fn looks_like_secret(s: &str) -> bool {
    s.len() == PREFIX.len() + 32 && s.starts_with(PREFIX) && s[PREFIX.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_well_formed() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(looks_like_secret(&a));
        assert!(!looks_like_secret("fp_xyz"));
        assert_eq!(hash(&a).len(), 32);
    }
}
