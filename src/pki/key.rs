//! Public keys and signatures in the encodings other tools read: SPKI PEM, PKCS#1 v1.5
//! signatures for RSA, DER ECDSA signatures for P-256.

use der::asn1::ObjectIdentifier;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::pkcs1v15;
use rsa::signature::Verifier;
use sha2::Sha256;
use spki::AlgorithmIdentifierOwned;

use crate::token::RawPublicKey;

/// `sha256WithRSAEncryption`.
pub const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
/// `ecdsa-with-SHA256`.
pub const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
/// `rsaEncryption` (an RSA SubjectPublicKeyInfo).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// `id-ecPublicKey`.
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The fewest bits an RSA key keyward certifies or encrypts to may have.
pub const MIN_RSA_BITS: usize = 2048;

/// Errors with keys and signatures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The token's public key (or signature) cannot be encoded.
    #[error("the token returned a public key keyward cannot encode: {source}")]
    Encode {
        /// The encoder's error (RSA, P-256, SPKI).
        source: BoxError,
    },
    /// A stored public key does not parse.
    #[error("the stored public key does not parse ({source}); the registry entry is damaged")]
    Decode {
        /// The decoder's error (PEM, SPKI, RSA).
        source: BoxError,
    },
    /// A stored public key is PEM, but not a public key.
    #[error("the stored public key does not parse (a {label:?} PEM block, not \"PUBLIC KEY\"); the registry entry is damaged")]
    PemLabel {
        /// The PEM block's label.
        label: String,
    },
    /// A stored public key is neither RSA nor P-256.
    #[error("the stored public key does not parse (key algorithm {oid} is neither RSA nor EC on P-256); the registry entry is damaged")]
    Algorithm {
        /// The key's algorithm (the curve's OID for an EC key on another curve).
        oid: ObjectIdentifier,
    },
    /// A key too weak to certify (RSA below [`MIN_RSA_BITS`]).
    #[error("is RSA with {bits} bits; keyward certifies RSA keys of {MIN_RSA_BITS} bits or more, or EC keys on P-256: make a new key")]
    TooWeak {
        /// The RSA modulus' length in bits.
        bits: usize,
    },
    /// The signature does not verify.
    #[error("signature does NOT verify: the file or the signature was changed, or it was made by another key")]
    BadSignature,
}

/// A lower-level encoder's or decoder's error, kept as the source.
type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

fn encode_err(e: impl std::error::Error + Send + Sync + 'static) -> KeyError {
    KeyError::Encode {
        source: Box::new(e),
    }
}

fn decode_err(e: impl std::error::Error + Send + Sync + 'static) -> KeyError {
    KeyError::Decode {
        source: Box::new(e),
    }
}

/// A public key that verifies keyward's signatures.
#[derive(Debug, Clone)]
pub enum PublicKey {
    /// RSA.
    Rsa(rsa::RsaPublicKey),
    /// ECDSA P-256.
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    /// From the token's raw form.
    pub fn from_raw(raw: &RawPublicKey) -> Result<PublicKey, KeyError> {
        match raw {
            RawPublicKey::Rsa { modulus, exponent } => rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(modulus),
                rsa::BigUint::from_bytes_be(exponent),
            )
            .map(PublicKey::Rsa)
            .map_err(encode_err),
            RawPublicKey::Ec { point, .. } => p256::ecdsa::VerifyingKey::from_sec1_bytes(point)
                .map(PublicKey::P256)
                .map_err(encode_err),
        }
    }

    /// From SubjectPublicKeyInfo PEM.
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let (label, der) = der::pem::decode_vec(pem.trim().as_bytes())
            .map_err(|e| decode_err(der::Error::from(e)))?;
        if label != "PUBLIC KEY" {
            return Err(KeyError::PemLabel {
                label: label.to_string(),
            });
        }
        PublicKey::from_spki_der(&der)
    }

    /// From SubjectPublicKeyInfo DER, parsed as what its algorithm says it is.
    pub fn from_spki_der(der: &[u8]) -> Result<PublicKey, KeyError> {
        use der::Decode;
        let spki = spki::SubjectPublicKeyInfoRef::from_der(der).map_err(decode_err)?;
        match spki.algorithm.oid {
            RSA_ENCRYPTION => rsa::RsaPublicKey::from_public_key_der(der)
                .map(PublicKey::Rsa)
                .map_err(decode_err),
            EC_PUBLIC_KEY => p256::ecdsa::VerifyingKey::from_public_key_der(der)
                .map(PublicKey::P256)
                .map_err(|_| KeyError::Algorithm {
                    oid: spki
                        .algorithm
                        .parameters_oid()
                        .unwrap_or(spki.algorithm.oid),
                }),
            oid => Err(KeyError::Algorithm { oid }),
        }
    }

    /// Checks the key is strong enough to certify or encrypt to: RSA of [`MIN_RSA_BITS`] or
    /// more (P-256 keys are the only EC keys [`PublicKey`] holds). The one check every
    /// issuance from a request (EST, request files) and every transport key goes through.
    pub fn check_strength(&self) -> Result<(), KeyError> {
        use rsa::traits::PublicKeyParts;
        match self {
            PublicKey::Rsa(k) if k.n().bits() < MIN_RSA_BITS => {
                Err(KeyError::TooWeak { bits: k.n().bits() })
            }
            _ => Ok(()),
        }
    }

    /// RSA modulus and public exponent, big-endian (`None` for EC keys).
    pub fn rsa_parts(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        use rsa::traits::PublicKeyParts;
        match self {
            PublicKey::Rsa(k) => Some((k.n().to_bytes_be(), k.e().to_bytes_be())),
            PublicKey::P256(_) => None,
        }
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> Result<String, KeyError> {
        match self {
            PublicKey::Rsa(k) => k.to_public_key_pem(LineEnding::LF),
            PublicKey::P256(k) => k.to_public_key_pem(LineEnding::LF),
        }
        .map_err(encode_err)
    }

    /// SubjectPublicKeyInfo DER.
    pub fn to_der(&self) -> Result<Vec<u8>, KeyError> {
        match self {
            PublicKey::Rsa(k) => k.to_public_key_der(),
            PublicKey::P256(k) => k.to_public_key_der(),
        }
        .map(|d| d.into_vec())
        .map_err(encode_err)
    }

    /// The signature algorithm keyward uses with this key.
    pub fn signature_algorithm(&self) -> AlgorithmIdentifierOwned {
        match self {
            PublicKey::Rsa(_) => AlgorithmIdentifierOwned {
                oid: SHA256_WITH_RSA,
                parameters: Some(der::asn1::Null.into()),
            },
            PublicKey::P256(_) => AlgorithmIdentifierOwned {
                oid: ECDSA_WITH_SHA256,
                parameters: None,
            },
        }
    }

    /// Whether `signature` has the form this key's signatures have (PKCS#1 v1.5: exactly the
    /// modulus' length; ECDSA: DER), before checking it.
    pub fn is_signature_well_formed(&self, signature: &[u8]) -> bool {
        match self {
            PublicKey::Rsa(k) => {
                use rsa::traits::PublicKeyParts;
                signature.len() == k.size() && pkcs1v15::Signature::try_from(signature).is_ok()
            }
            PublicKey::P256(_) => p256::ecdsa::Signature::from_der(signature).is_ok(),
        }
    }

    /// Verifies a signature as `keyset sign` writes it (PKCS#1 v1.5 SHA-256, or DER ECDSA SHA-256).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        match self {
            PublicKey::Rsa(k) => {
                let full = rsa_signature_at_full_length(k, signature);
                let sig = pkcs1v15::Signature::try_from(full.as_ref())
                    .map_err(|_| KeyError::BadSignature)?;
                pkcs1v15::VerifyingKey::<Sha256>::new(k.clone())
                    .verify(message, &sig)
                    .map_err(|_| KeyError::BadSignature)
            }
            PublicKey::P256(k) => {
                let sig = p256::ecdsa::Signature::from_der(signature)
                    .map_err(|_| KeyError::BadSignature)?;
                k.verify(message, &sig).map_err(|_| KeyError::BadSignature)
            }
        }
    }
}

/// An RSA signature as exactly the modulus' length, the form the `rsa` crate checks.
///
/// PKCS#1 says a signature is an octet string as long as the modulus, but GnuPG's `gpgsm`
/// keeps the value as an integer: it drops leading zero bytes (once in 256 signatures) and
/// puts a zero byte in front when the top bit is set (often). The value is the same integer,
/// so it is brought back to the modulus' length; any other length is left as it is and fails.
pub fn rsa_signature_at_full_length<'a>(
    key: &rsa::RsaPublicKey,
    signature: &'a [u8],
) -> std::borrow::Cow<'a, [u8]> {
    use rsa::traits::PublicKeyParts;
    let k = key.size();
    if signature.len() > k {
        // A leading zero byte added to keep the integer positive (GnuPG writes the value
        // as a signed integer when its top bit is set): the same value, one byte shorter.
        let extra = signature.len() - k;
        if signature[..extra].iter().all(|b| *b == 0) {
            return std::borrow::Cow::Borrowed(&signature[extra..]);
        }
        return std::borrow::Cow::Borrowed(signature);
    }
    if signature.len() == k {
        return std::borrow::Cow::Borrowed(signature);
    }
    let mut full = vec![0u8; k - signature.len()];
    full.extend_from_slice(signature);
    std::borrow::Cow::Owned(full)
}

/// Turns a raw `r || s` ECDSA signature into DER, as OpenSSL and X.509 expect.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, KeyError> {
    p256::ecdsa::Signature::from_slice(raw)
        .map(|s| s.to_der().as_bytes().to_vec())
        .map_err(encode_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::signature::{SignatureEncoding, Signer};

    /// RSA below 2048 bits is refused with its size; 2048 and P-256 pass.
    #[test]
    fn weak_rsa_keys_are_refused_with_their_size() {
        let mut rng = rand_core::OsRng;
        let weak = PublicKey::Rsa(
            rsa::RsaPrivateKey::new(&mut rng, 1024)
                .unwrap()
                .to_public_key(),
        );
        let e = weak.check_strength().unwrap_err();
        assert!(e.to_string().contains("1024 bits"), "{e}");
        let ok = PublicKey::Rsa(
            rsa::RsaPrivateKey::new(&mut rng, 2048)
                .unwrap()
                .to_public_key(),
        );
        ok.check_strength().unwrap();
        let ec = p256::SecretKey::random(&mut rng).public_key();
        PublicKey::P256(ec.into()).check_strength().unwrap();
    }

    /// A signature whose leading zero byte a signer dropped (as gpgsm does) still verifies;
    /// one with a byte changed does not.
    #[test]
    fn rsa_signature_without_its_leading_zero_verifies() {
        let mut rng = rand_core::OsRng;
        let private = rsa::RsaPrivateKey::new(&mut rng, 1024).expect("key");
        let key = PublicKey::Rsa(private.to_public_key());
        let signer = pkcs1v15::SigningKey::<Sha256>::new(private);
        let (message, signature) = (0u32..)
            .map(|i| {
                let m = i.to_be_bytes().to_vec();
                let s = signer.sign(&m).to_vec();
                (m, s)
            })
            .find(|(_, s)| s[0] == 0)
            .expect("one in 256 signatures starts with a zero byte");
        let short = &signature[1..];
        key.verify(&message, &signature).expect("full length");
        key.verify(&message, short).expect("leading zero dropped");
        let mut long = vec![0u8];
        long.extend_from_slice(&signature);
        key.verify(&message, &long)
            .expect("a zero byte put in front");
        let mut bad = short.to_vec();
        bad[10] ^= 1;
        assert!(key.verify(&message, &bad).is_err());
    }
}
