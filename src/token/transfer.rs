//! Moving private keys into and out of tokens: RFC 5649 wrap and unwrap with the token's own
//! mechanism for it, AES-CBC-PAD with a random IV, and import with `C_CreateObject` from
//! memory that is locked (where the OS allows) and zeroized.

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType};
use zeroize::Zeroizing;

use super::caps::Rfc5649Mechanism;
use super::error::TokenError;
use super::session::TokenSession;
use super::template::{self, Protection, Storage, Usage};
use super::wrap::{ObjectRef, UnwrapTemplate};

impl TokenSession {
    /// Wraps `key` under an AES key with `CKM_AES_CBC_PAD` and a fresh random IV: the IV
    /// (16 bytes) followed by the wrapped key.
    pub fn wrap_cbc_pad(&self, wrapping: ObjectRef, key: ObjectRef) -> Result<Vec<u8>, TokenError> {
        let iv: [u8; 16] = self
            .random(16)?
            .try_into()
            .map_err(|_| TokenError::Wrapper {
                what: "making an IV".into(),
                reason: "the token returned another number of random bytes".into(),
            })?;
        let wrapped = self
            .session
            .wrap_key(&Mechanism::AesCbcPad(iv), wrapping.0, key.0)
            .map_err(|e| self.op_error(e, "wrapping a key (CKM_AES_CBC_PAD)"))?;
        let mut out = iv.to_vec();
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// Unwraps an RSA private key made by [`TokenSession::wrap_cbc_pad`] (IV, then the wrapped
    /// key) into this token: decrypt and unwrap only, always sensitive.
    pub fn unwrap_private_cbc_pad(
        &self,
        unwrapping: ObjectRef,
        blob: &[u8],
        t: &UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, TokenError> {
        let (Some(iv), Some(wrapped)) = (blob.get(..16), blob.get(16..)) else {
            return Err(TokenError::Wrapper {
                what: "unwrapping a private key (CKM_AES_CBC_PAD)".into(),
                reason: "the wrapped key is shorter than its IV".into(),
            });
        };
        let mut iv16 = [0u8; 16];
        iv16.copy_from_slice(iv);
        let template = received_key_template(t);
        self.session
            .unwrap_key(
                &Mechanism::AesCbcPad(iv16),
                unwrapping.0,
                wrapped,
                &template,
            )
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, "unwrapping a private key (CKM_AES_CBC_PAD)"))
    }
}

/// Why importing a private key failed.
pub(crate) enum ImportFailure {
    /// The token refused.
    Token(CkError),
    /// The key itself does not decode.
    Decode(rsa::pkcs8::Error),
    /// The key lacks a part the token needs (the sentence says which).
    Key(&'static str),
}

impl TokenSession {
    /// `C_CreateObject` of an RSA private key given as PKCS#8 DER: sensitive, decrypt/unwrap
    /// only. The key's parts exist in this process only for the call and are zeroized after.
    pub(crate) fn create_rsa_private(
        &self,
        pkcs8: &[u8],
        t: &UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, ImportFailure> {
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        use zeroize::Zeroize;
        let key = rsa::RsaPrivateKey::from_pkcs8_der(pkcs8).map_err(ImportFailure::Decode)?;
        let primes = key.primes();
        let (Some(p), Some(q), Some(dp), Some(dq), Some(qinv)) = (
            primes.first(),
            primes.get(1),
            key.dp(),
            key.dq(),
            key.crt_coefficient(),
        ) else {
            return Err(ImportFailure::Key("the private key lacks its CRT parts"));
        };
        let mut template = received_key_template(t);
        template.extend([
            Attribute::Modulus(key.n().to_bytes_be()),
            Attribute::PublicExponent(key.e().to_bytes_be()),
            Attribute::PrivateExponent(key.d().to_bytes_be()),
            Attribute::Prime1(p.to_bytes_be()),
            Attribute::Prime2(q.to_bytes_be()),
            Attribute::Exponent1(dp.to_bytes_be()),
            Attribute::Exponent2(dq.to_bytes_be()),
            Attribute::Coefficient(qinv.to_bytes_be()),
        ]);
        drop(key);
        let result = self.session.create_object(&template);
        for a in &mut template {
            match a {
                Attribute::PrivateExponent(v)
                | Attribute::Prime1(v)
                | Attribute::Prime2(v)
                | Attribute::Exponent1(v)
                | Attribute::Exponent2(v)
                | Attribute::Coefficient(v) => v.zeroize(),
                _ => {}
            }
        }
        result.map(ObjectRef).map_err(ImportFailure::Token)
    }
}

impl TokenSession {
    /// Wraps `key` under an AES key with RFC 5649, by this token's mechanism for it.
    pub fn wrap_rfc5649(
        &self,
        mech: Rfc5649Mechanism,
        wrapping: ObjectRef,
        key: ObjectRef,
    ) -> Result<Vec<u8>, TokenError> {
        self.session
            .wrap_key(&mech.mechanism(), wrapping.0, key.0)
            .map_err(|e| self.op_error(e, &format!("wrapping a key ({})", mech.name())))
    }

    /// Unwraps an RFC 5649-wrapped RSA private key into this token (decrypt and unwrap only,
    /// always sensitive), by this token's mechanism for RFC 5649.
    pub fn unwrap_private_rfc5649(
        &self,
        mech: Rfc5649Mechanism,
        unwrapping: ObjectRef,
        wrapped: &[u8],
        t: &UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, TokenError> {
        let template = received_key_template(t);
        self.session
            .unwrap_key(&mech.mechanism(), unwrapping.0, wrapped, &template)
            .map(ObjectRef)
            .map_err(|e| self.op_error(e, &format!("unwrapping a private key ({})", mech.name())))
    }

    /// Creates an RSA private key (PKCS#8 DER) on the token with `C_CreateObject`: decrypt
    /// and unwrap only, sensitive. Its parts are zeroized after the call.
    pub fn import_private_key(
        &self,
        pkcs8: &[u8],
        t: &UnwrapTemplate<'_>,
    ) -> Result<ObjectRef, TokenError> {
        self.create_rsa_private(pkcs8, t).map_err(|f| match f {
            ImportFailure::Token(e) => self.op_error(e, "importing a private key (C_CreateObject)"),
            ImportFailure::Decode(source) => TokenError::KeyDecode {
                what: "importing a private key",
                source,
            },
            ImportFailure::Key(reason) => TokenError::Wrapper {
                what: "importing a private key".into(),
                reason: reason.into(),
            },
        })
    }
}

/// Secret bytes in this process's memory: locked into RAM where the OS allows it (`mlock`; a
/// refusal, e.g. over `RLIMIT_MEMLOCK`, is logged and the bytes stay usable) and zeroized when
/// dropped — after the lock is released.
pub struct LockedSecret {
    _lock: Option<region::LockGuard>,
    bytes: Zeroizing<Vec<u8>>,
}

impl LockedSecret {
    /// Locks the buffer of `bytes` (which must not grow afterwards; it cannot from here).
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> LockedSecret {
        let lock = if bytes.is_empty() {
            None
        } else {
            match region::lock(bytes.as_ptr(), bytes.len()) {
                Ok(guard) => Some(guard),
                Err(e) => {
                    log::debug!("cannot lock a secret in memory: {e}");
                    None
                }
            }
        };
        LockedSecret { _lock: lock, bytes }
    }
}

impl std::ops::Deref for LockedSecret {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Unwraps an RFC 5649 blob with a 256-bit AES key in this process's memory, for an import:
/// the PKCS#8 key, cut to its DER length (SoftHSM 2.6 pads with zeros before wrapping), in
/// locked memory that is zeroized when dropped.
pub fn unwrap_rfc5649_in_memory(kek: &[u8], blob: &[u8]) -> Option<LockedSecret> {
    let mut plain = super::reference::rfc5649_unwrap(kek, blob)?;
    let len = der_length(&plain)?;
    if len > plain.len() || plain[len..].iter().any(|b| *b != 0) {
        return None;
    }
    zeroize::Zeroize::zeroize(&mut plain[len..]);
    plain.truncate(len);
    Some(LockedSecret::new(plain))
}

/// The length of the DER element at the start of `b` (tag, length and contents).
fn der_length(b: &[u8]) -> Option<usize> {
    let first = *b.get(1)?;
    if first < 0x80 {
        return Some(2 + usize::from(first));
    }
    let n = usize::from(first & 0x7f);
    if n == 0 || n > 4 {
        return None;
    }
    let mut len = 0usize;
    for i in 0..n {
        len = (len << 8) | usize::from(*b.get(2 + i)?);
    }
    Some(2 + n + len)
}

/// The template of an RSA decryption key received into the token (unwrapped or imported).
fn received_key_template(t: &UnwrapTemplate<'_>) -> Vec<Attribute> {
    template::private_key(
        KeyType::RSA,
        Storage {
            persistent: t.persistent,
            id: Some(t.id),
            label: Some(t.label),
        },
        Usage::DECRYPT_UNWRAP,
        Protection {
            extractable: t.extractable,
            always_authenticate: t.always_authenticate,
        },
    )
}
