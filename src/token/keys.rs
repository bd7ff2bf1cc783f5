//! Key pairs on a token: generation with explicit security attributes, lookup by `CKA_ID`,
//! public-key export, signing (with context-specific login for high-security keys), removal.

use std::io::Read;

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use secrecy::SecretString;
use sha2::{Digest, Sha256};

use super::error::{PinRole, TokenError};
use super::keygen::{MustKeep, PairTemplates};
use super::module::Module;
use super::raw::SinglePart;
use super::session::{LoginPolicy, TokenSession};
use super::template::{self, Protection, Storage, Usage};

/// The DER of the P-256 curve's OID (1.2.840.10045.3.1.7), as `CKA_EC_PARAMS`.
const P256_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// The key algorithms keyward generates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// RSA with this modulus size in bits.
    Rsa(u32),
    /// ECDSA on NIST P-256.
    EcP256,
}

/// What a new key pair is for and how it is protected.
#[derive(Debug, Clone)]
pub struct KeyTemplate<'a> {
    /// `CKA_ID` shared by the private key, public key and any certificate.
    pub id: &'a [u8],
    /// `CKA_LABEL` of the private key.
    pub private_label: &'a str,
    /// `CKA_LABEL` of the public key.
    pub public_label: &'a str,
    /// The algorithm.
    pub spec: KeySpec,
    /// `CKA_ALWAYS_AUTHENTICATE` on the private key: every use asks for the PIN.
    pub always_authenticate: bool,
}

/// A key object found on the token.
#[derive(Debug, Clone, Copy)]
pub struct KeyRef {
    handle: ObjectHandle,
    always_authenticate: bool,
    key_type: KeyKind,
}

/// The key type of a key on the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA.
    Rsa,
    /// Elliptic curve.
    Ec,
}

/// A public key as the token stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawPublicKey {
    /// RSA modulus and public exponent, big-endian.
    Rsa {
        /// `CKA_MODULUS`.
        modulus: Vec<u8>,
        /// `CKA_PUBLIC_EXPONENT`.
        exponent: Vec<u8>,
    },
    /// An EC point (`CKA_EC_POINT`, DER OCTET STRING unwrapped) and curve params.
    Ec {
        /// The uncompressed point `04 || X || Y`.
        point: Vec<u8>,
        /// `CKA_EC_PARAMS` (the curve OID, DER).
        params: Vec<u8>,
    },
}

/// The security attributes of a key as the token reports them (for `keyset show`, tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct KeyAttributes {
    /// `CKA_TOKEN`.
    pub token: bool,
    /// `CKA_PRIVATE`.
    pub private: bool,
    /// `CKA_SENSITIVE`.
    pub sensitive: bool,
    /// `CKA_EXTRACTABLE`.
    pub extractable: bool,
    /// `CKA_ALWAYS_AUTHENTICATE`.
    pub always_authenticate: bool,
    /// `CKA_SIGN`.
    pub sign: bool,
    /// `CKA_DECRYPT`.
    pub decrypt: bool,
}

impl TokenSession {
    /// Generates a signing key pair on the token. The private key is sensitive, never
    /// extractable, private, and can only sign; a token that does not keep that gets the pair
    /// destroyed and the generation refused (see `keygen.rs`).
    pub fn generate_signing_pair(&self, t: &KeyTemplate<'_>) -> Result<(), TokenError> {
        let (mechanism, params, key_type) = match t.spec {
            KeySpec::Rsa(bits) => (
                Mechanism::RsaPkcsKeyPairGen,
                vec![
                    Attribute::ModulusBits(u64::from(bits).into()),
                    Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                ],
                KeyType::RSA,
            ),
            KeySpec::EcP256 => (
                Mechanism::EccKeyPairGen,
                vec![Attribute::EcParams(P256_PARAMS.to_vec())],
                KeyType::EC,
            ),
        };
        let with_params = |mut public: Vec<Attribute>| {
            public.extend(params.iter().cloned());
            public
        };
        let storage = Storage::on_token(t.id, t.public_label);
        let templates = PairTemplates {
            public: with_params(template::public_key_generated(
                key_type,
                storage,
                Usage::VERIFY,
            )),
            public_bare: with_params(template::public_key_bare(key_type, storage)),
            public_usage: template::public_usage(Usage::VERIFY),
            private: template::private_key(
                key_type,
                Storage::on_token(t.id, t.private_label),
                Usage::SIGN,
                Protection {
                    extractable: false,
                    always_authenticate: t.always_authenticate,
                },
            ),
        };
        log::debug!(
            "C_GenerateKeyPair {:?} on token {:?}",
            t.spec,
            self.token.label()
        );
        self.generate_pair_checked(
            &mechanism,
            &templates,
            t.id,
            MustKeep {
                persistent: true,
                extractable: false,
                always_authenticate: t.always_authenticate,
            },
            "signing key pair",
        )
        .map(|_| ())
    }

    /// The one object of `class` with `CKA_ID` = `id`: none is `Ok(None)`, several is an error.
    pub(crate) fn find_one(
        &self,
        class: ObjectClass,
        id: &[u8],
    ) -> Result<Option<ObjectHandle>, TokenError> {
        let found = self
            .session
            .find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
            .map_err(|e| self.op_error(e, "finding a key"))?;
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.first().copied()),
            n => Err(TokenError::Wrapper {
                what: format!("finding the object with id {}", hex(id)),
                reason: format!(
                    "{n} objects share that id on token {:?}; remove the duplicates",
                    self.token.label()
                ),
            }),
        }
    }

    /// The private key with `CKA_ID` = `id` (needs a login), or `None`.
    pub fn find_private_key(&self, id: &[u8]) -> Result<Option<KeyRef>, TokenError> {
        let Some(handle) = self.find_one(ObjectClass::PRIVATE_KEY, id)? else {
            return Ok(None);
        };
        let attrs = self
            .session
            .get_attributes(
                handle,
                &[AttributeType::AlwaysAuthenticate, AttributeType::KeyType],
            )
            .map_err(|e| self.op_error(e, "reading key attributes"))?;
        let mut key = KeyRef {
            handle,
            always_authenticate: false,
            key_type: KeyKind::Rsa,
        };
        for a in attrs {
            match a {
                Attribute::AlwaysAuthenticate(v) => key.always_authenticate = v,
                Attribute::KeyType(k) if k == KeyType::EC => key.key_type = KeyKind::Ec,
                _ => {}
            }
        }
        Ok(Some(key))
    }

    /// The public key with `CKA_ID` = `id`, or `None`.
    pub fn public_key(&self, id: &[u8]) -> Result<Option<RawPublicKey>, TokenError> {
        let Some(handle) = self.find_one(ObjectClass::PUBLIC_KEY, id)? else {
            return Ok(None);
        };
        let attrs = self
            .session
            .get_attributes(
                handle,
                &[
                    AttributeType::KeyType,
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::EcPoint,
                    AttributeType::EcParams,
                ],
            )
            .map_err(|e| self.op_error(e, "reading the public key"))?;
        let (mut kind, mut modulus, mut exponent, mut point, mut params) =
            (KeyKind::Rsa, Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::KeyType(k) if k == KeyType::EC => kind = KeyKind::Ec,
                Attribute::Modulus(v) => modulus = v,
                Attribute::PublicExponent(v) => exponent = v,
                Attribute::EcPoint(v) => point = v,
                Attribute::EcParams(v) => params = v,
                _ => {}
            }
        }
        Ok(Some(match kind {
            KeyKind::Rsa => RawPublicKey::Rsa { modulus, exponent },
            KeyKind::Ec => RawPublicKey::Ec {
                point: unwrap_octet_string(&point),
                params,
            },
        }))
    }

    /// The security attributes of the private key with `CKA_ID` = `id`.
    pub fn private_key_attributes(&self, id: &[u8]) -> Result<Option<KeyAttributes>, TokenError> {
        let Some(handle) = self.find_one(ObjectClass::PRIVATE_KEY, id)? else {
            return Ok(None);
        };
        let attrs = self
            .session
            .get_attributes(
                handle,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysAuthenticate,
                    AttributeType::Sign,
                    AttributeType::Decrypt,
                ],
            )
            .map_err(|e| self.op_error(e, "reading key attributes"))?;
        let mut k = KeyAttributes {
            token: false,
            private: false,
            sensitive: false,
            extractable: true,
            always_authenticate: false,
            sign: false,
            decrypt: false,
        };
        for a in attrs {
            match a {
                Attribute::Token(v) => k.token = v,
                Attribute::Private(v) => k.private = v,
                Attribute::Sensitive(v) => k.sensitive = v,
                Attribute::Extractable(v) => k.extractable = v,
                Attribute::AlwaysAuthenticate(v) => k.always_authenticate = v,
                Attribute::Sign(v) => k.sign = v,
                Attribute::Decrypt(v) => k.decrypt = v,
                _ => {}
            }
        }
        Ok(Some(k))
    }

    /// Signs a SHA-256 hash of the input: RSA keys with PKCS#1 v1.5 (`CKM_RSA_PKCS` over the
    /// DigestInfo, the same signature `CKM_SHA256_RSA_PKCS` gives), EC keys with `CKM_ECDSA`.
    /// The host hashes: one single-part `C_Sign` per signature whatever the input's size, and
    /// the mechanism every RSA token has (many smart cards have no on-card hashing).
    /// Returns the raw signature (`r || s` for EC). A high-security key gets the
    /// context-specific login with `pin`.
    pub fn sign(
        &mut self,
        module: &Module,
        key: &KeyRef,
        data: &mut dyn Read,
        pin: &SecretString,
    ) -> Result<Vec<u8>, TokenError> {
        if key.key_type == KeyKind::Ec {
            let digest = sha256_of(data)?;
            return self.sign_with(module, key, &Mechanism::Ecdsa, &digest, pin);
        }
        // RSA: the input is kept, in case the token signs only with its own hashing.
        let mut input = Vec::new();
        data.read_to_end(&mut input)
            .map_err(|source| TokenError::Input {
                what: "reading the data to sign",
                source,
            })?;
        let digest: [u8; 32] = Sha256::digest(&input).into();
        let raw = self.sign_with(
            module,
            key,
            &Mechanism::RsaPkcs,
            &sha256_digest_info(&digest),
            pin,
        );
        match raw {
            // Some tokens offer CKM_RSA_PKCS only for keys that may also decrypt (tpm2-pkcs11
            // runs it as a raw RSA decryption): a token that says it signs with
            // CKM_SHA256_RSA_PKCS gets the input itself, hashed on the token — the same
            // PKCS#1 v1.5 signature.
            Err(e)
                if refused_by_token(&e)
                    && self.signs_with(module, MechanismType::SHA256_RSA_PKCS) =>
            {
                log::debug!("CKM_RSA_PKCS signing failed ({e}); signing with CKM_SHA256_RSA_PKCS");
                self.sign_with(module, key, &Mechanism::Sha256RsaPkcs, &input, pin)
            }
            other => other,
        }
    }

    /// One single-part signature (with the context-specific login for a high-security key).
    fn sign_with(
        &mut self,
        module: &Module,
        key: &KeyRef,
        mechanism: &Mechanism<'_>,
        to_sign: &[u8],
        pin: &SecretString,
    ) -> Result<Vec<u8>, TokenError> {
        if key.always_authenticate {
            return self.single_part_with_login(
                module,
                SinglePart::Sign,
                mechanism,
                key,
                to_sign,
                pin,
            );
        }
        self.session
            .sign(mechanism, key.handle, to_sign)
            .map_err(|e| self.op_error(e, "signing"))
    }

    /// Whether the token says it signs with `mechanism` (`C_GetMechanismInfo`, `CKF_SIGN`).
    fn signs_with(&self, module: &Module, mechanism: MechanismType) -> bool {
        module
            .ctx()
            .get_mechanism_info(self.token.slot, mechanism)
            .map(|info| info.sign())
            .unwrap_or(false)
    }

    /// A single-part operation on a key with `CKA_ALWAYS_AUTHENTICATE`: init, context-specific
    /// login, then the call (see `raw.rs`).
    pub(crate) fn single_part_with_login(
        &mut self,
        module: &Module,
        op: SinglePart,
        mechanism: &Mechanism<'_>,
        key: &KeyRef,
        data: &[u8],
        pin: &SecretString,
    ) -> Result<Vec<u8>, TokenError> {
        log::debug!(
            "{op:?} with context-specific login on token {:?}",
            self.token.label()
        );
        super::raw::with_context_login(op, &self.session, mechanism, key.handle, pin, data).map_err(
            |e| {
                let wrong_pin = matches!(
                    &e,
                    cryptoki::error::Error::Pkcs11(_, cryptoki::context::Function::Login)
                );
                if wrong_pin {
                    self.pin_error(
                        module,
                        e,
                        "re-entering the password for this key",
                        PinRole::User,
                    )
                } else {
                    self.op_error(e, "using a high-security key")
                }
            },
        )
    }

    /// Destroys every object (keys, certificates) with `CKA_ID` = `id`; returns how many.
    pub fn destroy_by_id(&self, id: &[u8]) -> Result<usize, TokenError> {
        let found = self
            .session
            .find_objects(&[Attribute::Id(id.to_vec())])
            .map_err(|e| self.op_error(e, "finding objects to remove"))?;
        for handle in &found {
            self.session
                .destroy_object(*handle)
                .map_err(|e| self.op_error(e, "removing an object"))?;
        }
        Ok(found.len())
    }

    /// How many objects have `CKA_ID` = `id`.
    pub fn count_by_id(&self, id: &[u8]) -> Result<usize, TokenError> {
        self.session
            .find_objects(&[Attribute::Id(id.to_vec())])
            .map(|v| v.len())
            .map_err(|e| self.op_error(e, "finding objects"))
    }

    /// Changes the user PIN in this (read-write) session (`C_SetPIN`). Both PINs are checked
    /// against the token's length limits first. A module that changes PINs only in a logged-in
    /// session (tpm2-pkcs11 answers `CKR_USER_NOT_LOGGED_IN`, which checks no PIN) gets a login
    /// with the old PIN first, then the change, then a logout.
    pub fn set_user_pin(
        &mut self,
        module: &Module,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), TokenError> {
        self.token.check_pin_length(PinRole::User, old)?;
        self.token.check_pin_length(PinRole::User, new)?;
        log::debug!("C_SetPIN on token {:?}", self.token.label());
        match self.session.set_pin(old, new) {
            Ok(()) => return Ok(()),
            Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserNotLoggedIn, _)) => {}
            Err(e) => return Err(self.pin_error(module, e, "changing the PIN", PinRole::User)),
        }
        log::debug!("the module wants a login before C_SetPIN");
        self.login(module, PinRole::User, old, LoginPolicy::default())?;
        let result = self
            .session
            .set_pin(old, new)
            .map_err(|e| self.pin_error(module, e, "changing the PIN", PinRole::User));
        self.logout();
        result
    }

    /// Random bytes from the token's generator.
    pub fn random(&self, len: u32) -> Result<Vec<u8>, TokenError> {
        self.session
            .generate_random_vec(len)
            .map_err(|e| self.op_error(e, "generating random bytes"))
    }
}

/// A token's "no" to an operation (worth trying another mechanism for), not a PIN's, the
/// device's or the session's failure.
fn refused_by_token(e: &TokenError) -> bool {
    match e {
        TokenError::MechanismUnsupported { .. } => true,
        TokenError::Call { call, .. } => !matches!(
            call.code().as_str(),
            "DeviceError"
                | "DeviceMemory"
                | "HostMemory"
                | "SessionHandleInvalid"
                | "SessionClosed"
                | "CryptokiNotInitialized"
        ),
        _ => false,
    }
}

/// The SHA-256 digest of everything `data` yields, read in pieces.
fn sha256_of(data: &mut dyn Read) -> Result<[u8; 32], TokenError> {
    let mut hasher = Sha256::new();
    std::io::copy(data, &mut hasher).map_err(|source| TokenError::Input {
        what: "reading the data to sign",
        source,
    })?;
    Ok(hasher.finalize().into())
}

/// The DER prefix of a PKCS#1 v1.5 DigestInfo for SHA-256 (RFC 8017 §9.2, note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// The DigestInfo that `CKM_RSA_PKCS` pads and signs for a SHA-256 PKCS#1 v1.5 signature.
fn sha256_digest_info(digest: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SHA256_DIGEST_INFO_PREFIX.len() + digest.len());
    out.extend_from_slice(&SHA256_DIGEST_INFO_PREFIX);
    out.extend_from_slice(digest);
    out
}

impl KeyRef {
    /// The object handle, for the other adapter files.
    pub(crate) fn object(&self) -> ObjectHandle {
        self.handle
    }

    /// The key's type.
    pub fn kind(&self) -> KeyKind {
        self.key_type
    }

    /// `CKA_ALWAYS_AUTHENTICATE`.
    pub fn always_authenticate(&self) -> bool {
        self.always_authenticate
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING around the point; some modules return the bare point.
fn unwrap_octet_string(v: &[u8]) -> Vec<u8> {
    match v {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => rest.to_vec(),
        [0x04, 0x81, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
        _ => v.to_vec(),
    }
}

/// Lowercase hex (`base16ct`, keyward's one hex codec).
pub fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// Bytes from hex of either case (`base16ct`); `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    base16ct::mixed::decode_vec(text).ok()
}
