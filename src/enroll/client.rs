//! The user's side of enrollment: make a request on the token, and complete the reply by
//! unwrapping the encryption keys inside the token.

use std::path::Path;

use der::Encode;
use rsa::Oaep;
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::delivery::{self, Delivery};
use super::wire::{self, ReplyBody, RequestBody, Signed};
use super::EnrollError;
use crate::authority::tempkey::TempKey;
use crate::keyset::create::{self, SigningKey};
use crate::keyset::csr;
use crate::keyset::journal;
use crate::keyset::ops::unhex_id;
use crate::keyset::registry::{
    EncryptionKey, Enrollment, KeyAlgorithm, KeysetRecord, KeysetState, PreparedSave, Registry,
    RegistryError, RegistryLock, Security,
};
use crate::keyset::{KeysetName, KeysetSession};
use crate::pki::x509::{self, X509Error};
use crate::pki::PublicKey;
use crate::token::keys::hex;
use crate::token::{
    Capabilities, CertObject, DecryptionPair, LoginPolicy, Module, OaepHash, ObjectKindFilter,
    PinRole, Rfc5649Mechanism, Token, TokenSession, UnwrapTemplate,
};

pub use super::wire::OAEP_MARKER;

/// The authority as the user knows it: its CA and exchange certificates.
pub struct AuthorityCerts {
    /// The CA certificate.
    pub ca: x509_cert::Certificate,
    /// The exchange certificate (temporary keys are encrypted to it).
    pub exchange: x509_cert::Certificate,
    /// The RSA-OAEP hash the exchange key takes.
    pub oaep: OaepHash,
    /// The CA certificate, PEM, then the link certificates of its CA rollovers, if any (what
    /// the keyset trusts).
    pub ca_pem: String,
    /// The deliveries the authority makes (its `# keyward-deliveries:` line; `rfc5649` alone
    /// without one).
    pub deliveries: Vec<Delivery>,
}

impl AuthorityCerts {
    /// Reads the bundle `authority cert` prints.
    pub fn parse(text: &str) -> Result<AuthorityCerts, EnrollError> {
        let mut certs = x509::certs_from_pem(text)?;
        // After the CA and exchange certificates: the link certificates of CA rollovers.
        let links = certs.split_off(certs.len().min(2));
        let [ca, exchange] = <[x509_cert::Certificate; 2]>::try_from(certs)
            .map_err(|v| EnrollError::AuthorityBundle { count: v.len() })?;
        x509::verify_issued_by(&exchange, &ca)?;
        let mut ca_pem = x509::cert_to_pem(&ca)?;
        for l in &links {
            ca_pem.push_str(&x509::cert_to_pem(l)?);
        }
        let oaep = text
            .lines()
            .find_map(|l| l.strip_prefix(OAEP_MARKER))
            .map(|v| {
                if v.trim() == "sha256" {
                    OaepHash::Sha256
                } else {
                    OaepHash::Sha1
                }
            })
            .unwrap_or(OaepHash::Sha1);
        Ok(AuthorityCerts {
            ca,
            exchange,
            oaep,
            ca_pem,
            deliveries: delivery::parse_marker(text),
        })
    }
}

/// What a new enrollment request needs.
pub struct RequestParams<'a> {
    /// The user name at the authority.
    pub user: &'a str,
    /// The new keyset's name.
    pub keyset: KeysetName,
    /// The user's token.
    pub token: &'a Token,
    /// Security level.
    pub security: Security,
    /// Signing key algorithm.
    pub key_type: KeyAlgorithm,
    /// The token's user PIN.
    pub pin: &'a SecretString,
    /// The temporary key from the authority.
    pub temp_key: &'a TempKey,
    /// The authority.
    pub authority: &'a AuthorityCerts,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// Makes the keys and the request; records the keyset as pending. Returns the request bytes.
/// On failure, the keys are removed and the registry is unchanged.
pub fn make_request(
    module: &Module,
    home: &Path,
    p: &RequestParams<'_>,
) -> Result<Vec<u8>, EnrollError> {
    check_can_enroll(module, p.token)?;
    let label = p.keyset.label();
    let (lock, mut registry) = journal::lock_recovered(module, home)?;
    registry.check_free(p.keyset.as_str(), &label)?;
    let mut session = p.token.open_rw(module)?;
    session.login(module, PinRole::User, p.pin, p.policy)?;
    // What the token cannot do is refused here, before any key is generated.
    let caps = session.capabilities(module, Some(p.pin))?;
    create::check_token_supports(
        &caps.key_generation,
        &caps.context_specific_login,
        p.token,
        p.key_type,
        p.security,
    )?;
    let receives = delivery::usable(&caps, &p.authority.deliveries).map_err(|why| {
        EnrollError::CannotReceive {
            token: p.token.label().to_string(),
            why,
        }
    })?;
    let signing_id = session.random(16)?;
    let transport_id = session.random(16)?;
    let nonce = hex(&session.random(16)?);
    // Before the token changes, the journal says what is coming (see keyset::journal).
    let key = SigningKey {
        label: &label,
        id: &signing_id,
        key_type: p.key_type,
        security: p.security,
    };
    let mut planned = key.planned(p.keyset.as_str(), KeysetState::Pending, p.token);
    planned.enrollment = Some(Enrollment {
        user: p.user.to_string(),
        authority_ca: p.authority.ca_pem.clone(),
        nonce,
        transport_id: Some(hex(&transport_id)),
        signing_certificate: None,
        encryption_keys: Vec::new(),
        delivery: None,
        renewal: None,
        history: Vec::new(),
        extra: toml::Table::new(),
    });
    journal::Intent {
        action: "enrollment request".into(),
        record: planned.clone(),
        retire: Vec::new(),
        marker: journal::Marker::PublicKey,
        marker_id: hex(&signing_id),
    }
    .write(home, &lock)?;
    let mut ks = KeysetSession::from_session(session, p.pin.clone());
    let result = (|| {
        let (record, request) =
            generate_and_sign(module, &mut ks, p, &key, planned, &transport_id, receives)?;
        registry.add(record)?;
        registry.save(&lock)?;
        Ok(request)
    })();
    if result.is_err() {
        let mut fresh = ks.session.for_cleanup(module);
        let session = fresh.as_mut().unwrap_or(&mut ks.session);
        for id in [&signing_id, &transport_id] {
            if let Err(e) = session.destroy_by_id(id) {
                log::error!("could not remove the new keys (id {}): {e}", hex(id));
            }
        }
    }
    journal::clear(home);
    result
}

/// An enrollment generates the signing key and a transport key on the token, and the escrowed
/// encryption key arrives wrapped for it: a token that cannot generate a key pair through
/// PKCS#11 (a smart card provisioned by its own tools) is refused before anything changes.
pub fn check_can_enroll(module: &Module, token: &crate::token::Token) -> Result<(), EnrollError> {
    let intake = token.key_intake(module)?;
    if intake.generate_key_pair {
        return Ok(());
    }
    Err(EnrollError::Keyset(crate::keyset::KeysetError::Unsupported(format!(
        "token {:?} cannot be enrolled with an escrowed key: through PKCS#11 it cannot generate a key pair (no mechanism offers CKF_GENERATE_KEY_PAIR){}, so neither the signing key nor the authority's encryption key can be put on it; nothing was changed. Its keys come from the card's own tools: adopt them with `keyward keyset adopt NAME --token URI`",
        token.label(),
        if intake.unwrap { "" } else { " nor unwrap a key into itself (none offers CKF_UNWRAP)" }
    ))))
}

/// Makes the keys `planned` names and the signed request; returns the record (`planned` with
/// its public key) and the request.
fn generate_and_sign(
    module: &Module,
    ks: &mut KeysetSession,
    p: &RequestParams<'_>,
    key: &SigningKey<'_>,
    planned: KeysetRecord,
    transport_id: &[u8],
    receives: Vec<Delivery>,
) -> Result<(KeysetRecord, Vec<u8>), EnrollError> {
    let session = &mut ks.session;
    let label = key.label;
    create::generate_signing_pair(session, key)?;
    let (transport_public, _) = session.generate_decryption_pair(&DecryptionPair {
        id: transport_id,
        label: &format!("{label} enrollment transport key"),
        bits: 2048,
        persistent: true,
        extractable: false,
        always_authenticate: false,
    })?;
    let mut transport_oaep = Vec::new();
    for h in [OaepHash::Sha256, OaepHash::Sha1] {
        if session.supports_oaep(transport_public, h)? {
            transport_oaep.push(h);
        }
    }
    let transport_pem =
        PublicKey::from_raw(&session.rsa_public_key(transport_public)?)?.to_pem()?;
    let signing = create::read_signing_public(session, key)?;
    let mut record = planned;
    record.signing_public_key = signing.to_pem()?;
    let nonce = record
        .enrollment
        .as_ref()
        .map(|e| e.nonce.clone())
        .unwrap_or_default();
    let subject = csr::parse_subject(&format!("CN={}", p.user))?;
    let (info, tbs) = csr::request_info(&subject, &signing)?;
    let csr_sig = ks.sign_bytes(module, &record, &tbs)?;
    let csr_pem = csr::finish(info, &signing, &csr_sig)?;
    let body = RequestBody {
        format: wire::REQUEST_FORMAT.to_string(),
        version: wire::VERSION,
        user: p.user.to_string(),
        keyset: p.keyset.to_string(),
        security: p.security,
        key_type: p.key_type,
        created: record.created.clone(),
        nonce: nonce.clone(),
        csr: csr_pem,
        transport_public_key: transport_pem,
        transport_oaep,
        temp_key_oaep: p.authority.oaep,
        encrypted_temp_key: wire::to_b64(&encrypt_temp_key(p, &nonce)?),
        receives,
        renews: None,
        revoke_old: false,
    };
    let algorithm = match signing {
        PublicKey::Rsa(_) => "sha256WithRSAEncryption",
        PublicKey::P256(_) => "ecdsa-with-SHA256",
    };
    let request = wire::seal(
        "keyward enrollment request",
        &body,
        algorithm,
        &mut |bytes: &[u8]| ks.sign_bytes(module, &record, bytes).map_err(Into::into),
    )?;
    Ok((record, request))
}

/// `user NUL nonce NUL temporary key`, RSA-OAEP-encrypted to the exchange certificate's key.
fn encrypt_temp_key(p: &RequestParams<'_>, nonce: &str) -> Result<Vec<u8>, EnrollError> {
    let spki = p
        .authority
        .exchange
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|source| X509Error::Encode {
            what: "exchange certificate's key",
            source,
        })?;
    let PublicKey::Rsa(key) = PublicKey::from_spki_der(&spki)? else {
        return Err(EnrollError::ExchangeKeyNotRsa);
    };
    let plain =
        Zeroizing::new(format!("{}\0{}\0{}", p.user, nonce, p.temp_key.expose()).into_bytes());
    let mut rng = rand_core::OsRng;
    let padding = match p.authority.oaep {
        OaepHash::Sha1 => Oaep::new::<sha1::Sha1>(),
        OaepHash::Sha256 => Oaep::new::<sha2::Sha256>(),
    };
    key.encrypt(&mut rng, padding, &plain)
        .map_err(EnrollError::EncryptTempKey)
}

/// What completing a reply did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Completed {
    /// The keyset.
    pub keyset: String,
    /// The user.
    pub user: String,
    /// Encryption keys now on the token (archived + new).
    pub encryption_keys: usize,
    /// Keysets of the same user marked retired.
    pub retired: Vec<String>,
    /// How the keys reached the token (`rfc5649`: unwrapped inside it; `import`).
    pub delivery: Delivery,
}

/// Completes an enrollment: verifies the reply against the authority trusted at request time,
/// unwraps every encryption key inside the token, stores the certificates, removes the
/// transport key and records the keyset as active. A failure removes what it stored: the
/// enrollment is then pending as before, and the reply can be completed again.
pub fn complete(
    module: &Module,
    home: &Path,
    reply_path: &Path,
    password: &SecretString,
    new_password: Option<&SecretString>,
    policy: LoginPolicy,
) -> Result<Completed, EnrollError> {
    prepare(
        module,
        home,
        reply_path,
        password,
        new_password,
        policy,
        true,
    )?
    .commit(module, password, new_password)
}

/// A completion whose work on the token is done — keys and certificates stored, transport key
/// removed — and whose registry entry is written beside the registry, not yet in its place
/// (the registry stays locked). [`PreparedCompletion::commit`] puts it in place (a rename);
/// [`PreparedCompletion::undo`] removes what was stored instead.
pub struct PreparedCompletion {
    lock: RegistryLock,
    /// The registry as the completion leaves it.
    registry: Registry,
    /// Without a journal: the registry written beside its place, to be renamed.
    save: Option<PreparedSave>,
    /// With a journal (see [`crate::keyset::journal`]): keyward's home, whose journal names
    /// the completion until the registry says it.
    journal: Option<std::path::PathBuf>,
    ks: KeysetSession,
    record: KeysetRecord,
    created: Vec<Vec<u8>>,
    done: Completed,
}

/// [`complete`] up to the registry's rename: every step that can fail on the token is behind,
/// and the last of them removes the transport key, so a failure anywhere leaves the enrollment
/// pending as it was (what was stored is removed again).
pub fn prepare_completion(
    module: &Module,
    home: &Path,
    reply_path: &Path,
    password: &SecretString,
    new_password: Option<&SecretString>,
    policy: LoginPolicy,
) -> Result<PreparedCompletion, EnrollError> {
    prepare(
        module,
        home,
        reply_path,
        password,
        new_password,
        policy,
        false,
    )
}

/// [`prepare_completion`]; with `journaled`, the change is first written to the registry's
/// journal, the token's part (keys, certificates, the transport key's removal) is done in one
/// stretch with no file written in between, and the registry is written by the commit: a
/// kill anywhere is then finished or dropped by the next keyward that opens the registry.
/// Without it (a local enrollment, whose authority commits between the token and the
/// registry), the registry is written beside its place before the transport key goes.
fn prepare(
    module: &Module,
    home: &Path,
    reply_path: &Path,
    password: &SecretString,
    new_password: Option<&SecretString>,
    policy: LoginPolicy,
    journaled: bool,
) -> Result<PreparedCompletion, EnrollError> {
    let signed = wire::read_reply(reply_path)?;
    let (lock, mut registry) = journal::lock_recovered(module, home)?;
    let record = registry
        .keysets()
        .iter()
        .find(|k| {
            k.state == KeysetState::Pending
                && k.enrollment
                    .as_ref()
                    .is_some_and(|e| e.nonce == signed.body.request_nonce)
        })
        .cloned()
        .ok_or_else(|| EnrollError::NoPendingRequest {
            keyset: signed.body.keyset.clone(),
        })?;
    let enrollment = record
        .enrollment
        .clone()
        .ok_or_else(|| EnrollError::NoPendingRequest {
            keyset: record.name.clone(),
        })?;
    let ca = verify_reply(reply_path, &signed, &enrollment)?;
    let signing_cert = x509::certs_from_pem(&signed.body.signing_certificate)?
        .into_iter()
        .next()
        .ok_or_else(|| EnrollError::BadReply("no signing certificate"))?;
    x509::verify_issued_by(&signing_cert, &ca)?;
    let ours = PublicKey::from_pem(&record.signing_public_key)?.to_der()?;
    if x509::spki_der_of(&signing_cert) != ours {
        return Err(EnrollError::BadReply(
            "the signing certificate is for another key",
        ));
    }

    let mut ks = KeysetSession::open(module, &record, password, policy, true)?;
    if let Some(new) = new_password {
        // A new password the token cannot take is refused before anything is stored.
        ks.session.token().check_pin_length(PinRole::User, new)?;
    }
    // The delivery the reply used must be one this token can do now (its capabilities may
    // have changed since the request): refused here, before anything is stored.
    let (delivery, how) = reply_receive_method(module, &ks, &signed.body)?;
    // The registry as the completion leaves it, made before the token changes.
    let ids = new_key_ids(&ks, &signed.body)?;
    let keys = planned_keys(&signed.body, &ca, &ids)?;
    let n = keys.len();
    let retired = registry_keysets_of(
        &registry,
        &enrollment.user,
        &enrollment.authority_ca,
        &record.name,
    );
    for name in &retired {
        registry.get_mut(name)?.state = KeysetState::Retired;
    }
    {
        let r = registry.get_mut(&record.name)?;
        r.state = KeysetState::Active;
        if let Some(e) = r.enrollment.as_mut() {
            e.transport_id = None;
            e.delivery = Some(delivery.name().to_string());
            e.signing_certificate = Some(x509::cert_to_pem(&signing_cert)?);
            e.encryption_keys = keys;
        }
    }
    // With the journal, the new registry is also written (beside its place) before the token
    // changes: a registry that cannot be written is refused with nothing stored.
    let early_save = if journaled {
        journal::Intent {
            action: "enrollment completion".into(),
            record: registry.get(&record.name)?.clone(),
            retire: retired.clone(),
            marker: journal::Marker::Certificate,
            marker_id: record.signing_id.clone(),
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
    let mut created: Vec<Vec<u8>> = Vec::new();
    let mut transport = None;
    let result = store_everything(
        &mut ks.session,
        how,
        &record,
        &enrollment,
        &signed.body,
        &ca,
        &signing_cert,
        &ids,
        &mut created,
    )
    .and_then(|_| {
        let save = match early_save {
            Some(save) => save,
            None => registry.prepare_save(&lock)?,
        };
        // Last on the token: without the transport key the reply cannot be completed again.
        remove_transport(&ks.session, &record, &enrollment, &mut transport)?;
        Ok(save)
    });
    let save = match result {
        Ok(save) => Some(save),
        Err(e) => {
            undo_completion(module, &mut ks.session, &record, &created, transport);
            if journaled {
                journal::clear(home);
            }
            return Err(e);
        }
    };
    Ok(PreparedCompletion {
        lock,
        registry,
        save,
        journal: journaled.then(|| home.to_path_buf()),
        done: Completed {
            keyset: record.name.clone(),
            user: enrollment.user.clone(),
            encryption_keys: n,
            retired,
            delivery,
        },
        ks,
        record,
        created,
    })
}

impl PreparedCompletion {
    /// Records the keyset as active (the registry's rename), then sets `new_password`, if given.
    pub fn commit(
        mut self,
        module: &Module,
        password: &SecretString,
        new_password: Option<&SecretString>,
    ) -> Result<Completed, EnrollError> {
        match (self.save.take(), &self.journal) {
            (Some(save), None) => save.commit()?,
            (save, Some(home)) => {
                // The token's part is done and cannot be undone (the transport key is gone):
                // when the registry cannot be put in place, the journal stays to finish it.
                let put = match save {
                    Some(save) => save.commit(),
                    None => self.registry.save(&self.lock),
                };
                put.map_err(|e| RegistryError::NotRecorded {
                    path: Registry::file_in(home),
                    keyset: self.record.name.clone(),
                    source: Box::new(e),
                })?;
                journal::clear(home);
            }
            (None, None) => {}
        }
        if let Some(new) = new_password {
            let pin = crate::keyset::token_pin(&self.record, password)?;
            self.ks.session.set_user_pin(module, &pin, new)?;
        }
        Ok(self.done)
    }

    /// Removes what was stored and leaves the registry as it was (the keyset pending). The
    /// transport key is gone, so the enrollment cannot be completed any more: for a local
    /// enrollment whose authority could not record it, which then abandons the keyset.
    pub fn undo(mut self, module: &Module) {
        undo_completion(
            module,
            &mut self.ks.session,
            &self.record,
            &self.created,
            None,
        );
    }
}

/// The transport key pair's public half, removed by [`remove_transport`] and kept to be put
/// back.
pub(super) struct RemovedPublic {
    id: Vec<u8>,
    modulus: Vec<u8>,
    exponent: Vec<u8>,
}

/// Removes the transport key pair: the public half first, its parts kept, then the private
/// half in one call — the only step that cannot be undone. When that fails, `removed` holds
/// the public half, for [`undo_completion`] to put back.
pub(super) fn remove_transport(
    session: &TokenSession,
    record: &KeysetRecord,
    enrollment: &Enrollment,
    removed: &mut Option<RemovedPublic>,
) -> Result<(), EnrollError> {
    let Some(tid) = enrollment.transport_id.as_deref() else {
        return Ok(());
    };
    let id = unhex_id(tid)?;
    if let Some(public) = session.find_object(ObjectKindFilter::PublicKey, &id)? {
        if let crate::token::RawPublicKey::Rsa { modulus, exponent } =
            session.rsa_public_key(public)?
        {
            session.destroy(public)?;
            *removed = Some(RemovedPublic {
                id: id.clone(),
                modulus,
                exponent,
            });
        }
    }
    let private = session
        .find_object(ObjectKindFilter::PrivateKey, &id)?
        .ok_or(EnrollError::WrongToken {
            keyset: record.name.clone(),
        })?;
    session.destroy(private)?;
    *removed = None;
    Ok(())
}

/// Takes back a completion that failed: puts back the transport key's public half if it was
/// removed, and removes what [`store_everything`] stored — in a fresh session, because the
/// failure may have left an operation active in this one.
pub(super) fn undo_completion(
    module: &Module,
    session: &mut TokenSession,
    record: &KeysetRecord,
    created: &[Vec<u8>],
    transport: Option<RemovedPublic>,
) {
    let mut fresh = session.for_cleanup(module);
    let session = fresh.as_mut().unwrap_or(session);
    if let Some(t) = transport {
        let label = format!("{} enrollment transport key", record.label);
        if let Err(e) = session.restore_decryption_public(&t.id, &label, &t.modulus, &t.exponent) {
            log::error!("could not put back the transport key's public half: {e}");
        }
    }
    remove_stored(session, record, created);
}

/// Removes what [`store_everything`] stored: the encryption keys (with their public keys and
/// certificates) and the signing certificate.
fn remove_stored(session: &TokenSession, record: &KeysetRecord, created: &[Vec<u8>]) {
    for id in created {
        if let Err(e) = session.destroy_by_id(id) {
            log::error!("could not remove a stored key (id {}): {e}", hex(id));
        }
    }
    if let Ok(sid) = unhex_id(&record.signing_id) {
        match session.find_object(ObjectKindFilter::Certificate, &sid) {
            Ok(Some(cert)) => {
                if let Err(e) = session.destroy(cert) {
                    log::error!("could not remove the stored signing certificate: {e}");
                }
            }
            Ok(None) => {}
            Err(e) => log::error!("could not look for the stored signing certificate: {e}"),
        }
    }
}

/// Checks the reply's signature with the CA trusted at request time ([`wire::verify_reply`]).
pub(super) fn verify_reply(
    path: &Path,
    signed: &Signed<ReplyBody>,
    enrollment: &Enrollment,
) -> Result<x509_cert::Certificate, EnrollError> {
    Ok(wire::verify_reply(path, signed, &enrollment.authority_ca)?)
}

/// How this token takes the keys of a reply.
#[derive(Clone, Copy)]
pub(super) enum Receive {
    /// `C_UnwrapKey` with this RFC 5649 mechanism.
    Unwrap(Rfc5649Mechanism),
    /// `C_UnwrapKey` with `CKM_AES_CBC_PAD`.
    CbcPad,
    /// Unwrapped in keyward's memory, then `C_CreateObject`.
    Import,
}

/// The reply's delivery and how this keyset's token takes it, or refused (nothing stored yet)
/// when the token cannot, naming what it lacks.
pub(super) fn reply_receive_method(
    module: &Module,
    ks: &KeysetSession,
    reply: &ReplyBody,
) -> Result<(Delivery, Receive), EnrollError> {
    let delivery = reply.delivery.unwrap_or(Delivery::Rfc5649);
    let caps = ks.session.capabilities(module, Some(ks.token_pin()))?;
    let how = receive_method(&caps, delivery).map_err(|why| EnrollError::CannotReceive {
        token: ks.session.token().label().to_string(),
        why: format!(
            "the reply delivers its keys by {delivery} ({}), but {why}",
            delivery.describe()
        ),
    })?;
    Ok((delivery, how))
}

/// Fresh token object ids for the reply's encryption keys, drawn before the token changes.
pub(super) fn new_key_ids(
    ks: &KeysetSession,
    reply: &ReplyBody,
) -> Result<Vec<Vec<u8>>, EnrollError> {
    Ok(reply
        .encryption_keys
        .iter()
        .map(|_| ks.session.random(16))
        .collect::<Result<Vec<_>, _>>()?)
}

/// The way this token can take a reply's `delivery`, or what it lacks.
pub(super) fn receive_method(caps: &Capabilities, delivery: Delivery) -> Result<Receive, String> {
    let can = delivery::receivable(caps);
    match delivery {
        Delivery::Rfc5649 => match caps.rfc5649 {
            Some(m) if can.contains(&Delivery::Rfc5649) => Ok(Receive::Unwrap(m)),
            _ => Err(delivery::lacks(caps, &[Delivery::Rfc5649])),
        },
        Delivery::AesCbcPad if can.contains(&Delivery::AesCbcPad) => Ok(Receive::CbcPad),
        Delivery::AesCbcPad => Err(delivery::lacks(caps, &[Delivery::AesCbcPad])),
        Delivery::Import if can.contains(&Delivery::Import) => Ok(Receive::Import),
        Delivery::Import => Err(delivery::lacks(caps, &[Delivery::Import])),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn store_everything(
    session: &mut TokenSession,
    how: Receive,
    record: &KeysetRecord,
    enrollment: &Enrollment,
    reply: &ReplyBody,
    ca: &x509_cert::Certificate,
    signing_cert: &x509_cert::Certificate,
    ids: &[Vec<u8>],
    created: &mut Vec<Vec<u8>>,
) -> Result<Vec<EncryptionKey>, EnrollError> {
    let transport_id = unhex_id(enrollment.transport_id.as_deref().unwrap_or_default())?;
    let transport = session
        .find_object(ObjectKindFilter::PrivateKey, &transport_id)?
        .ok_or(EnrollError::WrongToken {
            keyset: record.name.clone(),
        })?;
    let wrapped_aes = wire::b64(
        Path::new("reply"),
        "wrapped_aes_key",
        &reply.wrapped_aes_key,
    )?;
    let bad_transport = EnrollError::TransportKey;
    // Unwrap: the AES key stays in the token. Import: it is decrypted into keyward's memory
    // (zeroized when dropped), and so is each private key, for its one C_CreateObject.
    let (aes, aes_plain) = match how {
        Receive::Unwrap(_) | Receive::CbcPad => (
            Some(
                session
                    .unwrap_aes_rsa_oaep(transport, &wrapped_aes, reply.oaep)
                    .map_err(bad_transport)?,
            ),
            None,
        ),
        Receive::Import => (
            None,
            Some(crate::token::transfer::LockedSecret::new(
                session
                    .decrypt_rsa_oaep(transport, &wrapped_aes, reply.oaep)
                    .map_err(bad_transport)?,
            )),
        ),
    };
    let signing_id = unhex_id(&record.signing_id)?;
    store_cert(
        session,
        &signing_id,
        &format!("{} signing certificate", record.label),
        signing_cert,
    )?;
    let mut keys = Vec::new();
    for (i, (k, id)) in reply.encryption_keys.iter().zip(ids).enumerate() {
        let cert = x509::certs_from_pem(&k.certificate)?
            .into_iter()
            .next()
            .ok_or_else(|| EnrollError::BadReply("an encryption key without a certificate"))?;
        x509::verify_issued_by(&cert, ca)?;
        let id = id.clone();
        created.push(id.clone());
        let label = format!("{} encryption key {}", record.label, i + 1);
        let wrapped = wire::b64(Path::new("reply"), "wrapped_key", &k.wrapped_key)?;
        let template = UnwrapTemplate {
            persistent: true,
            id: &id,
            label: &label,
            extractable: false,
            always_authenticate: record.security == Security::High,
        };
        match (how, aes, aes_plain.as_ref()) {
            (Receive::Unwrap(m), Some(aes), _) => {
                session.unwrap_private_rfc5649(m, aes, &wrapped, &template)?;
            }
            (Receive::CbcPad, Some(aes), _) => {
                session.unwrap_private_cbc_pad(aes, &wrapped, &template)?;
            }
            (Receive::Import, _, Some(kek)) => {
                let pkcs8 = crate::token::transfer::unwrap_rfc5649_in_memory(kek, &wrapped)
                    .ok_or_else(|| {
                        EnrollError::BadReply(
                            "an encryption key does not unwrap with the reply's AES key",
                        )
                    })?;
                session.import_private_key(&pkcs8, &template)?;
            }
            _ => return Err(EnrollError::BadReply("no transport key")),
        }
        let public = PublicKey::from_spki_der(&x509::spki_der_of(&cert))?;
        if let Some((n, e)) = public.rsa_parts() {
            session.store_rsa_public(&id, &format!("{label} (public)"), &n, &e)?;
        }
        store_cert(session, &id, &format!("{label} certificate"), &cert)?;
        keys.push(EncryptionKey {
            id: hex(&id),
            cert_serial: x509::serial_hex(&cert),
            certificate: x509::cert_to_pem(&cert)?,
            current: k.current,
            extra: toml::Table::new(),
        });
    }
    Ok(keys)
}

/// The registry's records of a reply's encryption keys, to be stored with `ids`.
pub(super) fn planned_keys(
    reply: &ReplyBody,
    ca: &x509_cert::Certificate,
    ids: &[Vec<u8>],
) -> Result<Vec<EncryptionKey>, EnrollError> {
    reply
        .encryption_keys
        .iter()
        .zip(ids)
        .map(|(k, id)| {
            let cert = x509::certs_from_pem(&k.certificate)?
                .into_iter()
                .next()
                .ok_or_else(|| EnrollError::BadReply("an encryption key without a certificate"))?;
            x509::verify_issued_by(&cert, ca)?;
            Ok(EncryptionKey {
                id: hex(id),
                cert_serial: x509::serial_hex(&cert),
                certificate: x509::cert_to_pem(&cert)?,
                current: k.current,
                extra: toml::Table::new(),
            })
        })
        .collect()
}

fn store_cert(
    session: &TokenSession,
    id: &[u8],
    label: &str,
    cert: &x509_cert::Certificate,
) -> Result<(), EnrollError> {
    let enc = |source: der::Error| X509Error::Encode {
        what: "certificate",
        source,
    };
    let der = cert.to_der().map_err(enc)?;
    let tbs = &cert.tbs_certificate;
    session.store_certificate(&CertObject {
        id,
        label,
        der: &der,
        subject: &tbs.subject.to_der().map_err(enc)?,
        issuer: &tbs.issuer.to_der().map_err(enc)?,
        serial: &tbs.serial_number.to_der().map_err(enc)?,
    })?;
    Ok(())
}

fn registry_keysets_of(registry: &Registry, user: &str, ca: &str, except: &str) -> Vec<String> {
    registry
        .keysets()
        .iter()
        .filter(|k| {
            k.name.to_lowercase() != except.to_lowercase()
                && k.state == KeysetState::Active
                && k.enrollment
                    .as_ref()
                    .is_some_and(|e| e.user == user && e.authority_ca == ca)
        })
        .map(|k| k.name.clone())
        .collect()
}

/// Removes a pending keyset made by [`make_request`] (its keys and its registry entry), after
/// the authority refused the request in a local enrollment.
pub fn abandon(
    module: &Module,
    home: &Path,
    keyset: &str,
    pin: &SecretString,
) -> Result<(), EnrollError> {
    let (lock, mut registry) = Registry::lock(home)?;
    let record = registry.get(keyset)?.clone();
    if record.state != KeysetState::Pending {
        return Ok(());
    }
    let token = crate::keyset::keyset_token(module, &record)?;
    let mut session = token.open_rw(module)?;
    session.login(module, PinRole::User, pin, LoginPolicy::default())?;
    session.destroy_by_id(&unhex_id(&record.signing_id)?)?;
    if let Some(tid) = record
        .enrollment
        .as_ref()
        .and_then(|e| e.transport_id.as_deref())
    {
        session.destroy_by_id(&unhex_id(tid)?)?;
    }
    registry.remove(keyset)?;
    registry.save(&lock)?;
    Ok(())
}
