//! `authority crl`: a CRL of every revoked certificate, signed on the authority's token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use super::init::open_authority_token;
use super::process::ca_certificate;
use super::signer::CaSigner;
use super::state::AuthorityDir;
use super::x509::{self, CrlReason, RevokedEntry};
use super::AuthorityError;
use crate::keyset::ops::unhex_id;
use crate::token::{LoginPolicy, Module};

/// Writes a new CRL (PEM) to `out`, current for `lifetime` (its nextUpdate), and returns how
/// many certificates it lists.
pub fn publish(
    module: &Module,
    dir: &Path,
    out: &Path,
    lifetime: Duration,
    pin: &SecretString,
    policy: LoginPolicy,
) -> Result<usize, AuthorityError> {
    let mut a = AuthorityDir::open_locked(dir)?;
    let revoked = revoked_entries(&a)?;
    let mut session = open_authority_token(module, &a.config, pin, policy)?;
    let ca_id =
        unhex_id(&a.config.ca_key_id).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let key = session.find_private_key(&ca_id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the authority's CA key is missing from its token".into())
    })?;
    let ca = ca_certificate(&a)?;
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
    crate::keyset::registry::write_atomic(out, pem.as_bytes())
        .map_err(|e| super::state::io("write", out, &e))?;
    a.config.crl_number = number;
    a.save_config()?;
    a.audit(
        "operator",
        "crl",
        &format!("#{number}"),
        "ok",
        &format!("{} revoked certificates", revoked.len()),
    )?;
    Ok(revoked.len())
}

fn revoked_entries(a: &AuthorityDir) -> Result<Vec<RevokedEntry>, AuthorityError> {
    let mut out = Vec::new();
    for user in a.users() {
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
                reason: r.reason.parse::<CrlReason>().ok(),
            });
        }
    }
    Ok(out)
}
