//! Users and their temporary keys: add, recover, revoke.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::init::{open_vouched, Change};
use super::state::{now_rfc3339, Revocation, UserRecord, UserState};
use super::tempkey::{TempKey, TempKeyRecord};
use super::x509::CrlReason;
use super::AuthorityError;

/// Checks a user name: 1-64 characters from letters, digits and `._@-`.
pub fn check_user_name(name: &str) -> Result<(), AuthorityError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::BadRequest(format!(
            "user name {name:?} must be 1-64 characters of letters, digits and . _ @ -"
        )))
    }
}

/// Checks an e-mail address (for certificates).
pub fn check_email(email: &str) -> Result<(), AuthorityError> {
    let ok = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && d.contains('.') && !d.starts_with('.'))
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(AuthorityError::BadRequest(format!(
            "{email:?} is not an e-mail address"
        )))
    }
}

/// Adds a user and returns the temporary key (shown once; only its hash is kept).
pub fn add_user(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    email: Option<&str>,
    lifetime: Duration,
) -> Result<TempKey, AuthorityError> {
    check_user_name(name)?;
    if let Some(e) = email {
        check_email(e)?;
    }
    let (mut a, mut session) = open_vouched(ch, dir)?;
    if a.user(name).is_ok() {
        return Err(AuthorityError::UserExists {
            user: name.to_string(),
        });
    }
    let key = TempKey::generate()?;
    a.add_user(UserRecord {
        name: name.to_string(),
        email: email.map(str::to_string),
        state: UserState::Pending,
        created: now_rfc3339(),
        temp_key: Some(TempKeyRecord::new(&key, SystemTime::now(), lifetime)?),
        keysets: Vec::new(),
        certs: Vec::new(),
        archive: Vec::new(),
        extra: toml::Table::new(),
    })?;
    a.audit(
        "operator",
        "add-user",
        name,
        "ok",
        &format!(
            "temporary key valid for {}",
            super::tempkey::format_lifetime(lifetime)
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(key)
}

/// Revokes the user's current certificates and issues a new temporary key (forgotten password).
/// For a user who has not enrolled yet (pending), only replaces the temporary key.
pub fn recover(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    reason: CrlReason,
    lifetime: Duration,
) -> Result<Recovered, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let user = a.user_mut(name)?;
    if user.state == UserState::Revoked {
        return Err(state_error(
            user,
            "a revoked user cannot be recovered; add a new user instead",
        ));
    }
    if user.state == UserState::Pending {
        // Not enrolled yet, but the key expired, locked or was lost: the error messages for
        // those send the operator here, so replace the key (nothing to revoke).
        let key = TempKey::generate()?;
        let replaced = unused_key_issued(user);
        user.temp_key = Some(TempKeyRecord::new(&key, SystemTime::now(), lifetime)?);
        a.audit(
            "operator",
            "recover",
            name,
            "ok",
            "not enrolled yet: new temporary key issued, the old one no longer works",
        );
        a.commit(ch.module, &mut session, ch.pin)?;
        return Ok(Recovered {
            key,
            pending: true,
            replaced,
        });
    }
    let replaced = unused_key_issued(user);
    let revoked = revoke_certs(user, reason);
    let key = TempKey::generate()?;
    user.temp_key = Some(TempKeyRecord::new(&key, SystemTime::now(), lifetime)?);
    user.state = UserState::Recovering;
    let mut detail = format!("{revoked} certificates revoked ({reason}); new temporary key issued");
    if let Some(issued) = &replaced {
        detail.push_str(&format!(
            "; it replaces the unused one issued {issued}, which no longer works"
        ));
    }
    a.audit("operator", "recover", name, "ok", &detail);
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(Recovered {
        key,
        pending: false,
        replaced,
    })
}

/// What `recover` did.
pub struct Recovered {
    /// The new temporary key.
    pub key: TempKey,
    /// The user had not enrolled yet: only the key was replaced.
    pub pending: bool,
    /// When the unused key it replaces was issued.
    pub replaced: Option<String>,
}

/// When the user holds a temporary key not used yet, when it was issued.
pub fn unused_key_issued(user: &super::state::UserRecord) -> Option<String> {
    user.temp_key
        .as_ref()
        .filter(|t| !t.spent)
        .map(|t| t.issued.clone())
}

/// Revokes the user and all their current certificates; any temporary key is cancelled.
pub fn revoke(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    reason: CrlReason,
) -> Result<usize, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let user = a.user_mut(name)?;
    if user.state == UserState::Revoked {
        return Err(state_error(user, "already revoked"));
    }
    let revoked = revoke_certs(user, reason);
    user.temp_key = None;
    user.state = UserState::Revoked;
    a.audit(
        "operator",
        "revoke",
        name,
        "ok",
        &format!("{revoked} certificates revoked ({reason})"),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(revoked)
}

fn revoke_certs(user: &mut UserRecord, reason: CrlReason) -> usize {
    let at = now_rfc3339();
    let mut n = 0;
    for cert in user.certs.iter_mut().filter(|c| c.revoked.is_none()) {
        cert.revoked = Some(Revocation {
            at: at.clone(),
            reason: reason.to_string(),
        });
        n += 1;
    }
    n
}

/// A user-state error with a hint.
pub fn state_error(user: &UserRecord, hint: &str) -> AuthorityError {
    AuthorityError::UserState {
        user: user.name.clone(),
        state: format!("{:?}", user.state).to_lowercase(),
        hint: hint.to_string(),
    }
}
