//! Keyset names: what a person types, checked once, and the short label derived from it.

use std::fmt;

use sha2::{Digest, Sha256};

/// The longest label PKCS#11 tokens hold, in bytes.
pub const LABEL_MAX: usize = 32;
/// The longest keyset name keyward accepts, in bytes.
pub const NAME_MAX: usize = 256;

/// A checked keyset name: non-empty UTF-8, no control characters, no leading or trailing space.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeysetName(String);

/// Why a keyset name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    /// Empty.
    #[error("a keyset name cannot be empty")]
    Empty,
    /// Has a control character.
    #[error("keyset name {0:?} contains a control character; use printable characters only")]
    Control(String),
    /// Leading or trailing white space.
    #[error("keyset name {0:?} starts or ends with white space; remove it")]
    Space(String),
    /// Too long.
    #[error("keyset name {name:?} is {len} bytes; the limit is {NAME_MAX}")]
    TooLong {
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
}

impl KeysetName {
    /// Checks a name.
    pub fn parse(s: &str) -> Result<KeysetName, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.chars().any(char::is_control) {
            return Err(NameError::Control(s.to_string()));
        }
        if s.trim() != s {
            return Err(NameError::Space(s.to_string()));
        }
        if s.len() > NAME_MAX {
            return Err(NameError::TooLong {
                name: s.to_string(),
                len: s.len(),
            });
        }
        Ok(KeysetName(s.to_string()))
    }

    /// The name as typed.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A label of at most 32 bytes for the token: the name itself when it fits, else its first
    /// characters, `~` and 6 hex digits of its SHA-256 (recorded in the registry, never a silent cut).
    pub fn label(&self) -> String {
        if self.0.len() <= LABEL_MAX {
            return self.0.clone();
        }
        let digest = Sha256::digest(self.0.as_bytes());
        let suffix = format!("~{}", crate::token::keys::hex(&digest[..3]));
        let room = LABEL_MAX - suffix.len();
        let mut cut = room;
        while !self.0.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}{}", self.0[..cut].trim_end(), suffix)
    }
}

impl fmt::Display for KeysetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_what_people_type() {
        assert!(KeysetName::parse("Alice Smith 2026").is_ok());
        assert!(KeysetName::parse("Zoë — Büro").is_ok());
    }

    #[test]
    fn refuses_bad_names() {
        assert_eq!(KeysetName::parse(""), Err(NameError::Empty));
        assert!(matches!(
            KeysetName::parse("a\nb"),
            Err(NameError::Control(_))
        ));
        assert!(matches!(KeysetName::parse(" a"), Err(NameError::Space(_))));
        assert!(matches!(
            KeysetName::parse(&"x".repeat(300)),
            Err(NameError::TooLong { .. })
        ));
    }

    #[test]
    fn short_names_are_their_own_label() {
        assert_eq!(
            KeysetName::parse("Alice 2026").unwrap().label(),
            "Alice 2026"
        );
    }

    #[test]
    fn long_names_get_a_derived_label_that_fits_and_differs() {
        let a = KeysetName::parse("Ångström Laboratory Secure Mail Keyset Number One").unwrap();
        let b = KeysetName::parse("Ångström Laboratory Secure Mail Keyset Number Two").unwrap();
        assert!(a.label().len() <= LABEL_MAX, "{}", a.label());
        assert_ne!(a.label(), b.label());
        assert!(a.label().starts_with("Ångström"));
        assert!(a.label().contains('~'));
    }
}
