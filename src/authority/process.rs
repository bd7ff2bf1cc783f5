//! `authority process`: check a request, make and archive the user's encryption key, issue the
//! certificates, and write the reply. The temporary key is spent only once the reply is written.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use der::{DecodePem, Encode};
use secrecy::SecretString;
use x509_cert::request::CertReq;

use super::init::open_authority_token;
use super::signer::{CaSigner, REPLY_SIGNATURE_ALGORITHM};
use super::state::{now_rfc3339, ArchivedKey, AuthorityDir, CertKind, IssuedCert, UserState};
use super::tempkey::{TempKey, TempKeyCheck};
use super::users::state_error;
use super::x509::{self, CertParams, CertProfile, TbsSigner};
use super::AuthorityError;
use crate::enroll::delivery::Delivery;
use crate::enroll::wire::{self, ReplyBody, ReplyKey, RequestBody, Signed};
use crate::keyset::ops::unhex_id;
use crate::keyset::PublicKey;
use crate::token::{
    DecryptionPair, LoginPolicy, Module, OaepHash, ObjectKindFilter, ObjectRef, Rfc5649Mechanism,
    TokenSession, UnwrapTemplate,
};

/// How long user certificates are valid.
const USER_CERT_LIFETIME: Duration = Duration::from_secs(2 * 365 * 24 * 3600);

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

/// A request that parsed and whose signatures verified.
pub struct VerifiedRequest {
    /// The body.
    pub body: RequestBody,
    /// The signing key from the PKCS#10 request.
    pub signing_key: PublicKey,
    /// The SPKI DER of the signing key.
    pub signing_spki: Vec<u8>,
    /// The transport key.
    pub transport: PublicKey,
}

/// Parses a request file and checks both signatures: the PKCS#10 self-signature and the
/// signature over the whole request, which must be made by the same key.
pub fn read_request(path: &Path) -> Result<VerifiedRequest, AuthorityError> {
    let text = wire::read(path, "request")?;
    parse_request(path, &text)
}

/// [`read_request`] on text already read.
pub fn parse_request(path: &Path, text: &str) -> Result<VerifiedRequest, AuthorityError> {
    let signed: Signed<RequestBody> = wire::open(path, text, "request")?;
    wire::check_header(
        path,
        &signed.body.format,
        signed.body.version,
        wire::REQUEST_FORMAT,
    )?;
    let csr = CertReq::from_pem(signed.body.csr.as_bytes()).map_err(|e| {
        AuthorityError::BadRequest(format!("its PKCS#10 request does not parse: {e}"))
    })?;
    let spki =
        csr.info.public_key.to_der().map_err(|e| {
            AuthorityError::BadRequest(format!("its PKCS#10 key does not encode: {e}"))
        })?;
    let key = PublicKey::from_spki_der(&spki)?;
    let info = csr.info.to_der().map_err(|e| {
        AuthorityError::BadRequest(format!("its PKCS#10 request does not encode: {e}"))
    })?;
    key.verify(&info, csr.signature.raw_bytes()).map_err(|_| {
        AuthorityError::BadRequest(
            "the PKCS#10 request's self-signature does not verify (no proof of possession)".into(),
        )
    })?;
    key.verify(&signed.signed_bytes, &signed.signature).map_err(|_| {
        AuthorityError::BadRequest(
            "the request's signature does not verify with the key in its PKCS#10 request: it was changed after signing, or signed by another key".into(),
        )
    })?;
    let transport = PublicKey::from_pem(&signed.body.transport_public_key)?;
    if transport.rsa_parts().is_none() {
        return Err(AuthorityError::BadRequest(
            "the transport key must be RSA".into(),
        ));
    }
    Ok(VerifiedRequest {
        body: signed.body,
        signing_key: key,
        signing_spki: spki,
        transport,
    })
}

/// Processes a request file into a reply file.
pub fn process(
    module: &Module,
    dir: &Path,
    request: &Path,
    reply: &Path,
    pin: &SecretString,
    policy: LoginPolicy,
) -> Result<Processed, AuthorityError> {
    prepare(module, dir, request, pin, policy)?.commit(reply)
}

/// A request checked and answered on the token, with nothing written yet: the authority's
/// directory stays locked until [`Prepared::commit`] writes the reply, the issued certificates
/// and the archive and spends the temporary key (files only, no token), or
/// [`Prepared::abandon`] records that it was not.
pub struct Prepared {
    a: AuthorityDir,
    req: VerifiedRequest,
    made: Made,
}

impl Prepared {
    /// The reply, as [`Prepared::commit`] will write it.
    pub fn reply_bytes(&self) -> &[u8] {
        &self.made.reply_bytes
    }

    /// Writes everything and spends the temporary key; on failure, removes what it wrote.
    pub fn commit(self, reply: &Path) -> Result<Processed, AuthorityError> {
        let Prepared { mut a, req, made } = self;
        commit(&mut a, &req, made, reply)
    }

    /// Leaves the authority as it was, logging why the reply was not used.
    pub fn abandon(mut self, why: &str) {
        let detail = format!("reply made but not used, nothing recorded: {why}");
        if let Err(e) = self.a.audit(
            "operator",
            "process",
            &self.req.body.user,
            "failed",
            &detail,
        ) {
            log::error!("could not record the abandoned request in the audit log: {e}");
        }
    }
}

/// [`process`] up to the writing: checks the request and the temporary key and makes the reply
/// on the token.
pub fn prepare(
    module: &Module,
    dir: &Path,
    request: &Path,
    pin: &SecretString,
    policy: LoginPolicy,
) -> Result<Prepared, AuthorityError> {
    let mut a = AuthorityDir::open_locked(dir)?;
    let req = match read_request(request) {
        Ok(req) => req,
        Err(e) => {
            // Forged, tampered and unreadable requests are logged too, by file name: the user
            // they name cannot be trusted.
            let name = request.file_name().map_or_else(
                || request.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            audit_failure(&mut a, &format!("request {name}"), "refused", &e);
            return Err(e);
        }
    };
    let mut session = match open_authority_token(module, &a.config, pin, policy) {
        Ok(s) => s,
        Err(e) => {
            audit_failure(&mut a, &req.body.user, "failed", &e);
            return Err(e);
        }
    };
    // The delivery is chosen before the temporary key is checked and before any key is made:
    // a request the authority cannot serve is refused with nothing changed.
    let chosen = crate::enroll::delivery::authority_wrap(&session, module)
        .map_err(AuthorityError::from)
        .and_then(|mech| {
            // CKM_AES_CBC_PAD is probed only for a request that asks for it.
            let cbc_pad = req.body.receives.contains(&Delivery::AesCbcPad)
                && session.cbc_pad_wraps(module)?;
            crate::enroll::delivery::choose(&req.body.receives, a.config.allow_import, cbc_pad)
                .map(|d| (d, mech))
                .map_err(AuthorityError::BadRequest)
        });
    let (delivery, mech) = match chosen {
        Ok(c) => c,
        Err(e) => {
            audit_failure(&mut a, &req.body.user, "refused", &e);
            return Err(e);
        }
    };
    let result = check_temp_key(&mut a, &mut session, &req);
    match result {
        Ok(()) => {}
        Err(e) => {
            if matches!(
                e,
                AuthorityError::WrongTempKey { .. } | AuthorityError::TempKeyLocked { .. }
            ) {
                a.save_users()?;
            }
            a.audit(
                "operator",
                "process",
                &req.body.user,
                "refused",
                &e.to_string(),
            )?;
            return Err(e);
        }
    }
    let made = match issue_everything(module, &a, &mut session, &req, pin, (delivery, mech)) {
        Ok(made) => made,
        Err(e) => {
            audit_failure(&mut a, &req.body.user, "failed", &e);
            return Err(e);
        }
    };
    Ok(Prepared { a, req, made })
}

/// Logs a process that did not complete; a failure to log is reported but does not hide `e`.
fn audit_failure(a: &mut AuthorityDir, subject: &str, outcome: &str, e: &AuthorityError) {
    if let Err(log_err) = a.audit("operator", "process", subject, outcome, &e.to_string()) {
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
    let user = a.user(&body.user)?;
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
    let exchange_id = unhex_id(&a.config.exchange_key_id)
        .map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let exchange = session
        .find_object(ObjectKindFilter::PrivateKey, &exchange_id)?
        .ok_or_else(|| {
            AuthorityError::BadRequest(
                "the authority's exchange key is missing from its token".into(),
            )
        })?;
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
}

fn issue_everything(
    module: &Module,
    a: &AuthorityDir,
    session: &mut TokenSession,
    req: &VerifiedRequest,
    pin: &SecretString,
    (delivery, mech): (Delivery, Rfc5649Mechanism),
) -> Result<Made, AuthorityError> {
    let body = &req.body;
    let user = a.user(&body.user)?;
    let archive_id = unhex_id(&a.config.archive_key_id)
        .map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let archive_key = session
        .find_object(ObjectKindFilter::SecretKey, &archive_id)?
        .ok_or_else(|| {
            AuthorityError::BadRequest(
                "the authority's archive key is missing from its token".into(),
            )
        })?;

    // The user's new encryption key: session objects, extractable only so it can be wrapped.
    let enc_id = session.random(16)?;
    let (enc_public, enc_private) = session.generate_decryption_pair(&DecryptionPair {
        id: &enc_id,
        label: "keyward user encryption key (in transit)",
        bits: 2048,
        persistent: false,
        extractable: true,
        always_authenticate: false,
    })?;
    let archive_blob = session.wrap_rfc5649(mech, archive_key, enc_private)?;
    let enc_spki = PublicKey::from_raw(&session.rsa_public_key(enc_public)?)?.to_der()?;

    // Transport: an AES key wrapped to the request's transport key.
    let aes = session.generate_transport_aes()?;
    let (n, e) = req.transport.rsa_parts().unwrap_or_default();
    let transport = session.import_rsa_public(&n, &e)?;
    let (oaep, wrapped_aes) = wrap_to_transport(session, transport, aes, &body.transport_oaep)?;

    let mut keys = Vec::new();
    for old in &user.archive {
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

    let ca_id =
        unhex_id(&a.config.ca_key_id).map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
    let ca_key = session.find_private_key(&ca_id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the authority's CA key is missing from its token".into())
    })?;
    let ca_cert = ca_certificate(a)?;
    let subject = crate::keyset::csr::parse_subject(&format!("CN={}", body.user))
        .map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
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
        not_after: now + USER_CERT_LIFETIME,
        profile: CertProfile::UserSigning,
        email: user.email.as_deref(),
    };
    let signing_cert = x509::issue(&ca_cert, &params, &mut signer)?;
    let enc_serial = x509::random_serial()?;
    params.spki_der = &enc_spki;
    params.serial = &enc_serial;
    params.profile = CertProfile::UserEncryption;
    let encryption_cert = x509::issue(&ca_cert, &params, &mut signer)?;
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
        ca_certificate: x509::cert_to_pem(&ca_cert)?,
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
    a: &AuthorityDir,
    session: &TokenSession,
    (delivery, mech): (Delivery, Rfc5649Mechanism),
    archive_key: ObjectRef,
    aes: ObjectRef,
    user: &str,
    old: &ArchivedKey,
) -> Result<ReplyKey, AuthorityError> {
    let blob = a.read_file(&archive_file(user, &old.cert_serial))?;
    let cert = a.read_file(&issued_file(&old.cert_serial))?;
    let id = session.random(16)?;
    let key = session.unwrap_private_rfc5649(
        mech,
        archive_key,
        &blob,
        &UnwrapTemplate {
            persistent: false,
            id: &id,
            label: "keyward archived key (in transit)",
            extractable: true,
            always_authenticate: false,
        },
    )?;
    let wrapped = wrap_for(session, delivery, mech, aes, key);
    session.destroy(key)?;
    Ok(ReplyKey {
        certificate: String::from_utf8_lossy(&cert).into_owned(),
        wrapped_key: wire::to_b64(&wrapped?),
        current: false,
    })
}

/// Writes the archive entry, the issued certificates and the reply, then spends the temporary
/// key. Anything written before a failure is removed again.
fn commit(
    a: &mut AuthorityDir,
    req: &VerifiedRequest,
    made: Made,
    reply: &Path,
) -> Result<Processed, AuthorityError> {
    let body = &req.body;
    let sig_serial = x509::serial_hex(&made.signing_cert);
    let enc_serial = x509::serial_hex(&made.encryption_cert);
    let mut written: Vec<PathBuf> = Vec::new();
    let result = (|| -> Result<(), AuthorityError> {
        written.push(a.write_file(&archive_file(&body.user, &enc_serial), &made.archive_blob)?);
        written.push(a.write_file(
            &issued_file(&sig_serial),
            x509::cert_to_pem(&made.signing_cert)?.as_bytes(),
        )?);
        written.push(a.write_file(
            &issued_file(&enc_serial),
            x509::cert_to_pem(&made.encryption_cert)?.as_bytes(),
        )?);
        a.fault("reply-write")?;
        crate::keyset::registry::write_atomic(reply, &made.reply_bytes)
            .map_err(|e| super::state::io("write", reply, &e))?;
        written.push(reply.to_path_buf());
        let now = now_rfc3339();
        let not_after =
            humantime::format_rfc3339_seconds(SystemTime::now() + USER_CERT_LIFETIME).to_string();
        let user = a.user_mut(&body.user)?;
        if let Some(t) = user.temp_key.as_mut() {
            t.mark_spent();
        }
        user.state = UserState::Active;
        user.keysets.push(body.keyset.clone());
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
            });
        }
        user.archive.push(ArchivedKey {
            cert_serial: enc_serial.clone(),
            archived: now,
        });
        a.save_users()
    })();
    if let Err(e) = result {
        for p in &written {
            let _ = std::fs::remove_file(p);
        }
        audit_failure(a, &body.user, "failed", &e);
        return Err(e);
    }
    a.audit(
        "operator",
        "process",
        &body.user,
        "ok",
        &format!(
            "keyset {:?}: signing cert {sig_serial}, encryption cert {enc_serial}, {} archived keys returned, delivery {}{}",
            body.keyset,
            made.history,
            made.delivery,
            if made.delivery == Delivery::Import {
                " (the user's keyward imports the keys with C_CreateObject; allowed by --allow-import)"
            } else {
                ""
            }
        ),
    )?;
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

/// The CA certificate (first in `ca.pem`).
pub fn ca_certificate(a: &AuthorityDir) -> Result<x509_cert::Certificate, AuthorityError> {
    let pem = a.read_file("ca.pem")?;
    x509::certs_from_pem(&String::from_utf8_lossy(&pem))?
        .into_iter()
        .next()
        .ok_or_else(|| AuthorityError::BadRequest("ca.pem holds no certificate".into()))
}

fn archive_file(user: &str, serial: &str) -> String {
    format!("archive/{user}/{serial}.kwp")
}

fn issued_file(serial: &str) -> String {
    format!("issued/{serial}.pem")
}
