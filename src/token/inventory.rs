//! What is already on a token: its private keys (with their usage and protection) and its
//! certificates — for adopting keys that card tools provisioned.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{MechanismInfo, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};

use super::error::TokenError;
use super::keys::KeyKind;
use super::session::TokenSession;

/// A private key found on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateKeyEntry {
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// `CKA_LABEL` (empty when the token gives none).
    pub label: String,
    /// RSA or EC; `None` for other key types.
    pub kind: Option<KeyKind>,
    /// `CKA_SIGN`.
    pub sign: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
    /// `CKA_ALWAYS_AUTHENTICATE`: the token asks for the PIN at every use.
    pub always_authenticate: bool,
}

/// A certificate found on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateEntry {
    /// `CKA_ID` (the id of the key it certifies, by convention).
    pub id: Vec<u8>,
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_VALUE`: the DER certificate.
    pub der: Vec<u8>,
}

impl TokenSession {
    /// Every private key this session can see (log in first: most tokens hide them before).
    pub fn private_keys(&self) -> Result<Vec<PrivateKeyEntry>, TokenError> {
        self.objects_of(ObjectClass::PRIVATE_KEY)?
            .into_iter()
            .map(|handle| self.private_key_entry(handle))
            .collect()
    }

    /// Every certificate on the token.
    pub fn certificates(&self) -> Result<Vec<CertificateEntry>, TokenError> {
        let mut found = Vec::new();
        for handle in self.objects_of(ObjectClass::CERTIFICATE)? {
            let attrs = self
                .session
                .get_attributes(
                    handle,
                    &[
                        AttributeType::Id,
                        AttributeType::Label,
                        AttributeType::Value,
                    ],
                )
                .map_err(|e| self.op_error(e, "reading a certificate"))?;
            let mut entry = CertificateEntry {
                id: Vec::new(),
                label: String::new(),
                der: Vec::new(),
            };
            for a in attrs {
                match a {
                    Attribute::Id(v) => entry.id = v,
                    Attribute::Label(v) => entry.label = label_text(&v),
                    Attribute::Value(v) => entry.der = v,
                    _ => {}
                }
            }
            found.push(entry);
        }
        Ok(found)
    }

    fn objects_of(&self, class: ObjectClass) -> Result<Vec<ObjectHandle>, TokenError> {
        self.session
            .find_objects(&[Attribute::Class(class)])
            .map_err(|e| self.op_error(e, "listing the token's objects"))
    }

    fn private_key_entry(&self, handle: ObjectHandle) -> Result<PrivateKeyEntry, TokenError> {
        let attrs = self
            .session
            .get_attributes(
                handle,
                &[
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::KeyType,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                    AttributeType::AlwaysAuthenticate,
                ],
            )
            .map_err(|e| self.op_error(e, "reading key attributes"))?;
        let mut entry = PrivateKeyEntry {
            id: Vec::new(),
            label: String::new(),
            kind: None,
            sign: false,
            decrypt: false,
            always_authenticate: false,
        };
        for a in attrs {
            match a {
                Attribute::Id(v) => entry.id = v,
                Attribute::Label(v) => entry.label = label_text(&v),
                Attribute::KeyType(k) if k == KeyType::RSA => entry.kind = Some(KeyKind::Rsa),
                Attribute::KeyType(k) if k == KeyType::EC => entry.kind = Some(KeyKind::Ec),
                Attribute::Sign(v) => entry.sign = v,
                Attribute::Decrypt(v) => entry.decrypt = v,
                Attribute::AlwaysAuthenticate(v) => entry.always_authenticate = v,
                _ => {}
            }
        }
        Ok(entry)
    }
}

/// A `CKA_LABEL` as text (labels are UTF-8 by the standard; anything else shown lossily).
fn label_text(v: &[u8]) -> String {
    String::from_utf8_lossy(v)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// How keys can get onto a token through PKCS#11, as its mechanism list says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KeyIntake {
    /// Some mechanism has `CKF_GENERATE_KEY_PAIR`.
    pub generate_key_pair: bool,
    /// Some mechanism has `CKF_UNWRAP`.
    pub unwrap: bool,
}

/// The key-pair generation mechanisms keyward uses.
const GENERATION: [MechanismType; 2] = [
    MechanismType::RSA_PKCS_KEY_PAIR_GEN,
    MechanismType::ECC_KEY_PAIR_GEN,
];

/// The mechanisms a wrapped key can be unwrapped with into the token.
const UNWRAPPING: [MechanismType; 5] = [
    MechanismType::AES_KEY_WRAP,
    MechanismType::AES_KEY_WRAP_PAD,
    MechanismType::AES_CBC_PAD,
    MechanismType::RSA_PKCS_OAEP,
    MechanismType::RSA_PKCS,
];

impl super::info::Token {
    /// What the token's mechanisms offer for putting keys on it (`C_GetMechanismInfo` of the
    /// generation and unwrapping mechanisms keyward uses; one the token lacks counts as no).
    /// A smart card whose keys come from its own tools offers neither.
    pub fn key_intake(&self, module: &super::module::Module) -> Result<KeyIntake, TokenError> {
        let has = |mechanisms: &[MechanismType], flag: fn(&MechanismInfo) -> bool| {
            for &mechanism in mechanisms {
                match module.ctx().get_mechanism_info(self.slot, mechanism) {
                    Ok(info) if flag(&info) => return Ok(true),
                    Ok(_) | Err(CkError::Pkcs11(RvError::MechanismInvalid, _)) => {}
                    Err(e) => {
                        return Err(super::error::map_error(
                            e,
                            super::error::ErrCtx::op(
                                "reading the token's mechanisms",
                                self.label(),
                            ),
                        ))
                    }
                }
            }
            Ok(false)
        };
        Ok(KeyIntake {
            generate_key_pair: has(&GENERATION, MechanismInfo::generate_key_pair)?,
            unwrap: has(&UNWRAPPING, MechanismInfo::unwrap)?,
        })
    }
}
