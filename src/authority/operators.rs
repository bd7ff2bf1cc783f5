//! Operators: named administrators, each with a signing key on their own token, certified by
//! the authority's CA. An operator acts by logging in to their own token and signing; the
//! authority checks the signature against the operator's certificate. Operators are records
//! of the authority's state (kind `operator`), vouched for by the authority's token like every
//! other record; a removed operator's record stays, marked removed.

use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::signer::CaSigner;
use super::state::{self, kind, AuthorityDir};
use super::AuthorityError;
use crate::keyset::csr::parse_subject;
use crate::keyset::ops::unhex_id;
use crate::pki::x509::{self, CertParams, CertProfile};
use crate::pki::PublicKey;
use crate::token::keys::hex;
use crate::token::{KeySpec, KeyTemplate, LoginPolicy, Module, PinRole, Token, TokenSession};

/// How long an operator certificate is valid.
const OPERATOR_CERT_LIFETIME: Duration = Duration::from_secs(5 * 365 * 24 * 3600);

/// One operator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperatorRecord {
    /// The operator's name (as in `--as NAME` and the audit log's `operator:NAME`).
    pub name: String,
    /// Label of the operator's token.
    pub token_label: String,
    /// Serial of the operator's token.
    pub token_serial: String,
    /// `CKA_ID` of the operator's signing key on that token, hex.
    pub key_id: String,
    /// The operator certificate, PEM, issued by the authority's CA.
    pub cert_pem: String,
    /// Added at, RFC 3339.
    pub added: String,
    /// Removed at, RFC 3339 (the record stays, so the log's names stay explained).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<String>,
}

impl OperatorRecord {
    /// The operator's public key, from their certificate.
    pub fn public_key(&self) -> Result<PublicKey, AuthorityError> {
        state::ca_key_of(&self.cert_pem)
    }

    /// Not removed.
    pub fn active(&self) -> bool {
        self.removed.is_none()
    }
}

/// A key just made on a new operator's token (before the authority certifies it).
#[derive(Debug, Clone)]
pub struct NewOperatorKey {
    /// Token label.
    pub token_label: String,
    /// Token serial.
    pub token_serial: String,
    /// Key id, hex.
    pub key_id: String,
    /// The public key, DER SubjectPublicKeyInfo, hex.
    pub spki: String,
}

/// Every operator (removed ones too), checked, by name.
pub fn all(a: &mut AuthorityDir) -> Result<Vec<OperatorRecord>, AuthorityError> {
    a.authority_records(kind::OPERATOR)?
        .iter()
        .map(|r| {
            serde_json::from_slice(&r.body).map_err(|e| {
                state::tampered(&format!(
                    "the record of operator {:?} does not parse: {e}",
                    r.key
                ))
            })
        })
        .collect()
}

/// The operators not removed.
pub fn active(a: &mut AuthorityDir) -> Result<Vec<OperatorRecord>, AuthorityError> {
    Ok(all(a)?.into_iter().filter(OperatorRecord::active).collect())
}

/// One active operator, or an error that says who the operators are.
pub fn find_active(a: &mut AuthorityDir, name: &str) -> Result<OperatorRecord, AuthorityError> {
    let ops = active(a)?;
    ops.iter().find(|o| o.name == name).cloned().ok_or_else(|| {
        AuthorityError::BadRequest(format!(
            "{name:?} is not an operator of this authority (or was removed); the operators are: {}",
            ops.iter()
                .map(|o| o.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

/// Writes an operator's record.
pub fn put(a: &mut AuthorityDir, op: &OperatorRecord) -> Result<(), AuthorityError> {
    let body = serde_json::to_vec(op).map_err(|e| AuthorityError::serialize("operator", e))?;
    a.put(kind::OPERATOR, &op.name, "", body)
}

/// Generates a new operator's signing key (RSA 2048) on their token, logged in with their PIN.
pub fn make_key(
    module: &Module,
    token: &Token,
    pin: &SecretString,
    policy: LoginPolicy,
    name: &str,
) -> Result<NewOperatorKey, AuthorityError> {
    let mut session = token.open_rw(module)?;
    session.login(module, PinRole::User, pin, policy)?;
    let id = session.random(16)?;
    let label = format!("keyward operator {name}");
    session.generate_signing_pair(&KeyTemplate {
        id: &id,
        private_label: &label,
        public_label: &format!("{label} (public)"),
        spec: KeySpec::Rsa(2048),
        always_authenticate: false,
    })?;
    let raw = session.public_key(&id)?.ok_or_else(|| {
        AuthorityError::BadRequest("the operator key just generated is not on the token".into())
    })?;
    let spki = PublicKey::from_raw(&raw)?.to_der()?;
    Ok(NewOperatorKey {
        token_label: token.label().to_string(),
        token_serial: token.serial().to_string(),
        key_id: hex(&id),
        spki: hex(&spki),
    })
}

/// Removes a key [`make_key`] made, when the operator was not added after all.
pub fn destroy_key(module: &Module, token: &Token, pin: &SecretString, key: &NewOperatorKey) {
    let result = token.open_rw(module).and_then(|mut s| {
        s.login(module, PinRole::User, pin, LoginPolicy::default())?;
        let id = unhex_id(&key.key_id).unwrap_or_default();
        s.destroy_by_id(&id)
    });
    if let Err(e) = result {
        log::warn!(
            "could not remove the unused operator key {} from token {:?}: {e}",
            key.key_id,
            key.token_label
        );
    }
}

/// Certifies an operator's key with the CA key on the authority's token.
pub fn certify(
    module: &Module,
    session: &mut TokenSession,
    pin: &SecretString,
    a: &AuthorityDir,
    name: &str,
    spki_hex: &str,
) -> Result<String, AuthorityError> {
    let spki = super::state::key_id("operator public key", spki_hex)?;
    PublicKey::from_spki_der(&spki)?;
    let ca = a.ca_certificate()?;
    let ca_id = super::state::key_id("CA key", &a.config.ca_key_id)?;
    let key = session
        .find_private_key(&ca_id)?
        .ok_or_else(|| super::state::key_missing("CA key"))?;
    let subject =
        parse_subject(&format!("CN={name},OU=keyward operators")).map_err(AuthorityError::Name)?;
    let now = SystemTime::now();
    let mut signer = CaSigner {
        module,
        session,
        key,
        pin,
    };
    // The user-signing profile (digitalSignature, nonRepudiation): what an approval is.
    let cert = x509::issue(
        &ca,
        &CertParams {
            subject: &subject,
            spki_der: &spki,
            serial: &x509::random_serial()?,
            not_before: now - Duration::from_secs(3600),
            not_after: now + OPERATOR_CERT_LIFETIME,
            profile: CertProfile::UserSigning,
            email: None,
        },
        &mut signer,
    )?;
    Ok(x509::cert_to_pem(&cert)?)
}

/// The operator's token: `given` (a `--operator-token` URI), else the one their record names.
pub fn token_of(
    module: &Module,
    op: &OperatorRecord,
    given: Option<&Token>,
) -> Result<Token, AuthorityError> {
    if let Some(t) = given {
        return Ok(t.clone());
    }
    crate::token::list_tokens(module)?
        .into_iter()
        .find(|t| {
            t.serial() == op.token_serial && t.label() == op.token_label && t.summary().initialized
        })
        .ok_or_else(|| {
            AuthorityError::BadRequest(format!(
                "operator {:?}'s token {:?} (serial {}) is not present; insert it, or name it with --operator-token URI",
                op.name, op.token_label, op.token_serial
            ))
        })
}

/// Signs `bytes` with the operator's key on `token` (logged in with the operator's PIN), and
/// checks the signature against the operator's certificate: a token that does not hold the
/// operator's key, or holds another key under its id, is refused.
pub fn sign_as(
    module: &Module,
    op: &OperatorRecord,
    token: &Token,
    pin: &SecretString,
    policy: LoginPolicy,
    bytes: &[u8],
) -> Result<Vec<u8>, AuthorityError> {
    let mut session = token.open_rw(module)?;
    session.login(module, PinRole::User, pin, policy)?;
    let id = super::state::key_id("operator key", &op.key_id)?;
    let key = session.find_private_key(&id)?.ok_or_else(|| {
        AuthorityError::BadRequest(format!(
            "token {:?} does not hold operator {:?}'s key; use the operator's own token",
            token.label(),
            op.name
        ))
    })?;
    let sig = session.sign(module, &key, &mut &bytes[..], pin)?;
    session.logout();
    op.public_key()?.verify(bytes, &sig).map_err(|_| {
        AuthorityError::BadRequest(format!(
            "the signature made on token {:?} does not verify with operator {:?}'s certificate: it is not the operator's key",
            token.label(),
            op.name
        ))
    })?;
    Ok(sig)
}
