//! `authority rollover --ca`: a new CA key pair on the authority's token, its self-signed
//! certificate, and the two link certificates (RFC 4210 5.3.13 / Windows CA renewal with a
//! new key): the new key certified by the old (new-with-old) and the old key certified by the
//! new (old-with-new), so that a relying party holding either root builds a path to what the
//! other issued. The exchange certificate is issued again by the new CA (same key).
//!
//! After the rollover the new key signs everything new (certificates, CRLs for what it
//! issued, the audit log's checkpoints); the old key stays on the token, to sign CRLs for the
//! certificates it issued. The switch is one commit whose checkpoint the OLD key signs and
//! whose audit entry names the new key ([`state::NEW_CA_KEY`]), so `authority log --verify`
//! hands over from key to key along the log.
//!
//! All or nothing: the new key's `CKA_ID` is derived from the current key's, so a run killed
//! after the key was made but before the commit leaves a key no state names, at an id the
//! next run knows; that run removes it first and starts afresh. After the commit the
//! configuration names the new key and the next rollover derives another id.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::init::{open_vouched, Change};
use super::records::PreviousCa;
use super::signer::CaSigner;
use super::state::{self, now_rfc3339, tampered, AuthorityDir, NEW_CA_KEY};
use super::AuthorityError;
use crate::pki::x509::{self, CertParams, CertProfile, IssuingPolicy};
use crate::pki::PublicKey;
use crate::token::keys::hex;
use crate::token::{KeySpec, KeyTemplate, Module, TokenSession};

/// Ten years, the new CA certificate's lifetime (as at `authority init`).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The CA key's type (as at `authority init`).
const CA_KEY: KeySpec = KeySpec::Rsa(3072);

/// What a CA rollover did (or, with `--dry-run`, would do).
#[derive(Debug, Serialize)]
pub struct CaRolledOver {
    /// Nothing was changed.
    pub dry_run: bool,
    /// The CA generation now issuing (counted from 1).
    pub generation: usize,
    /// The retired CA key, hex `CKA_ID`.
    pub old_key_id: String,
    /// The new CA key, hex `CKA_ID`.
    pub new_key_id: String,
    /// SHA-256 of the new CA key's SubjectPublicKeyInfo, hex (absent in a dry run).
    pub new_key_sha256: Option<String>,
    /// The new CA certificate's end of validity, RFC 3339 (absent in a dry run).
    pub not_after: Option<String>,
    /// The CRL distribution point of the new CA's certificates.
    pub crl_url: Option<String>,
    /// Objects of an interrupted rollover removed from the token (found, in a dry run).
    pub leftover_removed: usize,
    /// The new CA and exchange certificates, PEM (for the `ca.pem` copy; not printed).
    #[serde(skip)]
    pub ca_pem: String,
}

/// The `CKA_ID` the key after `current` gets: derived, so that a run killed before its
/// commit leaves its key where the next run looks.
pub fn next_key_id(current: &str) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(b"keyward-ca-rollover-v1\0");
    h.update(current.as_bytes());
    h.finalize()[..16].to_vec()
}

/// The CRL (or other) URL of CA generation `generation`: the first keeps the one given to
/// `authority init`; later ones get `-gN` before the file's extension.
pub fn generation_url(url: &str, generation: usize) -> String {
    if generation <= 1 {
        return url.to_string();
    }
    with_generation(url, generation)
}

/// `path` with `-gN` before its file's extension (or at its end).
pub fn with_generation(url: &str, generation: usize) -> String {
    let file_start = url.rfind('/').map_or(0, |i| i + 1);
    match url[file_start..].rfind('.') {
        Some(dot) => {
            let at = file_start + dot;
            format!("{}-g{generation}{}", &url[..at], &url[at..])
        }
        None => format!("{url}-g{generation}"),
    }
}

/// Runs a CA key rollover (or says what it would do) on an authority without operators (one
/// with operators rolls over through an approved request: [`super::approvals`], which runs
/// [`ca_in`]).
pub fn ca(ch: &Change<'_>, dir: &Path, dry_run: bool) -> Result<CaRolledOver, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    if dry_run {
        let mut report = plan(ch, &mut a, &session, true)?;
        report.leftover_removed = session.count_by_id(&unhex_new(&report)?)?;
        return Ok(report);
    }
    super::approvals::require_no_operators(&mut a, "rollover --ca")?;
    let undo = Uncommitted::before(&a);
    let result = ca_in(ch, &mut a, &mut session).and_then(|r| {
        a.commit(ch.module, &mut session, ch.pin)?;
        Ok(r)
    });
    if result.is_err() {
        undo.discard(ch, &a, &mut session);
    }
    let report = result?;
    write_copy(dir, &report);
    Ok(report)
}

/// Writes `ca.pem`, the copy of the CA bundle for people and tools, after a committed
/// rollover (the database holds the original).
pub fn write_copy(dir: &Path, report: &CaRolledOver) {
    let copy = dir.join("ca.pem");
    if let Err(e) = crate::keyset::registry::write_atomic(&copy, report.ca_pem.as_bytes()) {
        log::warn!(
            "the rollover is recorded, but {} could not be updated ({e}); `keyward authority cert` prints the new CA",
            copy.display()
        );
    }
}

/// What to take back when a rollover started but its commit did not happen: the new key,
/// which no state names (a kill leaves it for the next run, at the id it derives).
pub struct Uncommitted {
    old_id: String,
    seq: u64,
}

impl Uncommitted {
    /// Notes the state before a rollover.
    pub fn before(a: &AuthorityDir) -> Uncommitted {
        Uncommitted {
            old_id: a.config.ca_key_id.clone(),
            seq: a.last_seq(),
        }
    }

    /// After a failure: removes the new key when the log did not grow (nothing committed);
    /// committed but failed after, the state names it and it stays.
    pub fn discard(&self, ch: &Change<'_>, a: &AuthorityDir, session: &mut TokenSession) {
        if a.last_seq() != self.seq {
            return;
        }
        let new_id = next_key_id(&self.old_id);
        let mut fresh = session.for_cleanup(ch.module);
        let s = fresh.as_mut().unwrap_or(session);
        if let Err(d) = s.destroy_by_id(&new_id) {
            log::error!(
                "could not remove the new CA key after a failure ({d}); the next `authority rollover --ca` removes it"
            );
        }
    }
}

/// Checks the rollover can run and says what it would do.
fn plan(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &TokenSession,
    dry_run: bool,
) -> Result<CaRolledOver, AuthorityError> {
    super::rollover::check_no_archive_rollover(a)?;
    check_token_can(ch.module, session, ch.pin, a)?;
    let old_id = a.config.ca_key_id.clone();
    let new_id = next_key_id(&old_id);
    let generation = a.config.ca_generation() + 1;
    let crl_url = a
        .config
        .issuing
        .crl_url
        .as_ref()
        .map(|u| generation_url(first_url(a, u), generation));
    Ok(CaRolledOver {
        dry_run,
        generation,
        old_key_id: old_id,
        new_key_id: hex(&new_id),
        new_key_sha256: None,
        not_after: None,
        crl_url,
        leftover_removed: 0,
        ca_pem: String::new(),
    })
}

fn unhex_new(report: &CaRolledOver) -> Result<Vec<u8>, AuthorityError> {
    super::state::key_id("new CA key", &report.new_key_id)
}

/// The rollover on an open, vouched state, without the commit (the caller commits, and on a
/// failure takes back the new key with [`Uncommitted::discard`]): checks, the new key (after
/// removing what an interrupted run left), the certificates, the configuration, the audit
/// entry and a checkpoint the old key signs.
pub fn ca_in(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
) -> Result<CaRolledOver, AuthorityError> {
    let mut report = plan(ch, a, session, false)?;
    let new_id = unhex_new(&report)?;
    // What a run killed before its commit left: no state names it.
    report.leftover_removed = session.destroy_by_id(&new_id)?;
    if report.leftover_removed > 0 {
        log::warn!(
            "removed {} objects of an interrupted CA rollover from the authority's token",
            report.leftover_removed
        );
    }
    session.generate_signing_pair(&KeyTemplate {
        id: &new_id,
        private_label: "keyward authority CA key",
        public_label: "keyward authority CA key (public)",
        spec: CA_KEY,
        always_authenticate: false,
    })?;
    switch(ch, a, session, &new_id, &mut report)?;
    report.ca_pem = a.config.ca_pem.clone();
    Ok(report)
}

/// The first generation's URL (the one `authority init` was given), from the configured one.
fn first_url<'a>(a: &'a AuthorityDir, current: &'a str) -> &'a str {
    a.config
        .previous_cas
        .first()
        .and_then(|p| p.crl_url.as_deref())
        .unwrap_or(current)
}

/// Refuses, before anything changes, a token that cannot make or use the new CA key.
fn check_token_can(
    module: &Module,
    session: &TokenSession,
    pin: &secrecy::SecretString,
    a: &AuthorityDir,
) -> Result<(), AuthorityError> {
    let caps = session.capabilities(module, Some(pin))?;
    let refuse = |why: String| {
        AuthorityError::BadRequest(format!(
            "the authority's token {:?} cannot hold a new CA key: {why}; roll over on a token that can (or keep the current CA key); nothing was changed",
            a.config.token_label
        ))
    };
    caps.check_generate(CA_KEY).map_err(refuse)?;
    let signs = ["CKM_RSA_PKCS", "CKM_SHA256_RSA_PKCS"]
        .iter()
        .any(|m| caps.mechanism(m).is_some_and(|c| c.has("sign")));
    if !signs {
        return Err(refuse(
            "it signs with neither CKM_RSA_PKCS nor CKM_SHA256_RSA_PKCS".into(),
        ));
    }
    session.check_data_objects()?;
    Ok(())
}

/// Makes the certificates, changes the configuration and signs the checkpoint with the old
/// key (the caller commits).
fn switch(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    new_id: &[u8],
    report: &mut CaRolledOver,
) -> Result<(), AuthorityError> {
    a.fault("rollover-ca-key")?;
    let old_ca = a.ca_certificate()?;
    let exchange = x509::certs_from_pem(&a.config.ca_pem)?
        .into_iter()
        .nth(1)
        .ok_or_else(|| tampered("the configuration holds no exchange certificate"))?;
    let old_key = private_key(session, &a.config.ca_key_id)?;
    let new_key = private_key(session, &hex(new_id))?;
    let new_public = PublicKey::from_raw(
        &session
            .public_key(new_id)?
            .ok_or_else(|| missing("public key"))?,
    )?;
    let new_spki = new_public.to_der()?;
    let now = SystemTime::now();
    let not_after = now + CA_LIFETIME;
    let subject = old_ca.tbs_certificate.subject.clone();
    let old_until = old_ca.tbs_certificate.validity.not_after.to_system_time();
    let mut new_signer = CaSigner {
        module: ch.module,
        session,
        key: new_key,
        pin: ch.pin,
    };
    let new_ca = x509::self_signed_ca(
        &ca_params(&subject, now, &new_spki, &x509::random_serial()?, not_after),
        &mut new_signer,
    )?;
    // Old-with-new: the old key, certified by the new CA, valid as long as the old CA.
    let old_spki = x509::spki_der_of(&old_ca);
    let old_with_new = x509::issue(
        &new_ca,
        &ca_params(&subject, now, &old_spki, &x509::random_serial()?, old_until),
        &mut new_signer,
    )?;
    // The exchange key, certified again by the new CA (what enrollments check it against).
    let generation = a.config.ca_generation() + 1;
    let mut issuing = a.config.issuing.clone();
    issuing.crl_url = report.crl_url.clone();
    let exchange = x509::issue_with_policy(
        &new_ca,
        &CertParams {
            subject: &exchange.tbs_certificate.subject,
            spki_der: &x509::spki_der_of(&exchange),
            serial: &x509::random_serial()?,
            not_before: now,
            not_after,
            profile: CertProfile::AuthorityExchange,
            email: None,
        },
        &issuing.policy()?,
        &mut new_signer,
    )?;
    // New-with-old: the new key, certified by the old CA, as long as the old CA is valid.
    let session = new_signer.session;
    let mut old_signer = CaSigner {
        module: ch.module,
        session,
        key: old_key,
        pin: ch.pin,
    };
    let new_with_old = x509::issue_with_policy(
        &old_ca,
        &ca_params(
            &subject,
            now,
            &new_spki,
            &x509::random_serial()?,
            old_until.min(not_after),
        ),
        &IssuingPolicy::default(),
        &mut old_signer,
    )?;
    let fingerprint = state::key_fingerprint(&new_public)?;
    a.fault("rollover-ca-certs")?;

    let old_id = a.config.ca_key_id.clone();
    let retired = PreviousCa {
        key_id: old_id.clone(),
        cert_pem: x509::cert_to_pem(&old_ca)?,
        links_pem: format!(
            "{}{}",
            x509::cert_to_pem(&new_with_old)?,
            x509::cert_to_pem(&old_with_new)?
        ),
        crl_number: a.config.crl_number,
        crl_url: a.config.issuing.crl_url.clone(),
        retired: now_rfc3339(),
    };
    a.config.previous_cas.push(retired);
    a.config.ca_key_id = hex(new_id);
    a.config.ca_pem = format!(
        "{}{}",
        x509::cert_to_pem(&new_ca)?,
        x509::cert_to_pem(&exchange)?
    );
    a.config.crl_number = 0;
    a.config.issuing = issuing;
    a.config_changed();
    a.audit(
        "operator",
        state::CA_ROLLOVER.0,
        state::CA_ROLLOVER.1,
        "ok",
        &format!(
            "CA generation {generation}: {NEW_CA_KEY}{fingerprint} (key id {}), certificate serial {}, valid until {}; link certificates serial {} (new key, certified by the old) and {} (old key, certified by the new); the old key {old_id} signs this checkpoint and, from now on, only CRLs for what it issued",
            hex(new_id),
            x509::serial_hex(&new_ca),
            humantime::format_rfc3339_seconds(not_after),
            x509::serial_hex(&new_with_old),
            x509::serial_hex(&old_with_new),
        ),
    );
    a.sign_checkpoint_with(&old_id);
    report.new_key_sha256 = Some(fingerprint);
    report.not_after = Some(humantime::format_rfc3339_seconds(not_after).to_string());
    Ok(())
}

fn ca_params<'a>(
    subject: &'a x509_cert::name::Name,
    not_before: SystemTime,
    spki_der: &'a [u8],
    serial: &'a [u8],
    not_after: SystemTime,
) -> CertParams<'a> {
    CertParams {
        subject,
        spki_der,
        serial,
        not_before,
        not_after,
        profile: CertProfile::Ca,
        email: None,
    }
}

fn private_key(session: &TokenSession, id: &str) -> Result<crate::token::KeyRef, AuthorityError> {
    let raw = super::state::key_id("CA key", id)?;
    session
        .find_private_key(&raw)?
        .ok_or_else(|| missing(&format!("private key {id}")))
}

fn missing(what: &str) -> AuthorityError {
    AuthorityError::BadRequest(format!(
        "the CA {what} is not on the authority's token; check that the right token is inserted"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_urls_keep_the_first_and_mark_later_ones() {
        let url = "http://pki.example.org/ca.crl";
        assert_eq!(generation_url(url, 1), url);
        assert_eq!(generation_url(url, 2), "http://pki.example.org/ca-g2.crl");
        assert_eq!(
            generation_url("file:///srv/pki/current", 3),
            "file:///srv/pki/current-g3"
        );
        // A dot in a directory name is not the file's extension.
        assert_eq!(
            generation_url("http://pki.example.org/crl", 2),
            "http://pki.example.org/crl-g2"
        );
        assert_eq!(with_generation("/tmp/out.pem", 1), "/tmp/out-g1.pem");
    }

    #[test]
    fn next_key_ids_are_derived_and_differ_per_generation() {
        let a = next_key_id("00aa");
        assert_eq!(a, next_key_id("00aa"));
        assert_eq!(a.len(), 16);
        assert_ne!(a, next_key_id(&hex(&a)));
    }
}
