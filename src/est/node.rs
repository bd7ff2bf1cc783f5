//! The authority's side of EST, synchronous: each function opens the authority exactly as the
//! file commands do ([`open_vouched`]: its lock and transaction, a login to its token, the
//! state checked against what the token vouches for), changes it through the same records and
//! signed audit log, and commits all or nothing.
//!
//! # One enrollment, one temporary key
//! An EST enrollment is `simpleenroll` (the signing certificate for the client's key) followed
//! by `serverkeygen` (the encryption key, generated and archived by the authority). The
//! temporary key is checked (and a wrong one counted) by both, and spent by `serverkeygen`:
//! - `simpleenroll` binds the enrollment to its key. Again with the same key, it answers the
//!   same certificate and changes nothing; with another key it is refused (409).
//! - `serverkeygen` before `simpleenroll` is refused (409) and changes nothing.
//! - `serverkeygen` spends the key in the transaction that records the encryption key, its
//!   certificate and the user's activation. Again with the same temporary key and transport
//!   key (a retry after a lost answer), it answers the recorded answer and changes nothing;
//!   anything else after that is refused as a spent key (401).
//!
//! A binding belongs to the temporary key it was made with: after `authority recover` the new
//! key starts a new enrollment.

use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::ExposeSecret;
use x509_cert::Certificate;

use super::envelope;
use super::wire::{self, Basic, CheckedCsr, Refusal};
use crate::authority::init::{open_vouched, Change};
use crate::authority::signer::CaSigner;
use crate::authority::state::{
    kind, now_rfc3339, ArchivedKey, AuthorityDir, CertKind, IssuedCert, UserState,
};
use crate::authority::tempkey::{TempKey, TempKeyCheck, TempKeyRecord};
use crate::authority::AuthorityError;
use crate::keyset::ops::unhex_id;
use crate::pki::x509::{self, CertParams, CertProfile};
use crate::pki::PublicKey;
use crate::token::{DecryptionPair, OaepHash, TokenSession};

/// The record kind of an EST enrollment in progress or done (keyed and owned by the user).
pub const EST_KIND: &str = "est";
/// How long user certificates are valid (as `authority process`' default).
const USER_CERT_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
/// How long the node's TLS certificate is valid: it is made anew at every start.
pub const TLS_CERT_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// An EST enrollment bound to a temporary key (the `est` record).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Binding {
    /// Which temporary key it belongs to: [`temp_key_ref`] (its issue time alone is not
    /// enough: a recovery in the same second as the first enrollment gives the same time).
    temp_key_issued: String,
    /// The keyset (the request's commonName).
    keyset: String,
    /// SHA-256 of the signing key's SPKI, hex.
    signing_spki: String,
    /// The signing certificate, PEM.
    signing_cert: String,
    /// Set when serverkeygen finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    done: Option<Done>,
}

/// What serverkeygen answered.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Done {
    /// SHA-256 of the transport key's SPKI, hex.
    transport_spki: String,
    /// The multipart answer.
    answer: String,
    /// SHA-256 of the SPKI of the key the new key was enveloped to (the request's own, or the
    /// one its AsymmetricDecryptKeyIdentifier names), hex; `keyward-archive` gives the archived
    /// keys only to it. Absent in records made before it was kept: then `transport_spki`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    enveloped_to: Option<String>,
}

impl Done {
    /// SHA-256 of the SPKI of the key serverkeygen enveloped the new key to, hex.
    fn enveloped_to(&self) -> &str {
        self.enveloped_to.as_deref().unwrap_or(&self.transport_spki)
    }
}

/// Logs (info) how long a granted request took and how much of it held the authority's lock
/// (what nodes sharing a store cannot do at the same time: `benches/postgres.sh` sums it).
fn timing(endpoint: &str, user: &str, started: std::time::Instant, locked: std::time::Instant) {
    log::info!(
        "{endpoint} of user {user:?}: {} ms, {} ms of it holding the authority's lock",
        started.elapsed().as_millis(),
        locked.elapsed().as_millis()
    );
}

/// Turns an authority error into the HTTP refusal a client sees.
pub fn refusal(e: &AuthorityError) -> Refusal {
    let status = match e {
        AuthorityError::WrongTempKey { .. }
        | AuthorityError::TempKeyLocked { .. }
        | AuthorityError::TempKeyExpired { .. }
        | AuthorityError::TempKeySpent { .. }
        | AuthorityError::UnknownUser { .. } => 401,
        AuthorityError::BadRequest(_) | AuthorityError::TempKey(_) => 400,
        AuthorityError::CertNotCurrent { .. } => 403,
        AuthorityError::UserState { .. } => 409,
        _ => 500,
    };
    Refusal {
        status,
        reason: e.to_string(),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `cacerts`: the authority's CA certificate (reads only).
pub fn ca_certs(dir: &Path) -> Result<Vec<Certificate>, AuthorityError> {
    let a = AuthorityDir::open_read(dir)?;
    Ok(vec![a.ca_certificate()?])
}

/// Records a refusal (with whatever it counted, such as a wrong temporary key) in the audit
/// log and commits; a failure to record is logged but does not hide the refusal.
fn record_refusal(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    action: &str,
    subject: &str,
    e: &AuthorityError,
) {
    if let AuthorityError::UnknownUser { user } = e {
        // Anyone can name a user who does not exist: that is no event of the authority's, and
        // the audit log is not theirs to fill. The node's log says it, the name escaped and cut.
        log::info!("{action} refused: no user {:?}", cut(user));
        return;
    }
    a.audit("est", action, subject, "refused", &e.to_string());
    if let Err(log_err) = a.commit(ch.module, session, ch.pin) {
        log::error!("could not record the refused {action} in the audit log: {log_err}");
    }
}

/// At most 64 characters of `text` (for the node's log).
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

/// Checks the user may enroll and the temporary key, counting a wrong one.
fn check_temp_key(a: &mut AuthorityDir, basic: &Basic) -> Result<String, AuthorityError> {
    let user = a.user(&basic.user)?.clone();
    match user.state {
        UserState::Pending | UserState::Recovering => {}
        // The enrollment is done and its key spent (a retry of serverkeygen with the same
        // keys was answered before this): refused as a spent key, as the module says.
        UserState::Active if user.temp_key.as_ref().is_some_and(|t| t.spent) => {
            return Err(AuthorityError::TempKeySpent {
                user: user.name.clone(),
            })
        }
        UserState::Active => return Err(crate::authority::users::state_error(
            &user,
            "already enrolled; renew with simplereenroll, or have the authority recover the user",
        )),
        UserState::Revoked => {
            return Err(crate::authority::users::state_error(
                &user,
                "revoked users cannot enroll",
            ))
        }
    }
    let key = TempKey::parse(basic.password.expose_secret())?;
    let record =
        a.user_mut(&basic.user)?
            .temp_key
            .as_mut()
            .ok_or_else(|| AuthorityError::TempKeySpent {
                user: basic.user.clone(),
            })?;
    let issued = temp_key_ref(record);
    let user = basic.user.clone();
    match record.check(&key, SystemTime::now())? {
        TempKeyCheck::Ok => Ok(issued),
        TempKeyCheck::Wrong { tries_left } => {
            Err(AuthorityError::WrongTempKey { user, tries_left })
        }
        TempKeyCheck::Locked => Err(AuthorityError::TempKeyLocked { user }),
        TempKeyCheck::Expired { at } => Err(AuthorityError::TempKeyExpired { user, at }),
        TempKeyCheck::Spent => Err(AuthorityError::TempKeySpent { user }),
    }
}

/// What names one temporary key in its binding: its issue time and the start of the SHA-256 of
/// its Argon2id hash, whose random salt differs from key to key.
fn temp_key_ref(record: &TempKeyRecord) -> String {
    let digest = sha256_hex(record.phc.as_bytes());
    format!("{} {}", record.issued, &digest[..16])
}

fn binding(a: &mut AuthorityDir, user: &str) -> Result<Option<Binding>, AuthorityError> {
    let Some(row) = a.get(EST_KIND, user, user)? else {
        return Ok(None);
    };
    serde_json::from_slice(&row.body).map(Some).map_err(|e| {
        crate::authority::state::tampered(&format!(
            "the EST record of user {user:?} does not parse: {e}"
        ))
    })
}

fn put_binding(a: &mut AuthorityDir, user: &str, b: &Binding) -> Result<(), AuthorityError> {
    let body = serde_json::to_vec(b).map_err(|e| AuthorityError::Encode(e.to_string()))?;
    a.put(EST_KIND, user, user, body)
}

/// The binding of the user's current temporary key, if any.
fn current_binding(a: &mut AuthorityDir, user: &str) -> Result<Option<Binding>, AuthorityError> {
    let issued = a.user(user)?.temp_key.as_ref().map(temp_key_ref);
    Ok(binding(a, user)?.filter(|b| Some(&b.temp_key_issued) == issued.as_ref()))
}

/// Issues one user certificate on the token.
fn issue_user_cert(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    user: &str,
    spki: &[u8],
    profile: CertProfile,
) -> Result<Certificate, AuthorityError> {
    let email = a.user(user)?.email.clone();
    let ca_id =
        unhex_id(&a.config.ca_key_id).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let key = session.find_private_key(&ca_id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the authority's CA key is missing from its token".into())
    })?;
    let ca_cert = a.ca_certificate()?;
    let subject = x509::user_subject(user, email.as_deref())?;
    let policy = a.config.issuing.policy()?;
    let now = SystemTime::now();
    let params = CertParams {
        subject: &subject,
        spki_der: spki,
        serial: &x509::random_serial()?,
        not_before: now - Duration::from_secs(300),
        not_after: now + USER_CERT_LIFETIME,
        profile,
        email: email.as_deref(),
    };
    let mut signer = CaSigner {
        module: ch.module,
        session,
        key,
        pin: ch.pin,
    };
    Ok(x509::issue_with_policy(
        &ca_cert,
        &params,
        &policy,
        &mut signer,
    )?)
}

/// Records an issued certificate (the `issued` record and the user's list).
fn record_cert(
    a: &mut AuthorityDir,
    user: &str,
    keyset: &str,
    cert: &Certificate,
    kind_of: CertKind,
) -> Result<String, AuthorityError> {
    let serial = x509::serial_hex(cert);
    a.put(
        kind::ISSUED,
        &serial,
        user,
        x509::cert_to_pem(cert)?.into_bytes(),
    )?;
    let not_after =
        humantime::format_rfc3339_seconds(cert.tbs_certificate.validity.not_after.to_system_time())
            .to_string();
    a.user_mut(user)?.certs.push(IssuedCert {
        serial: serial.clone(),
        kind: kind_of,
        keyset: keyset.to_string(),
        issued: now_rfc3339(),
        not_after,
        revoked: None,
        superseded: None,
    });
    Ok(serial)
}

/// `simpleenroll`: the signing certificate for the request's key (see the module's rule).
pub fn simple_enroll(
    ch: &Change<'_>,
    dir: &Path,
    basic: &Basic,
    csr: &CheckedCsr,
) -> Result<Certificate, AuthorityError> {
    let started = std::time::Instant::now();
    let keyset = wire::keyset_of(&csr.csr).map_err(|r| AuthorityError::BadRequest(r.reason))?;
    let locked = std::time::Instant::now();
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let issued = match check_temp_key(&mut a, basic) {
        Ok(issued) => issued,
        Err(e) => {
            record_refusal(ch, &mut a, &mut session, "simpleenroll", &basic.user, &e);
            return Err(e);
        }
    };
    let spki_hash = sha256_hex(&csr.spki);
    if let Some(b) = current_binding(&mut a, &basic.user)? {
        if b.signing_spki == spki_hash {
            return x509::certs_from_pem(&b.signing_cert)?
                .into_iter()
                .next()
                .ok_or_else(|| {
                    crate::authority::state::tampered("an EST record without its certificate")
                });
        }
        let e = AuthorityError::UserState {
            user: basic.user.clone(),
            state: "enrolling".into(),
            hint: "this temporary key's enrollment has a signing certificate for another key already; finish it with serverkeygen, or have the authority recover the user".into(),
        };
        record_refusal(ch, &mut a, &mut session, "simpleenroll", &basic.user, &e);
        return Err(e);
    }
    let user = a.user(&basic.user)?.clone();
    if user
        .keysets
        .iter()
        .any(|k| k.to_lowercase() == keyset.to_lowercase())
    {
        let e = AuthorityError::BadRequest(format!(
            "user {:?} already used keyset name {keyset:?}; enroll under a new keyset name (the request's commonName)",
            basic.user
        ));
        record_refusal(ch, &mut a, &mut session, "simpleenroll", &basic.user, &e);
        return Err(e);
    }
    let cert = issue_user_cert(
        ch,
        &mut a,
        &mut session,
        &basic.user,
        &csr.spki,
        CertProfile::UserSigning,
    )?;
    let serial = record_cert(&mut a, &basic.user, &keyset, &cert, CertKind::Signing)?;
    put_binding(
        &mut a,
        &basic.user,
        &Binding {
            temp_key_issued: issued,
            keyset: keyset.clone(),
            signing_spki: spki_hash,
            signing_cert: x509::cert_to_pem(&cert)?,
            done: None,
        },
    )?;
    a.audit(
        "est",
        "simpleenroll",
        &basic.user,
        "ok",
        &format!(
            "keyset {keyset:?}: signing cert {serial}; the temporary key is spent by serverkeygen"
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    timing("simpleenroll", &basic.user, started, locked);
    Ok(cert)
}

/// `serverkeygen`: the user's encryption key, made and archived on the authority's token and
/// returned as EnvelopedData to the request's key; completes the enrollment and spends the
/// temporary key. Returns the multipart answer.
pub fn server_keygen(
    ch: &Change<'_>,
    dir: &Path,
    basic: &Basic,
    csr: &CheckedCsr,
) -> Result<String, AuthorityError> {
    let started = std::time::Instant::now();
    let decrypt_key_id = wire::asymmetric_decrypt_key_id(&csr.csr)
        .map_err(|r| AuthorityError::BadRequest(r.reason))?;
    if decrypt_key_id.is_none() {
        wire::transport_key(csr).map_err(|r| AuthorityError::BadRequest(r.reason))?;
    }
    let transport_hash = sha256_hex(&csr.spki);
    // The token work that needs no shared state is done before the authority's lock (see
    // [`prepare_key`]); what it made is used only if the state under the lock still allows it.
    let (mut session, prepared) = prepare_key(ch, dir, basic, csr, decrypt_key_id.as_deref())?;
    let locked = std::time::Instant::now();
    let mut a = AuthorityDir::open_locked(dir)?;
    a.vouch(&session)?;
    if let Some(answer) = answered_before(&mut a, basic, &transport_hash)? {
        return Ok(answer);
    }
    let checked = check_temp_key(&mut a, basic).and_then(|issued| {
        current_binding(&mut a, &basic.user)?
            .filter(|b| b.temp_key_issued == issued && b.done.is_none())
            .ok_or_else(|| AuthorityError::UserState {
                user: basic.user.clone(),
                state: "not enrolling".into(),
                hint: "call simpleenroll first: the encryption key completes the enrollment of a signing key".into(),
            })
    });
    let mut bound = match checked {
        Ok(b) => b,
        Err(e) => {
            record_refusal(ch, &mut a, &mut session, "serverkeygen", &basic.user, &e);
            return Err(e);
        }
    };
    // A request naming a key the authority does not know is a bad request: refused, nothing
    // recorded (the transaction is dropped).
    let transport = transport_for(&mut a, &basic.user, csr, decrypt_key_id.as_deref())?;
    let archive_key_id = a.config.archive_key_id.clone();
    let key = match prepared
        .filter(|p| p.archive_key_id == archive_key_id && p.transport_spki == transport.spki)
    {
        Some(p) => p,
        None => generate_enveloped(ch, &a, &session, &transport)?,
    };
    let made = finish_encryption_key(ch, &mut a, &mut session, &basic.user, key)?;
    let user = basic.user.as_str();
    let enc_serial = record_cert(
        &mut a,
        user,
        &bound.keyset,
        &made.cert,
        CertKind::Encryption,
    )?;
    a.put(kind::ARCHIVE, &enc_serial, user, made.archive_blob)?;
    let record = a.user_mut(user)?;
    if let Some(t) = record.temp_key.as_mut() {
        t.mark_spent();
    }
    record.state = UserState::Active;
    record.keysets.push(bound.keyset.clone());
    record.archive.push(ArchivedKey {
        cert_serial: enc_serial.clone(),
        archived: now_rfc3339(),
    });
    bound.done = Some(Done {
        transport_spki: transport_hash,
        answer: made.answer.clone(),
        enveloped_to: Some(sha256_hex(&transport.spki)),
    });
    put_binding(&mut a, user, &bound)?;
    a.audit(
        "est",
        "process",
        user,
        "ok",
        &format!(
            "EST enrollment of keyset {:?}: encryption cert {enc_serial} (key archived), temporary key spent",
            bound.keyset
        ),
    );
    super::kill_point("est-kill-before-commit");
    a.commit(ch.module, &mut session, ch.pin)?;
    super::kill_point("est-kill-after-commit");
    timing("serverkeygen", &basic.user, started, locked);
    Ok(made.answer)
}

/// A retry of a finished serverkeygen: the same temporary key (checked against its hash,
/// though spent) and the same transport key get the recorded answer.
fn answered_before(
    a: &mut AuthorityDir,
    basic: &Basic,
    transport_hash: &str,
) -> Result<Option<String>, AuthorityError> {
    let Ok(user) = a.user(&basic.user).cloned() else {
        return Ok(None);
    };
    let Some(record) = user.temp_key.as_ref().filter(|t| t.spent) else {
        return Ok(None);
    };
    let Some(done) = current_binding(a, &basic.user)?.and_then(|b| b.done) else {
        return Ok(None);
    };
    if done.transport_spki != transport_hash {
        return Ok(None);
    }
    let Ok(key) = TempKey::parse(basic.password.expose_secret()) else {
        return Ok(None);
    };
    Ok(key.verify(&record.phc)?.then_some(done.answer))
}

struct MadeKey {
    cert: Certificate,
    archive_blob: Vec<u8>,
    answer: String,
}

/// An encryption key made on the token and gone from it again: archived (wrapped under the
/// archive key `archive_key_id`) and enveloped to the transport key, its certificate not yet
/// issued.
struct Enveloped {
    archive_key_id: String,
    transport_spki: Vec<u8>,
    enc_spki: Vec<u8>,
    archive_blob: Vec<u8>,
    enveloped: Vec<u8>,
}

/// The RSA key a server-generated key is enveloped to, and how the EnvelopedData names it.
struct Transport {
    key: PublicKey,
    n: Vec<u8>,
    e: Vec<u8>,
    /// Its SubjectPublicKeyInfo, DER (to tell whether a prepared key went to the same key).
    spki: Vec<u8>,
    /// The RecipientIdentifier's subjectKeyIdentifier.
    key_id: Vec<u8>,
}

/// Where serverkeygen's key goes (RFC 7030 §4.4.1.2): with an AsymmetricDecryptKeyIdentifier
/// in the request, to the RSA key of a certificate this authority issued to the user (not
/// revoked) whose subject key identifier it is — the identifier then names it in the
/// EnvelopedData; without one, to the request's own key (RSA, 2048 bits or more), named by
/// the SHA-1 of its subjectPublicKey.
fn transport_for(
    a: &mut AuthorityDir,
    user: &str,
    csr: &CheckedCsr,
    decrypt_key_id: Option<&[u8]>,
) -> Result<Transport, AuthorityError> {
    let Some(id) = decrypt_key_id else {
        let (n, e) = wire::transport_key(csr).map_err(|r| AuthorityError::BadRequest(r.reason))?;
        let bits = csr.csr.info.public_key.subject_public_key.raw_bytes();
        return Ok(Transport {
            key: csr.key.clone(),
            n,
            e,
            spki: csr.spki.clone(),
            key_id: envelope::key_identifier(bits),
        });
    };
    let certs = a.user(user)?.certs.clone();
    for issued in certs.iter().filter(|c| c.revoked.is_none()) {
        let Some(row) = a.get(kind::ISSUED, &issued.serial, user)? else {
            continue;
        };
        let pem = String::from_utf8_lossy(&row.body).into_owned();
        let Some(cert) = x509::certs_from_pem(&pem)?.into_iter().next() else {
            continue;
        };
        if subject_key_id(&cert).as_deref() != Some(id) {
            continue;
        }
        let spki = x509::spki_der_of(&cert);
        let key = PublicKey::from_spki_der(&spki).map_err(|e| {
            AuthorityError::BadRequest(format!("certificate {}: {e}", issued.serial))
        })?;
        let Some((n, e)) = key.rsa_parts() else {
            return Err(AuthorityError::BadRequest(format!(
                "the request's AsymmetricDecryptKeyIdentifier names the key of certificate {}, which is not RSA; name an RSA encryption key, or leave the attribute out to have the key encrypted to the request's own key",
                issued.serial
            )));
        };
        return Ok(Transport {
            key,
            n,
            e,
            spki,
            key_id: id.to_vec(),
        });
    }
    Err(AuthorityError::BadRequest(format!(
        "the request's AsymmetricDecryptKeyIdentifier {} names no key of a certificate this authority issued to user {user:?} (and did not revoke); name one of those, or leave the attribute out to have the key encrypted to the request's own key",
        hex_of(id)
    )))
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's subject key identifier: its extension, else the SHA-1 of its key's bits.
fn subject_key_id(cert: &Certificate) -> Option<Vec<u8>> {
    use der::Decode;
    let ext = cert.tbs_certificate.extensions.as_ref().and_then(|exts| {
        exts.iter()
            .find(|e| e.extn_id == der::oid::db::rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER)
    });
    match ext {
        Some(e) => x509_cert::ext::pkix::SubjectKeyIdentifier::from_der(e.extn_value.as_bytes())
            .ok()
            .map(|ski| ski.0.as_bytes().to_vec()),
        None => Some(envelope::key_identifier(
            cert.tbs_certificate
                .subject_public_key_info
                .subject_public_key
                .raw_bytes(),
        )),
    }
}

/// The part of serverkeygen that depends on no shared state, done before the authority's
/// lock so that nodes (and a node's workers) generate keys at the same time: a login to the
/// token, and — when a read-only snapshot of the state says the request will be granted (the
/// temporary key right, unspent and bound by simpleenroll) — the encryption key generated,
/// archived and enveloped. Nothing is recorded or signed here: under the lock the request is
/// checked again on the current state, the key's certificate issued and everything committed;
/// if the state changed meanwhile (another node spent the key, the archive key rolled over)
/// the prepared key is discarded (it exists only wrapped, in this process' memory). A request
/// the snapshot refuses gets no key made: a wrong temporary key costs the node no key pair.
fn prepare_key(
    ch: &Change<'_>,
    dir: &Path,
    basic: &Basic,
    csr: &CheckedCsr,
    decrypt_key_id: Option<&[u8]>,
) -> Result<(TokenSession, Option<Enveloped>), AuthorityError> {
    let mut snapshot = AuthorityDir::open_read(dir)?;
    let session = crate::authority::init::open_authority_token(
        ch.module,
        &snapshot.config,
        ch.pin,
        ch.policy,
    )?;
    if !likely_granted(&mut snapshot, basic)? {
        return Ok((session, None));
    }
    let Ok(transport) = transport_for(&mut snapshot, &basic.user, csr, decrypt_key_id) else {
        return Ok((session, None));
    };
    let made = generate_enveloped(ch, &snapshot, &session, &transport)?;
    Ok((session, Some(made)))
}

/// Whether a snapshot of the state would grant serverkeygen to `basic` (counting nothing).
fn likely_granted(a: &mut AuthorityDir, basic: &Basic) -> Result<bool, AuthorityError> {
    let Ok(user) = a.user(&basic.user).cloned() else {
        return Ok(false);
    };
    if !matches!(user.state, UserState::Pending | UserState::Recovering) {
        return Ok(false);
    }
    let Some(record) = user.temp_key.as_ref().filter(|t| !t.spent) else {
        return Ok(false);
    };
    let Some(bound) = current_binding(a, &basic.user)? else {
        return Ok(false);
    };
    if bound.done.is_some() || bound.temp_key_issued != temp_key_ref(record) {
        return Ok(false);
    }
    let Ok(key) = TempKey::parse(basic.password.expose_secret()) else {
        return Ok(false);
    };
    Ok(key.verify(&record.phc).unwrap_or(false))
}

/// Generates the encryption key on the token, archives it under the archive key and
/// envelopes it to the transport key; the key object is gone from the token after.
fn generate_enveloped(
    ch: &Change<'_>,
    a: &AuthorityDir,
    session: &TokenSession,
    transport: &Transport,
) -> Result<Enveloped, AuthorityError> {
    let mech = crate::enroll::delivery::authority_wrap(session, ch.module)?;
    let archive_key = crate::authority::process::archive_key(a, session)?;
    let enc_id = session.random(16)?;
    let (enc_public, enc_private) = session.generate_decryption_pair(&DecryptionPair {
        id: &enc_id,
        label: "keyward user encryption key (in transit)",
        bits: 2048,
        persistent: false,
        extractable: true,
        always_authenticate: false,
    })?;
    let archived = session.wrap_rfc5649(mech, archive_key, enc_private);
    let enc_spki = session
        .rsa_public_key(enc_public)
        .map_err(AuthorityError::from)
        .and_then(|raw| Ok(PublicKey::from_raw(&raw)?.to_der()?));
    let enveloped = envelope_to(session, mech, enc_private, transport);
    session.destroy(enc_private)?;
    let _ = session.destroy(enc_public);
    let (archive_blob, enc_spki, enveloped) = (archived?, enc_spki?, enveloped?);
    Ok(Enveloped {
        archive_key_id: a.config.archive_key_id.clone(),
        transport_spki: transport.spki.clone(),
        enc_spki,
        archive_blob,
        enveloped,
    })
}

/// Issues the enveloped key's certificate (under the lock) and makes serverkeygen's answer.
fn finish_encryption_key(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    user: &str,
    key: Enveloped,
) -> Result<MadeKey, AuthorityError> {
    let cert = issue_user_cert(
        ch,
        a,
        session,
        user,
        &key.enc_spki,
        CertProfile::UserEncryption,
    )?;
    let certs = wire::certs_only(std::slice::from_ref(&cert))
        .map_err(|r| AuthorityError::Encode(r.reason))?;
    let signed = sign_enveloped(ch, a, session, &key.enveloped)?;
    Ok(MadeKey {
        cert,
        archive_blob: key.archive_blob,
        answer: wire::serverkeygen_body(&signed, &certs),
    })
}

/// The SignedData around the key's EnvelopedData, signed by the CA key (RFC 7030 §4.4.2).
fn sign_enveloped(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    enveloped: &[u8],
) -> Result<Vec<u8>, AuthorityError> {
    let ca_id =
        unhex_id(&a.config.ca_key_id).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let key = session.find_private_key(&ca_id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the authority's CA key is missing from its token".into())
    })?;
    let ca = a.ca_certificate()?;
    let mut signer = envelope::CaContentSigner {
        ca: &ca,
        signer: CaSigner {
            module: ch.module,
            session,
            key,
            pin: ch.pin,
        },
    };
    envelope::signed(enveloped, &mut signer).map_err(|r| AuthorityError::Encode(r.reason))
}

/// Issues the node's TLS certificate for `names` to the key `spki` (made in memory at start,
/// never written); the issuance is in the audit log.
pub fn tls_certificate(
    ch: &Change<'_>,
    dir: &Path,
    names: &[String],
    spki: &[u8],
) -> Result<(Certificate, Certificate), AuthorityError> {
    let general = names
        .iter()
        .map(|n| general_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let ca_id =
        unhex_id(&a.config.ca_key_id).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let key = session.find_private_key(&ca_id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the authority's CA key is missing from its token".into())
    })?;
    let ca_cert = a.ca_certificate()?;
    let subject: x509_cert::name::Name = format!("CN={}", names.first().map_or("localhost", |s| s))
        .parse()
        .map_err(|e| AuthorityError::BadRequest(format!("server name {names:?}: {e}")))?;
    let now = SystemTime::now();
    let params = CertParams {
        subject: &subject,
        spki_der: spki,
        serial: &x509::random_serial()?,
        not_before: now - Duration::from_secs(300),
        not_after: now + TLS_CERT_LIFETIME,
        profile: CertProfile::TlsServer,
        email: None,
    };
    let mut signer = CaSigner {
        module: ch.module,
        session: &mut session,
        key,
        pin: ch.pin,
    };
    let cert = x509::issue_tls_server(&ca_cert, &params, general, &mut signer)?;
    a.audit(
        "est",
        "serve",
        "",
        "ok",
        &format!(
            "TLS certificate {} for {} (key in memory only)",
            x509::serial_hex(&cert),
            names.join(", ")
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok((cert, ca_cert))
}

fn general_name(name: &str) -> Result<x509_cert::ext::pkix::name::GeneralName, AuthorityError> {
    use x509_cert::ext::pkix::name::GeneralName;
    if let Ok(ip) = name.parse::<std::net::IpAddr>() {
        let bytes = match ip {
            std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
            std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        return der::asn1::OctetString::new(bytes)
            .map(GeneralName::IpAddress)
            .map_err(|e| AuthorityError::BadRequest(format!("server name {name:?}: {e}")));
    }
    der::asn1::Ia5String::new(name)
        .map(GeneralName::DnsName)
        .map_err(|_| {
            AuthorityError::BadRequest(format!(
                "server name {name:?} is neither an IP address nor an ASCII DNS name"
            ))
        })
}

/// Whether a token error is the token's "no" to a mechanism (then the other way is tried).
fn refused_by_token(e: &AuthorityError) -> bool {
    matches!(
        e,
        AuthorityError::Token(crate::token::TokenError::MechanismUnsupported { .. })
    ) || e.to_string().contains("does not support the mechanism")
}

/// A ContentInfo(EnvelopedData) of the private `key` to the transport key: wrapped on the
/// token where it can, else through [`in_memory_cbc`]. The caller destroys `key`.
fn envelope_to(
    session: &TokenSession,
    mech: crate::token::Rfc5649Mechanism,
    key: crate::token::ObjectRef,
    transport: &Transport,
) -> Result<Vec<u8>, AuthorityError> {
    let (wrapped_cek, wrapped_key) =
        match on_token_cbc_pad(session, key, (&transport.n, &transport.e)) {
            Ok(w) => w,
            Err(err) if refused_by_token(&err) => {
                in_memory_cbc(session, mech, key, &transport.key)?
            }
            Err(err) => return Err(err),
        };
    envelope::enveloped(&envelope::Wrapped {
        key_identifier: &transport.key_id,
        wrapped_cek: &wrapped_cek,
        iv_and_ciphertext: &wrapped_key,
    })
    .map_err(|r| AuthorityError::Encode(r.reason))
}

/// The content key and the key wrapped under it, all on the token: an AES key wrapped with
/// RSA-OAEP to the transport key, and the private key wrapped with CKM_AES_CBC_PAD.
fn on_token_cbc_pad(
    session: &TokenSession,
    key: crate::token::ObjectRef,
    (n, e): (&[u8], &[u8]),
) -> Result<(Vec<u8>, Vec<u8>), AuthorityError> {
    let aes = session.generate_transport_aes()?;
    let transport = session.import_rsa_public(n, e)?;
    let wrapped_key = session.wrap_cbc_pad(aes, key)?;
    let wrapped_cek = session.wrap_rsa_oaep(transport, aes, OaepHash::Sha1)?;
    Ok((wrapped_cek, wrapped_key))
}

/// For tokens without CKM_AES_CBC_PAD wrapping (SoftHSM 2.6): the token wraps the key with
/// RFC 5649 under a one-use AES key this node made, and the node re-encrypts it with AES-CBC
/// in locked, zeroized memory; the plaintext key exists only there, for the moment between.
fn in_memory_cbc(
    session: &TokenSession,
    mech: crate::token::Rfc5649Mechanism,
    key: crate::token::ObjectRef,
    transport: &PublicKey,
) -> Result<(Vec<u8>, Vec<u8>), AuthorityError> {
    use aes::cipher::{BlockEncryptMut, KeyIvInit};
    let random = |n: usize| -> Result<zeroize::Zeroizing<Vec<u8>>, AuthorityError> {
        let mut b = zeroize::Zeroizing::new(vec![0u8; n]);
        getrandom::getrandom(&mut b)
            .map_err(|e| AuthorityError::Encode(format!("no random bytes: {e}")))?;
        Ok(b)
    };
    let kek = random(32)?;
    let wrapping = session.import_wrapping_aes(&kek)?;
    let blob = session.wrap_rfc5649(mech, wrapping, key);
    session.destroy(wrapping)?;
    let plain =
        crate::token::transfer::unwrap_rfc5649_in_memory(&kek, &blob?).ok_or_else(|| {
            AuthorityError::Encode(
                "the token's RFC 5649 wrap of the new key does not unwrap".into(),
            )
        })?;
    let (cek, iv) = (random(32)?, random(16)?);
    let ciphertext =
        cbc::Encryptor::<aes::Aes256>::new(cek.as_slice().into(), iv.as_slice().into())
            .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(&plain);
    let PublicKey::Rsa(transport) = transport else {
        return Err(AuthorityError::BadRequest(
            "the transport key must be RSA".into(),
        ));
    };
    let wrapped_cek = transport
        .encrypt(&mut rand_core::OsRng, rsa::Oaep::new::<sha1::Sha1>(), &cek)
        .map_err(|e| AuthorityError::Encode(format!("RSA-OAEP to the transport key: {e}")))?;
    let mut out = iv.to_vec();
    out.extend(ciphertext);
    Ok((wrapped_cek, out))
}

/// keyward's one-call enrollment: a request file in, its reply out, processed exactly as
/// `authority process` processes it (the same checks, the temporary key spent in the same
/// transaction, a repeated request answered with its recorded reply).
pub fn process_request(
    ch: &Change<'_>,
    dir: &Path,
    request: &[u8],
) -> Result<Vec<u8>, AuthorityError> {
    // The request is checked here first: a malformed, forged or tampered one, or one for a
    // user who does not exist, is a bad request of the client's — refused without a word in
    // the audit log and without naming this node's scratch files.
    let text = std::str::from_utf8(request).map_err(|e| {
        AuthorityError::BadRequest(format!(
            "the request is not UTF-8 text (byte {}); send a request file of `keyward enroll -o`",
            e.valid_up_to()
        ))
    })?;
    let verified = crate::authority::process::parse_request(Path::new("the request"), text)
        .map_err(|e| {
            AuthorityError::BadRequest(format!("{e}; send a request file of `keyward enroll -o`"))
        })?;
    let user = &verified.body.user;
    if crate::names::check_user_name(user).is_err() {
        return Err(AuthorityError::BadRequest(
            "the request names no valid user name".into(),
        ));
    }
    if let Err(e @ AuthorityError::UnknownUser { .. }) =
        AuthorityDir::open_read(dir).and_then(|mut a| a.user(user).map(|_| ()))
    {
        log::info!("keyward-enroll refused: no user {:?}", cut(user));
        return Err(e);
    }
    let scratch = tempfile::Builder::new()
        .prefix("keyward-est")
        .tempdir()
        .map_err(|e| crate::authority::state::io("create", Path::new("a scratch directory"), &e))?;
    let (req, reply) = (scratch.path().join("request"), scratch.path().join("reply"));
    crate::keyset::registry::write_atomic(&req, request)
        .map_err(|e| crate::authority::state::io("write", &req, &e))?;
    match crate::authority::process::process(ch, dir, &req, &reply) {
        Ok(_) => {}
        Err(AuthorityError::ReplyNotWritten { user, .. }) => {
            return crate::authority::process::committed_reply(dir, &user)?.ok_or_else(|| {
                AuthorityError::Encode(format!("the reply of user {user:?} is not recorded"))
            })
        }
        Err(e) => return Err(e),
    }
    std::fs::read(&reply).map_err(|e| crate::authority::state::io("read", &reply, &e))
}

/// `simplereenroll`: a new signing certificate for the request's key, authenticated by the TLS
/// client certificate, which must be the user's current signing certificate from this
/// authority (not revoked, superseded or expired). The old certificate is marked superseded
/// in the same transaction; a retry with the same key after that gets the same certificate.
pub fn simple_reenroll(
    ch: &Change<'_>,
    dir: &Path,
    client_cert: &[u8],
    csr: &CheckedCsr,
) -> Result<Certificate, AuthorityError> {
    let current = x509::cert_from_der(client_cert)?;
    let (mut a, mut session) = open_vouched(ch, dir)?;
    x509::verify_issued_by(&current, &a.ca_certificate()?).map_err(|_| {
        AuthorityError::BadRequest(
            "the TLS client certificate was not issued by this authority".into(),
        )
    })?;
    let serial = x509::serial_hex(&current);
    let user = a
        .all_users()?
        .into_iter()
        .find(|u| {
            u.certs
                .iter()
                .any(|c| c.serial == serial && c.kind == CertKind::Signing)
        })
        .ok_or_else(|| {
            AuthorityError::BadRequest(format!(
                "certificate {serial} is no signing certificate this authority issued to a user"
            ))
        })?;
    let issued = user
        .certs
        .iter()
        .find(|c| c.serial == serial)
        .cloned()
        .ok_or_else(|| crate::authority::state::tampered("a certificate vanished"))?;
    if issued.superseded.is_some() && issued.revoked.is_none() {
        if let Some(again) = renewed_for(&mut a, &user, &issued.keyset, &csr.spki)? {
            return Ok(again);
        }
    }
    if let Err(e) = check_current(&user, &issued, &current) {
        record_refusal(ch, &mut a, &mut session, "simplereenroll", &user.name, &e);
        return Err(e);
    }
    let cert = issue_user_cert(
        ch,
        &mut a,
        &mut session,
        &user.name,
        &csr.spki,
        CertProfile::UserSigning,
    )?;
    let new_serial = record_cert(&mut a, &user.name, &issued.keyset, &cert, CertKind::Signing)?;
    let now = now_rfc3339();
    if let Some(old) = a
        .user_mut(&user.name)?
        .certs
        .iter_mut()
        .find(|c| c.serial == serial)
    {
        old.superseded = Some(now);
    }
    a.audit(
        "est",
        "renew",
        &user.name,
        "ok",
        &format!(
            "simplereenroll of keyset {:?} with the TLS client certificate {serial}: signing cert {new_serial}; {serial} marked superseded",
            issued.keyset
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(cert)
}

/// Refuses a client certificate that is revoked, superseded or expired, or a user not active.
fn check_current(
    user: &crate::authority::UserRecord,
    issued: &IssuedCert,
    cert: &Certificate,
) -> Result<(), AuthorityError> {
    let refuse = |why: &str| {
        Err(AuthorityError::CertNotCurrent {
            user: user.name.clone(),
            serial: issued.serial.clone(),
            why: why.to_string(),
        })
    };
    if issued.revoked.is_some() {
        return refuse("was revoked");
    }
    if issued.superseded.is_some() {
        return refuse("was renewed already");
    }
    if user.state != UserState::Active {
        return refuse(&format!(
            "belongs to a user who is {}",
            format!("{:?}", user.state).to_lowercase()
        ));
    }
    if x509::check_validity(cert, SystemTime::now()).is_err() {
        return refuse("is not valid now");
    }
    Ok(())
}

/// The keyset's current signing certificate when it is for `spki` (a renewal already made).
fn renewed_for(
    a: &mut AuthorityDir,
    user: &crate::authority::UserRecord,
    keyset: &str,
    spki: &[u8],
) -> Result<Option<Certificate>, AuthorityError> {
    let Some(c) = user.certs.iter().rev().find(|c| {
        c.kind == CertKind::Signing
            && c.keyset == keyset
            && c.superseded.is_none()
            && c.revoked.is_none()
    }) else {
        return Ok(None);
    };
    let Some(row) = a.get(kind::ISSUED, &c.serial, &user.name)? else {
        return Ok(None);
    };
    let pem = String::from_utf8_lossy(&row.body).into_owned();
    Ok(x509::certs_from_pem(&pem)?
        .into_iter()
        .next()
        .filter(|cert| x509::spki_der_of(cert) == spki))
}

/// keyward's extension `keyward-archive`: a recovered user's archived encryption keys, after
/// the EST enrollment with the recovery's temporary key is finished (simpleenroll, then
/// serverkeygen). The same temporary key authenticates it (spent, it is checked against its
/// hash while it has not expired; a wrong one is counted, 5 lock it), and the request's
/// transport key (as serverkeygen's: the key the AsymmetricDecryptKeyIdentifier names, else
/// the request's own) must be the one serverkeygen enveloped the new key to — so a retry
/// after a lost answer works, a holder of the spent key alone gets nothing (409). Each archived
/// key (oldest first, the new one last) is unwrapped on the authority's token, enveloped to
/// that transport key and signed by the CA key; the giving-out is in the audit log. Returns the multipart answer:
/// per key, its SignedData(EnvelopedData) part and its certificate, certs-only.
pub fn archive_history(
    ch: &Change<'_>,
    dir: &Path,
    basic: &Basic,
    csr: &CheckedCsr,
) -> Result<String, AuthorityError> {
    let decrypt_key_id = wire::asymmetric_decrypt_key_id(&csr.csr)
        .map_err(|r| AuthorityError::BadRequest(r.reason))?;
    if decrypt_key_id.is_none() {
        wire::transport_key(csr).map_err(|r| AuthorityError::BadRequest(r.reason))?;
    }
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let enveloped_to = match check_history_key(&mut a, basic) {
        Ok(done) => done.enveloped_to().to_string(),
        Err(e) => {
            record_refusal(ch, &mut a, &mut session, "archive-history", &basic.user, &e);
            return Err(e);
        }
    };
    let user = basic.user.as_str();
    let transport = transport_for(&mut a, user, csr, decrypt_key_id.as_deref())?;
    if sha256_hex(&transport.spki) != enveloped_to {
        let e = AuthorityError::UserState {
            user: user.to_string(),
            state: "active".into(),
            hint: "the archived keys are given out only to the transport key serverkeygen enveloped the new key to; send a request with that key (or naming it)".into(),
        };
        record_refusal(ch, &mut a, &mut session, "archive-history", user, &e);
        return Err(e);
    }
    let mech = crate::enroll::delivery::authority_wrap(&session, ch.module)?;
    let archive_key = crate::authority::process::archive_key(&a, &session)?;
    let archived = a.user(user)?.archive.clone();
    let mut parts = Vec::new();
    for old in &archived {
        let (blob, pem) = crate::authority::process::archived_entry(&mut a, user, old)?;
        let cert = x509::certs_from_pem(&String::from_utf8_lossy(&pem))?
            .into_iter()
            .next()
            .ok_or_else(|| {
                crate::authority::state::tampered(&format!(
                    "the issued certificate of user {user:?}'s certificate {} does not parse",
                    old.cert_serial
                ))
            })?;
        let key = crate::authority::process::unwrap_archived(&session, mech, archive_key, &blob)?;
        let enveloped = envelope_to(&session, mech, key, &transport);
        session.destroy(key)?;
        let enveloped = enveloped?;
        let signed = sign_enveloped(ch, &mut a, &mut session, &enveloped)?;
        let certs = wire::certs_only(std::slice::from_ref(&cert))
            .map_err(|r| AuthorityError::Encode(r.reason))?;
        parts.push((signed, certs));
    }
    a.audit(
        "est",
        "archive-history",
        user,
        "ok",
        &format!(
            "{} archived encryption keys enveloped to the request's transport key",
            parts.len()
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    Ok(wire::keys_body(&parts))
}

/// The temporary key of the user's finished EST enrollment (spent, not expired), checked
/// against its hash; a wrong one is counted (5 lock it). Returns what serverkeygen recorded.
fn check_history_key(a: &mut AuthorityDir, basic: &Basic) -> Result<Done, AuthorityError> {
    let user = a.user(&basic.user)?.clone();
    let not_yet = || {
        AuthorityError::UserState {
        user: user.name.clone(),
        state: format!("{:?}", user.state).to_lowercase(),
        hint: "the archived keys are given out with the temporary key of a finished EST enrollment (simpleenroll, then serverkeygen)".into(),
    }
    };
    if user.state != UserState::Active {
        return Err(not_yet());
    }
    let Some(record) = user.temp_key.as_ref().filter(|t| t.spent) else {
        return Err(not_yet());
    };
    let Some(done) = current_binding(a, &basic.user)?.and_then(|b| b.done) else {
        return Err(not_yet());
    };
    if record.expired(SystemTime::now())? {
        return Err(AuthorityError::TempKeyExpired {
            user: basic.user.clone(),
            at: record.expires.clone(),
        });
    }
    if record.attempts >= MAX_TRIES {
        return Err(AuthorityError::TempKeyLocked {
            user: basic.user.clone(),
        });
    }
    let key = TempKey::parse(basic.password.expose_secret())?;
    if key.verify(&record.phc)? {
        return Ok(done);
    }
    let attempts = record.attempts + 1;
    if let Some(t) = a.user_mut(&basic.user)?.temp_key.as_mut() {
        t.attempts = attempts;
    }
    Err(AuthorityError::WrongTempKey {
        user: basic.user.clone(),
        tries_left: MAX_TRIES.saturating_sub(attempts),
    })
}

use crate::authority::tempkey::MAX_ATTEMPTS as MAX_TRIES;

#[cfg(test)]
mod tests {
    use super::*;

    fn record(phc: &str) -> TempKeyRecord {
        TempKeyRecord {
            phc: phc.into(),
            issued: "2026-12-02T09:00:00Z".into(),
            expires: "2026-12-09T09:00:00Z".into(),
            attempts: 0,
            spent: false,
        }
    }

    /// A recovery's key issued in the same second as the first enrollment's is another key
    /// (CI found `simpleenroll` refused with 409 after a recovery made within that second).
    #[test]
    fn keys_issued_in_one_second_are_told_apart() {
        let first = record("$argon2id$v=19$m=19456,t=2,p=1$c2FsdDE$aGFzaDE");
        let again = record("$argon2id$v=19$m=19456,t=2,p=1$c2FsdDI$aGFzaDI");
        assert_ne!(temp_key_ref(&first), temp_key_ref(&again));
        assert_eq!(temp_key_ref(&first), temp_key_ref(&first.clone()));
        assert!(temp_key_ref(&first).starts_with("2026-12-02T09:00:00Z "));
    }
}
