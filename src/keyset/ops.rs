//! Using and managing an existing keyset: find its token, log in, sign, change the password,
//! remove it.

use std::io::Read;
use std::path::Path;

use secrecy::SecretString;

use super::registry::{KeyAlgorithm, KeysetRecord, Registry};
use super::{Hardening, KeysetError};
use crate::pki::key::ecdsa_raw_to_der;
use crate::token::keys::hex;
use crate::token::{IdentityLookup, KeyRef, LoginPolicy, Module, PinRole, Token, TokenSession};

/// The keyset's token, checked by label, serial, and manufacturer and model when recorded
/// (a swapped card is refused; two alike tokens are ambiguous).
pub fn keyset_token(module: &Module, record: &KeysetRecord) -> Result<Token, KeysetError> {
    match record.token().lookup(module)? {
        IdentityLookup::Found(t) => Ok(t),
        IdentityLookup::Replaced { found_serial } => Err(KeysetError::CardSwapped {
            keyset: record.name.clone(),
            label: record.token_label.clone(),
            expected: record.token_serial.clone(),
            found: found_serial,
        }),
        IdentityLookup::Missing => Err(KeysetError::TokenMissing {
            keyset: record.name.clone(),
            label: record.token_label.clone(),
            serial: record.token_serial.clone(),
        }),
    }
}

/// The token PIN for a keyset: the password itself, or derived from it when hardened.
pub fn token_pin(
    record: &KeysetRecord,
    password: &SecretString,
) -> Result<SecretString, KeysetError> {
    match &record.hardening {
        Some(h) => Ok(h.derive(password)?),
        None => Ok(password.clone()),
    }
}

/// A logged-in session on a keyset's token.
pub struct KeysetSession {
    /// The session.
    pub session: TokenSession,
    /// The token PIN (for context-specific logins at security level high).
    pin: SecretString,
}

impl KeysetSession {
    /// Finds the keyset's token, opens a session and logs in with the keyset password.
    pub fn open(
        module: &Module,
        record: &KeysetRecord,
        password: &SecretString,
        policy: LoginPolicy,
        rw: bool,
    ) -> Result<KeysetSession, KeysetError> {
        let token = keyset_token(module, record)?;
        let pin = token_pin(record, password)?;
        let mut session = if rw {
            token.open_rw(module)?
        } else {
            token.open_ro(module)?
        };
        session.login(module, PinRole::User, &pin, policy)?;
        Ok(KeysetSession { session, pin })
    }

    /// The token PIN this session logged in with (derived, for a hardened keyset).
    pub fn token_pin(&self) -> &SecretString {
        &self.pin
    }

    /// Wraps a session that is already logged in with `pin`.
    pub fn from_session(session: TokenSession, pin: SecretString) -> KeysetSession {
        KeysetSession { session, pin }
    }

    /// The keyset's signing private key.
    pub fn signing_key(&self, record: &KeysetRecord) -> Result<KeyRef, KeysetError> {
        let id = unhex_id(&record.signing_id)?;
        self.session
            .find_private_key(&id)?
            .ok_or_else(|| KeysetError::KeyMissing {
                keyset: record.name.clone(),
                what: "signing key",
                id: record.signing_id.clone(),
                label: record.token_label.clone(),
            })
    }

    /// Signs `data` with the keyset's signing key: PKCS#1 v1.5 SHA-256 for RSA, DER ECDSA
    /// SHA-256 for P-256 — the forms `openssl dgst -sha256 -verify` reads.
    pub fn sign(
        &mut self,
        module: &Module,
        record: &KeysetRecord,
        data: &mut dyn Read,
    ) -> Result<Vec<u8>, KeysetError> {
        let key = self.signing_key(record)?;
        let pin = self.pin.clone();
        let raw = self.session.sign(module, &key, data, &pin)?;
        match record.key_type {
            KeyAlgorithm::P256 => Ok(ecdsa_raw_to_der(&raw)?),
            _ => Ok(raw),
        }
    }

    /// Decrypts a message's content-encryption key with the encryption key `id` on the token
    /// (asking for the password again at security level high).
    pub fn decrypt_key_transport(
        &mut self,
        module: &Module,
        keyset: &str,
        id: &[u8],
        scheme: crate::token::KeyTransportScheme,
        ciphertext: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, KeysetError> {
        let key = self
            .session
            .find_private_key(id)?
            .ok_or_else(|| KeysetError::KeyMissing {
                keyset: keyset.to_string(),
                what: "encryption key",
                id: hex(id),
                label: self.session.token().label().to_string(),
            })?;
        let pin = self.pin.clone();
        Ok(self
            .session
            .decrypt_key_transport(module, &key, scheme, ciphertext, &pin)?)
    }

    /// Signs bytes and returns the signature as X.509 and PKCS#10 carry it (DER ECDSA for EC).
    pub fn sign_bytes(
        &mut self,
        module: &Module,
        record: &KeysetRecord,
        data: &[u8],
    ) -> Result<Vec<u8>, KeysetError> {
        let mut reader = data;
        self.sign(module, record, &mut reader)
    }
}

/// Signs `data` with a keyset in one go: open, log in, sign.
pub fn sign(
    module: &Module,
    record: &KeysetRecord,
    password: &SecretString,
    policy: LoginPolicy,
    data: &mut dyn Read,
) -> Result<Vec<u8>, KeysetError> {
    let mut s = KeysetSession::open(module, record, password, policy, false)?;
    s.sign(module, record, data)
}

/// Changes a keyset's password (the token PIN; with hardening, a new salt too). Returns the
/// names of the other keysets on the same token, whose password changes with it.
pub fn change_password(
    module: &Module,
    home: &Path,
    name: &str,
    old_password: &SecretString,
    new_password: &SecretString,
    policy: LoginPolicy,
) -> Result<Vec<String>, KeysetError> {
    let (lock, mut registry) = Registry::lock(home)?;
    let record = registry.get(name)?.clone();
    let mut token = keyset_token(module, &record)?;
    token.refresh(module)?;
    token.check_pin_state(PinRole::User, policy)?;
    let old_pin = token_pin(&record, old_password)?;
    let new_hardening = match &record.hardening {
        Some(_) => Some(Hardening::new(
            token.summary().min_pin_len,
            token.summary().max_pin_len,
        )?),
        None => None,
    };
    let new_pin = match &new_hardening {
        Some(h) => h.derive(new_password)?,
        None => new_password.clone(),
    };
    token.check_pin_length(PinRole::User, &old_pin)?;
    token.check_pin_length(PinRole::User, &new_pin)?;
    let mut session = token.open_rw(module)?;
    // Log in with the old PIN first: a wrong one is then reported as such, with the tries
    // left (OpenSC's PIV driver answers a wrong old PIN in C_SetPIN with CKR_GENERAL_ERROR).
    session.login(module, PinRole::User, &old_pin, policy)?;
    session.set_user_pin(module, &old_pin, &new_pin)?;
    if new_hardening.is_some() {
        registry.get_mut(name)?.hardening = new_hardening;
        if let Err(e) = registry.save(&lock) {
            // Put the old PIN back so the registry and the token still agree.
            let _ = session.set_user_pin(module, &new_pin, &old_pin);
            return Err(e.into());
        }
    }
    Ok(registry
        .sharing_token(&record.token(), name)
        .into_iter()
        .map(|k| k.name.clone())
        .collect())
}

/// Removes a keyset from the registry; with `destroy`, its keys from the token first.
/// Returns how many token objects were destroyed.
pub fn remove(
    module: Option<&Module>,
    home: &Path,
    name: &str,
    destroy: Option<(&SecretString, LoginPolicy)>,
) -> Result<usize, KeysetError> {
    let (lock, mut registry) = Registry::lock(home)?;
    let record = registry.get(name)?.clone();
    if record.adopted.is_some() && destroy.is_some() {
        return Err(KeysetError::Unsupported(format!(
            "keyset {name:?} was adopted: its keys were put on token {:?} by other tools and stay there; remove the keyset without --destroy-keys (and clear the card with its own tools if that is the aim)",
            record.token_label
        )));
    }
    let mut destroyed = 0;
    if let (Some(module), Some((password, policy))) = (module, destroy) {
        let s = KeysetSession::open(module, &record, password, policy, true)?;
        destroyed = s.session.destroy_by_id(&unhex_id(&record.signing_id)?)?;
        // Signing keys a renewal replaced, and the keys of a renewal still pending.
        if let Some(e) = &record.enrollment {
            let mut ids: Vec<&str> = e.history.iter().map(|h| h.signing_id.as_str()).collect();
            // A pending enrollment's transport key (gone once the enrollment completed).
            ids.extend(e.transport_id.as_deref());
            if let Some(r) = &e.renewal {
                ids.extend([r.signing_id.as_str(), r.transport_id.as_str()]);
            }
            for id in ids {
                destroyed += s.session.destroy_by_id(&unhex_id(id)?)?;
            }
        }
    }
    registry.remove(name)?;
    registry.save(&lock)?;
    Ok(destroyed)
}

/// A hex `CKA_ID` from the registry.
pub fn unhex_id(s: &str) -> Result<Vec<u8>, KeysetError> {
    match crate::token::keys::unhex(s) {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err(KeysetError::Unsupported(format!(
            "the registry's key id {s:?} is not hex; the entry is damaged"
        ))),
    }
}

/// Lowercase hex (re-exported for callers that print ids).
pub fn id_hex(id: &[u8]) -> String {
    hex(id)
}
