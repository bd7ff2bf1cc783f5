//! Key transport and archive on tokens: decryption key pairs, AES archive keys, AES key wrap
//! with padding (RFC 5649), RSA-OAEP wrapping and decryption, certificates as token objects.

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{
    Attribute, AttributeType, CertificateType, KeyType, ObjectClass, ObjectHandle,
};
use zeroize::Zeroizing;

use super::error::TokenError;
use super::keys::RawPublicKey;
use super::session::TokenSession;
use super::template::{self, Protection, Storage, Usage};

/// A token object found or made in this session (opaque to the layers above).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectRef(pub(crate) ObjectHandle);

/// The hash of RSA-OAEP (with MGF1 of the same hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OaepHash {
    /// SHA-1: what SoftHSM 2.6 supports; OAEP's security does not rest on collision resistance.
    Sha1,
    /// SHA-256: preferred where the token supports it.
    Sha256,
}

impl OaepHash {
    fn mechanism(self) -> Mechanism<'static> {
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }
}

/// How a message's content-encryption key was encrypted to a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTransportScheme {
    /// RSAES-PKCS1-v1_5.
    RsaPkcs1v15,
    /// RSAES-OAEP with this hash.
    RsaOaep(OaepHash),
}

/// How a private key arriving wrapped is stored.
#[derive(Debug, Clone)]
pub struct UnwrapTemplate<'a> {
    /// Keep it on the token (`CKA_TOKEN`), or only for this session.
    pub persistent: bool,
    /// `CKA_ID`.
    pub id: &'a [u8],
    /// `CKA_LABEL`.
    pub label: &'a str,
    /// May it be wrapped again (the authority's session copies only).
    pub extractable: bool,
    /// `CKA_ALWAYS_AUTHENTICATE`.
    pub always_authenticate: bool,
}

/// A new RSA decryption key pair.
#[derive(Debug, Clone)]
pub struct DecryptionPair<'a> {
    /// `CKA_ID` of both halves.
    pub id: &'a [u8],
    /// Label of the private key (the public one gets " (public)").
    pub label: &'a str,
    /// Modulus bits.
    pub bits: u32,
    /// On the token, or session objects only.
    pub persistent: bool,
    /// May the private key be wrapped (only for keys the authority archives).
    pub extractable: bool,
    /// `CKA_ALWAYS_AUTHENTICATE` on the private key.
    pub always_authenticate: bool,
}

/// A certificate to store on a token.
#[derive(Debug, Clone)]
pub struct CertObject<'a> {
    /// `CKA_ID`: the id of the certificate's key.
    pub id: &'a [u8],
    /// `CKA_LABEL`.
    pub label: &'a str,
    /// The certificate, DER.
    pub der: &'a [u8],
    /// Subject name, DER.
    pub subject: &'a [u8],
    /// Issuer name, DER.
    pub issuer: &'a [u8],
    /// Serial number, DER INTEGER.
    pub serial: &'a [u8],
}

impl TokenSession {
    /// Generates an RSA key pair whose private key decrypts and unwraps, and never signs.
    pub fn generate_decryption_pair(
        &self,
        p: &DecryptionPair<'_>,
    ) -> Result<(ObjectRef, ObjectRef), TokenError> {
        let public_label = format!("{} (public)", p.label);
        let storage = |label| Storage {
            persistent: p.persistent,
            id: Some(p.id),
            label: Some(label),
        };
        let params = [
            Attribute::ModulusBits(u64::from(p.bits).into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        ];
        let with_params = |mut public: Vec<Attribute>| {
            public.extend(params.iter().cloned());
            public
        };
        let templates = super::keygen::PairTemplates {
            public: with_params(template::public_key_generated(
                KeyType::RSA,
                storage(&public_label),
                Usage::ENCRYPT_WRAP,
            )),
            public_bare: with_params(template::public_key_bare(
                KeyType::RSA,
                storage(&public_label),
            )),
            public_usage: template::public_usage(Usage::ENCRYPT_WRAP),
            private: template::private_key(
                KeyType::RSA,
                storage(p.label),
                Usage::DECRYPT_UNWRAP,
                Protection {
                    extractable: p.extractable,
                    always_authenticate: p.always_authenticate,
                },
            ),
        };
        log::debug!(
            "C_GenerateKeyPair RSA-{} (decryption) on token {:?}",
            p.bits,
            self.token.label()
        );
        self.generate_pair_checked(
            &Mechanism::RsaPkcsKeyPairGen,
            &templates,
            p.id,
            super::keygen::MustKeep {
                persistent: p.persistent,
                extractable: p.extractable,
                always_authenticate: p.always_authenticate,
            },
            "decryption key pair",
        )
        .map(|(a, b)| (ObjectRef(a), ObjectRef(b)))
    }

    /// Puts back the public half of a pair made by [`TokenSession::generate_decryption_pair`]
    /// (a token object that encrypts and wraps, labelled `"{private_label} (public)"`) from its
    /// modulus and exponent: for undoing a step that removed it. A public key holds no secret,
    /// so nothing is lost in between.
    pub fn restore_decryption_public(
        &self,
        id: &[u8],
        private_label: &str,
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<ObjectRef, TokenError> {
        let label = format!("{private_label} (public)");
        let storage = Storage::on_token(id, &label);
        self.create_rsa_public(storage, Usage::ENCRYPT_WRAP, modulus, exponent)
            .map_err(|e| self.op_error(e, "putting back a public key"))
    }

    /// Generates the authority's AES-256 archive key: on the token, never extractable, wrap/unwrap only.
    pub fn generate_archive_key(&self, id: &[u8], label: &str) -> Result<ObjectRef, TokenError> {
        let mut template = template::secret_key(
            KeyType::AES,
            Storage::on_token(id, label),
            Usage::WRAP_UNWRAP,
            Protection::default(),
        );
        template.push(Attribute::ValueLen(32u64.into()));
        self.session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, "generating the archive key"))
    }

    /// A one-session AES-256 key that can be wrapped to a recipient (key transport).
    pub fn generate_transport_aes(&self) -> Result<ObjectRef, TokenError> {
        let mut template = template::secret_key(
            KeyType::AES,
            Storage::session_only(),
            Usage {
                wrap: true,
                ..Usage::default()
            },
            Protection {
                extractable: true,
                always_authenticate: false,
            },
        );
        template.push(Attribute::ValueLen(32u64.into()));
        self.session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, "generating a transport key"))
    }

    /// A one-session AES-256 key with the given value, able to wrap (the EST node's key
    /// transport on tokens that cannot wrap with CKM_AES_CBC_PAD: it knows the key it wraps
    /// under, see src/est/node.rs).
    pub fn import_wrapping_aes(&self, value: &[u8]) -> Result<ObjectRef, TokenError> {
        let mut template = template::secret_key(
            KeyType::AES,
            Storage::session_only(),
            Usage {
                wrap: true,
                ..Usage::default()
            },
            Protection {
                extractable: false,
                always_authenticate: false,
            },
        );
        template.push(Attribute::Value(value.to_vec()));
        self.session
            .create_object(&template)
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, "importing a wrapping key"))
    }

    /// The one object of `class` with `CKA_ID` = `id`, or `None`; several is an error.
    pub fn find_object(
        &self,
        class: ObjectKindFilter,
        id: &[u8],
    ) -> Result<Option<ObjectRef>, TokenError> {
        Ok(self.find_one(class.class(), id)?.map(ObjectRef))
    }

    /// The RSA public key of a public-key object.
    pub fn rsa_public_key(&self, key: ObjectRef) -> Result<RawPublicKey, TokenError> {
        let attrs = self
            .session
            .get_attributes(
                key.0,
                &[AttributeType::Modulus, AttributeType::PublicExponent],
            )
            .map_err(|e| self.op_error(e, "reading a public key"))?;
        let (mut modulus, mut exponent) = (Vec::new(), Vec::new());
        for a in attrs {
            match a {
                Attribute::Modulus(v) => modulus = v,
                Attribute::PublicExponent(v) => exponent = v,
                _ => {}
            }
        }
        Ok(RawPublicKey::Rsa { modulus, exponent })
    }

    /// Imports an RSA public key for this session only, to wrap or encrypt to it.
    pub fn import_rsa_public(
        &self,
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<ObjectRef, TokenError> {
        let storage = Storage::session_only();
        self.create_rsa_public(storage, Usage::ENCRYPT_WRAP, modulus, exponent)
            .map_err(|e| self.op_error(e, "importing a public key"))
    }

    /// Stores an RSA public key on the token (so tools find it beside its private key).
    pub fn store_rsa_public(
        &self,
        id: &[u8],
        label: &str,
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<ObjectRef, TokenError> {
        let encrypt = Usage {
            encrypt: true,
            ..Usage::default()
        };
        self.create_rsa_public(Storage::on_token(id, label), encrypt, modulus, exponent)
            .map_err(|e| self.op_error(e, "storing a public key"))
    }

    /// Creates an RSA public-key object from its modulus and exponent.
    fn create_rsa_public(
        &self,
        storage: Storage<'_>,
        usage: Usage,
        modulus: &[u8],
        exponent: &[u8],
    ) -> Result<ObjectRef, cryptoki::error::Error> {
        let mut template = template::public_key(KeyType::RSA, storage, usage);
        template.extend([
            Attribute::Modulus(modulus.to_vec()),
            Attribute::PublicExponent(exponent.to_vec()),
        ]);
        self.session.create_object(&template).map(ObjectRef)
    }

    /// Stores an X.509 certificate with the `CKA_ID` of its key.
    pub fn store_certificate(&self, c: &CertObject<'_>) -> Result<ObjectRef, TokenError> {
        let template = vec![
            Attribute::Class(ObjectClass::CERTIFICATE),
            Attribute::CertificateType(CertificateType::X_509),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Id(c.id.to_vec()),
            Attribute::Label(c.label.as_bytes().to_vec()),
            Attribute::Value(c.der.to_vec()),
            Attribute::Subject(c.subject.to_vec()),
            Attribute::Issuer(c.issuer.to_vec()),
            Attribute::SerialNumber(c.serial.to_vec()),
        ];
        match self.session.create_object(&template) {
            Ok(handle) => Ok(ObjectRef(handle)),
            Err(e) if super::caps::device_failure(&e) => {
                Err(self.op_error(e, "storing a certificate"))
            }
            Err(e) => {
                // A token that keeps one object per certificate (NSS softokn: by issuer and
                // serial) refuses the same certificate again — an archived key's certificate
                // that an older keyset on this token stored already. It is on the token: done.
                let same = self.session.find_objects(&[
                    Attribute::Class(ObjectClass::CERTIFICATE),
                    Attribute::Value(c.der.to_vec()),
                ]);
                match same.as_deref() {
                    Ok([existing, ..]) => {
                        log::debug!(
                            "storing a certificate failed ({e}); the same certificate is on the token already"
                        );
                        Ok(ObjectRef(*existing))
                    }
                    _ => Err(self.op_error(e, "storing a certificate")),
                }
            }
        }
    }

    /// Wraps a secret key to an RSA public key with RSA-OAEP.
    pub fn wrap_rsa_oaep(
        &self,
        wrapping: ObjectRef,
        key: ObjectRef,
        hash: OaepHash,
    ) -> Result<Vec<u8>, TokenError> {
        self.session
            .wrap_key(&hash.mechanism(), wrapping.0, key.0)
            .map_err(|e| self.op_error(e, "wrapping a key with RSA-OAEP"))
    }

    /// Unwraps an AES key wrapped with RSA-OAEP, for this session only, able to unwrap keys.
    pub fn unwrap_aes_rsa_oaep(
        &self,
        unwrapping: ObjectRef,
        wrapped: &[u8],
        hash: OaepHash,
    ) -> Result<ObjectRef, TokenError> {
        let template = template::secret_key(
            KeyType::AES,
            Storage::session_only(),
            Usage {
                unwrap: true,
                ..Usage::default()
            },
            Protection::default(),
        );
        self.session
            .unwrap_key(&hash.mechanism(), unwrapping.0, wrapped, &template)
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, "unwrapping a transport key with RSA-OAEP"))
    }

    /// Decrypts a short RSA-OAEP ciphertext (a key or code) with a private key on the token.
    pub fn decrypt_rsa_oaep(
        &self,
        key: ObjectRef,
        ciphertext: &[u8],
        hash: OaepHash,
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        self.session
            .decrypt(&hash.mechanism(), key.0, ciphertext)
            .map(Zeroizing::new)
            .map_err(|e| self.op_error(e, "decrypting with RSA-OAEP"))
    }

    /// Decrypts a key-transport block (a message's content-encryption key) with a private key,
    /// asking for the password again when the key has `CKA_ALWAYS_AUTHENTICATE`.
    pub fn decrypt_key_transport(
        &mut self,
        module: &super::module::Module,
        key: &super::keys::KeyRef,
        scheme: KeyTransportScheme,
        ciphertext: &[u8],
        pin: &secrecy::SecretString,
    ) -> Result<Zeroizing<Vec<u8>>, TokenError> {
        let mechanism = match scheme {
            KeyTransportScheme::RsaPkcs1v15 => Mechanism::RsaPkcs,
            KeyTransportScheme::RsaOaep(hash) => hash.mechanism(),
        };
        if key.always_authenticate() {
            return self
                .single_part_with_login(
                    module,
                    super::raw::SinglePart::Decrypt,
                    &mechanism,
                    key,
                    ciphertext,
                    pin,
                )
                .map(Zeroizing::new);
        }
        self.session
            .decrypt(&mechanism, key.object(), ciphertext)
            .map(Zeroizing::new)
            .map_err(|e| match &e {
                cryptoki::error::Error::Pkcs11(
                    cryptoki::error::RvError::GeneralError
                    | cryptoki::error::RvError::FunctionFailed
                    | cryptoki::error::RvError::EncryptedDataInvalid
                    | cryptoki::error::RvError::EncryptedDataLenRange
                    | cryptoki::error::RvError::DataInvalid,
                    _,
                ) => {
                    TokenError::Wrapper {
                        what: "decrypting the message key".to_string(),
                        reason: "it does not decrypt with this keyset's key: the message is corrupted or its key block was damaged".to_string(),
                    }
                }
                _ => self.op_error(e, "decrypting a message key"),
            })
    }

    /// Does the token accept RSA-OAEP with `hash` for this public key? (SoftHSM 2.6 takes SHA-1 only.)
    /// A failing device is an error, not a "no": it must not quietly downgrade the hash.
    pub fn supports_oaep(&self, public: ObjectRef, hash: OaepHash) -> Result<bool, TokenError> {
        use cryptoki::error::RvError;
        // One complete single-part operation: nothing is left active in the session.
        match self
            .session
            .encrypt(&hash.mechanism(), public.0, &[0u8; 16])
        {
            Ok(_) => Ok(true),
            Err(
                e @ cryptoki::error::Error::Pkcs11(
                    RvError::DeviceError
                    | RvError::DeviceRemoved
                    | RvError::DeviceMemory
                    | RvError::HostMemory
                    | RvError::TokenNotPresent
                    | RvError::TokenNotRecognized
                    | RvError::SessionHandleInvalid
                    | RvError::SessionClosed
                    | RvError::OperationActive,
                    _,
                ),
            ) => Err(self.op_error(e, "trying RSA-OAEP")),
            Err(e) => {
                log::debug!("RSA-OAEP with {hash:?} not supported: {e}");
                Ok(false)
            }
        }
    }

    /// Destroys one object.
    pub fn destroy(&self, obj: ObjectRef) -> Result<(), TokenError> {
        self.session
            .destroy_object(obj.0)
            .map_err(|e| self.op_error(e, "removing an object"))
    }
}

/// Which class of object [`TokenSession::find_object`] looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectKindFilter {
    /// `CKO_PRIVATE_KEY`.
    PrivateKey,
    /// `CKO_PUBLIC_KEY`.
    PublicKey,
    /// `CKO_SECRET_KEY`.
    SecretKey,
    /// `CKO_CERTIFICATE`.
    Certificate,
}

impl ObjectKindFilter {
    fn class(self) -> ObjectClass {
        match self {
            ObjectKindFilter::PrivateKey => ObjectClass::PRIVATE_KEY,
            ObjectKindFilter::PublicKey => ObjectClass::PUBLIC_KEY,
            ObjectKindFilter::SecretKey => ObjectClass::SECRET_KEY,
            ObjectKindFilter::Certificate => ObjectClass::CERTIFICATE,
        }
    }
}
