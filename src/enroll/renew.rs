//! Renewal (`keyward enroll --renew NAME`): new certificates and keys for the same keyset on
//! the same token, asked for with the keyset's password and signed by its current signing
//! key (no temporary key). The keyset keeps its name and registry entry; its earlier signing
//! certificates go to its history, its earlier encryption keys stay on the token (old mail
//! still reads) and stop being current.

use std::path::Path;

use secrecy::SecretString;

use super::client::{self, AuthorityCerts, Completed};
use super::delivery::{self, Delivery};
use super::wire::{self, ReplyBody, RequestBody};
use super::EnrollError;
use crate::keyset::create::{self, SigningKey};
use crate::keyset::csr;
use crate::keyset::journal;
use crate::keyset::ops::unhex_id;
use crate::keyset::registry::{
    EncryptionKey, KeysetRecord, KeysetState, PastSigning, PendingRenewal, PreparedSave, Registry,
    RegistryError, RegistryLock,
};
use crate::keyset::{KeysetError, KeysetSession};
use crate::pki::x509;
use crate::pki::PublicKey;
use crate::token::keys::hex;
use crate::token::{DecryptionPair, LoginPolicy, Module, OaepHash};

/// What a renewal request needs.
pub struct RenewParams<'a> {
    /// The keyset to renew.
    pub keyset: &'a str,
    /// The keyset's password.
    pub password: &'a SecretString,
    /// The authority, when known (a local `--authority DIR` or `--authority-cert FILE`): it
    /// must be the one the keyset is enrolled with.
    pub authority: Option<&'a AuthorityCerts>,
    /// Revoke the superseded certificates (reason superseded) instead of only marking them.
    pub revoke_old: bool,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// Checks, before anything changes, that the keyset can be renewed: enrolled and active,
/// with the given authority (if any), no renewal pending, its signing certificate current.
pub fn check_renewable(
    record: &KeysetRecord,
    authority: Option<&AuthorityCerts>,
) -> Result<String, EnrollError> {
    let refuse = |why: String| {
        EnrollError::Keyset(KeysetError::Unsupported(format!(
            "keyset {:?} cannot be renewed: {why}; nothing was changed",
            record.name
        )))
    };
    let Some(e) = record.enrollment.as_ref() else {
        return Err(refuse(
            "it is not enrolled with an authority (enroll a keyset with `keyward enroll --user USER --keyset NAME --token URI`)".into(),
        ));
    };
    if record.state != KeysetState::Active {
        return Err(refuse(format!(
            "it is {}, and only an active keyset renews",
            record.state
        )));
    }
    let current = e
        .signing_certificate
        .clone()
        .ok_or_else(|| refuse("it holds no signing certificate".into()))?;
    if let Some(a) = authority {
        if !crate::authority::chain::same_authority(&e.authority_ca, &a.ca_pem) {
            let theirs = x509::certs_from_pem(&e.authority_ca)
                .ok()
                .and_then(|c| c.into_iter().next())
                .map(|c| c.tbs_certificate.subject.to_string())
                .unwrap_or_default();
            return Err(refuse(format!(
                "it is not enrolled with this authority (it is enrolled with {theirs:?}); renew it with the authority that enrolled it"
            )));
        }
    }
    let cert = x509::certs_from_pem(&current)?
        .into_iter()
        .next()
        .ok_or_else(|| refuse("its signing certificate does not parse".into()))?;
    x509::check_validity(&cert, std::time::SystemTime::now()).map_err(|err| {
        refuse(format!(
            "its signing certificate is not current ({err}); ask the authority to recover you (`keyward authority recover`) and enroll a new keyset"
        ))
    })?;
    if let Some(r) = &e.renewal {
        return Err(refuse(format!(
            "a renewal requested at {} is waiting for the authority's reply; complete it with `keyward enroll --complete REPLY`",
            r.requested
        )));
    }
    Ok(current)
}

/// Makes the new signing and transport keys and the renewal request signed by the current
/// signing key; records the renewal as pending in the registry (the keyset stays active).
/// Returns the request. On failure the new keys are removed and the registry is unchanged.
pub fn make_renewal(
    module: &Module,
    home: &Path,
    p: &RenewParams<'_>,
) -> Result<Vec<u8>, EnrollError> {
    let (lock, mut registry) = Registry::lock(home)?;
    let record = registry.get(p.keyset)?.clone();
    let current = check_renewable(&record, p.authority)?;
    let enrollment = record.enrollment.clone().unwrap_or_else(|| unreachable!());
    let mut ks = KeysetSession::open(module, &record, p.password, p.policy, true)?;
    let caps = ks.session.capabilities(module, Some(ks.token_pin()))?;
    create::check_token_supports(
        &caps.key_generation,
        &caps.context_specific_login,
        ks.session.token(),
        record.key_type,
        record.security,
    )?;
    let offered = match p.authority {
        Some(a) => a.deliveries.clone(),
        None => delivery::offered_by_enrollment(enrollment.delivery.as_deref()),
    };
    let receives = delivery::usable(&caps, &offered).map_err(|why| EnrollError::CannotReceive {
        token: ks.session.token().label().to_string(),
        why,
    })?;
    let signing_id = ks.session.random(16)?;
    let transport_id = ks.session.random(16)?;
    // Recorded before the token changes: a renewal stopped between its keys and its request
    // leaves this entry (no nonce, no public key), which names the keys the next run removes
    // (see [`is_unfinished_request`]), never keys on the token that nothing names.
    if let Some(e) = registry.get_mut(&record.name)?.enrollment.as_mut() {
        e.renewal = Some(PendingRenewal {
            nonce: String::new(),
            signing_id: hex(&signing_id),
            signing_public_key: String::new(),
            transport_id: hex(&transport_id),
            requested: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        });
    }
    registry.save(&lock)?;
    let result = (|| {
        let (pending, request) = generate_and_sign(
            module,
            &mut ks,
            &record,
            &current,
            p.revoke_old,
            (&signing_id, &transport_id),
            receives,
        )?;
        if let Some(e) = registry.get_mut(&record.name)?.enrollment.as_mut() {
            e.renewal = Some(pending);
        }
        registry.save(&lock)?;
        Ok(request)
    })();
    if result.is_err() {
        remove_ids(module, &mut ks, &[&signing_id, &transport_id]);
        if let Ok(r) = registry.get_mut(&record.name) {
            if let Some(e) = r.enrollment.as_mut() {
                e.renewal = None;
            }
        }
        if let Err(e) = registry.save(&lock) {
            log::error!("could not take the unfinished renewal out of the registry: {e}");
        }
    }
    result
}

/// Whether `record`'s pending renewal is one whose request was never finished (stopped
/// between recording its key ids and writing its request): nothing was sent, so it is taken
/// back (its keys removed) before a new renewal.
pub fn is_unfinished_request(record: &KeysetRecord) -> bool {
    record
        .enrollment
        .as_ref()
        .and_then(|e| e.renewal.as_ref())
        .is_some_and(|r| r.nonce.is_empty())
}

fn remove_ids(module: &Module, ks: &mut KeysetSession, ids: &[&[u8]]) {
    let mut fresh = ks.session.for_cleanup(module);
    let session = fresh.as_mut().unwrap_or(&mut ks.session);
    for id in ids {
        if let Err(e) = session.destroy_by_id(id) {
            log::error!(
                "could not remove the renewal's new keys (id {}): {e}",
                hex(id)
            );
        }
    }
}

fn generate_and_sign(
    module: &Module,
    ks: &mut KeysetSession,
    record: &KeysetRecord,
    current: &str,
    revoke_old: bool,
    (signing_id, transport_id): (&[u8], &[u8]),
    receives: Vec<Delivery>,
) -> Result<(PendingRenewal, Vec<u8>), EnrollError> {
    let enrollment = record.enrollment.as_ref().unwrap_or_else(|| unreachable!());
    let key = SigningKey {
        label: &record.label,
        id: signing_id,
        key_type: record.key_type,
        security: record.security,
    };
    create::generate_signing_pair(&ks.session, &key)?;
    let (transport_public, _) = ks.session.generate_decryption_pair(&DecryptionPair {
        id: transport_id,
        label: &format!("{} renewal transport key", record.label),
        bits: 2048,
        persistent: true,
        extractable: false,
        always_authenticate: false,
    })?;
    let mut transport_oaep = Vec::new();
    for h in [OaepHash::Sha256, OaepHash::Sha1] {
        if ks.session.supports_oaep(transport_public, h)? {
            transport_oaep.push(h);
        }
    }
    let transport_pem =
        PublicKey::from_raw(&ks.session.rsa_public_key(transport_public)?)?.to_pem()?;
    let signing = create::read_signing_public(&ks.session, &key)?;
    // The CSR is signed by the new key (proof of possession) …
    let mut new_record = record.clone();
    new_record.signing_id = hex(signing_id);
    let subject = csr::parse_subject(&format!("CN={}", enrollment.user))?;
    let (info, tbs) = csr::request_info(&subject, &signing)?;
    let csr_sig = ks.sign_bytes(module, &new_record, &tbs)?;
    let csr_pem = csr::finish(info, &signing, &csr_sig)?;
    let nonce = hex(&ks.session.random(16)?);
    let requested = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let body = RequestBody {
        format: wire::REQUEST_FORMAT.to_string(),
        version: wire::VERSION,
        user: enrollment.user.clone(),
        keyset: record.name.clone(),
        security: record.security,
        key_type: record.key_type,
        created: requested.clone(),
        nonce: nonce.clone(),
        csr: csr_pem,
        transport_public_key: transport_pem,
        transport_oaep,
        temp_key_oaep: OaepHash::Sha1,
        encrypted_temp_key: String::new(),
        receives,
        renews: Some(current.to_string()),
        revoke_old,
    };
    let algorithm = match PublicKey::from_pem(&record.signing_public_key)? {
        PublicKey::Rsa(_) => "sha256WithRSAEncryption",
        PublicKey::P256(_) => "ecdsa-with-SHA256",
    };
    // … and the whole request by the current one: the authority knows the user by it.
    let request = wire::seal(
        "keyward renewal request",
        &body,
        algorithm,
        &mut |bytes: &[u8]| ks.sign_bytes(module, record, bytes).map_err(Into::into),
    )?;
    Ok((
        PendingRenewal {
            nonce,
            signing_id: hex(signing_id),
            signing_public_key: signing.to_pem()?,
            transport_id: hex(transport_id),
            requested,
        },
        request,
    ))
}

/// The keyset whose pending renewal a reply answers, if any (`enroll --complete` then
/// completes a renewal).
pub fn renewal_for_reply(home: &Path, reply_path: &Path) -> Result<Option<String>, EnrollError> {
    let text = wire::read(reply_path, "reply")?;
    let Ok(signed) = wire::open::<ReplyBody>(reply_path, &text, "reply") else {
        return Ok(None);
    };
    let registry = Registry::load(home)?;
    Ok(registry
        .keysets()
        .iter()
        .find(|k| {
            k.enrollment
                .as_ref()
                .and_then(|e| e.renewal.as_ref())
                .is_some_and(|r| r.nonce == signed.body.request_nonce)
        })
        .map(|k| k.name.clone()))
}

/// A renewal whose work on the token is done (new certificates and the new encryption key
/// stored, the renewal's transport key removed), its registry entry written beside the
/// registry: [`PreparedRenewal::commit`] puts it in place, [`PreparedRenewal::undo`] removes
/// what was stored.
pub struct PreparedRenewal {
    _lock: RegistryLock,
    save: PreparedSave,
    /// Keyward's home, when the renewal was written to the registry's journal first.
    journal_home: Option<std::path::PathBuf>,
    ks: KeysetSession,
    view: KeysetRecord,
    created: Vec<Vec<u8>>,
    done: Completed,
}

impl PreparedRenewal {
    /// Records the renewal (the registry's rename).
    pub fn commit(self) -> Result<Completed, EnrollError> {
        let PreparedRenewal {
            _lock: lock,
            save,
            journal_home,
            done,
            ..
        } = self;
        match journal_home {
            None => save.commit()?,
            Some(home) => {
                // The token's part is done and cannot be undone (the transport key is gone):
                // when the registry cannot be put in place, the journal stays to finish it.
                save.commit().map_err(|e| RegistryError::NotRecorded {
                    path: Registry::file_in(&home),
                    keyset: done.keyset.clone(),
                    source: Box::new(e),
                })?;
                journal::clear(&home);
            }
        }
        drop(lock);
        Ok(done)
    }

    /// Removes what was stored; the registry stays as it was (the renewal pending, its
    /// transport key gone: for a local renewal the authority could not record).
    pub fn undo(mut self, module: &Module) {
        client::undo_completion(
            module,
            &mut self.ks.session,
            &self.view,
            &self.created,
            None,
        );
    }
}

/// Completes a renewal with the authority's reply.
pub fn complete_renewal(
    module: &Module,
    home: &Path,
    reply_path: &Path,
    password: &SecretString,
    policy: LoginPolicy,
) -> Result<Completed, EnrollError> {
    prepare_renewal(module, home, reply_path, password, policy, true)?.commit()
}

/// [`complete_renewal`] up to the registry's rename. With `journaled` (`enroll --complete`),
/// the renewal is first written to the registry's journal and the new registry beside its
/// place, so that a kill after the token changed is finished by the next keyward that opens
/// the registry (see [`crate::keyset::journal`]); without it (a local renewal, whose authority
/// commits between the token and the registry), the registry is written beside its place
/// after the token's part.
pub fn prepare_renewal(
    module: &Module,
    home: &Path,
    reply_path: &Path,
    password: &SecretString,
    policy: LoginPolicy,
    journaled: bool,
) -> Result<PreparedRenewal, EnrollError> {
    let signed = wire::read_reply(reply_path)?;
    let (lock, mut registry) = journal::lock_recovered(module, home)?;
    let record = registry
        .keysets()
        .iter()
        .find(|k| {
            k.enrollment
                .as_ref()
                .and_then(|e| e.renewal.as_ref())
                .is_some_and(|r| r.nonce == signed.body.request_nonce)
        })
        .cloned()
        .ok_or_else(|| EnrollError::NoPendingRequest {
            keyset: signed.body.keyset.clone(),
        })?;
    let enrollment = record.enrollment.clone().unwrap_or_else(|| unreachable!());
    let pending = enrollment.renewal.clone().unwrap_or_else(|| unreachable!());
    let ca = client::verify_reply(reply_path, &signed, &enrollment)?;
    let signing_cert = x509::certs_from_pem(&signed.body.signing_certificate)?
        .into_iter()
        .next()
        .ok_or_else(|| EnrollError::BadReply("no signing certificate"))?;
    x509::verify_issued_by(&signing_cert, &ca)?;
    let ours = PublicKey::from_pem(&pending.signing_public_key)?.to_der()?;
    if x509::spki_der_of(&signing_cert) != ours {
        return Err(EnrollError::BadReply(
            "the signing certificate is for another key than the renewal's",
        ));
    }
    // The record as the token will hold it: the new signing key, the renewal's transport key.
    let mut view = record.clone();
    view.signing_id = pending.signing_id.clone();
    let mut view_enrollment = enrollment.clone();
    view_enrollment.transport_id = Some(pending.transport_id.clone());

    let mut ks = KeysetSession::open(module, &record, password, policy, true)?;
    let (delivery, how) = client::reply_receive_method(module, &ks, &signed.body)?;
    let ids = client::new_key_ids(&ks, &signed.body)?;
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // With the journal, the registry as the renewal leaves it is written (the journal, and the
    // registry beside its place) before the token changes.
    let early_save = if journaled {
        let keys = client::planned_keys(&signed.body, &ca, &ids)?;
        record_renewal(
            &mut registry,
            &record,
            &pending,
            &signing_cert,
            keys,
            &now,
            &signed.body.ca_certificate,
        )?;
        journal::Intent {
            action: "renewal completion".into(),
            record: registry.get(&record.name)?.clone(),
            retire: Vec::new(),
            marker: journal::Marker::Certificate,
            marker_id: pending.signing_id.clone(),
        }
        .write(home, &lock)?;
        match registry.prepare_save(&lock) {
            Ok(save) => Some(save),
            Err(e) => {
                journal::clear(home);
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let mut created = Vec::new();
    let mut transport = None;
    let result = client::store_everything(
        &mut ks.session,
        how,
        &view,
        &view_enrollment,
        &signed.body,
        &ca,
        &signing_cert,
        &ids,
        &mut created,
    )
    .and_then(|new_keys| {
        let save = match early_save {
            Some(save) => save,
            None => {
                record_renewal(
                    &mut registry,
                    &record,
                    &pending,
                    &signing_cert,
                    new_keys,
                    &now,
                    &signed.body.ca_certificate,
                )?;
                registry.prepare_save(&lock)?
            }
        };
        // Last on the token: without its transport key the reply cannot be completed again.
        client::remove_transport(&ks.session, &view, &view_enrollment, &mut transport)?;
        Ok(save)
    });
    let save = match result {
        Ok(save) => save,
        Err(e) => {
            client::undo_completion(module, &mut ks.session, &view, &created, transport);
            if journaled {
                journal::clear(home);
            }
            return Err(e);
        }
    };
    let total = registry
        .get(&record.name)?
        .enrollment
        .as_ref()
        .map_or(0, |e| e.encryption_keys.len());
    Ok(PreparedRenewal {
        _lock: lock,
        save,
        journal_home: journaled.then(|| home.to_path_buf()),
        ks,
        view,
        created,
        done: Completed {
            keyset: record.name.clone(),
            user: enrollment.user.clone(),
            encryption_keys: total,
            retired: Vec::new(),
            delivery,
        },
    })
}

/// The registry's record of keyset `record` renewed: the new signing key and certificate, the
/// old signing certificate in the history, the new encryption keys current, nothing pending.
fn record_renewal(
    registry: &mut Registry,
    record: &KeysetRecord,
    pending: &PendingRenewal,
    signing_cert: &x509_cert::Certificate,
    new_keys: Vec<EncryptionKey>,
    now: &str,
    reply_ca_bundle: &str,
) -> Result<(), EnrollError> {
    let r = registry.get_mut(&record.name)?;
    r.signing_id = pending.signing_id.clone();
    r.signing_public_key = pending.signing_public_key.clone();
    if let Some(e) = r.enrollment.as_mut() {
        if let Some(old) = e.signing_certificate.take() {
            e.history.push(PastSigning {
                signing_id: record.signing_id.clone(),
                certificate: old,
                superseded: now.to_string(),
            });
        }
        e.signing_certificate = Some(x509::cert_to_pem(signing_cert)?);
        for k in &mut e.encryption_keys {
            k.current = false;
        }
        e.encryption_keys.extend(new_keys);
        e.renewal = None;
        // After a CA rollover the reply comes from the next CA generation: the keyset
        // keeps the CA it trusted first and learns the new CA and the link certificates.
        e.authority_ca = crate::authority::chain::extend_trust(&e.authority_ca, reply_ca_bundle)?;
    }
    Ok(())
}

/// Takes back a renewal request the authority did not serve (a local renewal that failed):
/// removes its new keys and the pending entry; the keyset is as before.
pub fn abandon_renewal(
    module: &Module,
    home: &Path,
    keyset: &str,
    password: &SecretString,
) -> Result<(), EnrollError> {
    let (lock, mut registry) = Registry::lock(home)?;
    let record = registry.get(keyset)?.clone();
    let Some(pending) = record.enrollment.as_ref().and_then(|e| e.renewal.clone()) else {
        return Ok(());
    };
    let ks = KeysetSession::open(module, &record, password, LoginPolicy::default(), true)?;
    for id in [&pending.signing_id, &pending.transport_id] {
        ks.session.destroy_by_id(&unhex_id(id)?)?;
    }
    if let Some(e) = registry.get_mut(keyset)?.enrollment.as_mut() {
        e.renewal = None;
    }
    registry.save(&lock)?;
    Ok(())
}

/// How far into its life a certificate is (0.0 new, 1.0 expired), and its notAfter.
pub fn life_used(pem: &str, now: std::time::SystemTime) -> Option<(f64, std::time::SystemTime)> {
    let cert = x509::certs_from_pem(pem).ok()?.into_iter().next()?;
    let v = &cert.tbs_certificate.validity;
    let (start, end) = (v.not_before.to_system_time(), v.not_after.to_system_time());
    let total = end.duration_since(start).ok()?.as_secs_f64();
    let used = now.duration_since(start).map_or(0.0, |d| d.as_secs_f64());
    if total <= 0.0 {
        return Some((1.0, end));
    }
    Some(((used / total).min(1.0), end))
}

/// The warning `keyset list`/`show` give in the last 20% of a certificate's life.
pub fn expiry_warning(pem: &str, now: std::time::SystemTime) -> Option<String> {
    let (used, end) = life_used(pem, now)?;
    let at = humantime::format_rfc3339_seconds(end);
    if now >= end {
        Some(format!(
            "certificate expired at {at}: ask the authority to recover you"
        ))
    } else if used >= 0.8 {
        Some(format!(
            "certificate expires at {at} (in the last 20% of its life): renew with `keyward enroll --renew NAME`"
        ))
    } else {
        None
    }
}
