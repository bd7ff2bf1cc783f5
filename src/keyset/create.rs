//! `keyset create`: a signing key pair on the token and a registry entry, or neither.

use secrecy::SecretString;

use super::harden::Hardening;
use super::journal;
use super::name::KeysetName;
use super::registry::{KeyAlgorithm, KeysetRecord, KeysetState, Registry, RegistryLock, Security};
use super::KeysetError;
use crate::pki::key::PublicKey;
use crate::token::caps::{check_context_login, KeyGenCaps};
use crate::token::keys::hex;
use crate::token::{
    KeySpec, KeyTemplate, LoginPolicy, Module, PinRole, Probe, Token, TokenSession,
};

/// What `keyset create` needs, validated by the caller.
pub struct CreateRequest<'a> {
    /// The keyset's name.
    pub name: KeysetName,
    /// The token it goes on.
    pub token: &'a Token,
    /// Security level.
    pub security: Security,
    /// Signing key algorithm.
    pub key_type: KeyAlgorithm,
    /// The token's current user PIN.
    pub pin: &'a SecretString,
    /// With hardening: the keyset password the token PIN will be derived from.
    pub harden_password: Option<&'a SecretString>,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// Creates the keyset: key pair on the token, then (when hardened) the derived PIN, then the
/// registry entry. A failure at any step removes what the earlier steps made.
pub fn create(
    module: &Module,
    home: &std::path::Path,
    req: CreateRequest<'_>,
) -> Result<KeysetRecord, KeysetError> {
    let (lock, registry) = Registry::lock(home)?;
    create_locked(module, lock, registry, req)
}

/// Like [`create`], with the registry lock already held — taken by the caller before it first
/// touches the token, so that two keyward processes never use the token at the same time
/// (SoftHSM's file store can show a token as missing to a reader while another process writes).
pub fn create_locked(
    module: &Module,
    lock: RegistryLock,
    mut registry: Registry,
    req: CreateRequest<'_>,
) -> Result<KeysetRecord, KeysetError> {
    let home = registry.home();
    journal::recover(module, &home, &lock, &mut registry)?;
    let label = req.name.label();
    registry.check_free(req.name.as_str(), &label)?;
    check_pin_sharing(&registry, &req)?;
    if !req.token.key_intake(module)?.generate_key_pair {
        return Err(KeysetError::Unsupported(format!(
            "token {:?} cannot generate a key pair through PKCS#11 (no mechanism offers CKF_GENERATE_KEY_PAIR): its keys come from the card's own tools; adopt them with `keyward keyset adopt NAME --token URI`",
            req.token.label()
        )));
    }
    let hardening = match req.harden_password {
        Some(_) => Some(Hardening::new(
            req.token.summary().min_pin_len,
            req.token.summary().max_pin_len,
        )?),
        None => None,
    };
    let derived = match (&hardening, req.harden_password) {
        (Some(h), Some(pw)) => Some(h.derive(pw)?),
        _ => None,
    };
    if let Some(pin) = &derived {
        req.token.check_pin_length(PinRole::User, pin)?;
    }

    let mut session = req.token.open_rw(module)?;
    session.login(module, PinRole::User, req.pin, req.policy)?;
    // What the token cannot do is refused here, before any key is generated: its key types
    // (two C_GetMechanismInfo calls) and, for --security high, the context-specific login.
    let keygen = session.key_generation(module)?;
    let context_login = match req.security {
        Security::High => session.context_login(req.pin)?,
        Security::Standard => Probe::NotProbed("not needed".into()),
    };
    check_token_supports(
        &keygen,
        &context_login,
        req.token,
        req.key_type,
        req.security,
    )?;
    let id = fresh_id(&session)?;
    let key = SigningKey {
        label: &label,
        id: &id,
        key_type: req.key_type,
        security: req.security,
    };
    // Before the token changes, the journal says what is coming: a kill between the token
    // and the registry is finished (or dropped) by the next keyward that opens the registry.
    let mut planned = key.planned(req.name.as_str(), KeysetState::Local, req.token);
    planned.hardening = hardening.clone();
    journal::Intent {
        action: "creation".into(),
        record: planned.clone(),
        retire: Vec::new(),
        marker: journal::Marker::PublicKey,
        marker_id: hex(&id),
    }
    .write(&home, &lock)?;
    // A card can fail C_GenerateKeyPair after writing one half: from here on a failure
    // removes whatever carries the (fresh, so ours alone) id.
    let finished = generate_signing_pair(&session, &key)
        .and_then(|()| read_signing_public(&session, &key))
        .and_then(|public| {
            let mut record = planned;
            record.signing_public_key = public.to_pem()?;
            record.hardening = None;
            finish(
                module,
                &mut session,
                &req,
                record,
                hardening,
                derived.as_ref(),
            )
        });
    // `finish` switches the PIN last: the PIN is the derived one exactly when it succeeded.
    // (Switching it back when the switch failed would spend a PIN try on a wrong old PIN.)
    let switched = derived.as_ref().filter(|_| finished.is_ok());
    let result = finished.and_then(|record| {
        registry.add(record.clone())?;
        registry.save(&lock)?;
        Ok(record)
    });
    if result.is_err() {
        roll_back(module, &mut session, &req, &id, switched);
    }
    journal::clear(&home);
    result
}

/// A hardened keyset's token PIN is derived from its own password and salt, so it cannot share
/// its token (and PIN) with another keyset: hardening would silently change the other keyset's
/// password, or a second hardening would lock the first one out.
fn check_pin_sharing(registry: &Registry, req: &CreateRequest<'_>) -> Result<(), KeysetError> {
    let others = registry.sharing_token(
        &crate::token::TokenIdentity::of(req.token),
        req.name.as_str(),
    );
    if let Some(hardened) = others.iter().find(|k| k.hardening.is_some()) {
        return Err(KeysetError::Unsupported(format!(
            "token {:?} holds hardened keyset {:?}, whose token PIN is derived from its own password; put keyset {:?} on another token",
            req.token.label(),
            hardened.name,
            req.name.as_str()
        )));
    }
    if let (Some(other), Some(_)) = (others.first(), req.harden_password) {
        return Err(KeysetError::Unsupported(format!(
            "--harden needs a token of its own: token {:?} also holds keyset {:?}, whose password is the token PIN and would change; use another token",
            req.token.label(),
            other.name
        )));
    }
    Ok(())
}

/// When hardened, switches the token PIN to the derived one and records the hardening.
fn finish(
    module: &Module,
    session: &mut TokenSession,
    req: &CreateRequest<'_>,
    mut record: KeysetRecord,
    hardening: Option<Hardening>,
    derived: Option<&SecretString>,
) -> Result<KeysetRecord, KeysetError> {
    if let Some(new_pin) = derived {
        session.set_user_pin(module, req.pin, new_pin)?;
    }
    record.hardening = hardening;
    Ok(record)
}

/// A new keyset's signing key: where it goes and what it is.
pub struct SigningKey<'a> {
    /// The keyset's label (the object labels are made from it).
    pub label: &'a str,
    /// `CKA_ID` for the pair.
    pub id: &'a [u8],
    /// The algorithm.
    pub key_type: KeyAlgorithm,
    /// Security level (high: `CKA_ALWAYS_AUTHENTICATE`).
    pub security: Security,
}

impl SigningKey<'_> {
    /// The registry record of a keyset with this key, in `state`, before any enrollment.
    pub fn record(
        &self,
        name: &str,
        state: KeysetState,
        token: &Token,
        public: &PublicKey,
    ) -> Result<KeysetRecord, KeysetError> {
        let mut record = self.planned(name, state, token);
        record.signing_public_key = public.to_pem()?;
        Ok(record)
    }

    /// [`SigningKey::record`] before the key exists: its public key empty.
    pub fn planned(&self, name: &str, state: KeysetState, token: &Token) -> KeysetRecord {
        let identity = crate::token::TokenIdentity::of(token);
        KeysetRecord {
            name: name.to_string(),
            label: self.label.to_string(),
            state,
            security: self.security,
            key_type: self.key_type,
            token_label: identity.label,
            token_serial: identity.serial,
            token_manufacturer: identity.manufacturer,
            token_model: identity.model,
            signing_id: hex(self.id),
            signing_public_key: String::new(),
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            hardening: None,
            enrollment: None,
            adopted: None,
            extra: toml::Table::new(),
        }
    }
}

/// Generates a keyset's signing key pair on the token, labelled after the keyset.
pub fn generate_signing_pair(
    session: &TokenSession,
    key: &SigningKey<'_>,
) -> Result<(), KeysetError> {
    let started = std::time::Instant::now();
    session.generate_signing_pair(&KeyTemplate {
        id: key.id,
        private_label: &format!("{} signing key", key.label),
        public_label: &format!("{} signing key (public)", key.label),
        spec: spec(key.key_type),
        always_authenticate: key.security == Security::High,
    })?;
    log::info!("generated {:?} in {:?}", key.key_type, started.elapsed());
    Ok(())
}

/// The public key of a pair made by [`generate_signing_pair`].
pub fn read_signing_public(
    session: &TokenSession,
    key: &SigningKey<'_>,
) -> Result<PublicKey, KeysetError> {
    let raw = session
        .public_key(key.id)?
        .ok_or_else(|| KeysetError::KeyMissing {
            keyset: key.label.to_string(),
            what: "new public key",
            id: hex(key.id),
            label: session.token().label().to_string(),
        })?;
    Ok(PublicKey::from_raw(&raw)?)
}

fn roll_back(
    module: &Module,
    session: &mut TokenSession,
    req: &CreateRequest<'_>,
    id: &[u8],
    switched: Option<&SecretString>,
) {
    log::warn!("keyset create failed; removing the keys it generated");
    let mut fresh = session.for_cleanup(module);
    let session = fresh.as_mut().unwrap_or(session);
    if let Err(e) = session.destroy_by_id(id) {
        log::error!("could not remove the new keys (id {}): {e}", hex(id));
    }
    if let Some(new_pin) = switched {
        match session.set_user_pin(module, new_pin, req.pin) {
            Ok(()) => log::warn!("restored the token's previous PIN"),
            Err(e) => log::error!("could not restore the token's previous PIN: {e}"),
        }
    }
}

/// A random 16-byte `CKA_ID` not used by any object on the token.
fn fresh_id(session: &TokenSession) -> Result<Vec<u8>, KeysetError> {
    loop {
        let id = session.random(16)?;
        if session.count_by_id(&id)? == 0 {
            return Ok(id);
        }
    }
}

/// Refuses, before anything is generated, a key type or security level the token cannot do
/// (from its probed capabilities), in one sentence naming what it lacks.
pub fn check_token_supports(
    keygen: &KeyGenCaps,
    context_login: &Probe,
    token: &Token,
    key_type: KeyAlgorithm,
    security: Security,
) -> Result<(), KeysetError> {
    if let Err(why) = keygen.check(spec(key_type)) {
        let name = match key_type {
            KeyAlgorithm::Rsa2048 => "rsa2048",
            KeyAlgorithm::Rsa3072 => "rsa3072",
            KeyAlgorithm::P256 => "p256",
        };
        return Err(KeysetError::Unsupported(format!(
            "token {:?} cannot generate {name} keys: {why}; choose another --key-type or another token; nothing was changed",
            token.label()
        )));
    }
    if security == Security::High {
        if let Err(why) = check_context_login(context_login) {
            return Err(KeysetError::Unsupported(format!(
                "token {:?} cannot hold --security high keys: {why}; use --security standard or another token; nothing was changed",
                token.label()
            )));
        }
    }
    Ok(())
}

fn spec(k: KeyAlgorithm) -> KeySpec {
    match k {
        KeyAlgorithm::Rsa2048 => KeySpec::Rsa(2048),
        KeyAlgorithm::Rsa3072 => KeySpec::Rsa(3072),
        KeyAlgorithm::P256 => KeySpec::EcP256,
    }
}
