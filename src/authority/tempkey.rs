//! One-time temporary keys: the code an authority operator reads to a user, who types it
//! into `enroll` (Exchange 5.5's "temporary key").
//!
//! # Format
//! 120 bits from the operating system's random source, written as 24 characters of
//! Crockford's base32 (`0-9 A-Z` without `I L O U`), followed by one check character from
//! the same alphabet, shown in groups: `KX4T-9QMA-7D2H-WB0C-3NRE-Z8FJ-Q`.
//! Typing is forgiving: case, dashes and spaces do not matter, and `O`, `I` and `L` are read
//! as `0`, `1` and `1`.
//!
//! The check character makes the 25 characters a codeword of a one-symbol Reed–Solomon-style
//! check over GF(32): with c₀…c₂₄ the character values, Σ αⁱ·cᵢ = 0, where α generates
//! GF(32)* (polynomial x⁵ + x² + 1). Since the 25 weights αⁱ are distinct and non-zero, **every**
//! single-character substitution and **every** swap of two different characters (adjacent or
//! not) is detected; other typos escape with probability 1/32.
//!
//! # Storage
//! Only an Argon2id hash is stored ([`TempKey::hash`], PHC string, m = 19 MiB, t = 2, p = 1),
//! in a [`TempKeyRecord`] that also holds the expiry, the count of wrong tries (locked after
//! [`MAX_ATTEMPTS`]) and whether the key was spent.

use std::fmt;
use std::time::{Duration, SystemTime};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

/// Crockford's base32 alphabet (no `I`, `L`, `O`, `U`).
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Random bits in a key.
const RANDOM_BITS: usize = 120;
/// Bits one base32 character carries.
const BITS_PER_CHAR: usize = 5;
/// Random bytes drawn from the OS.
const RANDOM_BYTES: usize = RANDOM_BITS / 8;
/// Characters carrying the random bits.
const DATA_CHARS: usize = RANDOM_BITS / BITS_PER_CHAR;
/// Characters in a key, check character included.
const KEY_CHARS: usize = DATA_CHARS + 1;
/// Characters per displayed group.
const GROUP: usize = 4;

// The length math, checked at compile time: whole bytes, whole characters, ≥ 100 bits, and
// few enough characters that every position has its own weight in GF(32)* (order 31).
const _: () = assert!(RANDOM_BITS >= 100);
const _: () = assert!(RANDOM_BITS.is_multiple_of(8) && RANDOM_BITS.is_multiple_of(BITS_PER_CHAR));
const _: () = assert!(DATA_CHARS * BITS_PER_CHAR == RANDOM_BITS);
const _: () = assert!(KEY_CHARS <= 31);
const _: () = assert!(RANDOM_BYTES < 16); // fits in a u128 with room to spare

/// Argon2id memory cost in KiB (19 MiB, OWASP's minimum).
const M_COST_KIB: u32 = 19_456;
/// Argon2id passes.
const T_COST: u32 = 2;
/// Argon2id lanes.
const P_COST: u32 = 1;
/// Salt length in bytes.
const SALT_BYTES: usize = 16;

/// Wrong tries allowed before a temporary key locks.
pub const MAX_ATTEMPTS: u32 = 5;
/// How long a temporary key lives when the operator does not say (72 hours).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(72 * 3600);
/// The longest lifetime accepted (90 days).
pub const MAX_LIFETIME: Duration = Duration::from_secs(90 * 24 * 3600);

/// Why a temporary key could not be made, read, hashed or checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TempKeyError {
    /// The typed key has the wrong number of characters.
    #[error(
        "the temporary key has {got} characters but should have {KEY_CHARS} \
         (dashes and spaces do not count); type it again"
    )]
    Length {
        /// Characters typed, dashes and spaces left out.
        got: usize,
    },
    /// The typed key contains a character that is never used in temporary keys.
    #[error(
        "the temporary key has a typo: {ch:?} (character {position}) is not used in \
         temporary keys; type it again"
    )]
    Character {
        /// The character.
        ch: char,
        /// Its position among the key's characters, from 1.
        position: usize,
    },
    /// The check character does not match the rest of the key.
    #[error("the temporary key has a typo (check character mismatch); type it again")]
    Typo,
    /// The operating system's random source failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(#[source] getrandom::Error),
    /// Argon2 failed while hashing.
    #[error("cannot hash the temporary key: {0}")]
    Hash(#[source] argon2::password_hash::Error),
    /// A stored hash cannot be read.
    #[error("the stored temporary-key hash is damaged ({0}); issue a new temporary key")]
    DamagedHash(#[source] argon2::password_hash::Error),
    /// A stored hash is not Argon2id.
    #[error("the stored temporary-key hash is damaged (algorithm {found} instead of argon2id); issue a new temporary key")]
    HashAlgorithm {
        /// The hash's algorithm.
        found: String,
    },
    /// A stored hash has weaker parameters than keyward makes.
    #[error("the stored temporary-key hash is damaged (parameters m={m},t={t},p={p} are weaker than m={M_COST_KIB},t={T_COST},p={P_COST}); issue a new temporary key")]
    WeakHash {
        /// Memory, KiB.
        m: u32,
        /// Passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// A stored expiry time does not parse.
    #[error("the temporary-key record is damaged (expiry {value:?}: {source}); issue a new temporary key")]
    DamagedExpiry {
        /// The stored text.
        value: String,
        /// The parser's error.
        #[source]
        source: humantime::TimestampError,
    },
    /// A lifetime that cannot be read or is out of range.
    #[error("{0}")]
    Lifetime(String),
}

/// A temporary key. Never printed by `Debug`; see [`TempKey::display`] and [`TempKey::expose`].
pub struct TempKey(SecretString);

impl fmt::Debug for TempKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TempKey([REDACTED])")
    }
}

impl TempKey {
    /// Makes a new key from 120 bits of OS randomness.
    pub fn generate() -> Result<TempKey, TempKeyError> {
        let mut bytes = Zeroizing::new([0u8; 16]);
        getrandom::getrandom(&mut bytes[16 - RANDOM_BYTES..]).map_err(TempKeyError::Random)?;
        let mut n = u128::from_be_bytes(*bytes);
        let mut values = Zeroizing::new([0u8; KEY_CHARS]);
        for (i, v) in values[..DATA_CHARS].iter_mut().enumerate() {
            let shift = BITS_PER_CHAR * (DATA_CHARS - 1 - i);
            // Masked to 5 bits, so the cast cannot truncate.
            *v = ((n >> shift) & 0x1f) as u8;
        }
        n.zeroize();
        values[DATA_CHARS] = check_value(&values[..DATA_CHARS]);
        Ok(TempKey::from_values(&values[..]))
    }

    /// Reads a typed key: case, dashes and spaces are ignored, `O`/`I`/`L` read as `0`/`1`/`1`;
    /// the length and the check character are checked.
    pub fn parse(typed: &str) -> Result<TempKey, TempKeyError> {
        let mut values = Zeroizing::new(Vec::with_capacity(KEY_CHARS));
        let mut bad = None;
        for ch in typed.chars() {
            if ch == '-' || ch.is_whitespace() {
                continue;
            }
            match char_value(ch) {
                Some(v) => values.push(v),
                None => {
                    if bad.is_none() {
                        bad = Some((ch, values.len() + 1));
                    }
                    // Counts toward the length, so the length error stays truthful.
                    values.push(0);
                }
            }
        }
        if let Some((ch, position)) = bad {
            return Err(TempKeyError::Character { ch, position });
        }
        if values.len() != KEY_CHARS {
            return Err(TempKeyError::Length { got: values.len() });
        }
        if weighted_sum(&values) != 0 {
            return Err(TempKeyError::Typo);
        }
        Ok(TempKey::from_values(&values))
    }

    /// The key as shown to the operator, once: `XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-C`. The caller
    /// prints it and drops it; it must never reach a log or a file.
    pub fn display(&self) -> String {
        let canonical = self.expose().as_bytes();
        let mut out = String::with_capacity(KEY_CHARS + KEY_CHARS / GROUP);
        for (i, group) in canonical[..DATA_CHARS].chunks(GROUP).enumerate() {
            if i > 0 {
                out.push('-');
            }
            out.extend(group.iter().map(|&b| char::from(b)));
        }
        out.push('-');
        out.push(char::from(canonical[DATA_CHARS]));
        out
    }

    /// The canonical form (25 upper-case characters, check character last, no dashes) for
    /// hashing and encryption. This is the only place the key is exposed.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// An Argon2id hash of the key as a PHC string (m = 19 MiB, t = 2, p = 1, random salt).
    pub fn hash(&self) -> Result<String, TempKeyError> {
        let params = Params::new(M_COST_KIB, T_COST, P_COST, None)
            .map_err(|e| TempKeyError::Hash(e.into()))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut salt = Zeroizing::new([0u8; SALT_BYTES]);
        getrandom::getrandom(&mut salt[..]).map_err(TempKeyError::Random)?;
        let salt = SaltString::encode_b64(&salt[..]).map_err(TempKeyError::Hash)?;
        let hash = argon
            .hash_password(self.expose().as_bytes(), &salt)
            .map_err(TempKeyError::Hash)?;
        Ok(hash.to_string())
    }

    /// Checks the key against a PHC string in constant time: `Ok(false)` for another key, an
    /// error only for a damaged or too-weak hash.
    pub fn verify(&self, phc: &str) -> Result<bool, TempKeyError> {
        let parsed = PasswordHash::new(phc).map_err(TempKeyError::DamagedHash)?;
        if parsed.algorithm != Algorithm::Argon2id.ident() {
            return Err(TempKeyError::HashAlgorithm {
                found: parsed.algorithm.to_string(),
            });
        }
        let params = Params::try_from(&parsed).map_err(TempKeyError::DamagedHash)?;
        if params.m_cost() < M_COST_KIB || params.t_cost() < T_COST || params.p_cost() < P_COST {
            return Err(TempKeyError::WeakHash {
                m: params.m_cost(),
                t: params.t_cost(),
                p: params.p_cost(),
            });
        }
        // `verify_password` recomputes with the hash's own parameters and compares the
        // outputs in constant time.
        match Argon2::default().verify_password(self.expose().as_bytes(), &parsed) {
            Ok(()) => Ok(true),
            Err(argon2::password_hash::Error::Password) => Ok(false),
            Err(e) => Err(TempKeyError::DamagedHash(e)),
        }
    }

    /// Builds the canonical string from checked character values.
    fn from_values(values: &[u8]) -> TempKey {
        // Exact capacity: no reallocation leaves a copy behind, and the conversion to a
        // boxed str does not move it either.
        let mut canonical = String::with_capacity(values.len());
        canonical.extend(
            values
                .iter()
                .map(|&v| char::from(ALPHABET[usize::from(v & 0x1f)])),
        );
        TempKey(SecretString::from(canonical))
    }
}

/// The value of a typed character in Crockford's base32, or `None` if it is not one.
fn char_value(ch: char) -> Option<u8> {
    let up = match ch.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    let byte = u8::try_from(up).ok()?;
    ALPHABET
        .iter()
        .position(|&a| a == byte)
        .and_then(|p| u8::try_from(p).ok())
}

/// Multiplication in GF(32) = GF(2)[x] / (x⁵ + x² + 1), without secret-dependent branches.
fn gf32_mul(a: u8, b: u8) -> u8 {
    let (mut a, mut product) = (a & 0x1f, 0u8);
    for bit in 0..BITS_PER_CHAR {
        product ^= a & 0u8.wrapping_sub((b >> bit) & 1);
        let carry = 0u8.wrapping_sub((a >> 4) & 1);
        a = ((a << 1) & 0x1f) ^ (0x05 & carry);
    }
    product
}

/// αⁱ in GF(32), α = x.
fn gf32_alpha_pow(i: usize) -> u8 {
    (0..i).fold(1u8, |acc, _| gf32_mul(acc, 2))
}

/// Σ αⁱ·vᵢ over GF(32).
fn weighted_sum(values: &[u8]) -> u8 {
    values
        .iter()
        .enumerate()
        .fold(0u8, |acc, (i, &v)| acc ^ gf32_mul(gf32_alpha_pow(i), v))
}

/// The check value that makes the weighted sum of data + check zero.
fn check_value(data: &[u8]) -> u8 {
    // α^DATA_CHARS · c = s  ⇒  c = α^(31 − DATA_CHARS) · s, since α³¹ = 1.
    gf32_mul(gf32_alpha_pow(31 - DATA_CHARS), weighted_sum(data))
}

/// What the authority keeps about one temporary key: its hash, validity and use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TempKeyRecord {
    /// Argon2id PHC string of the key.
    pub phc: String,
    /// When it was issued (RFC 3339, UTC).
    pub issued: String,
    /// When it stops working (RFC 3339, UTC).
    pub expires: String,
    /// Wrong tries so far.
    pub attempts: u32,
    /// Whether it was used for an enrollment already.
    pub spent: bool,
}

/// The outcome of checking a typed key against a [`TempKeyRecord`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TempKeyCheck {
    /// The key is right and usable.
    Ok,
    /// The key is wrong; `tries_left` more wrong tries lock it.
    Wrong {
        /// Wrong tries left before the key locks.
        tries_left: u32,
    },
    /// Too many wrong tries: the key no longer works.
    Locked,
    /// The key expired.
    Expired {
        /// When (RFC 3339).
        at: String,
    },
    /// The key was used already.
    Spent,
}

impl fmt::Display for TempKeyCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TempKeyCheck::Ok => f.write_str("the temporary key is right"),
            TempKeyCheck::Wrong { tries_left } => write!(
                f,
                "wrong temporary key: {tries_left} {} left before it locks",
                if *tries_left == 1 { "try" } else { "tries" }
            ),
            TempKeyCheck::Locked => f.write_str(
                "the temporary key is locked after too many wrong tries; \
                 ask the authority for a new one",
            ),
            TempKeyCheck::Expired { at } => write!(
                f,
                "the temporary key expired at {at}; ask the authority for a new one"
            ),
            TempKeyCheck::Spent => {
                f.write_str("the temporary key was used already; ask the authority for a new one")
            }
        }
    }
}

impl TempKeyRecord {
    /// A record for a freshly issued `key`, valid from `now` for `lifetime` (1 s to 90 days).
    pub fn new(key: &TempKey, now: SystemTime, lifetime: Duration) -> Result<Self, TempKeyError> {
        check_lifetime(lifetime, &humantime::format_duration(lifetime).to_string())?;
        let expires = now
            .checked_add(lifetime)
            .ok_or_else(|| TempKeyError::Lifetime("the expiry time is out of range".into()))?;
        Ok(TempKeyRecord {
            phc: key.hash()?,
            issued: humantime::format_rfc3339_seconds(now).to_string(),
            expires: humantime::format_rfc3339_seconds(expires).to_string(),
            attempts: 0,
            spent: false,
        })
    }

    /// Checks `key` against the record at `now`; counts a wrong try (attempts += 1) — the
    /// caller persists the record. Order: spent → `Spent`, expired → `Expired`,
    /// attempts ≥ [`MAX_ATTEMPTS`] → `Locked` (without hashing), else verify: wrong →
    /// attempts += 1 and `Wrong { tries_left }` (or `Locked` when that was the last allowed
    /// try), right → `Ok` (does not mark it spent: call [`TempKeyRecord::mark_spent`] when
    /// the reply is written).
    pub fn check(&mut self, key: &TempKey, now: SystemTime) -> Result<TempKeyCheck, TempKeyError> {
        if self.spent {
            return Ok(TempKeyCheck::Spent);
        }
        if self.expired(now)? {
            return Ok(TempKeyCheck::Expired {
                at: self.expires.clone(),
            });
        }
        if self.attempts >= MAX_ATTEMPTS {
            return Ok(TempKeyCheck::Locked);
        }
        if key.verify(&self.phc)? {
            return Ok(TempKeyCheck::Ok);
        }
        self.attempts = self.attempts.saturating_add(1);
        if self.attempts >= MAX_ATTEMPTS {
            Ok(TempKeyCheck::Locked)
        } else {
            Ok(TempKeyCheck::Wrong {
                tries_left: MAX_ATTEMPTS - self.attempts,
            })
        }
    }

    /// Whether the key's lifetime is over at `now` (spent or not).
    pub fn expired(&self, now: SystemTime) -> Result<bool, TempKeyError> {
        let expires = humantime::parse_rfc3339_weak(&self.expires).map_err(|source| {
            TempKeyError::DamagedExpiry {
                value: self.expires.clone(),
                source,
            }
        })?;
        Ok(now >= expires)
    }

    /// Marks the key used; call it when the reply is written, then persist the record.
    pub fn mark_spent(&mut self) {
        self.spent = true;
    }
}

/// A lifetime as people write it: `72h`, `30m`, `7d`, `90s`.
pub fn format_lifetime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 86_400 == 0 && s >= 7 * 86_400 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Reads a lifetime such as `72h`, `30m`, `7d` or `3600s`; refuses 0 and more than 90 days.
pub fn parse_lifetime(s: &str) -> Result<Duration, TempKeyError> {
    let text = s.trim();
    let lifetime = humantime::parse_duration(text).map_err(|e| {
        TempKeyError::Lifetime(format!(
            "cannot read the lifetime {text:?} ({e}); write it like 72h, 30m, 7d or 3600s"
        ))
    })?;
    check_lifetime(lifetime, text)?;
    Ok(lifetime)
}

/// Refuses a zero lifetime and one over [`MAX_LIFETIME`].
fn check_lifetime(lifetime: Duration, shown: &str) -> Result<(), TempKeyError> {
    if lifetime.is_zero() {
        return Err(TempKeyError::Lifetime(format!(
            "the lifetime {shown:?} is zero; give a positive one such as 72h"
        )));
    }
    if lifetime > MAX_LIFETIME {
        return Err(TempKeyError::Lifetime(format!(
            "the lifetime {shown:?} is longer than the maximum of 90 days"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed, valid key for deterministic tests.
    fn sample() -> TempKey {
        let data: Vec<u8> = (0..DATA_CHARS).map(|i| ((i * 7 + 3) % 32) as u8).collect();
        let mut values = data.clone();
        values.push(check_value(&data));
        TempKey::from_values(&values)
    }

    fn values_of(key: &TempKey) -> Vec<u8> {
        key.expose()
            .chars()
            .map(|c| char_value(c).expect("alphabet"))
            .collect()
    }

    fn from_raw(values: &[u8]) -> String {
        values
            .iter()
            .map(|&v| char::from(ALPHABET[v as usize]))
            .collect()
    }

    #[test]
    fn entropy_and_length_math() {
        assert_eq!(RANDOM_BYTES * 8, RANDOM_BITS);
        assert_eq!(DATA_CHARS * BITS_PER_CHAR, RANDOM_BITS);
        const { assert!(RANDOM_BITS >= 100) };
        assert_eq!(ALPHABET.len(), 1 << BITS_PER_CHAR);
        let mut distinct = ALPHABET.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 32, "alphabet characters are distinct");
        for banned in [b'I', b'L', b'O', b'U'] {
            assert!(!ALPHABET.contains(&banned));
        }
        let key = TempKey::generate().expect("generate");
        assert_eq!(key.expose().len(), KEY_CHARS);
        assert_eq!(key.display().len(), KEY_CHARS + DATA_CHARS / GROUP);
        // Every bit of the random bytes lands in a data character: two keys differ.
        let other = TempKey::generate().expect("generate");
        assert_ne!(key.expose(), other.expose());
    }

    #[test]
    fn gf32_mul_matches_schoolbook() {
        fn slow(mut a: u8, mut b: u8) -> u8 {
            let mut p = 0u8;
            while b != 0 {
                if b & 1 != 0 {
                    p ^= a;
                }
                b >>= 1;
                a <<= 1;
                if a & 0x20 != 0 {
                    a ^= 0x25;
                }
            }
            p
        }
        for a in 0..32u8 {
            for b in 0..32u8 {
                assert_eq!(gf32_mul(a, b), slow(a, b), "{a}*{b}");
            }
        }
    }

    #[test]
    fn alpha_generates_gf32() {
        let mut seen: Vec<u8> = (0..31).map(gf32_alpha_pow).collect();
        assert_eq!(gf32_alpha_pow(31), 1);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 31, "α has order 31 (x⁵+x²+1 is primitive)");
        for a in 1..32u8 {
            assert!((1..32u8).any(|b| gf32_mul(a, b) == 1), "{a} invertible");
        }
    }

    #[test]
    fn display_format() {
        let key = sample();
        let shown = key.display();
        let groups: Vec<&str> = shown.split('-').collect();
        assert_eq!(groups.len(), DATA_CHARS / GROUP + 1);
        assert!(groups[..groups.len() - 1].iter().all(|g| g.len() == GROUP));
        assert_eq!(groups[groups.len() - 1].len(), 1);
        assert_eq!(shown.replace('-', ""), key.expose());
        assert_eq!(format!("{key:?}"), "TempKey([REDACTED])");
        assert!(!format!("{key:?}").contains(&key.expose()[..6]));
    }

    #[test]
    fn round_trip_forgiving() {
        for _ in 0..50 {
            let key = TempKey::generate().expect("generate");
            let shown = key.display();
            let variants = [
                shown.clone(),
                shown.to_lowercase(),
                shown.replace('-', ""),
                shown.replace('-', " "),
                format!("  {}  ", shown.to_lowercase().replace('-', " - ")),
                key.expose().to_string(),
            ];
            for typed in variants {
                let back = TempKey::parse(&typed).expect("parse");
                assert_eq!(back.expose(), key.expose(), "{typed}");
            }
        }
        // Crockford aliases: O→0, I/L→1.
        let mut raw = vec![0u8, 1, 1];
        raw.extend((3..DATA_CHARS).map(|i| (i % 32) as u8));
        let check = check_value(&raw);
        raw.push(check);
        let canonical = from_raw(&raw);
        let typed = format!("oIl{}", &canonical[3..]);
        assert_eq!(TempKey::parse(&typed).expect("aliases").expose(), canonical);
    }

    #[test]
    fn length_and_character_errors() {
        let shown = sample().display();
        let short = &shown[..shown.len() - 1];
        let err = TempKey::parse(short).expect_err("short");
        assert!(matches!(err, TempKeyError::Length { got: 24 }), "{err}");
        assert!(err.to_string().contains("should have 25"), "{err}");
        let long = format!("{shown}A");
        assert!(matches!(
            TempKey::parse(&long),
            Err(TempKeyError::Length { got: 26 })
        ));
        assert!(matches!(
            TempKey::parse(""),
            Err(TempKeyError::Length { got: 0 })
        ));
        let with_u = format!("U{}", &sample().expose()[1..]);
        let err = TempKey::parse(&with_u).expect_err("U");
        assert!(
            matches!(
                err,
                TempKeyError::Character {
                    ch: 'U',
                    position: 1
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("typo"));
    }

    #[test]
    fn every_single_substitution_is_caught() {
        let mut keys = vec![sample()];
        keys.extend((0..40).map(|_| TempKey::generate().expect("generate")));
        let (mut tried, mut caught) = (0u32, 0u32);
        for key in &keys {
            let values = values_of(key);
            for pos in 0..KEY_CHARS {
                for v in 0..32u8 {
                    if v == values[pos] {
                        continue;
                    }
                    let mut typo = values.clone();
                    typo[pos] = v;
                    tried += 1;
                    match TempKey::parse(&from_raw(&typo)) {
                        Err(TempKeyError::Typo) => caught += 1,
                        other => panic!("substitution at {pos} not caught: {other:?}"),
                    }
                }
            }
        }
        assert_eq!(tried, 41 * 25 * 31);
        assert_eq!(caught, tried, "100% of single substitutions caught");
        println!("single substitutions caught: {caught}/{tried}");
        let err = TempKey::parse(&{
            let mut v = values_of(&sample());
            v[5] ^= 1;
            from_raw(&v)
        })
        .expect_err("typo");
        assert_eq!(
            err.to_string(),
            "the temporary key has a typo (check character mismatch); type it again"
        );
    }

    #[test]
    fn every_transposition_is_caught() {
        let mut tried = 0u32;
        for _ in 0..40 {
            let values = values_of(&TempKey::generate().expect("generate"));
            for i in 0..KEY_CHARS {
                for j in i + 1..KEY_CHARS {
                    if values[i] == values[j] {
                        continue;
                    }
                    let mut typo = values.clone();
                    typo.swap(i, j);
                    tried += 1;
                    assert!(
                        matches!(TempKey::parse(&from_raw(&typo)), Err(TempKeyError::Typo)),
                        "swap {i}<->{j} not caught"
                    );
                }
            }
        }
        assert!(tried > 10_000);
        println!("transpositions caught: {tried}/{tried}");
    }

    #[test]
    fn double_substitutions_mostly_caught() {
        // Not guaranteed (one check symbol): expected 31/32 ≈ 96.9%.
        let values = values_of(&sample());
        let (mut tried, mut caught) = (0u32, 0u32);
        for p in 0..KEY_CHARS {
            for q in p + 1..KEY_CHARS {
                for d in 1..32u8 {
                    for e in [1u8, 7, 19, 30] {
                        let mut typo = values.clone();
                        typo[p] ^= d;
                        typo[q] ^= e;
                        tried += 1;
                        if TempKey::parse(&from_raw(&typo)).is_err() {
                            caught += 1;
                        }
                    }
                }
            }
        }
        let rate = f64::from(caught) / f64::from(tried);
        println!("double substitutions caught: {caught}/{tried} = {rate:.4}");
        assert!(rate > 0.95, "double-substitution detection {rate}");
    }

    #[test]
    fn hash_and_verify() {
        let key = TempKey::generate().expect("generate");
        let phc = key.hash().expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains(key.expose()));
        assert!(key.verify(&phc).expect("verify"));
        let typed = TempKey::parse(&key.display().to_lowercase()).expect("parse");
        assert!(typed.verify(&phc).expect("verify typed"));
        let other = TempKey::generate().expect("generate");
        assert!(!other.verify(&phc).expect("verify other"));
        // Same key, new salt.
        assert_ne!(key.hash().expect("hash"), phc);
        // Damaged hashes are errors, not "wrong key".
        assert!(matches!(
            key.verify("not a phc"),
            Err(TempKeyError::DamagedHash(_))
        ));
        let weak = phc.replace("m=19456", "m=8");
        assert!(matches!(
            key.verify(&weak),
            Err(TempKeyError::WeakHash { m: 8, .. })
        ));
        let other_alg = phc.replace("$argon2id$", "$argon2i$");
        assert!(matches!(
            key.verify(&other_alg),
            Err(TempKeyError::HashAlgorithm { .. })
        ));
    }

    #[test]
    fn record_check_flow() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let key = TempKey::generate().expect("generate");
        let wrong = TempKey::generate().expect("generate");
        let mut rec = TempKeyRecord::new(&key, t0, DEFAULT_LIFETIME).expect("record");
        assert_eq!(rec.issued, "2023-11-14T22:13:20Z");
        assert_eq!(rec.expires, "2023-11-17T22:13:20Z");
        let json = serde_json::to_string(&rec).expect("json");
        let back: TempKeyRecord = serde_json::from_str(&json).expect("json back");
        assert_eq!(back, rec);

        let now = t0 + Duration::from_secs(60);
        assert_eq!(rec.check(&key, now).expect("check"), TempKeyCheck::Ok);
        assert_eq!(rec.attempts, 0);
        for left in (1..MAX_ATTEMPTS).rev() {
            let got = rec.check(&wrong, now).expect("check");
            assert_eq!(got, TempKeyCheck::Wrong { tries_left: left });
        }
        assert_eq!(rec.attempts, MAX_ATTEMPTS - 1);
        // The 5th wrong try locks.
        assert_eq!(rec.check(&wrong, now).expect("check"), TempKeyCheck::Locked);
        assert_eq!(rec.attempts, MAX_ATTEMPTS);
        // The 6th, even with the right key, stays locked, and counts nothing more.
        assert_eq!(rec.check(&key, now).expect("check"), TempKeyCheck::Locked);
        assert_eq!(rec.attempts, MAX_ATTEMPTS);
        assert!(TempKeyCheck::Wrong { tries_left: 1 }
            .to_string()
            .contains("1 try left"));
    }

    #[test]
    fn record_expired_and_spent() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let key = TempKey::generate().expect("generate");
        let mut rec = TempKeyRecord::new(&key, t0, Duration::from_secs(3600)).expect("record");
        let late = t0 + Duration::from_secs(3600);
        assert_eq!(
            rec.check(&key, late).expect("check"),
            TempKeyCheck::Expired {
                at: "2023-11-14T23:13:20Z".into()
            }
        );
        // Expiry is checked before the attempt count and without counting.
        rec.attempts = MAX_ATTEMPTS;
        assert!(matches!(
            rec.check(&key, late),
            Ok(TempKeyCheck::Expired { .. })
        ));
        rec.attempts = 0;
        let now = t0 + Duration::from_secs(1);
        assert_eq!(rec.check(&key, now).expect("check"), TempKeyCheck::Ok);
        rec.mark_spent();
        assert_eq!(rec.check(&key, now).expect("check"), TempKeyCheck::Spent);
        assert_eq!(rec.check(&key, late).expect("check"), TempKeyCheck::Spent);
        assert_eq!(rec.attempts, 0);
        // A damaged expiry is an error.
        let mut bad = rec.clone();
        bad.spent = false;
        bad.expires = "next tuesday".into();
        assert!(matches!(
            bad.check(&key, now),
            Err(TempKeyError::DamagedExpiry { .. })
        ));
        // Locked records are not hashed: a damaged hash goes unnoticed until then.
        let mut locked = TempKeyRecord {
            phc: "damaged".into(),
            attempts: MAX_ATTEMPTS,
            spent: false,
            ..rec.clone()
        };
        assert_eq!(
            locked.check(&key, now).expect("check"),
            TempKeyCheck::Locked
        );
        locked.attempts = 0;
        assert!(matches!(
            locked.check(&key, now),
            Err(TempKeyError::DamagedHash(_))
        ));
        assert_eq!(locked.attempts, 0, "a damaged hash is not a wrong try");
    }

    #[test]
    fn lifetimes() {
        assert_eq!(parse_lifetime("72h").expect("72h"), DEFAULT_LIFETIME);
        assert_eq!(
            parse_lifetime("30m").expect("30m"),
            Duration::from_secs(1800)
        );
        assert_eq!(
            parse_lifetime("7d").expect("7d"),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_lifetime(" 3600s ").expect("3600s"),
            Duration::from_secs(3600)
        );
        assert_eq!(parse_lifetime("90d").expect("90d"), MAX_LIFETIME);
        for bad in ["0s", "0h", "91d", "90d 1s", "", "72", "forever", "-1h"] {
            let err = parse_lifetime(bad).expect_err(bad);
            assert!(matches!(err, TempKeyError::Lifetime(_)), "{bad}: {err}");
        }
        let key = sample();
        let t0 = SystemTime::UNIX_EPOCH;
        assert!(TempKeyRecord::new(&key, t0, Duration::ZERO).is_err());
        assert!(TempKeyRecord::new(&key, t0, MAX_LIFETIME + Duration::from_secs(1)).is_err());
    }
}
