//! Password hashes: Argon2id with the crate's default cost (19 MiB, 2 passes, 1 lane: the
//! OWASP recommendation), in the PHC string format so the cost can rise later without
//! invalidating stored hashes.
//!
//! Hashing is deliberately slow and memory-hungry, so it runs on a blocking thread and
//! the caller bounds how many run at once (`AppsLimits::hash_concurrency`).

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{Error, Result};

/// The PHC string of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String> {
    // 16 random bytes from the OS-seeded generator (rand), the salt length the PHC
    // format recommends.
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| Error::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Hash(e.to_string()))
}

/// Whether `password` matches `phc`. A malformed stored hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Spends the time of one verification for a name that has no account, so the answer's
/// timing does not tell which names exist.
pub fn verify_nothing(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    if let Some(phc) = DUMMY.get_or_init(|| hash("no account has this password").ok()) {
        let _ = verify(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_round_trip() {
        let phc = hash("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horse!", &phc));
        assert_ne!(phc, hash("correct horse").unwrap(), "salted");
        assert!(!verify("x", "not a hash"));
    }
}
