//! `authority crl`: a CRL of every revoked certificate, signed on the authority's token.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::init::{open_vouched, Change};
use super::signer::CaSigner;
use super::state::{kind, AuthorityDir};
use super::AuthorityError;
use crate::pki::x509::{self, RevokedEntry};
use crate::token::keys::hex;

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
/// skip one). After a CA rollover, see [`publish_all`]; this returns the current CA's count.
pub fn publish_to(
    ch: &Change<'_>,
    dir: &Path,
    out: Option<(&Path, bool)>,
    lifetime: Duration,
) -> Result<usize, AuthorityError> {
    Ok(publish_all(ch, dir, out, lifetime)?
        .first()
        .map_or(0, |p| p.revoked))
}

/// One CRL [`publish_all`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Published {
    /// The CA generation that issued it (counted from 1).
    pub generation: usize,
    /// The issuing CA's key identifier, hex (the CRL's authorityKeyIdentifier).
    pub issuer_key_id: String,
    /// Its CRL number.
    pub number: u64,
    /// How many certificates it lists.
    pub revoked: usize,
    /// The files written.
    pub files: Vec<String>,
}

/// One CA generation that signs a CRL.
struct Issuer {
    generation: usize,
    /// Index in `previous_cas`, or `None` for the current CA.
    previous: Option<usize>,
    key_id: String,
    cert: x509_cert::Certificate,
    number: u64,
    cdp: Option<PathBuf>,
    revoked: Vec<RevokedEntry>,
}

/// Writes one CRL per CA generation still needed, each signed by its own key with its own
/// number sequence, issuer and distribution point: the current CA's (to `out` and its
/// distribution point), then each earlier CA whose certificate is still valid or that issued
/// a revoked certificate (to `out` with `-gN` before its extension, and its own distribution
/// point). A revoked certificate lands on the CRL of the CA that issued it. Current CA first.
pub fn publish_all(
    ch: &Change<'_>,
    dir: &Path,
    out: Option<(&Path, bool)>,
    lifetime: Duration,
) -> Result<Vec<Published>, AuthorityError> {
    let (module, pin) = (ch.module, ch.pin);
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let now = SystemTime::now();
    let mut issuers = issuers(&a, now)?;
    for (user, serial, entry) in revoked_entries(&mut a)? {
        let i = issuer_of(&mut a, &issuers, &user, &serial)?;
        issuers[i].revoked.push(entry);
    }
    issuers.retain(|i| {
        i.previous.is_none() || !i.revoked.is_empty() || x509::check_validity(&i.cert, now).is_ok()
    });
    let mut made = Vec::new();
    for i in &issuers {
        let id = super::state::key_id("CA key", &i.key_id)?;
        let key = session.find_private_key(&id)?.ok_or_else(|| {
            super::state::key_missing(format!("CA key {} (generation {})", i.key_id, i.generation))
        })?;
        let number = i.number + 1;
        let mut signer = CaSigner {
            module,
            session: &mut session,
            key,
            pin,
        };
        let crl = x509::crl(
            &i.cert,
            &i.revoked,
            number,
            now,
            now + lifetime,
            &mut signer,
        )?;
        let (pem, der) = (x509::crl_to_pem(&crl)?, x509::crl_to_der(&crl)?);
        match i.previous {
            None => a.config.crl_number = number,
            Some(p) => a.config.previous_cas[p].crl_number = number,
        }
        a.audit(
            "operator",
            "crl",
            &format!("#{number}"),
            "ok",
            &if a.config.previous_cas.is_empty() {
                format!("{} revoked certificates", i.revoked.len())
            } else {
                format!(
                    "{} revoked certificates; CA generation {} (key id {})",
                    i.revoked.len(),
                    i.generation,
                    hex(&x509::key_id_of(&i.cert))
                )
            },
        );
        made.push((i, number, pem, der));
    }
    a.config_changed();
    a.commit(module, &mut session, pin)?;
    let mut done = Vec::new();
    for (i, number, pem, der) in made {
        let target = out.map(|(o, as_der)| {
            let o = match i.previous {
                None => o.to_path_buf(),
                Some(_) => PathBuf::from(crate::authority::rollover_ca::with_generation(
                    &o.to_string_lossy(),
                    i.generation,
                )),
            };
            (o, as_der)
        });
        let mut files: Vec<(PathBuf, &[u8])> = Vec::new();
        if let Some((path, as_der)) = &target {
            let as_der = *as_der || i.cdp.as_deref() == Some(path.as_path());
            files.push((path.clone(), if as_der { &der } else { pem.as_bytes() }));
        }
        if let Some(c) = i
            .cdp
            .as_deref()
            .filter(|c| target.as_ref().map(|(o, _)| o.as_path()) != Some(*c))
        {
            files.push((c.to_path_buf(), &der));
        }
        for (path, bytes) in &files {
            crate::keyset::registry::write_atomic(path, bytes)
                .map_err(|e| super::state::io("write", path, e))?;
        }
        done.push(Published {
            generation: i.generation,
            issuer_key_id: hex(&x509::key_id_of(&i.cert)),
            number,
            revoked: i.revoked.len(),
            files: files.iter().map(|(p, _)| p.display().to_string()).collect(),
        });
    }
    Ok(done)
}

/// Every CA generation, current first.
fn issuers(a: &AuthorityDir, _now: SystemTime) -> Result<Vec<Issuer>, AuthorityError> {
    let mut out = vec![Issuer {
        generation: a.config.ca_generation(),
        previous: None,
        key_id: a.config.ca_key_id.clone(),
        cert: a.ca_certificate()?,
        number: a.config.crl_number,
        cdp: cdp_file(&a.config),
        revoked: Vec::new(),
    }];
    for (p, prev) in a.config.previous_cas.iter().enumerate().rev() {
        let cert = x509::certs_from_pem(&prev.cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| super::state::tampered("a previous CA certificate is missing"))?;
        out.push(Issuer {
            generation: p + 1,
            previous: Some(p),
            key_id: prev.key_id.clone(),
            cert,
            number: prev.crl_number,
            cdp: prev
                .crl_url
                .as_deref()
                .and_then(crate::revocation::file_url_path),
            revoked: Vec::new(),
        });
    }
    Ok(out)
}

/// Which of `issuers` issued user `user`'s certificate `serial` (the current CA when the
/// authority never rolled over, or when the certificate is not on record).
fn issuer_of(
    a: &mut AuthorityDir,
    issuers: &[Issuer],
    user: &str,
    serial: &str,
) -> Result<usize, AuthorityError> {
    if issuers.len() == 1 {
        return Ok(0);
    }
    let Some(row) = a.get(kind::ISSUED, serial, user)? else {
        return Ok(0);
    };
    let pem = String::from_utf8_lossy(&row.body).into_owned();
    let Some(cert) = x509::certs_from_pem(&pem)?.into_iter().next() else {
        return Ok(0);
    };
    Ok(issuers
        .iter()
        .position(|i| x509::verify_issued_by(&cert, &i.cert).is_ok())
        .unwrap_or(0))
}

/// The file the authority's CRL distribution point names, when it is a `file:` URL.
pub fn cdp_file(config: &super::records::AuthorityConfig) -> Option<std::path::PathBuf> {
    config
        .issuing
        .crl_url
        .as_deref()
        .and_then(crate::revocation::file_url_path)
}

/// (user, serial, entry) of every revoked certificate.
fn revoked_entries(
    a: &mut AuthorityDir,
) -> Result<Vec<(String, String, RevokedEntry)>, AuthorityError> {
    let mut out = Vec::new();
    for user in a.all_users()? {
        for cert in &user.certs {
            let Some(r) = &cert.revoked else { continue };
            let serial = super::state::key_id("certificate serial", &cert.serial)?;
            let revoked_at =
                humantime::parse_rfc3339(&r.at).map_err(|e| AuthorityError::BadTime {
                    value: r.at.clone(),
                    source: e,
                })?;
            out.push((
                user.name.clone(),
                cert.serial.clone(),
                RevokedEntry {
                    serial,
                    revoked_at,
                    reason: super::tokenstate::crl_reason(&r.reason),
                },
            ));
        }
    }
    Ok(out)
}
