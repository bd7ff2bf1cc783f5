//! Users and their temporary keys: add, recover, revoke.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::init::{open_vouched, Change};
use super::state::{now_rfc3339, Revocation, UserRecord, UserState};
use super::tempkey::{TempKey, TempKeyRecord};
use super::AuthorityError;
use crate::pki::x509::CrlReason;

/// Checks a user name (see [`crate::names::check_user_name`]).
pub fn check_user_name(name: &str) -> Result<(), AuthorityError> {
    crate::names::check_user_name(name).map_err(AuthorityError::BadRequest)
}

/// Checks an e-mail address (for certificates; see [`crate::names::check_email`]).
pub fn check_email(email: &str) -> Result<(), AuthorityError> {
    crate::names::check_email(email).map_err(AuthorityError::BadRequest)
}

/// Record kind of a user name's folded form (key and owner: the folded name; body: the
/// name), so that names are unique ignoring case at the cost of one bucket read.
const FOLD_KIND: &str = "user-fold";

/// Refuses a name equal, ignoring case, to an existing user's.
fn check_unique_ignoring_case(
    a: &mut super::state::AuthorityDir,
    name: &str,
) -> Result<(), AuthorityError> {
    let folded = crate::names::fold(name);
    let recorded = a
        .get(FOLD_KIND, &folded, &folded)?
        .map(|row| String::from_utf8_lossy(&row.body).into_owned());
    // Users added before names were folded: the all-lower-case spelling at least.
    let existing = match recorded {
        None if folded != name && a.user(&folded).is_ok() => Some(folded.clone()),
        other => other,
    };
    match existing {
        Some(other) if other != name => Err(AuthorityError::BadRequest(format!(
            "user name {name:?} differs from the existing user {other:?} only in case; names are unique ignoring case — choose another"
        ))),
        _ => Ok(()),
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
    check_unique_ignoring_case(&mut a, name)?;
    let folded = crate::names::fold(name);
    a.put(FOLD_KIND, &folded, &folded, name.as_bytes().to_vec())?;
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
/// For a user who has not enrolled yet (pending), only replaces the temporary key. Refused
/// when the authority has operators: recovery then goes through an approval request
/// (`approvals::submit`).
pub fn recover(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    reason: CrlReason,
    lifetime: Duration,
) -> Result<Recovered, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    super::approvals::require_no_operators(&mut a, "recover")?;
    let done = recover_in(&mut a, name, reason, lifetime)?;
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(done)
}

/// [`recover`] on an open, vouched state, without the commit (also what an approved request
/// runs).
pub fn recover_in(
    a: &mut super::state::AuthorityDir,
    name: &str,
    reason: CrlReason,
    lifetime: Duration,
) -> Result<Recovered, AuthorityError> {
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
        return Ok(Recovered {
            key,
            pending: true,
            replaced,
            lifetime,
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
    Ok(Recovered {
        key,
        pending: false,
        replaced,
        lifetime,
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
    /// How long the new key works.
    pub lifetime: Duration,
}

impl Recovered {
    /// How long the new key works.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }
}

/// When the user holds a temporary key not used yet, when it was issued.
pub fn unused_key_issued(user: &super::state::UserRecord) -> Option<String> {
    user.temp_key
        .as_ref()
        .filter(|t| !t.spent)
        .map(|t| t.issued.clone())
}

/// Revokes the user and all their current certificates; any temporary key is cancelled.
/// Refused when the authority has operators (see [`recover`]).
pub fn revoke(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    reason: CrlReason,
) -> Result<usize, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    super::approvals::require_no_operators(&mut a, "revoke")?;
    let revoked = revoke_in(&mut a, name, reason)?;
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(revoked)
}

/// [`revoke`] on an open, vouched state, without the commit.
pub fn revoke_in(
    a: &mut super::state::AuthorityDir,
    name: &str,
    reason: CrlReason,
) -> Result<usize, AuthorityError> {
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
