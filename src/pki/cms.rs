//! CMS (RFC 5652) for S/MIME messages: SignedData and EnvelopedData, readable and writable
//! by `openssl cms`.
//!
//! Private keys stay on tokens, so this module never sees one:
//! - [`sign`] builds the signed attributes and hands their DER to a [`ContentSigner`], which
//!   signs on the token; the signature is checked with the certificate's key before use.
//! - [`encrypt`] encrypts the content with AES-256-CBC under a fresh random key and wraps that
//!   key to each recipient's RSA certificate (PKCS#1 v1.5 or OAEP) in software.
//! - Reading is two steps: [`recipients`] lists the key-transport slots (issuer + serial),
//!   the caller picks its slot (see [`match_recipient`]) and decrypts the slot's
//!   `encrypted_key` on its token, then [`decrypt_content`] decrypts the content with it.
//! - [`verify`] checks a SignedData's one signer: messageDigest, contentType and the signature
//!   with the signer's certificate from the message (RSA PKCS#1 v1.5 or ECDSA P-256, both
//!   SHA-256). Chain, validity and CRL checks are the caller's (`authority::x509`).
//!
//! Sign-then-encrypt the way S/MIME mail (and `openssl cms -sign | openssl cms -encrypt`) does
//! it: the encrypted content is of type id-data and holds the signed message's *MIME entity*
//! ([`super::smime::wrap_signed`]), so `openssl cms -decrypt` prints an S/MIME message that
//! `openssl cms -verify` reads as is. [`InnerType::SignedData`] (the SignedData itself as the
//! encrypted content, RFC 5652 nesting) is written and read too, but openssl's command line
//! cannot verify what it decrypts from such a message.
//!
//! Input may be DER or BER (indefinite lengths, constructed OCTET STRINGs, as `openssl cms
//! -stream` writes); output is DER.

use std::borrow::Cow;
use std::time::SystemTime;

use aes::cipher::block_padding::Pkcs7;
use aes::cipher::{BlockCipher, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedData, SignerIdentifier, SignerInfo, SignerInfos,
};
use der::asn1::{ObjectIdentifier, OctetString, SetOfVec};
use der::oid::db::{rfc5911, rfc5912};
use der::{Any, Decode, Encode, Tag, Tagged};
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifierOwned;
use x509_cert::attr::{Attribute, Attributes};
use x509_cert::ext::pkix::SubjectKeyIdentifier;
use x509_cert::time::Time;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::key::PublicKey;

/// Signs on a token for [`sign`].
pub trait ContentSigner {
    /// The signer's certificate; it goes into the message and identifies the signer.
    fn certificate(&self) -> &Certificate;
    /// The signature algorithm as it goes into the SignerInfo: sha256WithRSAEncryption (or
    /// rsaEncryption) for an RSA key, ecdsa-with-SHA256 for a P-256 key.
    fn algorithm(&self) -> AlgorithmIdentifierOwned;
    /// Signs the DER of the SignedAttributes SET (RSA PKCS#1 v1.5 SHA-256, or DER ECDSA P-256
    /// SHA-256); the signer hashes the bytes itself. The error says what the token refused.
    fn sign(&mut self, signed_attrs_der: &[u8]) -> Result<Vec<u8>, super::SignError>;
}

/// How the content-encryption key is wrapped to a recipient's RSA key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyTransport {
    /// RSAES-PKCS1-v1_5 (rsaEncryption); what most mail clients write.
    RsaPkcs1v15,
    /// RSAES-OAEP with the RFC 3560 default parameters: SHA-1, MGF1-SHA1, empty label.
    RsaOaepSha1,
    /// RSAES-OAEP with SHA-256 and MGF1-SHA256, empty label.
    RsaOaepSha256,
}

/// One recipient of [`encrypt`].
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    /// The recipient's encryption certificate (RSA key).
    pub cert: &'a Certificate,
    /// How the content key is wrapped to it.
    pub transport: KeyTransport,
}

/// What the encrypted content of an EnvelopedData is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InnerType {
    /// id-data: any bytes; for S/MIME sign-then-encrypt the signed message's MIME entity
    /// ([`super::smime::wrap_signed`]), which is what openssl and mail clients write and read.
    Data,
    /// id-signedData: the SignedData itself (RFC 5652 nesting; no ContentInfo around it).
    SignedData,
}

impl InnerType {
    fn oid(self) -> ObjectIdentifier {
        match self {
            InnerType::Data => rfc5911::ID_DATA,
            InnerType::SignedData => rfc5911::ID_SIGNED_DATA,
        }
    }
}

/// What went wrong building, reading, decrypting or checking a CMS message.
#[derive(Debug, thiserror::Error)]
pub enum CmsError {
    /// The bytes are not a CMS message at all.
    #[error("not a CMS message: {0}")]
    NotCms(String),
    /// The message ends early.
    #[error("the message is truncated: {0}; get the whole file again")]
    Truncated(String),
    /// The message does not parse.
    #[error("the message is corrupted: {0}")]
    Corrupted(String),
    /// A signed message was expected.
    #[error("this is {0}, not a signed message")]
    NotSigned(String),
    /// An encrypted message was expected.
    #[error("this is {0}, not an encrypted message")]
    NotEnveloped(String),
    /// No recipient slot matches the caller's certificates.
    #[error("not encrypted to any of your keys: none of the message's {slots} recipients is one of your {certs} current or archived encryption certificates")]
    NotForYou {
        /// Recipient slots in the message.
        slots: usize,
        /// Certificates tried.
        certs: usize,
    },
    /// The recipient slot uses a key-transport algorithm this module does not know.
    #[error("unsupported key transport algorithm OID {0}; keyward reads RSA PKCS#1 v1.5 and RSA-OAEP (SHA-1 or SHA-256)")]
    UnsupportedKeyTransport(String),
    /// The content is encrypted with an algorithm this module does not know.
    #[error("unsupported content encryption algorithm OID {0}; keyward reads AES-128, AES-192 and AES-256 in CBC mode")]
    UnsupportedContentEncryption(String),
    /// The decrypted content is neither data nor signed data.
    #[error("the encrypted content has type OID {0}; keyward reads data and signed data")]
    UnsupportedInnerType(String),
    /// The signature uses a digest other than SHA-256.
    #[error("unsupported digest algorithm OID {0}; keyward accepts SHA-256 signatures only")]
    UnsupportedDigest(String),
    /// The signature algorithm does not fit or is not supported.
    #[error("unsupported signature algorithm OID {algorithm} for a {key} key; keyward accepts RSA PKCS#1 v1.5 and ECDSA P-256, both with SHA-256")]
    UnsupportedSignature {
        /// The algorithm OID (with its name when known).
        algorithm: String,
        /// The key type.
        key: &'static str,
    },
    /// A certificate's public key cannot be used (the sentence says why).
    #[error("the certificate for {subject} has an unusable key: {reason}")]
    UnusableKey {
        /// The certificate's subject.
        subject: String,
        /// What is wrong with the key.
        reason: &'static str,
    },
    /// A certificate's public key does not decode.
    #[error("the certificate for {subject} has an unusable key: {source}")]
    BadKey {
        /// The certificate's subject.
        subject: String,
        /// The decoder's error (SubjectPublicKeyInfo or key).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A certificate's key is neither RSA nor EC.
    #[error("the certificate for {subject} has an unusable key: key algorithm {algorithm} is neither RSA nor EC")]
    UnsupportedKey {
        /// The certificate's subject.
        subject: String,
        /// The key's algorithm OID (with its name when known).
        algorithm: String,
    },
    /// [`encrypt`] was given no recipients.
    #[error("no recipients given; name at least one certificate to encrypt to")]
    NoRecipients,
    /// The content-encryption key has the wrong length for the algorithm.
    #[error("the content-encryption key has {got} bytes but {algorithm} needs {want}; it was decrypted with the wrong key, or the message is corrupted")]
    ContentKeyLength {
        /// Bytes given.
        got: usize,
        /// Bytes needed.
        want: usize,
        /// The content-encryption algorithm.
        algorithm: &'static str,
    },
    /// The content does not decrypt (bad padding).
    #[error("the content does not decrypt with this key (bad padding); the key belongs to another recipient, or the message is corrupted")]
    DecryptFailed,
    /// The encrypted content is not in the message.
    #[error("the encrypted content is not in the message (detached); keyward reads messages that carry it")]
    NoEncryptedContent,
    /// The SignedData has no signer or more than one.
    #[error("the message has {0} signers; keyward checks messages with exactly one")]
    SignerCount(usize),
    /// The signer's certificate is not among the message's certificates.
    #[error("the signer's certificate ({0}) is not in the message; ask the sender to include it")]
    SignerCertMissing(String),
    /// A required signed attribute is missing or malformed.
    #[error("the signed attribute {0} is missing or malformed; the message was not made by a standard S/MIME signer")]
    BadAttribute(&'static str),
    /// The contentType attribute differs from the signed content's type.
    #[error("signature does not verify: the signed contentType attribute does not match the content's type")]
    ContentTypeMismatch,
    /// The messageDigest attribute is not the SHA-256 of the content.
    #[error("signature does not verify: the message digest does not match the content, which was altered after signing")]
    DigestMismatch,
    /// The signature does not verify with the signer's key.
    #[error("signature does not verify with the signer's certificate: the message was altered or forged")]
    BadSignature,
    /// The signed content is not id-data.
    #[error("the signed content has type OID {0}; keyward reads signed data only")]
    NotData(String),
    /// The signature is detached and no content was given.
    #[error("the signature is detached and no content was given; read the whole S/MIME message (multipart/signed) instead")]
    Detached,
    /// The token refused to sign; the token's error is the source.
    #[error(
        "the token could not sign: {source}; check that the token is present and logged in, then retry"
    )]
    Signer {
        /// The signer's error (the token layer's, with the PKCS#11 call).
        source: super::SignError,
    },
    /// The token signed, but not with the certificate's key.
    #[error("the token's signature does not verify with the signer certificate's key; check that the token holds the key of this certificate")]
    SignerKeyMismatch,
    /// Wrapping the content key to a recipient failed.
    #[error("could not encrypt the content key to {subject}: {source}")]
    KeyTransport {
        /// The recipient certificate's subject.
        subject: String,
        /// The RSA error.
        #[source]
        source: rsa::Error,
    },
    /// A time cannot be written as a signing time.
    #[error("cannot use {0} as the signing time; check the system clock")]
    InvalidTime(String),
    /// The operating system's random generator failed.
    #[error("could not get random bytes from the operating system ({0}); check the system's entropy source and retry")]
    Random(#[source] getrandom::Error),
    /// A structure could not be DER-encoded.
    #[error("could not encode the {what}: {source}; this is a bug in keyward, please report it")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's error.
        source: der::Error,
    },
}

/// One key-transport recipient slot of an EnvelopedData, as [`recipients`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientSlot {
    /// Position among the message's RecipientInfos.
    pub index: usize,
    /// DER of the issuer Name (empty when the slot names a subject key identifier).
    pub issuer_der: Vec<u8>,
    /// Serial number, big-endian magnitude without a sign byte (empty with a key identifier).
    pub serial: Vec<u8>,
    /// The subject key identifier, when the slot names one instead of issuer + serial
    /// (`openssl cms -encrypt -keyid`).
    pub subject_key_id: Option<Vec<u8>>,
    /// The key transport, `None` when the algorithm is not supported.
    pub transport: Option<KeyTransport>,
    /// The key-encryption algorithm as written in the message.
    pub algorithm: AlgorithmIdentifierOwned,
    /// The wrapped content-encryption key: decrypt it on the token with `transport`.
    pub encrypted_key: Vec<u8>,
}

impl RecipientSlot {
    /// Whether this slot is for `cert` (same issuer and serial, or same subject key identifier).
    pub fn matches(&self, cert: &Certificate) -> bool {
        let tbs = &cert.tbs_certificate;
        match &self.subject_key_id {
            Some(kid) => matches!(tbs.get::<SubjectKeyIdentifier>(),
                Ok(Some((_, ski))) if ski.0.as_bytes() == kid.as_slice()),
            None => {
                strip_zeros(tbs.serial_number.as_bytes()) == self.serial.as_slice()
                    && tbs.issuer.to_der().is_ok_and(|d| d == self.issuer_der)
            }
        }
    }
}

/// What [`verify`] found in a good signed message.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The signed content.
    pub content: Vec<u8>,
    /// The signer's certificate (from the message); check its chain and revocation.
    pub signer: Certificate,
    /// The signingTime attribute, when present.
    pub signing_time: Option<SystemTime>,
    /// Every certificate in the message (for building the signer's chain).
    pub certificates: Vec<Certificate>,
}

// ---------------------------------------------------------------------------------------
// Signing

/// Makes a ContentInfo(SignedData), DER: SHA-256, content attached (id-data), the signer's
/// certificate and `extra_certs` included, signed attributes contentType, signingTime and
/// messageDigest, signer identified by issuer and serial number.
pub fn sign(
    content: &[u8],
    signer: &mut dyn ContentSigner,
    extra_certs: &[Certificate],
    signing_time: SystemTime,
) -> Result<Vec<u8>, CmsError> {
    let digest: [u8; 32] = Sha256::digest(content).into();
    let signer_info = signer_info(signer, &digest, signing_time)?;
    let cert = signer.certificate().clone();
    let mut certs: Vec<CertificateChoices> = Vec::new();
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for c in std::iter::once(&cert).chain(extra_certs) {
        let d = c.to_der().map_err(enc("certificate"))?;
        if !seen.contains(&d) {
            seen.push(d);
            certs.push(CertificateChoices::Certificate(c.clone()));
        }
    }
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::try_from(vec![sha256_algorithm()])
            .map_err(enc("digest algorithms"))?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: rfc5911::ID_DATA,
            econtent: Some(Any::new(Tag::OctetString, content).map_err(enc("content"))?),
        },
        certificates: Some(CertificateSet(
            SetOfVec::try_from(certs).map_err(enc("certificates"))?,
        )),
        crls: None,
        signer_infos: SignerInfos(
            SetOfVec::try_from(vec![signer_info]).map_err(enc("signer info"))?,
        ),
    };
    content_info(rfc5911::ID_SIGNED_DATA, &signed, "SignedData")
}

/// The SignerInfo for content whose SHA-256 is `digest`: signed attributes contentType
/// (id-data), signingTime and messageDigest, signed on the token (which signs the
/// attributes, a few hundred bytes, never the content), checked with the certificate's key.
pub(crate) fn signer_info(
    signer: &mut dyn ContentSigner,
    digest: &[u8; 32],
    signing_time: SystemTime,
) -> Result<SignerInfo, CmsError> {
    let cert = signer.certificate().clone();
    let key = SignerKey::of(&cert)?;
    let algorithm = signer.algorithm();
    key.check_algorithm(&algorithm)?;
    let attrs: Attributes = SetOfVec::try_from(vec![
        attribute(rfc5911::ID_CONTENT_TYPE, &rfc5911::ID_DATA)?,
        attribute(rfc5911::ID_SIGNING_TIME, &to_time(signing_time)?)?,
        attribute(
            rfc5911::ID_MESSAGE_DIGEST,
            &OctetString::new(&digest[..]).map_err(enc("messageDigest"))?,
        )?,
    ])
    .map_err(enc("signed attributes"))?;
    let attrs_der = attrs.to_der().map_err(enc("signed attributes"))?;
    let signature = signer
        .sign(&attrs_der)
        .map_err(|source| CmsError::Signer { source })?;
    if !key.verify(&algorithm, &attrs_der, &signature)? {
        return Err(CmsError::SignerKeyMismatch);
    }
    Ok(SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(issuer_and_serial(&cert)),
        digest_alg: sha256_algorithm(),
        signed_attrs: Some(attrs),
        signature_algorithm: algorithm,
        signature: OctetString::new(signature).map_err(enc("signature"))?,
        unsigned_attrs: None,
    })
}

/// The DER of [`signer_info`], and of the SignedData's digestAlgorithms SET (SHA-256).
pub(crate) fn signer_info_der(
    signer: &mut dyn ContentSigner,
    digest: &[u8; 32],
    signing_time: SystemTime,
) -> Result<Vec<u8>, CmsError> {
    signer_info(signer, digest, signing_time)?
        .to_der()
        .map_err(enc("signer info"))
}

/// The DER of the SHA-256 AlgorithmIdentifier.
pub(crate) fn sha256_algorithm_der() -> Result<Vec<u8>, CmsError> {
    sha256_algorithm().to_der().map_err(enc("digest algorithm"))
}

/// The DER of each certificate (`first`, then `extra`), as a SignedData carries them.
pub(crate) fn certificate_ders(
    first: &Certificate,
    extra: &[Certificate],
) -> Result<Vec<Vec<u8>>, CmsError> {
    std::iter::once(first)
        .chain(extra)
        .map(|c| c.to_der().map_err(enc("certificate")))
        .collect()
}

/// The DER of a KeyTransRecipientInfo for `r`, the content key wrapped to its key.
pub(crate) fn recipient_info_der(r: &Recipient<'_>, cek: &[u8]) -> Result<Vec<u8>, CmsError> {
    let (key_enc_alg, encrypted) = wrap_key(r, cek)?;
    KeyTransRecipientInfo {
        version: CmsVersion::V0,
        rid: RecipientIdentifier::IssuerAndSerialNumber(issuer_and_serial(r.cert)),
        key_enc_alg,
        enc_key: OctetString::new(encrypted).map_err(enc("encrypted key"))?,
    }
    .to_der()
    .map_err(enc("recipient info"))
}

/// The DER of the AES-256-CBC AlgorithmIdentifier with `iv`.
pub(crate) fn aes256_cbc_der(iv: &[u8; 16]) -> Result<Vec<u8>, CmsError> {
    AlgorithmIdentifierOwned {
        oid: rfc5911::ID_AES_256_CBC,
        parameters: Some(Any::new(Tag::OctetString, iv.as_slice()).map_err(enc("IV"))?),
    }
    .to_der()
    .map_err(enc("content encryption algorithm"))
}

// ---------------------------------------------------------------------------------------
// Encryption

/// Makes a ContentInfo(EnvelopedData), DER, of `inner`: AES-256-CBC with a fresh random key
/// and IV, one KeyTransRecipientInfo (v0, issuer and serial number) per recipient (a
/// certificate given twice gets one slot).
///
/// With [`InnerType::Data`] `inner` is encrypted as is. With [`InnerType::SignedData`]
/// `inner` is a signed message as [`sign`] returns it (ContentInfo, DER or BER) or a bare
/// SignedData; the SignedData is encrypted without its ContentInfo, as RFC 5652 requires.
pub fn encrypt(
    inner: &[u8],
    inner_type: InnerType,
    recipients: &[Recipient<'_>],
) -> Result<Vec<u8>, CmsError> {
    if recipients.is_empty() {
        return Err(CmsError::NoRecipients);
    }
    let payload: Cow<[u8]> = match inner_type {
        InnerType::Data => Cow::Borrowed(inner),
        InnerType::SignedData => {
            let root = ber::open(inner)?;
            Cow::Owned(signed_data_node(&root)?.to_der())
        }
    };

    let mut cek = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 16];
    getrandom::getrandom(cek.as_mut_slice()).map_err(CmsError::Random)?;
    getrandom::getrandom(&mut iv).map_err(CmsError::Random)?;

    let mut infos = Vec::with_capacity(recipients.len());
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for r in recipients {
        let rid = issuer_and_serial(r.cert);
        let rid_der = rid.to_der().map_err(enc("recipient identifier"))?;
        if seen.contains(&rid_der) {
            continue;
        }
        seen.push(rid_der);
        let (key_enc_alg, encrypted) = wrap_key(r, cek.as_slice())?;
        infos.push(RecipientInfo::Ktri(KeyTransRecipientInfo {
            version: CmsVersion::V0,
            rid: RecipientIdentifier::IssuerAndSerialNumber(rid),
            key_enc_alg,
            enc_key: OctetString::new(encrypted).map_err(enc("encrypted key"))?,
        }));
    }

    let ciphertext = cbc::Encryptor::<aes::Aes256>::new((&*cek).into(), (&iv).into())
        .encrypt_padded_vec_mut::<Pkcs7>(&payload);
    let enveloped = EnvelopedData {
        version: CmsVersion::V0,
        originator_info: None,
        recip_infos: RecipientInfos(SetOfVec::try_from(infos).map_err(enc("recipient infos"))?),
        encrypted_content: EncryptedContentInfo {
            content_type: inner_type.oid(),
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: rfc5911::ID_AES_256_CBC,
                parameters: Some(Any::new(Tag::OctetString, iv.as_slice()).map_err(enc("IV"))?),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(enc("content"))?),
        },
        unprotected_attrs: None,
    };
    content_info(rfc5911::ID_ENVELOPED_DATA, &enveloped, "EnvelopedData")
}

fn wrap_key(
    r: &Recipient<'_>,
    cek: &[u8],
) -> Result<(AlgorithmIdentifierOwned, Vec<u8>), CmsError> {
    let subject = r.cert.tbs_certificate.subject.to_string();
    let key = match SignerKey::of(r.cert)?.0 {
        PublicKey::Rsa(k) => k,
        PublicKey::P256(_) => {
            return Err(CmsError::UnusableKey {
                subject,
                reason: "it is a P-256 key and keyward encrypts to RSA keys only; use the recipient's RSA encryption certificate",
            })
        }
    };
    let mut rng = rand_core::OsRng;
    let result = match r.transport {
        KeyTransport::RsaPkcs1v15 => key.encrypt(&mut rng, rsa::Pkcs1v15Encrypt, cek),
        KeyTransport::RsaOaepSha1 => key.encrypt(&mut rng, rsa::Oaep::new::<sha1::Sha1>(), cek),
        KeyTransport::RsaOaepSha256 => key.encrypt(&mut rng, rsa::Oaep::new::<Sha256>(), cek),
    };
    let encrypted = result.map_err(|source| CmsError::KeyTransport { subject, source })?;
    Ok((key_transport_algorithm(r.transport)?, encrypted))
}

/// The key-encryption AlgorithmIdentifier as openssl writes it.
fn key_transport_algorithm(t: KeyTransport) -> Result<AlgorithmIdentifierOwned, CmsError> {
    Ok(match t {
        KeyTransport::RsaPkcs1v15 => AlgorithmIdentifierOwned {
            oid: rfc5912::RSA_ENCRYPTION,
            parameters: Some(Any::null()),
        },
        // RFC 3560: all defaults, an empty RSAES-OAEP-params SEQUENCE.
        KeyTransport::RsaOaepSha1 => AlgorithmIdentifierOwned {
            oid: rfc5912::ID_RSAES_OAEP,
            parameters: Some(Any::new(Tag::Sequence, Vec::new()).map_err(enc("OAEP parameters"))?),
        },
        KeyTransport::RsaOaepSha256 => {
            let sha256 = AlgorithmIdentifierOwned {
                oid: rfc5912::ID_SHA_256,
                parameters: None,
            };
            let mgf1 = AlgorithmIdentifierOwned {
                oid: rfc5912::ID_MGF_1,
                parameters: Some(Any::encode_from(&sha256).map_err(enc("OAEP parameters"))?),
            };
            let mut params = tlv(0xa0, &sha256.to_der().map_err(enc("OAEP parameters"))?);
            params.extend(tlv(0xa1, &mgf1.to_der().map_err(enc("OAEP parameters"))?));
            AlgorithmIdentifierOwned {
                oid: rfc5912::ID_RSAES_OAEP,
                parameters: Some(Any::new(Tag::Sequence, params).map_err(enc("OAEP parameters"))?),
            }
        }
    })
}

/// Which [`KeyTransport`] an algorithm identifier names, if a supported one.
fn key_transport_of(alg: &AlgorithmIdentifierOwned) -> Option<KeyTransport> {
    if alg.oid == rfc5912::RSA_ENCRYPTION {
        return null_or_absent(alg).then_some(KeyTransport::RsaPkcs1v15);
    }
    if alg.oid != rfc5912::ID_RSAES_OAEP {
        return None;
    }
    let (mut hash, mut mgf_hash) = (rfc5912::ID_SHA_1, rfc5912::ID_SHA_1);
    if let Some(params) = &alg.parameters {
        let der = params.to_der().ok()?;
        let node = ber::parse(&der).ok()?;
        if node.ident != [0x30] {
            return None;
        }
        for field in node.children().ok()? {
            let inner = match field.children().ok()? {
                [one] => AlgorithmIdentifierOwned::from_der(&one.to_der()).ok()?,
                _ => return None,
            };
            match field.ident {
                [0xa0] => {
                    null_or_absent(&inner).then_some(())?;
                    hash = inner.oid;
                }
                [0xa1] => {
                    if inner.oid != rfc5912::ID_MGF_1 {
                        return None;
                    }
                    let h: AlgorithmIdentifierOwned =
                        inner.parameters.as_ref()?.decode_as().ok()?;
                    null_or_absent(&h).then_some(())?;
                    mgf_hash = h.oid;
                }
                [0xa2] => {
                    // pSpecified with an empty label only.
                    let label: OctetString = inner.parameters.as_ref()?.decode_as().ok()?;
                    if inner.oid != rfc5912::ID_P_SPECIFIED || !label.as_bytes().is_empty() {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }
    match (hash, mgf_hash) {
        (h, m) if h == rfc5912::ID_SHA_1 && m == rfc5912::ID_SHA_1 => {
            Some(KeyTransport::RsaOaepSha1)
        }
        (h, m) if h == rfc5912::ID_SHA_256 && m == rfc5912::ID_SHA_256 => {
            Some(KeyTransport::RsaOaepSha256)
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Decryption

/// Lists the key-transport recipient slots of a ContentInfo(EnvelopedData) (DER or BER), in
/// message order. Other kinds of RecipientInfo (key agreement, KEK, password) are skipped.
pub fn recipients(enveloped: &[u8]) -> Result<Vec<RecipientSlot>, CmsError> {
    let root = ber::open(enveloped)?;
    let env = enveloped_node(&root)?;
    let (infos, _) = enveloped_parts(env)?;
    slots_of(infos)
}

fn slots_of(infos: &ber::Node<'_>) -> Result<Vec<RecipientSlot>, CmsError> {
    let mut slots = Vec::new();
    for (index, node) in infos.children()?.iter().enumerate() {
        if node.ident != [0x30] {
            continue; // kari [1], kekri [2], pwri [3], ori [4]
        }
        let ktri = KeyTransRecipientInfo::from_der(&node.to_der())
            .map_err(|e| CmsError::Corrupted(format!("recipient {}: {e}", index + 1)))?;
        let (issuer_der, serial, subject_key_id) = match &ktri.rid {
            RecipientIdentifier::IssuerAndSerialNumber(ias) => (
                ias.issuer.to_der().map_err(enc("issuer name"))?,
                strip_zeros(ias.serial_number.as_bytes()).to_vec(),
                None,
            ),
            RecipientIdentifier::SubjectKeyIdentifier(ski) => {
                (Vec::new(), Vec::new(), Some(ski.0.as_bytes().to_vec()))
            }
        };
        slots.push(RecipientSlot {
            index,
            issuer_der,
            serial,
            subject_key_id,
            transport: key_transport_of(&ktri.key_enc_alg),
            algorithm: ktri.key_enc_alg,
            encrypted_key: ktri.enc_key.as_bytes().to_vec(),
        });
    }
    Ok(slots)
}

/// Finds the slot for one of `certs` (the caller's current and archived encryption
/// certificates), by issuer and serial or key identifier; no trial decryption.
///
/// Returns the slot and the index of the certificate in `certs`.
pub fn match_recipient<'s>(
    slots: &'s [RecipientSlot],
    certs: &[Certificate],
) -> Result<(&'s RecipientSlot, usize), CmsError> {
    let mut unsupported = None;
    for slot in slots {
        if let Some(i) = certs.iter().position(|c| slot.matches(c)) {
            if slot.transport.is_some() {
                return Ok((slot, i));
            }
            unsupported.get_or_insert(slot);
        }
    }
    match unsupported {
        Some(slot) => Err(CmsError::UnsupportedKeyTransport(oid_name(
            &slot.algorithm.oid,
        ))),
        None => Err(CmsError::NotForYou {
            slots: slots.len(),
            certs: certs.len(),
        }),
    }
}

/// Decrypts the content of a ContentInfo(EnvelopedData) with the content-encryption key the
/// caller got by decrypting its slot's `encrypted_key` on its token.
///
/// Reads AES-128/192/256-CBC. Returns the inner content's type and the plaintext.
pub fn decrypt_content(
    enveloped: &[u8],
    cek: &[u8],
) -> Result<(InnerType, Zeroizing<Vec<u8>>), CmsError> {
    let root = ber::open(enveloped)?;
    let env = enveloped_node(&root)?;
    let (_, eci) = enveloped_parts(env)?;
    let fields = eci.children()?;
    let (Some(ct_node), Some(alg_node)) = (fields.first(), fields.get(1)) else {
        return Err(CmsError::Corrupted(
            "the EncryptedContentInfo is incomplete".to_owned(),
        ));
    };
    let content_type = ct_node.oid()?;
    let alg = AlgorithmIdentifierOwned::from_der(&alg_node.to_der())
        .map_err(|e| CmsError::Corrupted(format!("content encryption algorithm: {e}")))?;
    let ciphertext = match fields.get(2) {
        Some(n) if n.ident == [0x80] || n.ident == [0xa0] => n.octets(),
        Some(_) => {
            return Err(CmsError::Corrupted(
                "the encrypted content has an unexpected tag".to_owned(),
            ))
        }
        None => return Err(CmsError::NoEncryptedContent),
    };

    let (name, want, iv) = cipher_of(&alg)?;
    if cek.len() != want {
        return Err(CmsError::ContentKeyLength {
            got: cek.len(),
            want,
            algorithm: name,
        });
    }
    let plain = match want {
        16 => cbc_decrypt::<aes::Aes128>(cek, iv, &ciphertext)?,
        24 => cbc_decrypt::<aes::Aes192>(cek, iv, &ciphertext)?,
        _ => cbc_decrypt::<aes::Aes256>(cek, iv, &ciphertext)?,
    };
    let inner = if content_type == rfc5911::ID_DATA {
        InnerType::Data
    } else if content_type == rfc5911::ID_SIGNED_DATA {
        InnerType::SignedData
    } else {
        return Err(CmsError::UnsupportedInnerType(oid_name(&content_type)));
    };
    Ok((inner, plain))
}

/// The AES-CBC variant an AlgorithmIdentifier names: name, key length, IV.
fn cipher_of(alg: &AlgorithmIdentifierOwned) -> Result<(&'static str, usize, &[u8]), CmsError> {
    let (name, want): (&'static str, usize) = if alg.oid == rfc5911::ID_AES_128_CBC {
        ("AES-128-CBC", 16)
    } else if alg.oid == rfc5911::ID_AES_192_CBC {
        ("AES-192-CBC", 24)
    } else if alg.oid == rfc5911::ID_AES_256_CBC {
        ("AES-256-CBC", 32)
    } else {
        return Err(CmsError::UnsupportedContentEncryption(oid_name(&alg.oid)));
    };
    match &alg.parameters {
        Some(p) if p.tag() == Tag::OctetString && p.value().len() == 16 => {
            Ok((name, want, p.value()))
        }
        _ => Err(CmsError::Corrupted(format!(
            "the {name} parameters are not a 16-byte IV"
        ))),
    }
}

fn cbc_decrypt<C>(key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>, CmsError>
where
    C: BlockCipher + BlockDecryptMut,
    cbc::Decryptor<C>: KeyIvInit,
{
    let dec = cbc::Decryptor::<C>::new_from_slices(key, iv).map_err(|_| CmsError::DecryptFailed)?;
    dec.decrypt_padded_vec_mut::<Pkcs7>(ciphertext)
        .map(Zeroizing::new)
        .map_err(|_| CmsError::DecryptFailed)
}

// ---------------------------------------------------------------------------------------
// Verification

/// Checks a signed message with attached content: a ContentInfo(SignedData) (DER or BER) or
/// a bare SignedData (what an [`InnerType::SignedData`] envelope holds).
///
/// Checks: exactly one signer; its certificate is in the message (by issuer and serial or
/// key identifier); digest SHA-256; when there are signed attributes, contentType equals the
/// content's type and messageDigest the SHA-256 of the content; the signature (RSA PKCS#1
/// v1.5 or ECDSA P-256, SHA-256) verifies with the certificate's key. SHA-1 and other
/// digests are refused. Chain, validity and revocation are the caller's.
pub fn verify(signed: &[u8]) -> Result<Verified, CmsError> {
    verify_inner(signed, None)
}

/// Like [`verify`], for a detached signature (`multipart/signed`): `content` is the signed
/// content, exactly as signed. Content attached to `signed` takes precedence.
pub fn verify_detached(signed: &[u8], content: &[u8]) -> Result<Verified, CmsError> {
    verify_inner(signed, Some(content))
}

fn verify_inner(signed: &[u8], detached: Option<&[u8]>) -> Result<Verified, CmsError> {
    let root = ber::open(signed)?;
    let sd = signed_data_node(&root)?;
    let fields = sd.children()?;
    let well_formed = fields.len() >= 4
        && fields[0].ident == [0x02]
        && fields[2].ident == [0x30]
        && fields[fields.len() - 1].ident == [0x31];
    if !well_formed {
        return Err(CmsError::Corrupted(
            "the SignedData is incomplete".to_owned(),
        ));
    }
    // encapContentInfo
    let encap = fields[2].children()?;
    let econtent_type = encap
        .first()
        .ok_or_else(|| CmsError::Corrupted("the signed content has no type".to_owned()))?
        .oid()?;
    let attached = match encap.get(1) {
        Some(n) if n.ident == [0xa0] => match n.children()? {
            [octets] if octets.ident == [0x04] || octets.ident == [0x24] => Some(octets.octets()),
            _ => {
                return Err(CmsError::Corrupted(
                    "the signed content is not an OCTET STRING".to_owned(),
                ))
            }
        },
        Some(_) => {
            return Err(CmsError::Corrupted(
                "the signed content has an unexpected tag".to_owned(),
            ))
        }
        None => None,
    };
    if econtent_type != rfc5911::ID_DATA {
        return Err(CmsError::NotData(oid_name(&econtent_type)));
    }
    let content = match (attached, detached) {
        (Some(c), _) => c,
        (None, Some(c)) => c.to_vec(),
        (None, None) => return Err(CmsError::Detached),
    };

    // certificates [0]
    let mut certificates = Vec::new();
    for f in &fields[3..fields.len() - 1] {
        if f.ident == [0xa0] {
            for c in f.children()? {
                if c.ident == [0x30] {
                    certificates.push(Certificate::from_der(&c.to_der()).map_err(|e| {
                        CmsError::Corrupted(format!("a certificate in the message: {e}"))
                    })?);
                }
            }
        }
    }

    let digest: [u8; 32] = Sha256::digest(&content).into();
    let (signer, signing_time) = check_signer_infos(
        &fields[fields.len() - 1],
        &certificates,
        &digest,
        econtent_type,
    )?;
    Ok(Verified {
        content,
        signer,
        signing_time,
        certificates,
    })
}

/// Checks the one SignerInfo of a signerInfos SET against the content's SHA-256 `digest`:
/// returns the signer's certificate (found among `certificates`) and the signing time.
fn check_signer_infos(
    infos: &ber::Node<'_>,
    certificates: &[Certificate],
    digest: &[u8; 32],
    econtent_type: ObjectIdentifier,
) -> Result<(Certificate, Option<SystemTime>), CmsError> {
    let infos = infos.children()?;
    let [si_node] = infos else {
        return Err(CmsError::SignerCount(infos.len()));
    };
    let si = SignerInfo::from_der(&si_node.to_der())
        .map_err(|e| CmsError::Corrupted(format!("the signer info: {e}")))?;
    if si.digest_alg.oid != rfc5912::ID_SHA_256 || !null_or_absent(&si.digest_alg) {
        return Err(CmsError::UnsupportedDigest(oid_name(&si.digest_alg.oid)));
    }
    let signer = certificates
        .iter()
        .find(|c| signer_matches(&si.sid, c))
        .cloned()
        .ok_or_else(|| CmsError::SignerCertMissing(describe_sid(&si.sid)))?;
    let key = SignerKey::of(&signer)?;
    key.check_algorithm(&si.signature_algorithm)?;

    let mut signing_time = None;
    let signed_bytes: Cow<[u8]> = match &si.signed_attrs {
        Some(attrs) => {
            let ct = single_attr(attrs, rfc5911::ID_CONTENT_TYPE, "contentType")?;
            let ct: ObjectIdentifier = ct
                .decode_as()
                .map_err(|_| CmsError::BadAttribute("contentType"))?;
            if ct != econtent_type {
                return Err(CmsError::ContentTypeMismatch);
            }
            let md = single_attr(attrs, rfc5911::ID_MESSAGE_DIGEST, "messageDigest")?;
            let md: OctetString = md
                .decode_as()
                .map_err(|_| CmsError::BadAttribute("messageDigest"))?;
            if md.as_bytes() != &digest[..] {
                return Err(CmsError::DigestMismatch);
            }
            if attrs.iter().any(|a| a.oid == rfc5911::ID_SIGNING_TIME) {
                let t = single_attr(attrs, rfc5911::ID_SIGNING_TIME, "signingTime")?;
                let t = t
                    .to_der()
                    .ok()
                    .and_then(|d| Time::from_der(&d).ok())
                    .ok_or(CmsError::BadAttribute("signingTime"))?;
                signing_time = Some(t.to_system_time());
            }
            // The signature covers the attributes as sent, re-tagged as a SET.
            let raw = si_node
                .children()?
                .iter()
                .find(|n| n.ident == [0xa0])
                .ok_or(CmsError::BadAttribute("signedAttrs"))?;
            let mut der = raw.to_der();
            der[0] = 0x31;
            Cow::Owned(der)
        }
        None => {
            // No signed attributes: the signature is over the content itself.
            if !key.verify_prehash(&si.signature_algorithm, digest, si.signature.as_bytes())? {
                return Err(CmsError::BadSignature);
            }
            return Ok((signer, None));
        }
    };
    if !key.verify(
        &si.signature_algorithm,
        &signed_bytes,
        si.signature.as_bytes(),
    )? {
        return Err(CmsError::BadSignature);
    }
    Ok((signer, signing_time))
}

/// [`check_signer_infos`] for a streamed SignedData: the signerInfos SET and the
/// certificates `[0]` as read (BER), the content's SHA-256 computed while it passed.
pub(crate) fn check_streamed_signer(
    infos_ber: &[u8],
    certificates_ber: Option<&[u8]>,
    digest: &[u8; 32],
) -> Result<(Certificate, Option<SystemTime>), CmsError> {
    let certificates = streamed_certificates(certificates_ber)?;
    let infos = ber::parse(infos_ber)?;
    check_signer_infos(&infos, &certificates, digest, rfc5911::ID_DATA)
}

/// The certificates of a SignedData's `certificates` field as read (BER).
pub(crate) fn streamed_certificates(
    certificates_ber: Option<&[u8]>,
) -> Result<Vec<Certificate>, CmsError> {
    let mut certificates = Vec::new();
    if let Some(raw) = certificates_ber {
        for c in ber::parse(raw)?.children()? {
            if c.ident == [0x30] {
                certificates.push(Certificate::from_der(&c.to_der()).map_err(|e| {
                    CmsError::Corrupted(format!("a certificate in the message: {e}"))
                })?);
            }
        }
    }
    Ok(certificates)
}

/// The key-transport slots of a RecipientInfos SET as read (BER).
pub(crate) fn recipients_of_set(set_ber: &[u8]) -> Result<Vec<RecipientSlot>, CmsError> {
    slots_of(&ber::parse(set_ber)?)
}

/// The content-encryption algorithm of an EncryptedContentInfo (BER): its name, key length
/// and IV; AES-128/192/256-CBC only.
pub(crate) fn content_cipher(alg_ber: &[u8]) -> Result<(&'static str, usize, Vec<u8>), CmsError> {
    let alg = AlgorithmIdentifierOwned::from_der(&ber::parse(alg_ber)?.to_der())
        .map_err(|e| CmsError::Corrupted(format!("content encryption algorithm: {e}")))?;
    cipher_of(&alg).map(|(n, w, iv)| (n, w, iv.to_vec()))
}

fn single_attr<'a>(
    attrs: &'a Attributes,
    oid: ObjectIdentifier,
    name: &'static str,
) -> Result<&'a Any, CmsError> {
    let mut found = attrs.iter().filter(|a| a.oid == oid);
    match (found.next(), found.next()) {
        (Some(a), None) if a.values.len() == 1 => {
            a.values.get(0).ok_or(CmsError::BadAttribute(name))
        }
        _ => Err(CmsError::BadAttribute(name)),
    }
}

fn signer_matches(sid: &SignerIdentifier, cert: &Certificate) -> bool {
    let tbs = &cert.tbs_certificate;
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == tbs.issuer
                && strip_zeros(ias.serial_number.as_bytes())
                    == strip_zeros(tbs.serial_number.as_bytes())
        }
        SignerIdentifier::SubjectKeyIdentifier(kid) => matches!(
            tbs.get::<SubjectKeyIdentifier>(),
            Ok(Some((_, ski))) if ski.0.as_bytes() == kid.0.as_bytes()
        ),
    }
}

fn describe_sid(sid: &SignerIdentifier) -> String {
    match sid {
        SignerIdentifier::IssuerAndSerialNumber(ias) => format!(
            "issuer {}, serial {}",
            ias.issuer,
            hex(strip_zeros(ias.serial_number.as_bytes()))
        ),
        SignerIdentifier::SubjectKeyIdentifier(kid) => {
            format!("key identifier {}", hex(kid.0.as_bytes()))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Keys and algorithms

/// A certificate's key, as the shared [`PublicKey`], with the CMS checks.
struct SignerKey(PublicKey);

impl SignerKey {
    fn of(cert: &Certificate) -> Result<Self, CmsError> {
        use rsa::pkcs8::DecodePublicKey;
        let spki = &cert.tbs_certificate.subject_public_key_info;
        let subject = || cert.tbs_certificate.subject.to_string();
        let bad_key = |source: Box<dyn std::error::Error + Send + Sync>| CmsError::BadKey {
            subject: subject(),
            source,
        };
        let der = spki.to_der().map_err(|e| bad_key(e.into()))?;
        if spki.algorithm.oid == rfc5912::RSA_ENCRYPTION {
            rsa::RsaPublicKey::from_public_key_der(&der)
                .map(|k| SignerKey(PublicKey::Rsa(k)))
                .map_err(|e| bad_key(e.into()))
        } else if spki.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY {
            p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                .map(|k| SignerKey(PublicKey::P256(k)))
                .map_err(|_| CmsError::UnusableKey {
                    subject: subject(),
                    reason: "an EC key, but not on P-256",
                })
        } else {
            Err(CmsError::UnsupportedKey {
                subject: subject(),
                algorithm: oid_name(&spki.algorithm.oid),
            })
        }
    }

    fn name(&self) -> &'static str {
        match self.0 {
            PublicKey::Rsa(_) => "RSA",
            PublicKey::P256(_) => "P-256",
        }
    }

    /// Refuses a signature algorithm this key cannot make or this module does not check.
    fn check_algorithm(&self, alg: &AlgorithmIdentifierOwned) -> Result<(), CmsError> {
        let ok = match self.0 {
            PublicKey::Rsa(_) => {
                (alg.oid == rfc5912::SHA_256_WITH_RSA_ENCRYPTION
                    || alg.oid == rfc5912::RSA_ENCRYPTION)
                    && null_or_absent(alg)
            }
            PublicKey::P256(_) => {
                alg.oid == rfc5912::ECDSA_WITH_SHA_256 && alg.parameters.is_none()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(CmsError::UnsupportedSignature {
                algorithm: oid_name(&alg.oid),
                key: self.name(),
            })
        }
    }

    /// Whether `sig` is this key's SHA-256 signature of `msg`.
    fn verify(
        &self,
        alg: &AlgorithmIdentifierOwned,
        msg: &[u8],
        sig: &[u8],
    ) -> Result<bool, CmsError> {
        self.check_algorithm(alg)?;
        Ok(self.0.verify(msg, sig).is_ok())
    }
}

impl SignerKey {
    /// Whether `sig` is this key's signature of the SHA-256 `digest` (of content too large
    /// to hold).
    fn verify_prehash(
        &self,
        alg: &AlgorithmIdentifierOwned,
        digest: &[u8; 32],
        sig: &[u8],
    ) -> Result<bool, CmsError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        self.check_algorithm(alg)?;
        Ok(match &self.0 {
            PublicKey::Rsa(k) => k
                .verify(
                    rsa::Pkcs1v15Sign::new::<Sha256>(),
                    digest,
                    &super::key::rsa_signature_at_full_length(k, sig),
                )
                .is_ok(),
            PublicKey::P256(k) => p256::ecdsa::Signature::from_der(sig)
                .is_ok_and(|s| k.verify_prehash(digest, &s).is_ok()),
        })
    }
}

fn sha256_algorithm() -> AlgorithmIdentifierOwned {
    AlgorithmIdentifierOwned {
        oid: rfc5912::ID_SHA_256,
        parameters: None,
    }
}

fn null_or_absent(alg: &AlgorithmIdentifierOwned) -> bool {
    match &alg.parameters {
        None => true,
        Some(p) => p.tag() == Tag::Null && p.value().is_empty(),
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn enc(what: &'static str) -> impl FnOnce(der::Error) -> CmsError {
    move |source| CmsError::Encode { what, source }
}

fn attribute<T: Encode>(oid: ObjectIdentifier, value: &T) -> Result<Attribute, CmsError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![any_of(value, "attribute")?]).map_err(enc("attribute"))?,
    })
}

fn any_of<T: Encode>(value: &T, what: &'static str) -> Result<Any, CmsError> {
    Any::from_der(&value.to_der().map_err(enc(what))?).map_err(enc(what))
}

fn issuer_and_serial(cert: &Certificate) -> IssuerAndSerialNumber {
    IssuerAndSerialNumber {
        issuer: cert.tbs_certificate.issuer.clone(),
        serial_number: cert.tbs_certificate.serial_number.clone(),
    }
}

fn content_info<T: Encode>(
    content_type: ObjectIdentifier,
    content: &T,
    what: &'static str,
) -> Result<Vec<u8>, CmsError> {
    ContentInfo {
        content_type,
        content: any_of(content, what)?,
    }
    .to_der()
    .map_err(enc(what))
}

/// The signingTime as X.509 writes times (UTCTime through 2049, GeneralizedTime after).
fn to_time(t: SystemTime) -> Result<Time, CmsError> {
    crate::pki::x509::to_time(t).map_err(|_| CmsError::InvalidTime(format!("{t:?}")))
}

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// `1.2.3 (name)` when the OID database knows the name.
fn oid_name(oid: &ObjectIdentifier) -> String {
    match der::oid::db::DB.by_oid(oid) {
        Some(name) => format!("{oid} ({name})"),
        None => oid.to_string(),
    }
}

/// A DER TLV with a one-byte tag.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    ber::write_len(&mut out, content.len());
    out.extend_from_slice(content);
    out
}

/// What a content type is, for "this is …, not …" messages.
fn describe_type(oid: &ObjectIdentifier) -> String {
    if *oid == rfc5911::ID_SIGNED_DATA {
        "a signed message (SignedData)".to_owned()
    } else if *oid == rfc5911::ID_ENVELOPED_DATA {
        "an encrypted message (EnvelopedData)".to_owned()
    } else if *oid == rfc5911::ID_CT_AUTH_ENVELOPED_DATA {
        "an AES-GCM encrypted message (AuthEnvelopedData), which keyward cannot read".to_owned()
    } else if *oid == rfc5911::ID_DATA {
        "plain data".to_owned()
    } else {
        format!("a CMS message of type {}", oid_name(oid))
    }
}

/// `(content type, content)` of a ContentInfo node, or `None` when the node is not one.
fn as_content_info<'n, 'a>(
    root: &'n ber::Node<'a>,
) -> Result<Option<(ObjectIdentifier, &'n ber::Node<'a>)>, CmsError> {
    let fields = root.children()?;
    match fields {
        [oid, explicit] if oid.ident == [0x06] && explicit.ident == [0xa0] => {
            match explicit.children()? {
                [content] => Ok(Some((oid.oid()?, content))),
                _ => Err(CmsError::Corrupted(
                    "the ContentInfo's content is not one element".to_owned(),
                )),
            }
        }
        [oid] if oid.ident == [0x06] => Err(CmsError::Corrupted(format!(
            "the ContentInfo of {} has no content",
            describe_type(&oid.oid()?)
        ))),
        _ => Ok(None),
    }
}

/// The SignedData SEQUENCE of a ContentInfo(SignedData) or of a bare SignedData.
fn signed_data_node<'n, 'a>(root: &'n ber::Node<'a>) -> Result<&'n ber::Node<'a>, CmsError> {
    let sd = match as_content_info(root)? {
        Some((oid, content)) if oid == rfc5911::ID_SIGNED_DATA => content,
        Some((oid, _)) => return Err(CmsError::NotSigned(describe_type(&oid))),
        None if root.children()?.first().is_some_and(|f| f.ident == [0x02]) => root,
        None => return Err(CmsError::NotCms("it is not a ContentInfo".to_owned())),
    };
    if sd.ident != [0x30] {
        return Err(CmsError::Corrupted(
            "the SignedData is not a SEQUENCE".to_owned(),
        ));
    }
    Ok(sd)
}

fn enveloped_node<'n, 'a>(root: &'n ber::Node<'a>) -> Result<&'n ber::Node<'a>, CmsError> {
    match as_content_info(root)? {
        Some((oid, content)) if oid == rfc5911::ID_ENVELOPED_DATA => {
            if content.ident != [0x30] {
                return Err(CmsError::Corrupted(
                    "the EnvelopedData is not a SEQUENCE".to_owned(),
                ));
            }
            Ok(content)
        }
        Some((oid, _)) => Err(CmsError::NotEnveloped(describe_type(&oid))),
        None => Err(CmsError::NotCms("it is not a ContentInfo".to_owned())),
    }
}

/// The RecipientInfos SET and the EncryptedContentInfo SEQUENCE of an EnvelopedData.
fn enveloped_parts<'n, 'a>(
    env: &'n ber::Node<'a>,
) -> Result<(&'n ber::Node<'a>, &'n ber::Node<'a>), CmsError> {
    // version, [0] originatorInfo OPTIONAL, recipientInfos SET, encryptedContentInfo, [1] ...
    let fields = env.children()?;
    let mut rest = fields.iter().skip(1).skip_while(|n| n.ident == [0xa0]);
    match (fields.first(), rest.next(), rest.next()) {
        (Some(v), Some(set), Some(eci))
            if v.ident == [0x02] && set.ident == [0x31] && eci.ident == [0x30] =>
        {
            Ok((set, eci))
        }
        _ => Err(CmsError::Corrupted(
            "the EnvelopedData lacks its recipients or its encrypted content".to_owned(),
        )),
    }
}

/// A minimal BER reader (definite and indefinite lengths) that re-encodes as DER lengths,
/// joining constructed OCTET STRINGs; enough to read what `openssl cms -stream` writes.
mod ber {
    use super::CmsError;
    use der::asn1::ObjectIdentifier;

    const MAX_DEPTH: usize = 48;

    /// One TLV.
    pub(super) struct Node<'a> {
        /// The identifier octets.
        pub ident: &'a [u8],
        pub body: Body<'a>,
    }

    pub(super) enum Body<'a> {
        Prim(&'a [u8]),
        Cons(Vec<Node<'a>>),
    }

    /// Parses a whole CMS message, with a first check that it is one.
    pub(super) fn open(bytes: &[u8]) -> Result<Node<'_>, CmsError> {
        match bytes.first() {
            None => Err(CmsError::NotCms("the input is empty".to_owned())),
            Some(0x30) => parse(bytes),
            Some(_) => {
                let head = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]).to_string();
                if head.trim_start().starts_with("-----BEGIN") {
                    Err(CmsError::NotCms(
                        "it is PEM text; decode it first (smime::read_any)".to_owned(),
                    ))
                } else if head.is_ascii() && head.contains(':') {
                    Err(CmsError::NotCms(
                        "it looks like MIME text; decode it first (smime::read_any)".to_owned(),
                    ))
                } else {
                    Err(CmsError::NotCms(
                        "it does not start with an ASN.1 SEQUENCE".to_owned(),
                    ))
                }
            }
        }
    }

    /// Parses exactly one TLV spanning `bytes`.
    pub(super) fn parse(bytes: &[u8]) -> Result<Node<'_>, CmsError> {
        let (node, used) = parse_at(bytes, 0, true)?;
        if used != bytes.len() {
            return Err(CmsError::Corrupted(format!(
                "{} bytes of unexpected data after the end",
                bytes.len() - used
            )));
        }
        Ok(node)
    }

    /// `at_end`: `bytes` runs to the end of the input (so running out of bytes means the
    /// input was cut short, rather than an element overrunning its enclosing one).
    fn parse_at(bytes: &[u8], depth: usize, at_end: bool) -> Result<(Node<'_>, usize), CmsError> {
        let truncated = || {
            if at_end {
                CmsError::Truncated("it ends inside an ASN.1 element".to_owned())
            } else {
                CmsError::Corrupted("an ASN.1 element overruns the structure around it".to_owned())
            }
        };
        if depth > MAX_DEPTH {
            return Err(CmsError::Corrupted("ASN.1 nested too deeply".to_owned()));
        }
        let first = *bytes.first().ok_or_else(truncated)?;
        let mut pos = 1;
        if first & 0x1f == 0x1f {
            loop {
                let b = *bytes.get(pos).ok_or_else(truncated)?;
                pos += 1;
                if b & 0x80 == 0 {
                    break;
                }
                if pos > 6 {
                    return Err(CmsError::Corrupted("ASN.1 tag number too large".to_owned()));
                }
            }
        }
        let ident = &bytes[..pos];
        let constructed = first & 0x20 != 0;
        let l = *bytes.get(pos).ok_or_else(truncated)?;
        pos += 1;
        let len = match l {
            0x80 => None,
            0..=0x7f => Some(usize::from(l)),
            0xff => return Err(CmsError::Corrupted("invalid ASN.1 length".to_owned())),
            _ => {
                let n = usize::from(l & 0x7f);
                if n > 4 {
                    return Err(CmsError::Corrupted("ASN.1 length too large".to_owned()));
                }
                let octets = bytes.get(pos..pos + n).ok_or_else(truncated)?;
                pos += n;
                Some(
                    octets
                        .iter()
                        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)),
                )
            }
        };
        match (len, constructed) {
            (Some(len), false) => {
                let end = pos.checked_add(len).ok_or_else(truncated)?;
                let content = bytes.get(pos..end).ok_or_else(truncated)?;
                Ok((
                    Node {
                        ident,
                        body: Body::Prim(content),
                    },
                    end,
                ))
            }
            (Some(len), true) => {
                let end = pos.checked_add(len).ok_or_else(truncated)?;
                let content = bytes.get(pos..end).ok_or_else(truncated)?;
                let mut children = Vec::new();
                let mut at = 0;
                while at < content.len() {
                    let (child, used) = parse_at(&content[at..], depth + 1, false)?;
                    if child.ident == [0] {
                        return Err(CmsError::Corrupted(
                            "end-of-contents inside a definite length".to_owned(),
                        ));
                    }
                    children.push(child);
                    at += used;
                }
                Ok((
                    Node {
                        ident,
                        body: Body::Cons(children),
                    },
                    end,
                ))
            }
            (None, true) => {
                let mut children = Vec::new();
                loop {
                    match bytes.get(pos..pos + 2) {
                        None => return Err(truncated()),
                        Some([0, 0]) => {
                            pos += 2;
                            break;
                        }
                        Some(_) => {
                            let (child, used) = parse_at(&bytes[pos..], depth + 1, at_end)?;
                            children.push(child);
                            pos += used;
                        }
                    }
                }
                Ok((
                    Node {
                        ident,
                        body: Body::Cons(children),
                    },
                    pos,
                ))
            }
            (None, false) => Err(CmsError::Corrupted(
                "indefinite length on a primitive ASN.1 element".to_owned(),
            )),
        }
    }

    pub(super) fn write_len(out: &mut Vec<u8>, len: usize) {
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes
                .iter()
                .position(|b| *b != 0)
                .unwrap_or(bytes.len() - 1);
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
    }

    impl<'a> Node<'a> {
        pub(super) fn children(&self) -> Result<&[Node<'a>], CmsError> {
            match &self.body {
                Body::Cons(c) => Ok(c),
                Body::Prim(_) => Err(CmsError::Corrupted(
                    "a primitive ASN.1 element where a structure belongs".to_owned(),
                )),
            }
        }

        pub(super) fn oid(&self) -> Result<ObjectIdentifier, CmsError> {
            match (&self.body, self.ident) {
                (Body::Prim(c), [0x06]) => ObjectIdentifier::from_bytes(c)
                    .map_err(|e| CmsError::Corrupted(format!("bad OBJECT IDENTIFIER: {e}"))),
                _ => Err(CmsError::Corrupted(
                    "an OBJECT IDENTIFIER is missing".to_owned(),
                )),
            }
        }

        /// The content octets; the pieces of a constructed string joined.
        pub(super) fn octets(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.collect(&mut out);
            out
        }

        fn collect(&self, out: &mut Vec<u8>) {
            match &self.body {
                Body::Prim(c) => out.extend_from_slice(c),
                Body::Cons(children) => children.iter().for_each(|c| c.collect(out)),
            }
        }

        /// DER lengths; a constructed OCTET STRING becomes a primitive one.
        pub(super) fn to_der(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.write(&mut out);
            out
        }

        fn write(&self, out: &mut Vec<u8>) {
            match &self.body {
                Body::Prim(c) => {
                    out.extend_from_slice(self.ident);
                    write_len(out, c.len());
                    out.extend_from_slice(c);
                }
                Body::Cons(_) if self.ident == [0x24] => {
                    let content = self.octets();
                    out.push(0x04);
                    write_len(out, content.len());
                    out.extend_from_slice(&content);
                }
                Body::Cons(children) => {
                    let mut inner = Vec::new();
                    children.iter().for_each(|c| c.write(&mut inner));
                    out.extend_from_slice(self.ident);
                    write_len(out, inner.len());
                    out.extend_from_slice(&inner);
                }
            }
        }
    }
}

/// Software stand-ins for tokens, a test CA and users, and an `openssl` runner; shared by
/// the tests of this module and of `smime`.
#[cfg(test)]
pub(crate) mod test_pki {
    use super::*;
    use crate::pki::x509::{self, CertParams, CertProfile, TbsSigner};
    use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey};
    use rsa::signature::{SignatureEncoding, Signer};
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::str::FromStr;
    use std::sync::OnceLock;
    use std::time::Duration;
    use x509_cert::name::Name;

    /// User names; user 0 (alice) signs, the others receive.
    pub const NAMES: [&str; 12] = [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy",
        "mallory", "oscar",
    ];

    /// One RSA-2048 key for the CA and one per user, made once, in parallel.
    fn rsa_keys() -> &'static [rsa::RsaPrivateKey] {
        static KEYS: OnceLock<Vec<rsa::RsaPrivateKey>> = OnceLock::new();
        KEYS.get_or_init(|| {
            let threads: Vec<_> = (0..=NAMES.len())
                .map(|_| {
                    std::thread::spawn(|| {
                        rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).unwrap()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    struct CaSigner(rsa::pkcs1v15::SigningKey<Sha256>);

    impl TbsSigner for CaSigner {
        fn algorithm(&self) -> AlgorithmIdentifierOwned {
            x509::rsa_sha256_algorithm()
        }
        fn sign_tbs(&mut self, tbs_der: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
            Ok(self.0.sign(tbs_der).to_vec())
        }
    }

    /// A software token key.
    #[derive(Clone)]
    pub enum SoftKey {
        /// RSA PKCS#1 v1.5 SHA-256.
        Rsa(Box<rsa::RsaPrivateKey>),
        /// ECDSA P-256 SHA-256.
        P256(p256::ecdsa::SigningKey),
    }

    /// A [`ContentSigner`] over a software key.
    pub struct SoftSigner {
        pub cert: Certificate,
        pub key: SoftKey,
    }

    impl ContentSigner for SoftSigner {
        fn certificate(&self) -> &Certificate {
            &self.cert
        }
        fn algorithm(&self) -> AlgorithmIdentifierOwned {
            match self.key {
                SoftKey::Rsa(_) => x509::rsa_sha256_algorithm(),
                SoftKey::P256(_) => x509::ecdsa_p256_sha256_algorithm(),
            }
        }
        fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
            Ok(match &self.key {
                SoftKey::Rsa(k) => rsa::pkcs1v15::SigningKey::<Sha256>::new((**k).clone())
                    .sign(data)
                    .to_vec(),
                SoftKey::P256(k) => {
                    let sig: p256::ecdsa::Signature = k.sign(data);
                    sig.to_der().as_bytes().to_vec()
                }
            })
        }
    }

    /// A test user: RSA key, signing and encryption certificates (same key).
    pub struct User {
        pub name: &'static str,
        pub key: rsa::RsaPrivateKey,
        pub sign_cert: Certificate,
        pub enc_cert: Certificate,
    }

    impl User {
        pub fn signer(&self) -> SoftSigner {
            SoftSigner {
                cert: self.sign_cert.clone(),
                key: SoftKey::Rsa(Box::new(self.key.clone())),
            }
        }
        pub fn recipient(&self, transport: KeyTransport) -> Recipient<'_> {
            Recipient {
                cert: &self.enc_cert,
                transport,
            }
        }
    }

    /// CA + users, with PEM files in a temporary directory: `ca.pem`, `NAME.pem` (signing
    /// certificate for alice, encryption certificate for the others), `NAME.key`.
    pub struct Pki {
        pub ca: Certificate,
        pub users: Vec<User>,
        pub dir: tempfile::TempDir,
        ca_signer: CaSigner,
    }

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    impl Pki {
        pub fn new() -> Pki {
            let keys = rsa_keys();
            let ca_key = keys[0].clone();
            let mut ca_signer = CaSigner(rsa::pkcs1v15::SigningKey::new(ca_key.clone()));
            let spki = ca_key
                .to_public_key()
                .to_public_key_der()
                .unwrap()
                .into_vec();
            let now = SystemTime::now();
            let subject = name("CN=Test CA,O=keyward test");
            let serial = x509::random_serial().unwrap();
            let ca = x509::self_signed_ca(
                &CertParams {
                    subject: &subject,
                    spki_der: &spki,
                    serial: &serial,
                    not_before: now - Duration::from_secs(3600),
                    not_after: now + Duration::from_secs(86_400),
                    profile: CertProfile::Ca,
                    email: None,
                },
                &mut ca_signer,
            )
            .unwrap();
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("ca.pem"), x509::cert_to_pem(&ca).unwrap()).unwrap();
            let mut pki = Pki {
                ca,
                users: Vec::new(),
                dir,
                ca_signer,
            };
            for (i, n) in NAMES.iter().enumerate() {
                let key = keys[i + 1].clone();
                let spki = key.to_public_key().to_public_key_der().unwrap().into_vec();
                let sign_cert = pki.issue(&spki, n, CertProfile::UserSigning);
                let enc_cert = pki.issue(&spki, n, CertProfile::UserEncryption);
                let cert = if i == 0 { &sign_cert } else { &enc_cert };
                let d = pki.dir.path();
                std::fs::write(d.join(format!("{n}.pem")), x509::cert_to_pem(cert).unwrap())
                    .unwrap();
                std::fs::write(
                    d.join(format!("{n}.key")),
                    key.to_pkcs8_pem(der::pem::LineEnding::LF)
                        .unwrap()
                        .as_bytes(),
                )
                .unwrap();
                pki.users.push(User {
                    name: n,
                    key,
                    sign_cert,
                    enc_cert,
                });
            }
            pki
        }

        /// Issues a certificate for `spki_der` (RSA or P-256).
        pub fn issue(&mut self, spki_der: &[u8], cn: &str, profile: CertProfile) -> Certificate {
            let now = SystemTime::now();
            let subject = name(&format!("CN={cn},O=keyward test"));
            let serial = x509::random_serial().unwrap();
            let email = format!("{cn}@example.org");
            x509::issue(
                &self.ca,
                &CertParams {
                    subject: &subject,
                    spki_der,
                    serial: &serial,
                    not_before: now - Duration::from_secs(3600),
                    not_after: now + Duration::from_secs(86_400),
                    profile,
                    email: Some(&email),
                },
                &mut self.ca_signer,
            )
            .unwrap()
        }

        /// An empty CRL from the CA, current from `this_update` to `next_update`.
        pub fn crl(
            &mut self,
            this_update: SystemTime,
            next_update: SystemTime,
        ) -> x509_cert::crl::CertificateList {
            x509::crl(
                &self.ca,
                &[],
                1,
                this_update,
                next_update,
                &mut self.ca_signer,
            )
            .unwrap()
        }

        pub fn user(&self, name: &str) -> &User {
            self.users.iter().find(|u| u.name == name).unwrap()
        }

        pub fn path(&self, file: &str) -> std::path::PathBuf {
            self.dir.path().join(file)
        }

        /// Runs openssl in the directory; see [`openssl`].
        pub fn openssl(&self, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
            openssl(self.dir.path(), args, stdin)
        }

        /// Reads a message as `user` would: S/MIME/PEM/DER → slot → CEK (software "token")
        /// → content → signature.
        pub fn read_as(
            &self,
            user: &str,
            message: &[u8],
        ) -> Result<Verified, crate::pki::smime::SmimeError> {
            let u = self.user(user);
            let der = crate::pki::smime::read_any(message)?;
            let slots = recipients(&der)?;
            let (slot, _) = match_recipient(&slots, std::slice::from_ref(&u.enc_cert))?;
            let cek = unwrap_cek(&u.key, slot);
            let (_, inner) = decrypt_content(&der, &cek)?;
            crate::pki::smime::verify_any(&inner)
        }
    }

    /// What the token does with a slot: decrypt the content-encryption key.
    pub fn unwrap_cek(key: &rsa::RsaPrivateKey, slot: &RecipientSlot) -> Zeroizing<Vec<u8>> {
        let k = &slot.encrypted_key;
        Zeroizing::new(
            match slot.transport.expect("supported key transport") {
                KeyTransport::RsaPkcs1v15 => key.decrypt(rsa::Pkcs1v15Encrypt, k),
                KeyTransport::RsaOaepSha1 => key.decrypt(rsa::Oaep::new::<sha1::Sha1>(), k),
                KeyTransport::RsaOaepSha256 => key.decrypt(rsa::Oaep::new::<Sha256>(), k),
            }
            .unwrap(),
        )
    }

    /// Runs `openssl` in `dir`: (success, stdout, stderr).
    pub fn openssl(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> (bool, Vec<u8>, String) {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openssl ({e}); apt-get install openssl"));
        let mut pipe = child.stdin.take().unwrap();
        let input = stdin.unwrap_or_default().to_vec();
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        (
            out.status.success(),
            out.stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_pki::*;
    use super::*;
    use crate::pki::smime;
    use crate::pki::x509::{self, CertProfile};
    use rsa::pkcs8::EncodePublicKey;
    use std::time::Instant;
    use std::time::{Duration, UNIX_EPOCH};

    const MSG: &[u8] = b"Hello Bob,\nthe meeting moved to 10:00.\n\x00\xff binary tail\r\nend";

    fn now() -> SystemTime {
        SystemTime::now()
    }

    fn whole_seconds(t: SystemTime) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(t.duration_since(UNIX_EPOCH).unwrap().as_secs())
    }

    /// alice signs MSG; S/MIME entity of it, encrypted to `to`.
    fn send(pki: &Pki, content: &[u8], to: &[&str], transport: KeyTransport) -> Vec<u8> {
        let signed = sign(content, &mut pki.user("alice").signer(), &[], now()).unwrap();
        let recips: Vec<_> = to
            .iter()
            .map(|n| pki.user(n).recipient(transport))
            .collect();
        encrypt(&smime::wrap_signed(&signed), InnerType::Data, &recips).unwrap()
    }

    #[test]
    fn sign_and_verify_round_trip_rsa_and_p256() {
        let mut pki = Pki::new();
        let t = now();
        let alice = pki.user("alice");
        let signed = sign(MSG, &mut alice.signer(), &[pki.ca.clone()], t).unwrap();
        let v = verify(&signed).unwrap();
        assert_eq!(v.content, MSG);
        assert_eq!(v.signer, alice.sign_cert);
        assert_eq!(v.signing_time, Some(whole_seconds(t)));
        assert_eq!(v.certificates.len(), 2);
        assert!(v.certificates.contains(&pki.ca));
        // openssl reads the DER and the S/MIME entity.
        std::fs::write(pki.path("s.der"), &signed).unwrap();
        std::fs::write(pki.path("s.txt"), smime::wrap_signed(&signed)).unwrap();
        for args in [
            &[
                "cms", "-verify", "-inform", "DER", "-in", "s.der", "-CAfile", "ca.pem",
            ][..],
            &["cms", "-verify", "-in", "s.txt", "-CAfile", "ca.pem"][..],
        ] {
            let (ok, out, err) = pki.openssl(args, None);
            assert!(ok && err.contains("Verification successful"), "{err}");
            assert_eq!(out, MSG);
        }

        // P-256 signer.
        let ec = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
        let spki = ec.verifying_key().to_public_key_der().unwrap().into_vec();
        let cert = pki.issue(&spki, "eve-ec", CertProfile::UserSigning);
        let mut signer = SoftSigner {
            cert: cert.clone(),
            key: SoftKey::P256(ec),
        };
        let signed = sign(b"ec", &mut signer, &[], t).unwrap();
        let v = verify(&signed).unwrap();
        assert_eq!((v.content.as_slice(), &v.signer), (&b"ec"[..], &cert));
        std::fs::write(pki.path("ec.der"), &signed).unwrap();
        let (ok, out, err) = pki.openssl(
            &[
                "cms", "-verify", "-inform", "DER", "-in", "ec.der", "-CAfile", "ca.pem",
            ],
            None,
        );
        assert!(ok, "{err}");
        assert_eq!(out, b"ec");
        // Signing times from 2050 on are GeneralizedTime.
        let y2050 = UNIX_EPOCH + Duration::from_secs(2_524_608_000);
        let v = verify(&sign(b"x", &mut signer, &[], y2050).unwrap()).unwrap();
        assert_eq!(v.signing_time, Some(y2050));
    }

    fn keyward_to_openssl(transport: KeyTransport) {
        let pki = Pki::new();
        let to = ["bob", "carol", "dave"];
        let env = send(&pki, MSG, &to, transport);
        std::fs::write(pki.path("m.der"), &env).unwrap();
        std::fs::write(pki.path("m.txt"), smime::wrap_enveloped(&env)).unwrap();
        let slots = recipients(&env).unwrap();
        assert_eq!(slots.len(), 3);
        assert!(slots.iter().all(|s| s.transport == Some(transport)));
        for name in to {
            for (form, file) in [("DER", "m.der"), ("SMIME", "m.txt")] {
                let (ok, inner, err) = pki.openssl(
                    &[
                        "cms",
                        "-decrypt",
                        "-inform",
                        form,
                        "-in",
                        file,
                        "-recip",
                        &format!("{name}.pem"),
                        "-inkey",
                        &format!("{name}.key"),
                    ],
                    None,
                );
                assert!(ok, "{name} {form}: {err}");
                assert!(inner.starts_with(b"MIME-Version: 1.0\r\n"));
                let (ok, out, err) =
                    pki.openssl(&["cms", "-verify", "-CAfile", "ca.pem"], Some(&inner));
                assert!(
                    ok && err.contains("Verification successful"),
                    "{name} {form}: {err}"
                );
                assert_eq!(out, MSG, "{name} {form}");
            }
            // And keyward reads it back.
            let v = pki.read_as(name, &env).unwrap();
            assert_eq!(v.content, MSG);
            assert_eq!(v.signer, pki.user("alice").sign_cert);
        }
        // Someone not among the recipients cannot.
        let (ok, _, _) = pki.openssl(
            &[
                "cms", "-decrypt", "-inform", "DER", "-in", "m.der", "-recip", "erin.pem",
                "-inkey", "erin.key",
            ],
            None,
        );
        assert!(!ok);
    }

    #[test]
    fn keyward_to_openssl_pkcs1v15() {
        keyward_to_openssl(KeyTransport::RsaPkcs1v15);
    }

    #[test]
    fn keyward_to_openssl_oaep_sha1() {
        keyward_to_openssl(KeyTransport::RsaOaepSha1);
    }

    #[test]
    fn keyward_to_openssl_oaep_sha256() {
        keyward_to_openssl(KeyTransport::RsaOaepSha256);
    }

    #[test]
    fn recipient_slots_name_issuer_serial_and_transport() {
        let pki = Pki::new();
        let (bob, carol) = (pki.user("bob"), pki.user("carol"));
        let env = encrypt(
            b"x",
            InnerType::Data,
            &[
                bob.recipient(KeyTransport::RsaPkcs1v15),
                carol.recipient(KeyTransport::RsaOaepSha256),
                bob.recipient(KeyTransport::RsaOaepSha1), // duplicate: one slot
            ],
        )
        .unwrap();
        let slots = recipients(&env).unwrap();
        assert_eq!(slots.len(), 2);
        for (u, t) in [
            (bob, KeyTransport::RsaPkcs1v15),
            (carol, KeyTransport::RsaOaepSha256),
        ] {
            let s = slots.iter().find(|s| s.matches(&u.enc_cert)).unwrap();
            assert_eq!(s.transport, Some(t));
            assert_eq!(
                s.serial,
                x509::serial_hex(&u.enc_cert)
                    .as_bytes()
                    .chunks(2)
                    .map(|h| u8::from_str_radix(std::str::from_utf8(h).unwrap(), 16).unwrap())
                    .collect::<Vec<_>>()
            );
            assert_eq!(
                s.issuer_der,
                pki.ca.tbs_certificate.subject.to_der().unwrap()
            );
            assert_eq!(s.encrypted_key.len(), 256);
            assert!(!s.matches(&u.sign_cert));
        }
        assert_eq!(
            match_recipient(
                &slots,
                &[pki.user("dave").enc_cert.clone(), carol.enc_cert.clone()]
            )
            .unwrap()
            .1,
            1
        );
    }

    #[test]
    fn signed_data_as_the_encrypted_content() {
        let pki = Pki::new();
        let signed = sign(MSG, &mut pki.user("alice").signer(), &[], now()).unwrap();
        let env = encrypt(
            &signed,
            InnerType::SignedData,
            &[pki.user("bob").recipient(KeyTransport::RsaOaepSha1)],
        )
        .unwrap();
        let slots = recipients(&env).unwrap();
        let cek = unwrap_cek(&pki.user("bob").key, &slots[0]);
        let (inner_type, inner) = decrypt_content(&env, &cek).unwrap();
        assert_eq!(inner_type, InnerType::SignedData);
        assert_eq!(verify(&inner).unwrap().content, MSG);
        assert_eq!(smime::verify_any(&inner).unwrap().content, MSG);
        assert_eq!(pki.read_as("bob", &env).unwrap().content, MSG);
        // openssl decrypts it to the bare SignedData.
        std::fs::write(pki.path("m.der"), &env).unwrap();
        let (ok, out, err) = pki.openssl(
            &[
                "cms", "-decrypt", "-inform", "DER", "-in", "m.der", "-recip", "bob.pem", "-inkey",
                "bob.key",
            ],
            None,
        );
        assert!(ok, "{err}");
        assert_eq!(out, inner.as_slice());
        // Not a signed message: refused.
        assert!(matches!(
            encrypt(
                &env,
                InnerType::SignedData,
                &[pki.user("bob").recipient(KeyTransport::RsaPkcs1v15)]
            ),
            Err(CmsError::NotSigned(_))
        ));
    }

    #[test]
    fn truncated_and_corrupted_messages_are_errors() {
        let pki = Pki::new();
        let env = send(&pki, MSG, &["bob"], KeyTransport::RsaPkcs1v15);
        for cut in [1, 10, env.len() / 2, env.len() - 1] {
            let short = &env[..cut];
            let err = recipients(short).unwrap_err();
            assert!(matches!(err, CmsError::Truncated(_)), "cut {cut}: {err}");
            assert!(
                err.to_string().starts_with("the message is truncated"),
                "{err}"
            );
            assert!(pki.read_as("bob", short).is_err());
        }
        let err = recipients(b"hello, world").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a CMS message: it does not start with an ASN.1 SEQUENCE"
        );
        assert!(matches!(recipients(b""), Err(CmsError::NotCms(_))));
        assert!(matches!(
            recipients(&[0x30, 0x03, 1, 2, 3]),
            Err(CmsError::Corrupted(_))
        ));
        let mut trailing = env.clone();
        trailing.push(0);
        assert!(matches!(recipients(&trailing), Err(CmsError::Corrupted(_))));

        // A flipped bit anywhere in the ciphertext: the content does not decrypt or verify.
        let slots = recipients(&env).unwrap();
        let cek = unwrap_cek(&pki.user("bob").key, &slots[0]);
        for back in [1, 17, 40, 500, 1000] {
            let mut bad = env.clone();
            let i = bad.len() - back;
            bad[i] ^= 0x04;
            let result = decrypt_content(&bad, &cek)
                .map_err(smime::SmimeError::from)
                .and_then(|(_, inner)| smime::verify_any(&inner));
            assert!(result.is_err(), "flip at -{back}");
        }
        // Last block changed: bad padding.
        let mut bad = env.clone();
        let i = bad.len() - 17;
        bad[i] ^= 0x80;
        assert!(matches!(
            decrypt_content(&bad, &cek),
            Err(CmsError::DecryptFailed)
        ));

        // Wrong or wrong-size content keys.
        let err = decrypt_content(&env, &cek[..16]).unwrap_err();
        assert!(
            matches!(
                err,
                CmsError::ContentKeyLength {
                    got: 16,
                    want: 32,
                    ..
                }
            ),
            "{err}"
        );
        for _ in 0..4 {
            let mut key = [0u8; 32];
            getrandom::getrandom(&mut key).unwrap();
            let r = decrypt_content(&env, &key)
                .map_err(smime::SmimeError::from)
                .and_then(|(_, inner)| smime::verify_any(&inner));
            assert!(r.is_err());
        }

        // Corrupted S/MIME text.
        let text = smime::wrap_enveloped(&env);
        let mut bad = text.clone();
        let i = bad.len() - 30;
        bad[i] = b'*';
        assert!(matches!(
            pki.read_as("bob", &bad),
            Err(smime::SmimeError::Base64(_))
        ));
        assert!(pki.read_as("bob", &text[..text.len() / 2]).is_err());
        assert!(pki.read_as("bob", &text).is_ok());
    }

    #[test]
    fn wrong_message_types_are_named() {
        let pki = Pki::new();
        let signed = sign(MSG, &mut pki.user("alice").signer(), &[], now()).unwrap();
        let env = encrypt(
            MSG,
            InnerType::Data,
            &[pki.user("bob").recipient(KeyTransport::RsaPkcs1v15)],
        )
        .unwrap();
        let err = recipients(&signed).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this is a signed message (SignedData), not an encrypted message"
        );
        let err = verify(&env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "this is an encrypted message (EnvelopedData), not a signed message"
        );
        // Encrypted but not signed: the plaintext is not a signed message.
        let slots = recipients(&env).unwrap();
        let cek = unwrap_cek(&pki.user("bob").key, &slots[0]);
        let (t, inner) = decrypt_content(&env, &cek).unwrap();
        assert_eq!((t, inner.as_slice()), (InnerType::Data, MSG));
        assert!(smime::verify_any(&inner).is_err());
        let pem = b"-----BEGIN CMS-----\nAAAA\n-----END CMS-----\n";
        assert!(recipients(pem).unwrap_err().to_string().contains("PEM"));
    }

    #[test]
    fn not_for_me() {
        let pki = Pki::new();
        let env = send(&pki, MSG, &["bob", "carol"], KeyTransport::RsaOaepSha1);
        let slots = recipients(&env).unwrap();
        let mine = [
            pki.user("dave").enc_cert.clone(),
            pki.user("bob").sign_cert.clone(),
        ];
        let err = match_recipient(&slots, &mine).unwrap_err();
        assert!(matches!(err, CmsError::NotForYou { slots: 2, certs: 2 }));
        assert!(
            err.to_string()
                .starts_with("not encrypted to any of your keys"),
            "{err}"
        );
        // dave's key cannot unwrap bob's slot.
        let (slot, _) = match_recipient(&slots, &[pki.user("bob").enc_cert.clone()]).unwrap();
        assert!(pki
            .user("dave")
            .key
            .decrypt(rsa::Oaep::new::<sha1::Sha1>(), &slot.encrypted_key)
            .is_err());
        // An unsupported key transport in my slot is named.
        let mut odd = slots.clone();
        odd[0].transport = None;
        odd[0].algorithm.oid = rfc5912::ID_RSASSA_PSS;
        let bob_first = [pki
            .user(if odd[0].matches(&pki.user("bob").enc_cert) {
                "bob"
            } else {
                "carol"
            })
            .enc_cert
            .clone()];
        let err = match_recipient(&odd, &bob_first).unwrap_err();
        assert!(matches!(err, CmsError::UnsupportedKeyTransport(_)), "{err}");
    }

    /// Re-encodes a signed message after `f` changed its SignedData.
    fn edit_signed(signed: &[u8], f: impl FnOnce(&mut SignedData)) -> Vec<u8> {
        let ci = ContentInfo::from_der(signed).unwrap();
        let mut sd: SignedData = ci.content.decode_as().unwrap();
        f(&mut sd);
        content_info(rfc5911::ID_SIGNED_DATA, &sd, "test").unwrap()
    }

    fn set_attr(sd: &mut SignedData, oid: ObjectIdentifier, value: Any) {
        let mut si: Vec<SignerInfo> = sd.signer_infos.0.iter().cloned().collect();
        let attrs: Vec<Attribute> = si[0]
            .signed_attrs
            .as_ref()
            .unwrap()
            .iter()
            .cloned()
            .map(|mut a| {
                if a.oid == oid {
                    a.values = SetOfVec::try_from(vec![value.clone()]).unwrap();
                }
                a
            })
            .collect();
        si[0].signed_attrs = Some(SetOfVec::try_from(attrs).unwrap());
        sd.signer_infos = SignerInfos(SetOfVec::try_from(si).unwrap());
    }

    #[test]
    fn tampered_signed_messages_fail() {
        let pki = Pki::new();
        let signed = sign(MSG, &mut pki.user("alice").signer(), &[], now()).unwrap();
        verify(&signed).unwrap();

        // The content changed in place: digest mismatch.
        let at = signed.windows(MSG.len()).position(|w| w == MSG).unwrap();
        let mut bad = signed.clone();
        bad[at + 6] ^= 0x20;
        let err = verify(&bad).unwrap_err();
        assert!(matches!(err, CmsError::DigestMismatch), "{err}");
        assert!(err.to_string().starts_with("signature does not verify"));

        // Content and messageDigest changed together: the signature fails.
        let forged = b"Hello Bob, send the money to Mallory.";
        let bad = edit_signed(&signed, |sd| {
            sd.encap_content_info.econtent = Some(Any::new(Tag::OctetString, &forged[..]).unwrap());
            let md = OctetString::new(&Sha256::digest(forged)[..]).unwrap();
            set_attr(
                sd,
                rfc5911::ID_MESSAGE_DIGEST,
                Any::encode_from(&md).unwrap(),
            );
        });
        assert!(matches!(verify(&bad), Err(CmsError::BadSignature)));

        // A flipped signature bit.
        let mut bad = signed.clone();
        let i = bad.len() - 5;
        bad[i] ^= 1;
        assert!(matches!(verify(&bad), Err(CmsError::BadSignature)));

        // Signing time moved: the signature fails.
        let bad = edit_signed(&signed, |sd| {
            let t = to_time(UNIX_EPOCH + Duration::from_secs(1_000_000_000)).unwrap();
            set_attr(
                sd,
                rfc5911::ID_SIGNING_TIME,
                Any::from_der(&t.to_der().unwrap()).unwrap(),
            );
        });
        assert!(matches!(verify(&bad), Err(CmsError::BadSignature)));

        // contentType attribute not id-data.
        let bad = edit_signed(&signed, |sd| {
            set_attr(
                sd,
                rfc5911::ID_CONTENT_TYPE,
                Any::encode_from(&rfc5911::ID_SIGNED_DATA).unwrap(),
            );
        });
        assert!(matches!(verify(&bad), Err(CmsError::ContentTypeMismatch)));

        // Signer certificate removed.
        let bad = edit_signed(&signed, |sd| sd.certificates = None);
        assert!(matches!(verify(&bad), Err(CmsError::SignerCertMissing(_))));

        // Content removed: detached, and it verifies only with the right content.
        let bad = edit_signed(&signed, |sd| sd.encap_content_info.econtent = None);
        assert!(matches!(verify(&bad), Err(CmsError::Detached)));
        assert_eq!(verify_detached(&bad, MSG).unwrap().content, MSG);
        assert!(matches!(
            verify_detached(&bad, b"other"),
            Err(CmsError::DigestMismatch)
        ));
    }

    #[test]
    fn openssl_sha1_and_unsupported_algorithms_are_refused() {
        let pki = Pki::new();
        std::fs::write(pki.path("msg"), MSG).unwrap();
        // (Supported: no signed attributes, the signature is over the content.)
        let (ok, sig, err) = pki.openssl(
            &[
                "cms",
                "-sign",
                "-noattr",
                "-md",
                "sha256",
                "-nodetach",
                "-binary",
                "-outform",
                "DER",
                "-in",
                "msg",
                "-signer",
                "alice.pem",
                "-inkey",
                "alice.key",
            ],
            None,
        );
        assert!(ok, "{err}");
        let v = verify(&sig).unwrap();
        assert_eq!((v.content.as_slice(), v.signing_time), (MSG, None));
        let mut bad = sig.clone();
        let at = bad.windows(MSG.len()).position(|w| w == MSG).unwrap();
        bad[at] ^= 1;
        assert!(matches!(verify(&bad), Err(CmsError::BadSignature)));

        let (ok, sig, err) = pki.openssl(
            &[
                "cms",
                "-sign",
                "-in",
                "msg",
                "-signer",
                "alice.pem",
                "-inkey",
                "alice.key",
                "-md",
                "sha1",
                "-nodetach",
                "-outform",
                "DER",
            ],
            None,
        );
        assert!(ok, "{err}");
        let err = verify(&sig).unwrap_err();
        assert!(matches!(err, CmsError::UnsupportedDigest(_)), "{err}");
        assert!(err.to_string().contains("1.3.14.3.2.26"), "{err}");

        // 3DES content encryption.
        let (ok, env, err) = pki.openssl(
            &[
                "cms", "-encrypt", "-des3", "-in", "msg", "-outform", "DER", "bob.pem",
            ],
            None,
        );
        assert!(ok, "{err}");
        let slots = recipients(&env).unwrap();
        let cek = unwrap_cek(&pki.user("bob").key, &slots[0]);
        let err = decrypt_content(&env, &cek).unwrap_err();
        assert!(
            matches!(err, CmsError::UnsupportedContentEncryption(_)),
            "{err}"
        );
        assert!(err.to_string().contains("des-ede3-cbc"), "{err}");

        // Encrypting to a P-256 certificate, or to nobody.
        let ec = p256::ecdsa::SigningKey::random(&mut rsa::rand_core::OsRng);
        let spki = ec.verifying_key().to_public_key_der().unwrap().into_vec();
        let mut pki = pki;
        let cert = pki.issue(&spki, "ec", CertProfile::UserEncryption);
        let r = Recipient {
            cert: &cert,
            transport: KeyTransport::RsaPkcs1v15,
        };
        assert!(matches!(
            encrypt(b"x", InnerType::Data, &[r]),
            Err(CmsError::UnusableKey { .. })
        ));
        assert!(matches!(
            encrypt(b"x", InnerType::Data, &[]),
            Err(CmsError::NoRecipients)
        ));
    }

    /// A token that fails, or signs with another key.
    struct BadToken {
        inner: SoftSigner,
        fail: bool,
    }

    impl ContentSigner for BadToken {
        fn certificate(&self) -> &Certificate {
            &self.inner.cert
        }
        fn algorithm(&self) -> AlgorithmIdentifierOwned {
            self.inner.algorithm()
        }
        fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
            if self.fail {
                Err("CKR_DEVICE_REMOVED".into())
            } else {
                self.inner.sign(data)
            }
        }
    }

    #[test]
    fn token_failures_are_reported() {
        let pki = Pki::new();
        let mut wrong_key = pki.user("bob").signer();
        wrong_key.cert = pki.user("alice").sign_cert.clone();
        let mut t = BadToken {
            inner: wrong_key,
            fail: false,
        };
        assert!(matches!(
            sign(MSG, &mut t, &[], now()),
            Err(CmsError::SignerKeyMismatch)
        ));
        t.fail = true;
        let err = sign(MSG, &mut t, &[], now()).unwrap_err();
        assert!(err.to_string().contains("CKR_DEVICE_REMOVED"), "{err}");
        // An ECDSA algorithm for an RSA key is refused before the token is asked.
        struct EcAlg(SoftSigner);
        impl ContentSigner for EcAlg {
            fn certificate(&self) -> &Certificate {
                &self.0.cert
            }
            fn algorithm(&self) -> AlgorithmIdentifierOwned {
                x509::ecdsa_p256_sha256_algorithm()
            }
            fn sign(&mut self, _: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
                panic!("token asked")
            }
        }
        let err = sign(MSG, &mut EcAlg(pki.user("alice").signer()), &[], now()).unwrap_err();
        assert!(
            matches!(err, CmsError::UnsupportedSignature { key: "RSA", .. }),
            "{err}"
        );
    }

    #[test]
    fn one_mebibyte_and_ten_recipients() {
        let pki = Pki::new();
        let mut big = vec![0u8; 1 << 20];
        getrandom::getrandom(&mut big).unwrap();
        let alice = pki.user("alice");

        let t0 = Instant::now();
        let signed = sign(&big, &mut alice.signer(), &[], now()).unwrap();
        let t_sign = t0.elapsed();
        let entity = smime::wrap_signed(&signed);
        let t1 = Instant::now();
        let env = encrypt(
            &entity,
            InnerType::Data,
            &[pki.user("bob").recipient(KeyTransport::RsaOaepSha1)],
        )
        .unwrap();
        let t_enc = t1.elapsed();
        let t2 = Instant::now();
        let v = pki.read_as("bob", &env).unwrap();
        let t_read = t2.elapsed();
        assert_eq!(v.content, big);
        std::fs::write(pki.path("big.der"), &env).unwrap();
        let (ok, inner, err) = pki.openssl(
            &[
                "cms", "-decrypt", "-inform", "DER", "-in", "big.der", "-recip", "bob.pem",
                "-inkey", "bob.key",
            ],
            None,
        );
        assert!(ok, "{err}");
        let (ok, out, err) = pki.openssl(&["cms", "-verify", "-CAfile", "ca.pem"], Some(&inner));
        assert!(ok, "{err}");
        assert_eq!(out, big);
        println!(
            "1 MiB: sign {t_sign:?} (software RSA), wrap+encrypt {:?}, read (decrypt+verify) {t_read:?}, message {} bytes",
            t_enc,
            env.len()
        );

        let ten: Vec<&str> = NAMES[1..11].to_vec();
        let t3 = Instant::now();
        let signed = sign(MSG, &mut alice.signer(), &[], now()).unwrap();
        let recips: Vec<_> = ten
            .iter()
            .map(|n| pki.user(n).recipient(KeyTransport::RsaPkcs1v15))
            .collect();
        let env = encrypt(&smime::wrap_signed(&signed), InnerType::Data, &recips).unwrap();
        let t_send = t3.elapsed();
        assert_eq!(recipients(&env).unwrap().len(), 10);
        let t4 = Instant::now();
        for n in &ten {
            assert_eq!(pki.read_as(n, &env).unwrap().content, MSG);
        }
        let t_read = t4.elapsed() / 10;
        std::fs::write(pki.path("ten.der"), &env).unwrap();
        let (ok, _, err) = pki.openssl(
            &[
                "cms", "-decrypt", "-inform", "DER", "-in", "ten.der", "-recip", "judy.pem",
                "-inkey", "judy.key",
            ],
            None,
        );
        assert!(ok, "{err}");
        println!(
            "10 recipients: sign+encrypt {t_send:?}, read per recipient {t_read:?}, message {} bytes",
            env.len()
        );
    }
}
