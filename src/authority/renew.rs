//! Renewal at the authority (`enroll --renew`): a request signed by the keyset's current
//! signing key instead of a temporary key. The authority accepts it when that key's
//! certificate is its own, recorded for the same user and keyset, current (not expired, not
//! superseded) and not revoked; the old certificates are then marked superseded (revoked with
//! reason superseded only when the request asks, `--revoke-old`).

use std::time::SystemTime;

use super::state::{AuthorityDir, CertKind, Revocation, UserRecord, UserState};
use super::users::state_error;
use super::AuthorityError;
use crate::enroll::wire::VerifiedRequest;
use crate::pki::x509::{self, CrlReason};

fn current_certificate(pem: &str) -> Result<x509_cert::Certificate, AuthorityError> {
    x509::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            AuthorityError::BadRequest("the renewal names no current certificate".into())
        })
}

/// Checks that the renewal may be served: the certificate it renews is this authority's,
/// issued to this user for this keyset, current and not revoked. Refusals change nothing.
pub fn check_renewal(a: &mut AuthorityDir, req: &VerifiedRequest) -> Result<(), AuthorityError> {
    let body = &req.body;
    let pem = body.renews.as_deref().unwrap_or_default();
    let cert = current_certificate(pem)?;
    // Any CA generation of this authority: a keyset enrolled before a CA rollover renews.
    let cas = a.ca_certificates()?;
    cas.iter()
        .find(|ca| x509::verify_issued_by(&cert, ca).is_ok())
        .ok_or(())
        .map_err(|_| {
        AuthorityError::BadRequest(format!(
            "keyset {:?} is not enrolled with this authority (its certificate was issued by another CA); enroll it here with a temporary key from this authority",
            body.keyset
        ))
    })?;
    let serial = x509::serial_hex(&cert);
    let user = a.user(&body.user)?.clone();
    let Some(issued) = user
        .certs
        .iter()
        .find(|c| c.serial == serial && c.kind == CertKind::Signing)
    else {
        return Err(AuthorityError::BadRequest(format!(
            "certificate {serial} was not issued by this authority to user {:?}; renew with the keyset enrolled here",
            body.user
        )));
    };
    if issued.keyset.to_lowercase() != body.keyset.to_lowercase() {
        return Err(AuthorityError::BadRequest(format!(
            "certificate {serial} belongs to keyset {:?}, not {:?}",
            issued.keyset, body.keyset
        )));
    }
    if let Some(r) = &issued.revoked {
        return Err(AuthorityError::BadRequest(format!(
            "the current certificate {serial} of user {:?} was revoked ({}) at {}; a revoked keyset cannot renew — the authority must recover the user (`keyward authority recover --dir DIR {}`)",
            body.user, r.reason, r.at, body.user
        )));
    }
    if let Some(at) = &issued.superseded {
        return Err(AuthorityError::BadRequest(format!(
            "certificate {serial} was already renewed at {at}; complete that renewal's reply (`keyward enroll --complete REPLY`), or ask the authority for it again (`keyward authority reply`)"
        )));
    }
    match user.state {
        UserState::Active => {}
        _ => {
            return Err(state_error(
                &user,
                "only an enrolled user renews; the authority must recover them first",
            ))
        }
    }
    x509::check_validity(&cert, SystemTime::now()).map_err(|e| {
        AuthorityError::BadRequest(format!(
            "the current certificate {serial} of user {:?} is not valid now ({e}); an expired keyset cannot renew — the authority must recover the user (`keyward authority recover --dir DIR {}`)",
            body.user, body.user
        ))
    })?;
    Ok(())
}

/// Marks the keyset's current certificates superseded (and revoked with reason superseded
/// when `revoke_old`); returns how many.
pub fn supersede(user: &mut UserRecord, keyset: &str, revoke_old: bool, now: &str) -> usize {
    let mut n = 0;
    for c in user.certs.iter_mut().filter(|c| {
        c.keyset.to_lowercase() == keyset.to_lowercase()
            && c.revoked.is_none()
            && c.superseded.is_none()
    }) {
        c.superseded = Some(now.to_string());
        if revoke_old {
            c.revoked = Some(Revocation {
                at: now.to_string(),
                reason: CrlReason::Superseded.to_string(),
            });
        }
        n += 1;
    }
    n
}

/// The user's current certificates (neither revoked nor superseded) that expire before
/// `before`: who needs to renew.
pub fn expiring(user: &UserRecord, before: SystemTime) -> Vec<(String, String)> {
    user.certs
        .iter()
        .filter(|c| c.revoked.is_none() && c.superseded.is_none())
        .filter(|c| humantime::parse_rfc3339(&c.not_after).is_ok_and(|t| t <= before))
        .map(|c| (c.serial.clone(), c.not_after.clone()))
        .collect()
}
