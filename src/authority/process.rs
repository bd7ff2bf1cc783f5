//! `authority process`: check a request, make and archive the user's encryption key, issue the
//! certificates, and write the reply. The temporary key is spent only once the reply is written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use super::init::{open_vouched, Change};
use super::signer::CaSigner;
use super::state::{
    kind, now_rfc3339, tampered, ArchivedKey, AuthorityDir, CertKind, IssuedCert, UserState,
};
use super::tempkey::{TempKey, TempKeyCheck};
use super::users::state_error;
use super::AuthorityError;
use crate::enroll::delivery::Delivery;
use crate::enroll::wire::{self, ReplyBody, ReplyKey, REPLY_SIGNATURE_ALGORITHM};
use crate::pki::x509::{self, CertParams, CertProfile, TbsSigner};
use crate::pki::PublicKey;
use crate::token::{
    DecryptionPair, Module, OaepHash, ObjectKindFilter, ObjectRef, Rfc5649Mechanism, TokenSession,
    UnwrapTemplate,
};

/// How long user certificates are valid.
/// Two years: within the S/MIME BR's 825 days ([`x509::SMIME_MAX_VALIDITY`]).
const USER_CERT_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);
const _: () = assert!(USER_CERT_LIFETIME.as_secs() <= x509::SMIME_MAX_VALIDITY.as_secs());

/// What `authority process` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Processed {
    /// The user.
    pub user: String,
    /// The keyset.
    pub keyset: String,
    /// Serial of the signing certificate, hex.
    pub signing_serial: String,
    /// Serial of the new encryption certificate, hex.
    pub encryption_serial: String,
    /// How many archived keys the reply carries besides the new one.
    pub history: usize,
    /// How the keys are delivered (`rfc5649` or `import`).
    pub delivery: Delivery,
    /// The reply file.
    pub reply: PathBuf,
}

use crate::enroll::wire::VerifiedRequest;

/// Parses a request file and checks both signatures ([`wire::read_request`]).
pub fn read_request(path: &Path) -> Result<VerifiedRequest, AuthorityError> {
    Ok(wire::read_request(path)?)
}

/// [`read_request`] on text already read.
pub fn parse_request(path: &Path, text: &str) -> Result<VerifiedRequest, AuthorityError> {
    Ok(wire::verify_request(path, text)?)
}

/// Processes a request file into a reply file. A request whose enrollment is already recorded
/// (the command was stopped after recording it, before or while writing the reply) gets that
/// reply again: no crash loses or duplicates an enrollment.
pub fn process(
    ch: &Change<'_>,
    dir: &Path,
    request: &Path,
    reply: &Path,
) -> Result<Processed, AuthorityError> {
    process_with(ch, dir, request, reply, &ProcessOptions::default())
}

/// How `authority process` issues.
#[derive(Debug, Clone, Copy)]
pub struct ProcessOptions {
    /// How long the user certificates are valid (`--cert-lifetime`; two years by default).
    pub cert_lifetime: Duration,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            cert_lifetime: USER_CERT_LIFETIME,
        }
    }
}

/// [`process`] with options.
pub fn process_with(
    ch: &Change<'_>,
    dir: &Path,
    request: &Path,
    reply: &Path,
    opts: &ProcessOptions,
) -> Result<Processed, AuthorityError> {
    if let Some(done) = already_processed(dir, request, reply)? {
        return Ok(done);
    }
    prepare_with(ch, dir, request, opts)?.commit(ch.module, ch.pin, reply)
}

/// The last reply recorded for a user, with the request it answers (the `reply` record).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct StoredReply {
    /// The request's nonce.
    nonce: String,
    /// The keyset.
    keyset: String,
    /// The reply file, base64.
    reply: String,
    /// How the reply delivers the keys (absent in records made before deliveries: RFC 5649).
    #[serde(default = "rfc5649")]
    delivery: Delivery,
}

fn rfc5649() -> Delivery {
    Delivery::Rfc5649
}

fn stored_reply(a: &mut AuthorityDir, user: &str) -> Result<Option<StoredReply>, AuthorityError> {
    let Some(row) = a.get(kind::REPLY, user, user)? else {
        return Ok(None);
    };
    serde_json::from_slice(&row.body).map(Some).map_err(|e| {
        tampered(&format!(
            "the reply record of user {user:?} does not parse: {e}"
        ))
    })
}

/// When `request` was processed already (its nonce is the user's last recorded reply's),
/// writes that reply to `reply` again.
fn already_processed(
    dir: &Path,
    request: &Path,
    reply: &Path,
) -> Result<Option<Processed>, AuthorityError> {
    let Ok(req) = read_request(request) else {
        return Ok(None);
    };
    let mut a = AuthorityDir::open_read(dir)?;
    let user = req.body.user.as_str();
    if a.user(user).is_err() {
        return Ok(None);
    }
    let Some(stored) = stored_reply(&mut a, user)? else {
        return Ok(None);
    };
    if stored.nonce != req.body.nonce {
        return Ok(None);
    }
    let bytes = wire::b64(Path::new("reply record"), "reply", &stored.reply)?;
    write_reply(dir, user, reply, &bytes)?;
    let record = a.user(user)?;
    let serial = |k: CertKind| {
        record
            .certs
            .iter()
            .rev()
            .find(|c| c.kind == k && c.keyset == stored.keyset)
            .map(|c| c.serial.clone())
            .unwrap_or_default()
    };
    Ok(Some(Processed {
        user: user.to_string(),
        keyset: stored.keyset.clone(),
        signing_serial: serial(CertKind::Signing),
        encryption_serial: serial(CertKind::Encryption),
        history: record.archive.len().saturating_sub(1),
        reply: reply.to_path_buf(),
        delivery: stored.delivery,
    }))
}

/// A request checked and answered on the token, with nothing recorded yet: the authority stays
/// locked until [`Prepared::commit`] records the enrollment (issued certificates, archive,
/// reply, spent temporary key, audit entry: one transaction) and then writes the reply file,
/// or [`Prepared::abandon`] records that it was not used.
pub struct Prepared {
    a: AuthorityDir,
    session: TokenSession,
    req: VerifiedRequest,
    made: Made,
}

impl Prepared {
    /// The reply, as [`Prepared::commit`] will write it.
    pub fn reply_bytes(&self) -> &[u8] {
        &self.made.reply_bytes
    }

    /// Records the enrollment, then writes the reply file. When the reply cannot be written,
    /// the enrollment stands and `authority reply` writes it again.
    pub fn commit(
        self,
        module: &Module,
        pin: &SecretString,
        reply: &Path,
    ) -> Result<Processed, AuthorityError> {
        let Prepared {
            mut a,
            mut session,
            req,
            made,
        } = self;
        commit(&mut a, module, &mut session, pin, &req, made, reply)
    }

    /// Leaves the authority as it was, logging why the reply was not used.
    pub fn abandon(mut self, module: &Module, pin: &SecretString, why: &str) {
        let detail = format!("reply made but not used, nothing recorded: {why}");
        self.a.audit(
            "operator",
            "process",
            &self.req.body.user,
            "failed",
            &detail,
        );
        if let Err(e) = self.a.commit(module, &mut self.session, pin) {
            log::error!("could not record the abandoned request in the audit log: {e}");
        }
    }
}

/// [`process`] up to the recording: checks the request and the temporary key and makes the
/// reply on the token. Refusals (a wrong temporary key counts) are recorded and committed.
pub fn prepare(ch: &Change<'_>, dir: &Path, request: &Path) -> Result<Prepared, AuthorityError> {
    prepare_with(ch, dir, request, &ProcessOptions::default())
}

/// [`prepare`] with options.
pub fn prepare_with(
    ch: &Change<'_>,
    dir: &Path,
    request: &Path,
    opts: &ProcessOptions,
) -> Result<Prepared, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    super::rollover::check_no_archive_rollover(&mut a)?;
    let req = match read_request(request) {
        Ok(req) => req,
        Err(e) => {
            // Forged, tampered and unreadable requests are logged too, by file name: the user
            // they name cannot be trusted.
            let name = request.file_name().map_or_else(
                || request.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            record_failure(
                ch,
                &mut a,
                &mut session,
                &format!("request {name}"),
                "refused",
                &e,
            );
            return Err(e);
        }
    };
    // The delivery is chosen before the temporary key is checked and before any key is made:
    // a request the authority cannot serve is refused with nothing changed.
    let chosen = crate::enroll::delivery::authority_wrap(&session, ch.module)
        .map_err(AuthorityError::from)
        .and_then(|mech| {
            // CKM_AES_CBC_PAD is probed only for a request that asks for it.
            let cbc_pad = req.body.receives.contains(&Delivery::AesCbcPad)
                && session.cbc_pad_wraps(ch.module)?;
            crate::enroll::delivery::choose(&req.body.receives, a.config.allow_import, cbc_pad)
                .map(|d| (d, mech))
                .map_err(AuthorityError::BadRequest)
        });
    let (delivery, mech) = match chosen {
        Ok(c) => c,
        Err(e) => {
            record_failure(ch, &mut a, &mut session, &req.body.user, "refused", &e);
            return Err(e);
        }
    };
    let checked = if req.body.renews.is_some() {
        super::renew::check_renewal(&mut a, &req)
    } else {
        check_temp_key(&mut a, &mut session, &req)
    };
    if let Err(e) = checked {
        if matches!(e, AuthorityError::Tampered { .. }) {
            return Err(e);
        }
        record_failure(ch, &mut a, &mut session, &req.body.user, "refused", &e);
        return Err(e);
    }
    let made = match issue_everything(
        ch.module,
        &mut a,
        &mut session,
        &req,
        ch.pin,
        (delivery, mech),
        opts,
    ) {
        Ok(made) => made,
        Err(e) => {
            if matches!(e, AuthorityError::Tampered { .. }) {
                return Err(e);
            }
            record_failure(ch, &mut a, &mut session, &req.body.user, "failed", &e);
            return Err(e);
        }
    };
    Ok(Prepared {
        a,
        session,
        req,
        made,
    })
}

/// Records a process that did not complete (with whatever it changed, such as a counted wrong
/// temporary key); a failure to record is reported but does not hide `e`.
fn record_failure(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    subject: &str,
    outcome: &str,
    e: &AuthorityError,
) {
    a.audit("operator", "process", subject, outcome, &e.to_string());
    if let Err(log_err) = a.commit(ch.module, session, ch.pin) {
        log::error!("could not record the {outcome} request in the audit log: {log_err}");
    }
}

/// Decrypts the temporary key on the token and checks it against the user's record.
fn check_temp_key(
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    req: &VerifiedRequest,
) -> Result<(), AuthorityError> {
    let body = &req.body;
    let user = a.user(&body.user)?.clone();
    let user = &user;
    match user.state {
        UserState::Pending | UserState::Recovering => {}
        UserState::Active => {
            return Err(state_error(
                user,
                "already enrolled; if they lost access, run `keyward authority recover --dir DIR USER` first",
            ))
        }
        UserState::Revoked => return Err(state_error(user, "revoked users cannot enroll")),
    }
    if user
        .keysets
        .iter()
        .any(|k| k.to_lowercase() == body.keyset.to_lowercase())
    {
        return Err(AuthorityError::BadRequest(format!(
            "user {:?} already used keyset name {:?}; re-enroll under a new keyset name",
            body.user, body.keyset
        )));
    }
    let exchange_id = super::state::key_id("exchange key", &a.config.exchange_key_id)?;
    let exchange = session
        .find_object(ObjectKindFilter::PrivateKey, &exchange_id)?
        .ok_or_else(|| super::state::key_missing("exchange key"))?;
    let ciphertext = wire::b64(
        Path::new("request"),
        "encrypted_temp_key",
        &body.encrypted_temp_key,
    )?;
    let plain = session
        .decrypt_rsa_oaep(exchange, &ciphertext, body.temp_key_oaep)
        .map_err(|_| {
            AuthorityError::BadRequest(
                "the temporary key was not encrypted to this authority".into(),
            )
        })?;
    let text = std::str::from_utf8(&plain).map_err(|_| {
        AuthorityError::BadRequest("the encrypted temporary key is malformed".into())
    })?;
    let mut parts = text.splitn(3, '\0');
    let (for_user, for_nonce, typed) = (parts.next(), parts.next(), parts.next());
    if for_user != Some(body.user.as_str()) || for_nonce != Some(body.nonce.as_str()) {
        return Err(AuthorityError::BadRequest(
            "the encrypted temporary key belongs to another request (replayed or spliced)".into(),
        ));
    }
    let key = TempKey::parse(typed.unwrap_or_default())?;
    let user = a.user_mut(&body.user)?;
    let record = user
        .temp_key
        .as_mut()
        .ok_or_else(|| AuthorityError::TempKeySpent {
            user: body.user.clone(),
        })?;
    match record.check(&key, SystemTime::now())? {
        TempKeyCheck::Ok => Ok(()),
        TempKeyCheck::Wrong { tries_left } => Err(AuthorityError::WrongTempKey {
            user: body.user.clone(),
            tries_left,
        }),
        TempKeyCheck::Locked => Err(AuthorityError::TempKeyLocked {
            user: body.user.clone(),
        }),
        TempKeyCheck::Expired { at } => Err(AuthorityError::TempKeyExpired {
            user: body.user.clone(),
            at,
        }),
        TempKeyCheck::Spent => Err(AuthorityError::TempKeySpent {
            user: body.user.clone(),
        }),
    }
}

/// Everything made for one reply, not yet written.
struct Made {
    reply_bytes: Vec<u8>,
    archive_blob: Vec<u8>,
    signing_cert: x509_cert::Certificate,
    encryption_cert: x509_cert::Certificate,
    history: usize,
    delivery: Delivery,
    renewal: bool,
}

fn issue_everything(
    module: &Module,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    req: &VerifiedRequest,
    pin: &SecretString,
    (delivery, mech): (Delivery, Rfc5649Mechanism),
    opts: &ProcessOptions,
) -> Result<Made, AuthorityError> {
    let body = &req.body;
    let user = a.user(&body.user)?.clone();
    let archive_key = archive_key(a, session)?;

    // The user's new encryption key: session objects, extractable only so it can be wrapped.
    let enc_id = session.random(16)?;
    let started = std::time::Instant::now();
    let (enc_public, enc_private) = session.generate_decryption_pair(&DecryptionPair {
        id: &enc_id,
        label: "keyward user encryption key (in transit)",
        bits: 2048,
        persistent: false,
        extractable: true,
        always_authenticate: false,
    })?;
    // benches/authority_scale.sh reads this line: key generation is most of `process`, and
    // its time varies run by run whatever the authority's size.
    log::info!(
        "generated the user's encryption key in {:?}",
        started.elapsed()
    );
    let archive_blob = session.wrap_rfc5649(mech, archive_key, enc_private)?;
    let enc_spki = PublicKey::from_raw(&session.rsa_public_key(enc_public)?)?.to_der()?;

    // Transport: an AES key wrapped to the request's transport key.
    let aes = session.generate_transport_aes()?;
    let (n, e) = req.transport.rsa_parts().unwrap_or_default();
    let transport = session.import_rsa_public(&n, &e)?;
    let (oaep, wrapped_aes) = wrap_to_transport(session, transport, aes, &body.transport_oaep)?;

    let mut keys = Vec::new();
    // A renewal's token holds the archived keys already: the reply carries the new one only.
    let history: &[ArchivedKey] = if body.renews.is_some() {
        &[]
    } else {
        &user.archive
    };
    for old in history {
        keys.push(rewrap_archived(
            a,
            session,
            (delivery, mech),
            archive_key,
            aes,
            &body.user,
            old,
        )?);
    }
    let history = keys.len();
    let new_wrapped = wrap_for(session, delivery, mech, aes, enc_private)?;
    session.destroy(enc_private)?;

    let ca_id = super::state::key_id("CA key", &a.config.ca_key_id)?;
    let ca_key = session
        .find_private_key(&ca_id)?
        .ok_or_else(|| super::state::key_missing("CA key"))?;
    let ca_cert = a.ca_certificate()?;
    let subject = x509::user_subject(&body.user, user.email.as_deref())?;
    let policy = a.config.issuing.policy()?;
    let now = SystemTime::now();
    let mut signer = CaSigner {
        module,
        session,
        key: ca_key,
        pin,
    };
    let mut params = CertParams {
        subject: &subject,
        spki_der: &req.signing_spki,
        serial: &x509::random_serial()?,
        not_before: now - Duration::from_secs(300),
        not_after: now + opts.cert_lifetime,
        profile: CertProfile::UserSigning,
        email: user.email.as_deref(),
    };
    let signing_cert = x509::issue_with_policy(&ca_cert, &params, &policy, &mut signer)?;
    let enc_serial = x509::random_serial()?;
    params.spki_der = &enc_spki;
    params.serial = &enc_serial;
    params.profile = CertProfile::UserEncryption;
    let encryption_cert = x509::issue_with_policy(&ca_cert, &params, &policy, &mut signer)?;
    keys.push(ReplyKey {
        certificate: x509::cert_to_pem(&encryption_cert)?,
        wrapped_key: wire::to_b64(&new_wrapped),
        current: true,
    });

    let reply = ReplyBody {
        format: wire::REPLY_FORMAT.to_string(),
        version: wire::VERSION,
        user: body.user.clone(),
        keyset: body.keyset.clone(),
        request_nonce: body.nonce.clone(),
        created: now_rfc3339(),
        ca_certificate: format!("{}{}", x509::cert_to_pem(&ca_cert)?, a.config.links_pem()),
        signing_certificate: x509::cert_to_pem(&signing_cert)?,
        oaep,
        wrapped_aes_key: wire::to_b64(&wrapped_aes),
        delivery: Some(delivery),
        encryption_keys: keys,
    };
    let reply_bytes = wire::seal(
        "keyward enrollment reply",
        &reply,
        REPLY_SIGNATURE_ALGORITHM,
        &mut |bytes: &[u8]| signer.sign_tbs(bytes),
    )?;
    Ok(Made {
        reply_bytes,
        archive_blob,
        signing_cert,
        encryption_cert,
        history,
        delivery,
        renewal: body.renews.is_some(),
    })
}

/// Wraps the AES key to the transport key with the first OAEP hash the user's token takes
/// that this token can also do.
fn wrap_to_transport(
    session: &TokenSession,
    transport: ObjectRef,
    aes: ObjectRef,
    offered: &[OaepHash],
) -> Result<(OaepHash, Vec<u8>), AuthorityError> {
    let mut last = None;
    for hash in offered {
        match session.wrap_rsa_oaep(transport, aes, *hash) {
            Ok(w) => return Ok((*hash, w)),
            Err(e) => {
                log::debug!("RSA-OAEP {hash:?} wrap failed: {e}");
                last = Some(e);
            }
        }
    }
    Err(match last {
        Some(e) => e.into(),
        None => AuthorityError::BadRequest(
            "the request names no RSA-OAEP hash its token supports".into(),
        ),
    })
}

/// Wraps a private key under the reply's AES key as `delivery` needs.
fn wrap_for(
    session: &TokenSession,
    delivery: Delivery,
    mech: Rfc5649Mechanism,
    aes: ObjectRef,
    key: ObjectRef,
) -> Result<Vec<u8>, AuthorityError> {
    Ok(match delivery {
        Delivery::Rfc5649 | Delivery::Import => session.wrap_rfc5649(mech, aes, key)?,
        Delivery::AesCbcPad => session.wrap_cbc_pad(aes, key)?,
    })
}

fn rewrap_archived(
    a: &mut AuthorityDir,
    session: &TokenSession,
    (delivery, mech): (Delivery, Rfc5649Mechanism),
    archive_key: ObjectRef,
    aes: ObjectRef,
    user: &str,
    old: &ArchivedKey,
) -> Result<ReplyKey, AuthorityError> {
    let (blob, cert) = archived_entry(a, user, old)?;
    let key = unwrap_archived(session, mech, archive_key, &blob)?;
    let wrapped = wrap_for(session, delivery, mech, aes, key);
    session.destroy(key)?;
    Ok(ReplyKey {
        certificate: String::from_utf8_lossy(&cert).into_owned(),
        wrapped_key: wire::to_b64(&wrapped?),
        current: false,
    })
}

/// An archived key's blob (wrapped under the archive key) and its certificate (PEM), as the
/// authority recorded them; either missing is a tampered state.
pub(crate) fn archived_entry(
    a: &mut AuthorityDir,
    user: &str,
    old: &ArchivedKey,
) -> Result<(Vec<u8>, Vec<u8>), AuthorityError> {
    let missing = |what: &str| {
        tampered(&format!(
            "the {what} of user {user:?}'s certificate {} is missing",
            old.cert_serial
        ))
    };
    let blob = a
        .get(kind::ARCHIVE, &old.cert_serial, user)?
        .ok_or_else(|| missing("archived key"))?
        .body
        .clone();
    let cert = a
        .get(kind::ISSUED, &old.cert_serial, user)?
        .ok_or_else(|| missing("issued certificate"))?
        .body
        .clone();
    Ok((blob, cert))
}

/// Unwraps an archived key under the archive key into a session object (extractable, so it
/// can be wrapped again for its user; the caller destroys it).
pub(crate) fn unwrap_archived(
    session: &TokenSession,
    mech: Rfc5649Mechanism,
    archive_key: ObjectRef,
    blob: &[u8],
) -> Result<ObjectRef, AuthorityError> {
    let id = session.random(16)?;
    Ok(session.unwrap_private_rfc5649(
        mech,
        archive_key,
        blob,
        &UnwrapTemplate {
            persistent: false,
            id: &id,
            label: "keyward archived key (in transit)",
            extractable: true,
            always_authenticate: false,
        },
    )?)
}

/// Records the archive entry, the issued certificates, the reply and the spent temporary key
/// with the audit entry in one transaction; then writes the reply file.
/// The authority's current archive key on its token.
pub(crate) fn archive_key(
    a: &AuthorityDir,
    session: &TokenSession,
) -> Result<ObjectRef, AuthorityError> {
    let archive_id = super::state::key_id("archive key", &a.config.archive_key_id)?;
    session
        .find_object(ObjectKindFilter::SecretKey, &archive_id)?
        .ok_or_else(|| super::state::key_missing("archive key"))
}

fn commit(
    a: &mut AuthorityDir,
    module: &Module,
    session: &mut TokenSession,
    pin: &SecretString,
    req: &VerifiedRequest,
    made: Made,
    reply: &Path,
) -> Result<Processed, AuthorityError> {
    let body = &req.body;
    let user_name = body.user.as_str();
    let sig_serial = x509::serial_hex(&made.signing_cert);
    let enc_serial = x509::serial_hex(&made.encryption_cert);
    let now = now_rfc3339();
    let not_after = humantime::format_rfc3339_seconds(
        made.signing_cert
            .tbs_certificate
            .validity
            .not_after
            .to_system_time(),
    )
    .to_string();
    a.put(
        kind::ARCHIVE,
        &enc_serial,
        user_name,
        made.archive_blob.clone(),
    )?;
    for (serial, cert) in [
        (&sig_serial, &made.signing_cert),
        (&enc_serial, &made.encryption_cert),
    ] {
        a.put(
            kind::ISSUED,
            serial,
            user_name,
            x509::cert_to_pem(cert)?.into_bytes(),
        )?;
    }
    let stored = StoredReply {
        nonce: body.nonce.clone(),
        keyset: body.keyset.clone(),
        reply: wire::to_b64(&made.reply_bytes),
        delivery: made.delivery,
    };
    a.put(
        kind::REPLY,
        user_name,
        user_name,
        serde_json::to_vec(&stored)
            .map_err(|e| AuthorityError::serialize("enrollment reply", e))?,
    )?;
    let user = a.user_mut(user_name)?;
    let superseded = if made.renewal {
        super::renew::supersede(user, &body.keyset, body.revoke_old, &now)
    } else {
        if let Some(t) = user.temp_key.as_mut() {
            t.mark_spent();
        }
        user.state = UserState::Active;
        user.keysets.push(body.keyset.clone());
        0
    };
    for (serial, kind) in [
        (&sig_serial, CertKind::Signing),
        (&enc_serial, CertKind::Encryption),
    ] {
        user.certs.push(IssuedCert {
            serial: serial.clone(),
            kind,
            keyset: body.keyset.clone(),
            issued: now.clone(),
            not_after: not_after.clone(),
            revoked: None,
            superseded: None,
        });
    }
    user.archive.push(ArchivedKey {
        cert_serial: enc_serial.clone(),
        archived: now,
    });
    let (action, renewed) = if made.renewal {
        (
            "renew",
            format!(
                "renewal signed by the current signing key; {superseded} certificates {}; ",
                if body.revoke_old {
                    "revoked (superseded)"
                } else {
                    "marked superseded"
                }
            ),
        )
    } else {
        ("process", String::new())
    };
    a.audit(
        "operator",
        action,
        user_name,
        "ok",
        &format!(
            "{renewed}keyset {:?}: signing cert {sig_serial}, encryption cert {enc_serial}, {} archived keys returned, delivery {}{}",
            body.keyset,
            made.history,
            made.delivery,
            if made.delivery == Delivery::Import {
                " (the user's keyward imports the keys with C_CreateObject; allowed by --allow-import)"
            } else {
                ""
            }
        ),
    );
    if let Err(e) = a.commit(module, session, pin) {
        // Nothing was recorded: say so in the log (a fresh transaction) and report `e`.
        if !matches!(e, AuthorityError::Tampered { .. }) && a.discard_changes().is_ok() {
            a.audit("operator", "process", user_name, "failed", &e.to_string());
            if let Err(log_err) = a.commit(module, session, pin) {
                log::error!("could not record the failed request in the audit log: {log_err}");
            }
        }
        return Err(e);
    }
    // Only now, with the enrollment recorded, does the reply leave the authority.
    write_reply(a.dir(), user_name, reply, &made.reply_bytes)?;
    Ok(Processed {
        user: body.user.clone(),
        keyset: body.keyset.clone(),
        signing_serial: sig_serial,
        encryption_serial: enc_serial,
        history: made.history,
        delivery: made.delivery,
        reply: reply.to_path_buf(),
    })
}

/// Writes a committed enrollment's reply; on failure says how to get it again.
pub fn write_reply(
    dir: &Path,
    user: &str,
    reply: &Path,
    bytes: &[u8],
) -> Result<(), AuthorityError> {
    let written = super::state::fault(dir, "reply-write").and_then(|()| {
        crate::keyset::registry::write_atomic(reply, bytes)
            .map_err(|e| super::state::io("write", reply, e))
    });
    written.map_err(|e| AuthorityError::ReplyNotWritten {
        user: user.to_string(),
        reply: reply.to_path_buf(),
        source: Box::new(e),
    })
}

/// `authority reply USER -o REPLY`: writes the last committed enrollment's reply again (reads
/// only; the reply is checked like every record).
pub fn reply_again(dir: &Path, user: &str, reply: &Path) -> Result<(), AuthorityError> {
    let bytes = committed_reply(dir, user)?.ok_or_else(|| {
        AuthorityError::BadRequest(format!(
            "user {user:?} has no committed enrollment to reply to; process their request with `keyward authority process`"
        ))
    })?;
    write_reply(dir, user, reply, &bytes)
}

/// The reply of user's last committed enrollment, if any (reads only; checked like every
/// record).
pub fn committed_reply(dir: &Path, user: &str) -> Result<Option<Vec<u8>>, AuthorityError> {
    let mut a = AuthorityDir::open_read(dir)?;
    a.user(user)?;
    match stored_reply(&mut a, user)? {
        Some(stored) => Ok(Some(wire::b64(
            Path::new("reply record"),
            "reply",
            &stored.reply,
        )?)),
        None => Ok(None),
    }
}
