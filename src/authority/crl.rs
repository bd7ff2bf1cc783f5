//! `authority crl`: a CRL of every revoked certificate, signed on the authority's token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::init::{open_vouched, Change};
use super::signer::CaSigner;
use super::state::AuthorityDir;
use super::x509::{self, RevokedEntry};
use super::AuthorityError;
use crate::keyset::ops::unhex_id;

/// Writes a new CRL (PEM) to `out`, current for `lifetime` (its nextUpdate), and returns how
/// many certificates it lists. The CRL number is committed before the file is written, so a
/// number is never reused for a different CRL (a crash can only skip one).
pub fn publish(
    ch: &Change<'_>,
    dir: &Path,
    out: &Path,
    lifetime: Duration,
) -> Result<usize, AuthorityError> {
    let (module, pin) = (ch.module, ch.pin);
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let revoked = revoked_entries(&mut a)?;
    let ca_id =
        unhex_id(&a.config.ca_key_id).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let key = session.find_private_key(&ca_id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the authority's CA key is missing from its token".into())
    })?;
    let ca = a.ca_certificate()?;
    let number = a.config.crl_number + 1;
    let now = SystemTime::now();
    let mut signer = CaSigner {
        module,
        session: &mut session,
        key,
        pin,
    };
    let crl = x509::crl(&ca, &revoked, number, now, now + lifetime, &mut signer)?;
    let pem = x509::crl_to_pem(&crl)?;
    a.config.crl_number = number;
    a.config_changed();
    a.audit(
        "operator",
        "crl",
        &format!("#{number}"),
        "ok",
        &format!("{} revoked certificates", revoked.len()),
    );
    a.commit(module, &mut session, pin)?;
    crate::keyset::registry::write_atomic(out, pem.as_bytes())
        .map_err(|e| super::state::io("write", out, &e))?;
    Ok(revoked.len())
}

fn revoked_entries(a: &mut AuthorityDir) -> Result<Vec<RevokedEntry>, AuthorityError> {
    let mut out = Vec::new();
    for user in a.all_users()? {
        for cert in &user.certs {
            let Some(r) = &cert.revoked else { continue };
            let serial =
                unhex_id(&cert.serial).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
            let revoked_at = humantime::parse_rfc3339(&r.at).map_err(|e| {
                AuthorityError::BadRequest(format!("revocation time {:?}: {e}", r.at))
            })?;
            out.push(RevokedEntry {
                serial,
                revoked_at,
                reason: super::tokenstate::crl_reason(&r.reason),
            });
        }
    }
    Ok(out)
}
