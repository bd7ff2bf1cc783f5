//! Key object templates. Every key keyward makes, unwraps or imports gets its class, type,
//! storage, protection and every usage flag set explicitly from one description here, so no
//! attribute is ever left to a token's default.

use cryptoki::object::{Attribute, KeyType, ObjectClass};

/// What a key object may be used for; every usage not set is written as false.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Usage {
    pub sign: bool,
    pub verify: bool,
    pub encrypt: bool,
    pub decrypt: bool,
    pub wrap: bool,
    pub unwrap: bool,
}

impl Usage {
    /// A signing private key.
    pub const SIGN: Usage = Usage {
        sign: true,
        ..Usage::none()
    };
    /// A signature-checking public key.
    pub const VERIFY: Usage = Usage {
        verify: true,
        ..Usage::none()
    };
    /// A private key that decrypts and unwraps.
    pub const DECRYPT_UNWRAP: Usage = Usage {
        decrypt: true,
        unwrap: true,
        ..Usage::none()
    };
    /// A public key (or secret key) that encrypts and wraps.
    pub const ENCRYPT_WRAP: Usage = Usage {
        encrypt: true,
        wrap: true,
        ..Usage::none()
    };
    /// A key that only wraps and unwraps other keys.
    pub const WRAP_UNWRAP: Usage = Usage {
        wrap: true,
        unwrap: true,
        ..Usage::none()
    };

    const fn none() -> Usage {
        Usage {
            sign: false,
            verify: false,
            encrypt: false,
            decrypt: false,
            wrap: false,
            unwrap: false,
        }
    }
}

/// Where a key object lives and what names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Storage<'a> {
    /// `CKA_TOKEN`: kept on the token (else gone when the session closes).
    pub persistent: bool,
    /// `CKA_ID`, when the object belongs to a key set (with its other half and certificate).
    pub id: Option<&'a [u8]>,
    /// `CKA_LABEL`.
    pub label: Option<&'a str>,
}

impl<'a> Storage<'a> {
    /// A token object with an id and a label.
    pub fn on_token(id: &'a [u8], label: &'a str) -> Storage<'a> {
        Storage {
            persistent: true,
            id: Some(id),
            label: Some(label),
        }
    }

    /// A nameless object of this session only.
    pub fn session_only() -> Storage<'static> {
        Storage {
            persistent: false,
            id: None,
            label: None,
        }
    }

    fn attributes(&self, class: ObjectClass, key_type: KeyType) -> Vec<Attribute> {
        let mut out = vec![
            Attribute::Class(class),
            Attribute::KeyType(key_type),
            Attribute::Token(self.persistent),
        ];
        if let Some(id) = self.id {
            out.push(Attribute::Id(id.to_vec()));
        }
        if let Some(label) = self.label {
            out.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        out
    }
}

/// How a private or secret key is protected.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Protection {
    /// `CKA_EXTRACTABLE` (it is always `CKA_SENSITIVE`: never leaves the token in the clear).
    pub extractable: bool,
    /// `CKA_ALWAYS_AUTHENTICATE`: every use asks for the PIN (private keys only).
    pub always_authenticate: bool,
}

/// A public key: not private, the usages a public key can have.
pub(crate) fn public_key(key_type: KeyType, storage: Storage<'_>, usage: Usage) -> Vec<Attribute> {
    let mut t = storage.attributes(ObjectClass::PUBLIC_KEY, key_type);
    t.extend([
        Attribute::Private(false),
        Attribute::Verify(usage.verify),
        Attribute::Encrypt(usage.encrypt),
        Attribute::Wrap(usage.wrap),
        Attribute::Derive(false),
    ]);
    t
}

/// A public key made by key-pair generation: `CKA_WRAP` and `CKA_DERIVE` explicit (a public key
/// that may wrap lets the token export secret keys to it), `CKA_VERIFY` and `CKA_ENCRYPT` left to
/// the token, which may derive them from the key (tpm2-pkcs11 refuses the generation when a
/// template disagrees with it). They grant nothing: what the key pair may do is decided by its
/// private half.
pub(crate) fn public_key_generated(
    key_type: KeyType,
    storage: Storage<'_>,
    usage: Usage,
) -> Vec<Attribute> {
    let mut t = storage.attributes(ObjectClass::PUBLIC_KEY, key_type);
    t.extend([
        Attribute::Private(false),
        Attribute::Wrap(usage.wrap),
        Attribute::Derive(false),
    ]);
    t
}

/// The usage flags [`public_key_generated`] leaves out, as `usage` wants them.
pub(crate) fn public_usage(usage: Usage) -> Vec<Attribute> {
    vec![
        Attribute::Verify(usage.verify),
        Attribute::Encrypt(usage.encrypt),
    ]
}

/// A public key without usage flags, for tokens that decide them all (see `keygen.rs`).
pub(crate) fn public_key_bare(key_type: KeyType, storage: Storage<'_>) -> Vec<Attribute> {
    let mut t = storage.attributes(ObjectClass::PUBLIC_KEY, key_type);
    t.push(Attribute::Private(false));
    t
}

/// A private key: private, sensitive, the usages a private key can have.
pub(crate) fn private_key(
    key_type: KeyType,
    storage: Storage<'_>,
    usage: Usage,
    protection: Protection,
) -> Vec<Attribute> {
    let mut t = storage.attributes(ObjectClass::PRIVATE_KEY, key_type);
    t.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(protection.extractable),
        Attribute::Sign(usage.sign),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Unwrap(usage.unwrap),
        Attribute::Derive(false),
        Attribute::AlwaysAuthenticate(protection.always_authenticate),
    ]);
    t
}

/// A secret (AES) key: private, sensitive, the usages a secret key can have.
pub(crate) fn secret_key(
    key_type: KeyType,
    storage: Storage<'_>,
    usage: Usage,
    protection: Protection,
) -> Vec<Attribute> {
    let mut t = storage.attributes(ObjectClass::SECRET_KEY, key_type);
    t.extend([
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(protection.extractable),
        Attribute::Encrypt(usage.encrypt),
        Attribute::Decrypt(usage.decrypt),
        Attribute::Wrap(usage.wrap),
        Attribute::Unwrap(usage.unwrap),
        Attribute::Sign(usage.sign),
        Attribute::Verify(usage.verify),
        Attribute::Derive(false),
    ]);
    t
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use cryptoki::object::AttributeType;

    use super::*;

    /// Each attribute type once (a conflicting duplicate is CKR_TEMPLATE_INCONSISTENT on many
    /// HSMs; SoftHSM silently keeps the last), and exactly `want`.
    fn assert_template(t: &[Attribute], want: &[Attribute]) {
        let types: Vec<AttributeType> = t.iter().map(Attribute::attribute_type).collect();
        let unique: HashSet<AttributeType> = types.iter().copied().collect();
        assert_eq!(unique.len(), types.len(), "a type twice in {t:?}");
        assert_eq!(t.len(), want.len(), "{t:?}\nwanted {want:?}");
        for w in want {
            assert!(t.contains(w), "{w:?} missing from {t:?}");
        }
    }

    #[test]
    fn a_signing_private_key_signs_only_and_never_leaves() {
        let t = private_key(
            KeyType::RSA,
            Storage::on_token(b"\x01", "k"),
            Usage::SIGN,
            Protection {
                extractable: false,
                always_authenticate: true,
            },
        );
        assert_template(
            &t,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(true),
                Attribute::Id(vec![1]),
                Attribute::Label(b"k".to_vec()),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Decrypt(false),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::AlwaysAuthenticate(true),
            ],
        );
    }

    #[test]
    fn a_session_public_key_has_no_name_and_only_its_usages() {
        let t = public_key(KeyType::RSA, Storage::session_only(), Usage::ENCRYPT_WRAP);
        assert_template(
            &t,
            &[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::RSA),
                Attribute::Token(false),
                Attribute::Private(false),
                Attribute::Verify(false),
                Attribute::Encrypt(true),
                Attribute::Wrap(true),
                Attribute::Derive(false),
            ],
        );
    }

    #[test]
    fn a_generated_public_key_leaves_verify_and_encrypt_to_the_token() {
        let t = public_key_generated(
            KeyType::EC,
            Storage::on_token(b"\x03", "k (public)"),
            Usage::VERIFY,
        );
        assert_template(
            &t,
            &[
                Attribute::Class(ObjectClass::PUBLIC_KEY),
                Attribute::KeyType(KeyType::EC),
                Attribute::Token(true),
                Attribute::Id(vec![3]),
                Attribute::Label(b"k (public)".to_vec()),
                Attribute::Private(false),
                Attribute::Wrap(false),
                Attribute::Derive(false),
            ],
        );
    }

    #[test]
    fn the_archive_key_wraps_and_unwraps_only_and_never_leaves() {
        let t = secret_key(
            KeyType::AES,
            Storage::on_token(b"\x02", "archive"),
            Usage::WRAP_UNWRAP,
            Protection::default(),
        );
        assert_template(
            &t,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(true),
                Attribute::Id(vec![2]),
                Attribute::Label(b"archive".to_vec()),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::Sign(false),
                Attribute::Verify(false),
                Attribute::Derive(false),
            ],
        );
    }
}
