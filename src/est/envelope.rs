//! The CMS EnvelopedData that carries a server-generated key (RFC 7030 §4.4.2), assembled from
//! pieces the authority's token made: the content-encryption key (AES-256) wrapped with
//! RSA-OAEP (SHA-1, RFC 3560 defaults) to the transport key, and the private key wrapped with
//! CKM_AES_CBC_PAD under it, which is AES-256-CBC of its PKCS#8 PrivateKeyInfo. The plaintext
//! key never leaves the token. As RFC 7030 §4.4.2 asks, the EnvelopedData travels inside a
//! SignedData that the authority's CA key signs on its token ([`signed`]): the content is the
//! EnvelopedData's ContentInfo as id-data (as SCEP carries its pkcsPKIEnvelope), so
//! `openssl cms -verify -CAfile CA.pem` gives exactly what `openssl cms -decrypt -inkey
//! TRANSPORT.pem` opens.

use cms::content_info::{CmsVersion, ContentInfo};
use cms::enveloped_data::{
    EncryptedContentInfo, EnvelopedData, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
    RecipientInfos,
};
use der::asn1::{OctetString, SetOfVec};
use der::oid::db::{rfc5911, rfc5912};
use der::{Any, Encode, Tag};
use sha1::Digest;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::SubjectKeyIdentifier;

use super::wire::Refusal;
use crate::authority::signer::CaSigner;
use crate::pki::cms::ContentSigner;
use crate::pki::x509::TbsSigner;

/// The pieces the token made.
pub struct Wrapped<'a> {
    /// The transport key's identifier (the RecipientIdentifier's subjectKeyIdentifier).
    pub key_identifier: &'a [u8],
    /// The AES key wrapped with RSA-OAEP SHA-1 to the transport key.
    pub wrapped_cek: &'a [u8],
    /// The private key wrapped with CKM_AES_CBC_PAD: the 16-byte IV, then the ciphertext.
    pub iv_and_ciphertext: &'a [u8],
}

/// The key identifier of a transport key: SHA-1 of its subjectPublicKey (RFC 5280 §4.2.1.2).
pub fn key_identifier(transport_key_bits: &[u8]) -> Vec<u8> {
    sha1::Sha1::digest(transport_key_bits).to_vec()
}

/// ContentInfo(EnvelopedData), DER: one KeyTransRecipientInfo naming the transport key by its
/// key identifier, id-data content encrypted with AES-256-CBC.
pub fn enveloped(w: &Wrapped<'_>) -> Result<Vec<u8>, Refusal> {
    let fail = |what: &str, e: der::Error| Refusal {
        status: 500,
        reason: format!("cannot encode the EnvelopedData's {what}: {e}"),
    };
    if w.iv_and_ciphertext.len() < 32 {
        return Err(Refusal {
            status: 500,
            reason: "the token's CBC-PAD wrap is shorter than an IV and one block".into(),
        });
    }
    let (iv, ciphertext) = w.iv_and_ciphertext.split_at(16);
    let ski = OctetString::new(w.key_identifier).map_err(|e| fail("key identifier", e))?;
    let ktri = KeyTransRecipientInfo {
        version: CmsVersion::V2,
        rid: RecipientIdentifier::SubjectKeyIdentifier(SubjectKeyIdentifier(ski)),
        key_enc_alg: AlgorithmIdentifierOwned {
            oid: rfc5912::ID_RSAES_OAEP,
            // RFC 3560: all defaults (SHA-1, MGF1-SHA1, empty label), an empty SEQUENCE.
            parameters: Some(Any::new(Tag::Sequence, Vec::new()).map_err(|e| fail("OAEP", e))?),
        },
        enc_key: OctetString::new(w.wrapped_cek).map_err(|e| fail("wrapped key", e))?,
    };
    let infos =
        SetOfVec::try_from(vec![RecipientInfo::Ktri(ktri)]).map_err(|e| fail("recipients", e))?;
    let data = EnvelopedData {
        version: CmsVersion::V2,
        originator_info: None,
        recip_infos: RecipientInfos(infos),
        encrypted_content: EncryptedContentInfo {
            content_type: rfc5911::ID_DATA,
            content_enc_alg: AlgorithmIdentifierOwned {
                oid: rfc5911::ID_AES_256_CBC,
                parameters: Some(Any::new(Tag::OctetString, iv).map_err(|e| fail("IV", e))?),
            },
            encrypted_content: Some(OctetString::new(ciphertext).map_err(|e| fail("content", e))?),
        },
        unprotected_attrs: None,
    };
    ContentInfo {
        content_type: rfc5911::ID_ENVELOPED_DATA,
        content: Any::encode_from(&data).map_err(|e| fail("body", e))?,
    }
    .to_der()
    .map_err(|e| fail("ContentInfo", e))
}

/// The authority's CA key on its token as the signer of serverkeygen's SignedData.
pub struct CaContentSigner<'a, 's> {
    /// The CA certificate (it identifies the signer and goes into the SignedData).
    pub ca: &'a x509_cert::Certificate,
    /// The CA key on the logged-in session.
    pub signer: CaSigner<'s>,
}

impl ContentSigner for CaContentSigner<'_, '_> {
    fn certificate(&self) -> &x509_cert::Certificate {
        self.ca
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        self.signer.algorithm()
    }

    fn sign(&mut self, signed_attrs_der: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
        self.signer.sign_tbs(signed_attrs_der)
    }
}

/// ContentInfo(SignedData) around `enveloped` (a ContentInfo(EnvelopedData), as id-data),
/// signed by `signer` now, DER.
pub fn signed(enveloped: &[u8], signer: &mut dyn ContentSigner) -> Result<Vec<u8>, Refusal> {
    crate::pki::cms::sign(enveloped, signer, &[], std::time::SystemTime::now()).map_err(|e| {
        Refusal {
            status: 500,
            reason: format!("cannot sign the server-generated key's EnvelopedData: {e}"),
        }
    })
}
