//! `keyset adopt`: a keyset made from keys and certificates already on a token.
//!
//! Smart cards such as PIV cards get their keys from the card's own tools (on-card generation
//! through the management key); through PKCS#11 they cannot generate, import or unwrap a key.
//! Adopting records such keys as a keyset: the signing key and, if there is one, the
//! decryption key, picked by usage (`CKA_SIGN`, `CKA_DECRYPT`) and matched to their
//! certificates by `CKA_ID` — or named by PKCS#11 object URIs when the token holds several.
//! Nothing on the token changes.

use secrecy::SecretString;

use super::name::KeysetName;
use super::registry::{
    Adoption, EncryptionKey, KeyAlgorithm, KeysetRecord, KeysetState, Registry, Security,
};
use super::KeysetError;
use crate::pki::key::PublicKey;
use crate::pki::x509;
use crate::token::keys::hex;
use crate::token::uri::TokenFacts;
use crate::token::{
    CertificateEntry, KeyKind, LoginPolicy, Module, ObjectKind, PinRole, Pkcs11Uri,
    PrivateKeyEntry, RawPublicKey, Token, TokenSession,
};

/// The DER of the P-256 curve's OID, as `CKA_EC_PARAMS` holds it.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// What `keyset adopt` needs, validated by the caller.
pub struct AdoptRequest<'a> {
    /// The new keyset's name.
    pub name: KeysetName,
    /// The token holding the keys.
    pub token: &'a Token,
    /// The token's user PIN (private keys are visible only after a login).
    pub pin: &'a SecretString,
    /// `--signing-key URI`: the signing key, when usage alone does not tell.
    pub signing_key: Option<Pkcs11Uri>,
    /// `--decryption-key URI`: the decryption key, when usage alone does not tell.
    pub decryption_key: Option<Pkcs11Uri>,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// Which key a choice is about, for messages.
#[derive(Debug, Clone, Copy)]
enum Role {
    Signing,
    Decryption,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Signing => "signing",
            Role::Decryption => "decryption",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Role::Signing => "--signing-key",
            Role::Decryption => "--decryption-key",
        }
    }
}

/// Adopts the keys: reads the token (after a login), picks the keys, records the keyset.
pub fn adopt(
    module: &Module,
    home: &std::path::Path,
    req: AdoptRequest<'_>,
) -> Result<KeysetRecord, KeysetError> {
    let (lock, mut registry) = Registry::lock(home)?;
    let label = req.name.label();
    registry.check_free(req.name.as_str(), &label)?;
    for uri in [&req.signing_key, &req.decryption_key]
        .into_iter()
        .flatten()
    {
        check_object_uri(uri, req.token)?;
    }

    let mut session = req.token.open_ro(module)?;
    session.login(module, PinRole::User, req.pin, req.policy)?;
    let keys = session.private_keys()?;
    let certs = session.certificates()?;
    session.logout();

    // The signing and decryption keys are two keys: a key named for one role is no candidate
    // for the other.
    let named_decryption = match &req.decryption_key {
        Some(uri) => pick(&keys, Role::Decryption, Some(uri), req.token, can_decrypt)?,
        None => None,
    };
    let signing = pick(
        &keys,
        Role::Signing,
        req.signing_key.as_ref(),
        req.token,
        |k| k.sign && named_decryption.is_none_or(|d| d.id != k.id),
    )?
    .ok_or_else(|| {
        KeysetError::Unsupported(format!(
            "token {:?} has no private key that can sign (CKA_SIGN); provision one with the card's own tools, then adopt it",
            req.token.label()
        ))
    })?;
    let decryption = match named_decryption {
        Some(key) => Some(key),
        None => pick(&keys, Role::Decryption, None, req.token, |k| {
            can_decrypt(k) && k.id != signing.id
        })?,
    };

    let signing_cert = certificate_for(&certs, &signing.id, req.token)?;
    let public = signing_public_key(&session, signing, signing_cert, req.token)?;
    let key_type = key_algorithm(&public, signing, req.token)?;
    let decryption_key = match decryption {
        Some(key) => Some(decryption_entry(&certs, key, req.token)?),
        None => None,
    };
    let always = signing.always_authenticate || decryption.is_some_and(|k| k.always_authenticate);
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let record = KeysetRecord {
        name: req.name.as_str().to_string(),
        label,
        state: KeysetState::Local,
        security: if always {
            Security::High
        } else {
            Security::Standard
        },
        key_type,
        token_label: req.token.label().to_string(),
        token_serial: req.token.serial().to_string(),
        token_manufacturer: Some(req.token.summary().manufacturer.clone()),
        token_model: Some(req.token.summary().model.clone()),
        signing_id: hex(&signing.id),
        signing_public_key: public.to_pem()?,
        created: now.clone(),
        hardening: None,
        enrollment: None,
        adopted: Some(Adoption {
            adopted: now,
            signing_certificate: signing_cert.map(cert_pem).transpose()?,
            decryption_key,
            extra: toml::Table::new(),
        }),
        extra: toml::Table::new(),
    };
    registry.add(record.clone())?;
    registry.save(&lock)?;
    Ok(record)
}

/// Mail is read with RSA keys (key transport), so a decryption key is an RSA key that decrypts.
fn can_decrypt(k: &PrivateKeyEntry) -> bool {
    k.decrypt && k.kind == Some(KeyKind::Rsa)
}

/// A key URI must name an object (by `id` or `object`) on this token, and a private key.
fn check_object_uri(uri: &Pkcs11Uri, token: &Token) -> Result<(), KeysetError> {
    if uri.id.is_none() && uri.object.is_none() {
        return Err(KeysetError::Unsupported(format!(
            "{uri} names no key: give its id or label, e.g. `pkcs11:id=%02;type=private` (see `pkcs11-tool --list-objects`)"
        )));
    }
    if uri.kind.is_some_and(|k| k != ObjectKind::Private) {
        return Err(KeysetError::Unsupported(format!(
            "{uri} names a {} object; name the private key (type=private)",
            uri.kind.map(ObjectKind::as_str).unwrap_or_default()
        )));
    }
    let s = token.summary();
    let facts = TokenFacts {
        label: &s.label,
        manufacturer: &s.manufacturer,
        model: &s.model,
        serial: &s.serial,
        slot_id: s.slot_id,
        slot_description: &s.slot_description,
        slot_manufacturer: &s.slot_manufacturer,
    };
    if !uri.token_part().matches_token(&facts) {
        return Err(KeysetError::Unsupported(format!(
            "{uri} names another token than {:?}; leave the token attributes out or make them match",
            token.label()
        )));
    }
    Ok(())
}

/// The key a URI names, or else the one key with the wanted usage. `None` when no key has
/// it (and no URI was given); two candidates are ambiguous.
fn pick<'k>(
    keys: &'k [PrivateKeyEntry],
    role: Role,
    uri: Option<&Pkcs11Uri>,
    token: &Token,
    usable: impl Fn(&PrivateKeyEntry) -> bool,
) -> Result<Option<&'k PrivateKeyEntry>, KeysetError> {
    let candidates: Vec<&PrivateKeyEntry> = match uri {
        Some(uri) => keys
            .iter()
            .filter(|k| uri.id.as_ref().is_none_or(|id| *id == k.id))
            .filter(|k| uri.object.as_ref().is_none_or(|o| *o == k.label))
            .collect(),
        None => keys.iter().filter(|k| usable(k)).collect(),
    };
    match (candidates.as_slice(), uri) {
        ([], None) => Ok(None),
        ([], Some(uri)) => Err(KeysetError::Unsupported(format!(
            "no private key on token {:?} matches {uri}; the private keys there: {}",
            token.label(),
            describe_all(keys.iter(), token)
        ))),
        ([one], Some(uri)) if !usable(one) => Err(KeysetError::Unsupported(format!(
            "{uri} is not a {} key ({}); name another key with {}",
            role.as_str(),
            describe(one, token),
            role.flag()
        ))),
        ([one], _) => Ok(Some(*one)),
        (several, _) => Err(KeysetError::Unsupported(format!(
            "ambiguous: {} private keys on token {:?} could be the {} key: {}; name one with {} URI",
            several.len(),
            token.label(),
            role.as_str(),
            describe_all(several.iter().copied(), token),
            role.flag()
        ))),
    }
}

/// A key for messages: its URI, label and usage.
fn describe(k: &PrivateKeyEntry, token: &Token) -> String {
    let uri = Pkcs11Uri {
        token: Some(token.label().to_string()),
        serial: Some(token.serial().to_string()),
        id: Some(k.id.clone()),
        kind: Some(ObjectKind::Private),
        ..Pkcs11Uri::default()
    };
    let mut usage = Vec::new();
    if k.sign {
        usage.push("sign");
    }
    if k.decrypt {
        usage.push("decrypt");
    }
    if k.always_authenticate {
        usage.push("always-authenticate");
    }
    format!("{uri} ({:?}: {})", k.label, usage.join(", "))
}

fn describe_all<'a>(keys: impl Iterator<Item = &'a PrivateKeyEntry>, token: &Token) -> String {
    let all: Vec<String> = keys.map(|k| describe(k, token)).collect();
    if all.is_empty() {
        "none".to_string()
    } else {
        all.join("; ")
    }
}

/// The one certificate with the key's `CKA_ID`, if any.
fn certificate_for<'c>(
    certs: &'c [CertificateEntry],
    id: &[u8],
    token: &Token,
) -> Result<Option<&'c CertificateEntry>, KeysetError> {
    let found: Vec<&CertificateEntry> = certs.iter().filter(|c| c.id == id).collect();
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        several => Err(KeysetError::Unsupported(format!(
            "ambiguous: {} certificates on token {:?} carry key id {} ({}); remove the stale ones with the card's tools",
            several.len(),
            token.label(),
            hex(id),
            several
                .iter()
                .map(|c| format!("{:?}", c.label))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The signing key's public key: from its public-key object, else from its certificate; when
/// both exist they must agree.
fn signing_public_key(
    session: &TokenSession,
    key: &PrivateKeyEntry,
    cert: Option<&CertificateEntry>,
    token: &Token,
) -> Result<PublicKey, KeysetError> {
    let from_object = session.public_key(&key.id)?;
    if let Some(RawPublicKey::Ec { params, .. }) = &from_object {
        if params.as_slice() != P256_PARAMS {
            return Err(unsupported_type(key, token));
        }
    }
    let from_object = from_object
        .map(|raw| PublicKey::from_raw(&raw))
        .transpose()?;
    let from_cert = match cert {
        Some(c) => Some(public_key_of_cert(c, key, token)?),
        None => None,
    };
    match (from_object, from_cert) {
        (Some(o), Some(c)) if o.to_der()? != c.to_der()? => Err(KeysetError::Unsupported(format!(
            "the certificate {:?} on token {:?} does not hold the public key of the signing key {}; load the right certificate with the card's tools",
            cert.map(|c| c.label.as_str()).unwrap_or_default(),
            token.label(),
            hex(&key.id)
        ))),
        (Some(k), _) | (None, Some(k)) => Ok(k),
        (None, None) => Err(KeysetError::Unsupported(format!(
            "token {:?} has neither a public key nor a certificate for the signing key {}; load its certificate with the card's tools",
            token.label(),
            hex(&key.id)
        ))),
    }
}

fn public_key_of_cert(
    cert: &CertificateEntry,
    key: &PrivateKeyEntry,
    token: &Token,
) -> Result<PublicKey, KeysetError> {
    use der::Encode;
    let parsed = x509::cert_from_der(&cert.der).map_err(|e| bad_cert(cert, token, &e))?;
    let spki = parsed
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| bad_cert(cert, token, &e))?;
    PublicKey::from_spki_der(&spki).map_err(|_| unsupported_type(key, token))
}

/// The algorithms keyward signs with: RSA 2048/3072 and ECDSA P-256.
fn key_algorithm(
    public: &PublicKey,
    key: &PrivateKeyEntry,
    token: &Token,
) -> Result<KeyAlgorithm, KeysetError> {
    use rsa::traits::PublicKeyParts;
    match public {
        PublicKey::Rsa(k) => match k.n().bits() {
            2048 => Ok(KeyAlgorithm::Rsa2048),
            3072 => Ok(KeyAlgorithm::Rsa3072),
            _ => Err(unsupported_type(key, token)),
        },
        PublicKey::P256(_) => Ok(KeyAlgorithm::P256),
    }
}

fn unsupported_type(key: &PrivateKeyEntry, token: &Token) -> KeysetError {
    KeysetError::Unsupported(format!(
        "the signing key {} on token {:?} is not RSA-2048, RSA-3072 or ECDSA P-256, which keyward signs with; adopt another key",
        hex(&key.id),
        token.label()
    ))
}

/// The decryption key as the registry keeps it: its certificate is required, since mail is
/// addressed to a certificate.
fn decryption_entry(
    certs: &[CertificateEntry],
    key: &PrivateKeyEntry,
    token: &Token,
) -> Result<EncryptionKey, KeysetError> {
    let cert = certificate_for(certs, &key.id, token)?.ok_or_else(|| {
        KeysetError::Unsupported(format!(
            "the decryption key {} on token {:?} has no certificate, and mail is addressed to a certificate; load its certificate with the card's tools, then adopt again",
            hex(&key.id),
            token.label()
        ))
    })?;
    let parsed = x509::cert_from_der(&cert.der).map_err(|e| bad_cert(cert, token, &e))?;
    Ok(EncryptionKey {
        id: hex(&key.id),
        cert_serial: x509::serial_hex(&parsed),
        certificate: cert_pem(cert)?,
        current: true,
        extra: toml::Table::new(),
    })
}

fn cert_pem(cert: &CertificateEntry) -> Result<String, KeysetError> {
    let parsed = x509::cert_from_der(&cert.der)
        .and_then(|c| x509::cert_to_pem(&c))
        .map_err(|e| KeysetError::Unsupported(format!("certificate {:?}: {e}", cert.label)))?;
    Ok(parsed)
}

fn bad_cert(cert: &CertificateEntry, token: &Token, e: &dyn std::fmt::Display) -> KeysetError {
    KeysetError::Unsupported(format!(
        "certificate {:?} (id {}) on token {:?} does not parse ({e}); replace it with the card's tools",
        cert.label,
        hex(&cert.id),
        token.label()
    ))
}
