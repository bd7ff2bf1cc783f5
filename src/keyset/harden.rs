//! Password hardening for software tokens: the token PIN is derived from the keyset password
//! with Argon2id, so the token files alone do not reveal a guessable PIN.

use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::token::keys::unhex;

/// The alphabet of derived PINs: unambiguous base32 (RFC 4648 lowercase).
const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
/// Digits, for tokens that only take short numeric PINs.
const DIGITS: &[u8] = b"0123456789";

/// The recorded parameters of one keyset's derivation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Hardening {
    /// `argon2id`.
    pub algorithm: String,
    /// Random per-keyset salt, hex.
    pub salt: String,
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
    /// Length of the derived PIN.
    pub pin_len: usize,
    /// `base32` or `digits`.
    pub alphabet: String,
    /// Fields written by a newer keyward, kept as they are.
    #[serde(flatten)]
    pub extra: toml::Table,
}

/// Errors deriving a PIN.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HardenError {
    /// Argon2 refused the parameters.
    #[error("cannot derive the token PIN: {0}; the keyset's hardening record is damaged")]
    Argon(#[source] argon2::Error),
    /// The stored salt is not hex.
    #[error("cannot derive the token PIN: its salt is not hex; the keyset's hardening record is damaged")]
    BadSalt,
    /// The stored PIN length is out of range.
    #[error("cannot derive the token PIN: a {0}-character PIN cannot be derived (1 to 64); the keyset's hardening record is damaged")]
    PinLength(usize),
    /// The system RNG failed.
    #[error("the system random generator failed: {0}")]
    Random(#[source] getrandom::Error),
    /// A derivation this keyward does not know (written by a newer one): deriving anyway
    /// would give a wrong PIN and spend a PIN try.
    #[error("the keyset's password hardening uses {0}, which this keyward does not know; upgrade keyward (nothing was tried on the token)")]
    Unknown(String),
}

impl Hardening {
    /// New parameters (m = 19 MiB, t = 2, p = 1, fresh salt) fitted to the token's PIN limits.
    pub fn new(min_pin: usize, max_pin: usize) -> Result<Hardening, HardenError> {
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(HardenError::Random)?;
        let max = if max_pin == 0 { 255 } else { max_pin };
        let (alphabet, want) = if max < 16 {
            ("digits", max)
        } else {
            ("base32", 26)
        };
        let pin_len = want.max(min_pin).min(max).min(64);
        Ok(Hardening {
            algorithm: "argon2id".to_string(),
            salt: crate::token::keys::hex(&salt),
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
            pin_len,
            alphabet: alphabet.to_string(),
            extra: toml::Table::new(),
        })
    }

    /// The token PIN for `password`.
    pub fn derive(&self, password: &SecretString) -> Result<SecretString, HardenError> {
        self.check_known()?;
        let params =
            Params::new(self.m_kib, self.t, self.p, Some(64)).map_err(HardenError::Argon)?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = unhex(&self.salt).ok_or(HardenError::BadSalt)?;
        let mut out = Zeroizing::new([0u8; 64]);
        argon
            .hash_password_into(password.expose_secret().as_bytes(), &salt, out.as_mut())
            .map_err(HardenError::Argon)?;
        let alphabet = if self.alphabet == "digits" {
            DIGITS
        } else {
            ALPHABET
        };
        debug_assert!(self.pin_len <= out.len());
        let pin: Zeroizing<String> = Zeroizing::new(
            out.iter()
                .take(self.pin_len)
                .map(|b| alphabet[usize::from(*b) % alphabet.len()] as char)
                .collect(),
        );
        Ok(SecretString::from(pin.as_str().to_string()))
    }
}

impl Hardening {
    /// Refuses what this keyward cannot derive exactly as the keyward that wrote it: another
    /// algorithm or alphabet, a PIN longer than the 64 derived bytes, or fields it does not know.
    fn check_known(&self) -> Result<(), HardenError> {
        if self.algorithm != "argon2id" {
            return Err(HardenError::Unknown(format!(
                "algorithm {:?}",
                self.algorithm
            )));
        }
        if !matches!(self.alphabet.as_str(), "base32" | "digits") {
            return Err(HardenError::Unknown(format!(
                "alphabet {:?}",
                self.alphabet
            )));
        }
        if self.pin_len == 0 || self.pin_len > 64 {
            return Err(HardenError::PinLength(self.pin_len));
        }
        if !self.extra.is_empty() {
            let fields: Vec<&str> = self.extra.keys().map(String::as_str).collect();
            return Err(HardenError::Unknown(format!(
                "the field(s) {}",
                fields.join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_password_same_pin_other_salt_other_pin() {
        let h = Hardening::new(4, 255).unwrap();
        let pw = SecretString::from("correct horse".to_string());
        let a = h.derive(&pw).unwrap();
        let b = h.derive(&pw).unwrap();
        assert_eq!(a.expose_secret(), b.expose_secret());
        assert_eq!(a.expose_secret().len(), 26);
        let other = Hardening::new(4, 255).unwrap();
        assert_ne!(
            other.derive(&pw).unwrap().expose_secret(),
            a.expose_secret()
        );
        assert!(h.m_kib >= 19 * 1024 && h.t >= 2);
    }

    #[test]
    fn a_derivation_from_a_newer_keyward_is_refused_not_guessed() {
        let pw = SecretString::from("pw".to_string());
        let good = Hardening::new(4, 255).unwrap();
        let mut h = good.clone();
        h.algorithm = "argon2id-v2".into();
        assert!(h
            .derive(&pw)
            .unwrap_err()
            .to_string()
            .contains("upgrade keyward"));
        let mut h = good.clone();
        h.alphabet = "0123456789".into();
        assert!(h.derive(&pw).unwrap_err().to_string().contains("alphabet"));
        let mut h = good.clone();
        h.extra.insert("pepper".into(), toml::Value::from("x"));
        let e = h.derive(&pw).unwrap_err().to_string();
        assert!(e.contains("pepper") && e.contains("upgrade keyward"), "{e}");
        let mut h = good;
        h.pin_len = 65;
        assert!(h.derive(&pw).is_err());
    }

    #[test]
    fn fits_short_numeric_tokens() {
        let h = Hardening::new(6, 8).unwrap();
        let pin = h.derive(&SecretString::from("pw".to_string())).unwrap();
        assert_eq!(pin.expose_secret().len(), 8);
        assert!(pin.expose_secret().chars().all(|c| c.is_ascii_digit()));
    }
}
