//! Key-pair generation that every token takes, and that keeps what keyward asked for.
//!
//! keyward writes every attribute that matters explicitly (no token default is trusted), but
//! leaves a generated public key's `CKA_VERIFY` and `CKA_ENCRYPT` out of the template:
//! tpm2-pkcs11 derives them from the TPM object and fails the generation (`CKR_GENERAL_ERROR`,
//! "attr mismatch: 0x10a") when a template disagrees. They are set afterwards where the token
//! lets them be changed (SoftHSM2 would make every public key encrypt). A token that refuses the
//! template anyway gets it once more with no public usage flag at all — the public half holds
//! no secret, and what a key may do is decided by its private half, whose template never
//! changes. (Not a cure for tpm2-pkcs11, whose failed generation leaks a TPM object: the second
//! try finds the TPM full.) Then the private key's security attributes are read back: a token
//! that silently dropped one (not sensitive, extractable, not private, no
//! `CKA_ALWAYS_AUTHENTICATE`) gets its new pair destroyed and the command refused.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectHandle};

use super::error::TokenError;
use super::session::TokenSession;

/// The templates of one key pair: the public key with and without its usage flags.
pub(crate) struct PairTemplates {
    /// The public key's template (see `template::public_key_generated`).
    pub public: Vec<Attribute>,
    /// The same without any usage flag.
    pub public_bare: Vec<Attribute>,
    /// The public key's `CKA_VERIFY` and `CKA_ENCRYPT` as keyward wants them: set after the
    /// generation where the token took its own default and lets them be changed (SoftHSM2
    /// makes every public key encrypt); kept as the token has them where it does not.
    pub public_usage: Vec<Attribute>,
    /// The private key's template.
    pub private: Vec<Attribute>,
}

/// The security attributes the private key must have after generation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MustKeep {
    /// `CKA_TOKEN`.
    pub persistent: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_AUTHENTICATE` was asked for.
    pub always_authenticate: bool,
}

/// Does this error say the token refused the template (rather than the device, the login or
/// the mechanism failing)? tpm2-pkcs11 says `CKR_GENERAL_ERROR`.
fn template_refused(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::TemplateInconsistent
                | RvError::TemplateIncomplete
                | RvError::AttributeValueInvalid
                | RvError::AttributeTypeInvalid
                | RvError::AttributeReadOnly
                | RvError::GeneralError,
            _
        )
    )
}

impl TokenSession {
    /// Generates a key pair with `id` (see the module comment), checks the private key kept
    /// `keep`, and returns (public, private). `what` names the pair in messages.
    pub(crate) fn generate_pair_checked(
        &self,
        mechanism: &Mechanism<'_>,
        t: &PairTemplates,
        id: &[u8],
        keep: MustKeep,
        what: &str,
    ) -> Result<(ObjectHandle, ObjectHandle), TokenError> {
        let pair = match self
            .session
            .generate_key_pair(mechanism, &t.public, &t.private)
        {
            Ok(pair) => pair,
            Err(e) if template_refused(&e) => {
                log::debug!(
                    "token {:?} refused the {what} template ({e}); again with the public key's usage left to the token",
                    self.token.label()
                );
                // A module that failed half-way may have left an object with the new id.
                if let Err(e) = self.destroy_by_id(id) {
                    log::debug!("clearing after the refused template: {e}");
                }
                self.session
                    .generate_key_pair(mechanism, &t.public_bare, &t.private)
                    .map_err(|e| self.op_error(e, &format!("generating a {what}")))?
            }
            Err(e) => return Err(self.op_error(e, &format!("generating a {what}"))),
        };
        let failure = match self.check_kept(pair.1, keep) {
            Ok(None) => {
                self.settle_public_usage(pair.0, &t.public_usage);
                return Ok(pair);
            }
            Ok(Some(dropped)) => TokenError::AttributeDropped {
                label: self.token.label().to_string(),
                what: what.to_string(),
                attribute: dropped,
            },
            Err(e) => self.op_error(e, &format!("checking the new {what}")),
        };
        let destroyed = self.destroy_by_id(id);
        log::debug!("destroyed the new {what}: {destroyed:?}");
        Err(failure)
    }

    /// Sets the public key's usage flags that differ from `wanted`, where the token allows it.
    /// A public key's usage grants nothing (the private half decides), so a refusal is only
    /// logged.
    fn settle_public_usage(&self, public: ObjectHandle, wanted: &[Attribute]) {
        let types: Vec<AttributeType> = wanted.iter().map(Attribute::attribute_type).collect();
        let have = match self.session.get_attributes(public, &types) {
            Ok(have) => have,
            Err(e) => {
                log::debug!("reading the new public key's usage: {e}");
                return;
            }
        };
        let differ: Vec<Attribute> = wanted
            .iter()
            .filter(|w| !have.contains(w))
            .cloned()
            .collect();
        if differ.is_empty() {
            return;
        }
        if let Err(e) = self.session.update_attributes(public, &differ) {
            log::debug!("token keeps its own public key usage ({e}); it grants nothing");
        }
    }

    /// The first security attribute the private key does not have as asked, if any.
    fn check_kept(
        &self,
        private: ObjectHandle,
        keep: MustKeep,
    ) -> Result<Option<&'static str>, CkError> {
        let attrs = self.session.get_attributes(
            private,
            &[
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysAuthenticate,
            ],
        )?;
        let get = |want: AttributeType| {
            attrs.iter().find_map(|a| match (a, want) {
                (Attribute::Token(v), AttributeType::Token)
                | (Attribute::Private(v), AttributeType::Private)
                | (Attribute::Sensitive(v), AttributeType::Sensitive)
                | (Attribute::Extractable(v), AttributeType::Extractable)
                | (Attribute::AlwaysAuthenticate(v), AttributeType::AlwaysAuthenticate) => Some(*v),
                _ => None,
            })
        };
        let dropped = if get(AttributeType::Token) != Some(keep.persistent) {
            Some("CKA_TOKEN")
        } else if get(AttributeType::Private) != Some(true) {
            Some("CKA_PRIVATE")
        } else if get(AttributeType::Sensitive) != Some(true) {
            Some("CKA_SENSITIVE")
        } else if get(AttributeType::Extractable) != Some(keep.extractable) {
            Some(if keep.extractable {
                "CKA_EXTRACTABLE=true"
            } else {
                "CKA_EXTRACTABLE=false"
            })
        } else if keep.always_authenticate && get(AttributeType::AlwaysAuthenticate) != Some(true) {
            Some("CKA_ALWAYS_AUTHENTICATE")
        } else {
            None
        };
        Ok(dropped)
    }
}
