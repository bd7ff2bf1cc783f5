//! Token states (`authority token --dir DIR USER --state …`), after Dogtag TPS's model:
//!
//! - **lost**: the user's current certificates go on hold (CRL reason certificateHold) and a
//!   temporary key is issued, so the user can enroll a *temporary token* (a new keyset on
//!   another token, with the archived encryption keys back) without the held certificates
//!   being revoked;
//! - **found**: the held certificates come off hold (gone from the next CRL) and the
//!   temporary token's certificates are retired (revoked, reason superseded); an unused
//!   temporary key no longer works;
//! - **damaged**: the certificates are revoked (superseded: the keys were not exposed; a
//!   token that was lost first: keyCompromise) and a temporary key is issued for a
//!   replacement token (as `recover` does);
//! - **terminated**: the certificates are revoked (cessationOfOperation, or keyCompromise
//!   for a lost token) and the user is revoked.
//!
//! Allowed: active → lost, damaged, terminated; lost → found, damaged, terminated;
//! found → lost, damaged, terminated; damaged → terminated. Every change is audited; a refused
//! transition changes nothing. The token state is a record of its own (kind `token`, keyed by
//! user), vouched for like every record.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::init::{open_vouched, Change};
use super::state::{now_rfc3339, tampered, AuthorityDir, Revocation, UserRecord, UserState};
use super::tempkey::{TempKey, TempKeyRecord};
use super::users::state_error;
use super::AuthorityError;
use crate::pki::x509::CrlReason;

/// The record kind of a user's token state.
pub const KIND: &str = "token";

/// The reason string a held certificate carries.
pub const HOLD: &str = "certificateHold";

/// A token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TokenState {
    /// In use (no state recorded yet means this).
    Active,
    /// Lost: certificates on hold, a temporary token allowed.
    Lost,
    /// Found again: certificates off hold, the temporary token retired.
    Found,
    /// Damaged: certificates revoked, a replacement token allowed.
    Damaged,
    /// Terminated: certificates revoked, the user revoked.
    Terminated,
}

impl std::fmt::Display for TokenState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenState::Active => "active",
            TokenState::Lost => "lost",
            TokenState::Found => "found",
            TokenState::Damaged => "damaged",
            TokenState::Terminated => "terminated",
        })
    }
}

/// The `token` record of a user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TokenRecord {
    /// The state.
    pub state: TokenState,
    /// Since when, RFC 3339.
    pub since: String,
    /// While lost: the certificates put on hold (serials, hex).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// Earlier states, oldest first: `state at`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<String>,
}

/// A revocation reason as stored (`certificateHold` included) for the CRL.
pub fn crl_reason(stored: &str) -> Option<CrlReason> {
    if stored == HOLD {
        return Some(CrlReason::CertificateHold);
    }
    stored.parse::<CrlReason>().ok()
}

/// The user's token state (active when none is recorded).
pub fn read(a: &mut AuthorityDir, user: &str) -> Result<TokenRecord, AuthorityError> {
    a.user(user)?;
    match a.get(KIND, user, user)? {
        None => Ok(TokenRecord {
            state: TokenState::Active,
            since: a.user(user)?.created.clone(),
            held: Vec::new(),
            history: Vec::new(),
        }),
        Some(row) => serde_json::from_slice(&row.body).map_err(|e| {
            tampered(&format!(
                "the token record of user {user:?} does not parse: {e}"
            ))
        }),
    }
}

/// What a change did.
#[derive(Debug, Serialize)]
pub struct Changed {
    /// The user.
    pub user: String,
    /// The state before.
    pub from: TokenState,
    /// The state now.
    pub to: TokenState,
    /// Certificates put on hold, taken off hold, retired or revoked (serials).
    pub certificates: Vec<String>,
    /// What happened to them.
    pub what: String,
    /// A temporary key for a temporary or replacement token (shown once).
    #[serde(skip)]
    pub temp_key: Option<TempKey>,
}

fn allowed(from: TokenState, to: TokenState) -> bool {
    use TokenState::*;
    matches!(
        (from, to),
        (Active | Found, Lost | Damaged | Terminated)
            | (Lost, Found | Damaged | Terminated)
            | (Damaged, Terminated)
    )
}

/// Changes the user's token state.
pub fn change(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    to: TokenState,
    lifetime: Duration,
) -> Result<Changed, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let mut record = read(&mut a, name)?;
    let from = record.state;
    if !allowed(from, to) {
        let hint = match (from, to) {
            (_, TokenState::Active) => "set lost, found, damaged or terminated".to_string(),
            (TokenState::Terminated, _) => {
                "a terminated token is final; enroll the user again on a new token (a new user)"
                    .to_string()
            }
            (_, TokenState::Found) => "only a lost token can be found".to_string(),
            (f, t) if f == t => format!("it is {t} already"),
            _ => "see `keyward authority token --help` for the allowed changes".to_string(),
        };
        return Err(AuthorityError::BadRequest(format!(
            "the token of user {name:?} is {from}; it cannot become {to}: {hint}; nothing was changed"
        )));
    }
    let user = a.user(name)?.clone();
    if to == TokenState::Lost && user.state != UserState::Active {
        return Err(state_error(
            &user,
            "only an enrolled user's token can be reported lost; nothing was changed",
        ));
    }
    let now = now_rfc3339();
    let user = a.user_mut(name)?;
    let mut temp_key = None;
    let (serials, what) = match to {
        TokenState::Lost => {
            let held = hold(user, &now);
            record.held = held.clone();
            let key = TempKey::generate()?;
            user.temp_key = Some(TempKeyRecord::new(&key, SystemTime::now(), lifetime)?);
            user.state = UserState::Recovering;
            temp_key = Some(key);
            (
                held,
                "put on hold (certificateHold); a temporary key issued for a temporary token"
                    .to_string(),
            )
        }
        TokenState::Found => {
            let released = release(user, &record.held);
            let retired = retire_temporary(user, &record.held, &now);
            if user.temp_key.as_ref().is_some_and(|t| !t.spent) {
                user.temp_key = None;
            }
            user.state = UserState::Active;
            record.held.clear();
            let what = if retired.is_empty() {
                "taken off hold; no temporary token was enrolled".to_string()
            } else {
                format!(
                    "taken off hold; the temporary token's {} certificates retired (revoked, superseded): {}",
                    retired.len(),
                    retired.join(", ")
                )
            };
            (released, what)
        }
        TokenState::Damaged => {
            let reason = if from == TokenState::Lost {
                CrlReason::KeyCompromise
            } else {
                CrlReason::Superseded
            };
            let revoked = revoke_current(user, reason, &now);
            let key = TempKey::generate()?;
            user.temp_key = Some(TempKeyRecord::new(&key, SystemTime::now(), lifetime)?);
            user.state = UserState::Recovering;
            temp_key = Some(key);
            record.held.clear();
            (
                revoked,
                format!("revoked ({reason}); a temporary key issued for a replacement token"),
            )
        }
        TokenState::Terminated => {
            let reason = if from == TokenState::Lost {
                CrlReason::KeyCompromise
            } else {
                CrlReason::CessationOfOperation
            };
            let revoked = revoke_current(user, reason, &now);
            user.temp_key = None;
            user.state = UserState::Revoked;
            record.held.clear();
            (revoked, format!("revoked ({reason}); the user is revoked"))
        }
        TokenState::Active => unreachable!("refused above"),
    };
    record.history.push(format!("{from} until {now}"));
    record.state = to;
    record.since = now;
    let body =
        serde_json::to_vec(&record).map_err(|e| AuthorityError::serialize("token record", e))?;
    a.put(KIND, name, name, body)?;
    a.audit(
        "operator",
        "token",
        name,
        "ok",
        &format!("token {from} → {to}: {} certificates {what}", serials.len()),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(Changed {
        user: name.to_string(),
        from,
        to,
        certificates: serials,
        what,
        temp_key,
    })
}

/// Puts the current certificates on hold; returns their serials.
fn hold(user: &mut UserRecord, now: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in user
        .certs
        .iter_mut()
        .filter(|c| c.revoked.is_none() && c.superseded.is_none())
    {
        c.revoked = Some(Revocation {
            at: now.to_string(),
            reason: HOLD.to_string(),
        });
        out.push(c.serial.clone());
    }
    out
}

/// Takes the held certificates off hold.
fn release(user: &mut UserRecord, held: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for c in user.certs.iter_mut().filter(|c| held.contains(&c.serial)) {
        if c.revoked.as_ref().is_some_and(|r| r.reason == HOLD) {
            c.revoked = None;
            out.push(c.serial.clone());
        }
    }
    out
}

/// Retires the certificates issued while the token was lost (the temporary token's).
fn retire_temporary(user: &mut UserRecord, held: &[String], now: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in user
        .certs
        .iter_mut()
        .filter(|c| !held.contains(&c.serial) && c.revoked.is_none() && c.superseded.is_none())
    {
        c.superseded = Some(now.to_string());
        c.revoked = Some(Revocation {
            at: now.to_string(),
            reason: CrlReason::Superseded.to_string(),
        });
        out.push(c.serial.clone());
    }
    out
}

/// Revokes every current or held certificate with `reason`.
fn revoke_current(user: &mut UserRecord, reason: CrlReason, now: &str) -> Vec<String> {
    let mut out = Vec::new();
    for c in user
        .certs
        .iter_mut()
        .filter(|c| c.superseded.is_none() && c.revoked.as_ref().is_none_or(|r| r.reason == HOLD))
    {
        c.revoked = Some(Revocation {
            at: now.to_string(),
            reason: reason.to_string(),
        });
        out.push(c.serial.clone());
    }
    out
}
