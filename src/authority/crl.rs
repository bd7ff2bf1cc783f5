//! `authority crl`: a CRL of every revoked certificate, signed on the authority's token.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::init::{open_vouched, Change};
use super::signer::CaSigner;
use super::state::AuthorityDir;
use super::AuthorityError;
use crate::keyset::ops::unhex_id;
use crate::pki::x509::{self, RevokedEntry};

/// Writes a new CRL (PEM) to `out`, current for `lifetime` (its nextUpdate), and returns how
/// many certificates it lists; see [`publish_to`].
pub fn publish(
    ch: &Change<'_>,
    dir: &Path,
    out: &Path,
    lifetime: Duration,
) -> Result<usize, AuthorityError> {
    publish_to(ch, dir, Some((out, false)), lifetime)
}

/// Writes a new CRL, current for `lifetime` (its nextUpdate), to `out` (PEM, or DER when
/// asked) and, DER as RFC 5280 4.2.1.13 wants, to the distribution point's file when it is a
/// `file:` URL; returns how many certificates it lists. The CRL number is committed before
/// the files are written, so a number is never reused for a different CRL (a crash can only
/// skip one).
pub fn publish_to(
    ch: &Change<'_>,
    dir: &Path,
    out: Option<(&Path, bool)>,
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
    let (pem, der) = (x509::crl_to_pem(&crl)?, x509::crl_to_der(&crl)?);
    a.config.crl_number = number;
    a.config_changed();
    a.audit(
        "operator",
        "crl",
        &format!("#{number}"),
        "ok",
        &format!("{} revoked certificates", revoked.len()),
    );
    let cdp = cdp_file(&a.config);
    a.commit(module, &mut session, pin)?;
    let mut files: Vec<(&Path, &[u8])> = Vec::new();
    if let Some((path, as_der)) = out {
        let as_der = as_der || cdp.as_deref() == Some(path);
        files.push((path, if as_der { &der } else { pem.as_bytes() }));
    }
    if let Some(c) = cdp.as_deref().filter(|c| out.map(|(o, _)| o) != Some(*c)) {
        files.push((c, &der));
    }
    for (path, bytes) in files {
        crate::keyset::registry::write_atomic(path, bytes)
            .map_err(|e| super::state::io("write", path, &e))?;
    }
    Ok(revoked.len())
}

/// The file the authority's CRL distribution point names, when it is a `file:` URL.
pub fn cdp_file(config: &super::records::AuthorityConfig) -> Option<std::path::PathBuf> {
    config
        .issuing
        .crl_url
        .as_deref()
        .and_then(crate::revocation::file_url_path)
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
