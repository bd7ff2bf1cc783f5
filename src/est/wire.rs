//! EST (RFC 7030) on the wire, without I/O: the HTTP Basic header, base64 bodies, the checks
//! on a PKCS#10 request, and the bodies keyward answers with (a certs-only PKCS#7, the CSR
//! attributes, the multipart/mixed of `serverkeygen`). Everything here is a pure function of
//! its input, so the fuzz targets (`fuzz/checks/est.rs`) call it as the server does.

use base64ct::{Base64, Encoding};
use der::asn1::{ObjectIdentifier, SetOfVec};
use der::{Decode, Encode};
use secrecy::SecretString;
use x509_cert::request::CertReq;
use x509_cert::Certificate;

use crate::pki::PublicKey;

/// `application/pkcs10`: what simpleenroll, simplereenroll and serverkeygen take.
pub const PKCS10: &str = "application/pkcs10";
/// `application/pkcs7-mime; smime-type=certs-only`: cacerts, simpleenroll and simplereenroll.
pub const CERTS_ONLY: &str = "application/pkcs7-mime; smime-type=certs-only";
/// `application/csrattrs`: csrattrs.
pub const CSRATTRS: &str = "application/csrattrs";
/// The private-key part of serverkeygen: CMS EnvelopedData (RFC 7030 §4.4.2).
pub const SERVER_KEY: &str = "application/pkcs7-mime; smime-type=server-generated-key";
/// The most bytes a request body may have (a base64 PKCS#10 of a 4096-bit key is ~2 KiB).
pub const MAX_BODY: usize = 16 * 1024;
/// The multipart boundary of serverkeygen's answer (never inside base64 text).
pub const BOUNDARY: &str = "keyward-est-boundary";

/// Why a request is refused: the HTTP status and a sentence for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// What is wrong and what to do.
    pub reason: String,
}

impl Refusal {
    /// 400 Bad Request.
    pub fn bad(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: 400,
            reason: reason.into(),
        }
    }
    /// 401 Unauthorized.
    pub fn unauthorized(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: 401,
            reason: reason.into(),
        }
    }
    /// 409 Conflict: the request does not fit the enrollment's state.
    pub fn conflict(reason: impl Into<String>) -> Refusal {
        Refusal {
            status: 409,
            reason: reason.into(),
        }
    }
}

/// HTTP Basic credentials: the user name and the temporary key (its `Debug` redacts the key).
#[derive(Debug)]
pub struct Basic {
    /// The user.
    pub user: String,
    /// The temporary key as typed.
    pub password: SecretString,
}

/// Parses an `Authorization: Basic …` header value (RFC 7617).
pub fn parse_basic(header: &[u8]) -> Result<Basic, Refusal> {
    let text = std::str::from_utf8(header)
        .map_err(|_| Refusal::unauthorized("the Authorization header is not UTF-8"))?;
    let (scheme, rest) = text.trim().split_once(' ').ok_or_else(|| {
        Refusal::unauthorized("the Authorization header is not `Basic <base64 user:password>`")
    })?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Refusal::unauthorized(format!(
            "authentication scheme {scheme:?} is not Basic; send the user name and temporary key as HTTP Basic"
        )));
    }
    let raw = zeroize::Zeroizing::new(Base64::decode_vec(rest.trim()).map_err(|_| {
        Refusal::unauthorized("the Basic credentials are not base64 of `user:temporary key`")
    })?);
    let text = std::str::from_utf8(&raw)
        .map_err(|_| Refusal::unauthorized("the Basic credentials are not UTF-8"))?;
    let (user, password) = text.split_once(':').ok_or_else(|| {
        Refusal::unauthorized("the Basic credentials have no `:` between user and temporary key")
    })?;
    if user.is_empty() {
        return Err(Refusal::unauthorized("the Basic credentials name no user"));
    }
    Ok(Basic {
        user: user.to_string(),
        password: SecretString::from(password.to_string()),
    })
}

/// Checks that the Content-Type is `application/pkcs10` (parameters allowed).
pub fn check_content_type(value: Option<&[u8]>) -> Result<(), Refusal> {
    check_media_type(value, PKCS10)
}

/// Checks that the Content-Type is exactly the media type `expected` (case aside; parameters
/// after `;` allowed, a longer type with the same start is not it).
pub fn check_media_type(value: Option<&[u8]>, expected: &str) -> Result<(), Refusal> {
    let value = value
        .ok_or_else(|| Refusal::bad(format!("the request has no Content-Type; send {expected}")))?;
    let text = std::str::from_utf8(value).unwrap_or("");
    let media = text.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        let shown: String = String::from_utf8_lossy(value).chars().take(100).collect();
        Err(Refusal::bad(format!(
            "Content-Type {shown:?} is not {expected}"
        )))
    }
}

/// Decodes an EST base64 body (RFC 7030 §4: base64 with Content-Transfer-Encoding; lines may
/// be broken, whitespace is ignored).
pub fn decode_body(body: &[u8]) -> Result<Vec<u8>, Refusal> {
    if body.len() > MAX_BODY {
        return Err(Refusal {
            status: 413,
            reason: format!("the body is over {MAX_BODY} bytes"),
        });
    }
    let compact: Vec<u8> = body
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(Refusal::bad(
            "the body is empty; send a base64 PKCS#10 request",
        ));
    }
    Base64::decode_vec(std::str::from_utf8(&compact).unwrap_or("!"))
        .map_err(|e| Refusal::bad(format!("the body is not base64: {e}")))
}

/// Base64 with lines of 64 characters, as EST bodies are sent.
pub fn encode_body(der: &[u8]) -> String {
    let text = Base64::encode_string(der);
    let mut out = String::with_capacity(text.len() + text.len() / 64 + 2);
    for chunk in text.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push_str("\r\n");
    }
    out
}

/// A PKCS#10 request that parsed and whose self-signature verified.
pub struct CheckedCsr {
    /// The request.
    pub csr: CertReq,
    /// Its key.
    pub key: PublicKey,
    /// Its SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

/// Parses a PKCS#10 request, checks its key is strong enough
/// ([`PublicKey::check_strength`]: RSA of 2048 bits or more, or P-256) and its self-signature
/// (proof of possession).
pub fn check_csr(der_bytes: &[u8]) -> Result<CheckedCsr, Refusal> {
    let csr = CertReq::from_der(der_bytes)
        .map_err(|e| Refusal::bad(format!("the body is not a PKCS#10 request: {e}")))?;
    let spki = csr
        .info
        .public_key
        .to_der()
        .map_err(|e| Refusal::bad(format!("the request's key does not encode: {e}")))?;
    let key = PublicKey::from_spki_der(&spki).map_err(|e| {
        Refusal::bad(format!(
            "the request's key is not one keyward takes (RSA or P-256): {e}"
        ))
    })?;
    key.check_strength()
        .map_err(|e| Refusal::bad(format!("the request's key {e}")))?;
    let info = csr
        .info
        .to_der()
        .map_err(|e| Refusal::bad(format!("the request does not encode: {e}")))?;
    key.verify(&info, csr.signature.raw_bytes()).map_err(|_| {
        Refusal::bad("the request's self-signature does not verify (no proof of possession)")
    })?;
    Ok(CheckedCsr { csr, key, spki })
}

/// The keyset name a request carries: its subject's commonName, a keyset name (1–256 bytes,
/// no control characters, no leading or trailing space; [`crate::keyset::name::KeysetName`]).
pub fn keyset_of(csr: &CertReq) -> Result<String, Refusal> {
    let cn = csr
        .info
        .subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == der::oid::db::rfc4519::CN)
        .and_then(|atv| atv_text(&atv.value))
        .ok_or_else(|| {
            Refusal::bad(
                "the request's subject has no commonName; the commonName names the keyset (e.g. -subj /CN=laptop)",
            )
        })?;
    crate::keyset::name::KeysetName::parse(&cn)
        .map(|n| n.as_str().to_string())
        .map_err(|e| Refusal::bad(format!("the request's commonName is no keyset name: {e}")))
}

fn atv_text(value: &der::Any) -> Option<String> {
    value
        .decode_as::<der::asn1::Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_string())
        .or_else(|_| {
            value
                .decode_as::<der::asn1::PrintableStringRef<'_>>()
                .map(|s| s.as_str().to_string())
        })
        .ok()
}

/// The key of a serverkeygen request, to which the new key is encrypted: RSA, 2048 bits or
/// more (keyward names the transport key by the request's own key; RFC 7030 §4.4.1.2).
pub fn transport_key(csr: &CheckedCsr) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let (n, e) = csr.key.rsa_parts().ok_or_else(|| {
        Refusal::bad(
            "a serverkeygen request's key is the transport key the new key is encrypted to: it must be RSA (2048 bits or more)",
        )
    })?;
    let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
    if bits < 2048 {
        return Err(Refusal::bad(format!(
            "the transport key has {bits} bits; use an RSA key of 2048 bits or more"
        )));
    }
    Ok((n, e))
}

/// id-aa-asymmDecryptKeyID (RFC 7030 §4.4.1.2): the CSR attribute naming the key a
/// server-generated key is to be encrypted to.
pub const ASYMM_DECRYPT_KEY_ID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.54");

/// The request's AsymmetricDecryptKeyIdentifier (an OCTET STRING), if it has one.
pub fn asymmetric_decrypt_key_id(csr: &CertReq) -> Result<Option<Vec<u8>>, Refusal> {
    let Some(attr) = csr
        .info
        .attributes
        .iter()
        .find(|a| a.oid == ASYMM_DECRYPT_KEY_ID)
    else {
        return Ok(None);
    };
    let value = match attr.values.as_slice() {
        [one] => one,
        _ => {
            return Err(Refusal::bad(
                "the request's AsymmetricDecryptKeyIdentifier must have exactly one value",
            ))
        }
    };
    let id: der::asn1::OctetString = value.decode_as().map_err(|e| {
        Refusal::bad(format!(
            "the request's AsymmetricDecryptKeyIdentifier is not an OCTET STRING: {e}"
        ))
    })?;
    if id.as_bytes().is_empty() {
        return Err(Refusal::bad(
            "the request's AsymmetricDecryptKeyIdentifier is empty",
        ));
    }
    Ok(Some(id.as_bytes().to_vec()))
}

/// A certs-only PKCS#7 (a SignedData without signers, RFC 7030 §4.1.3), DER.
pub fn certs_only(certs: &[Certificate]) -> Result<Vec<u8>, Refusal> {
    use cms::content_info::{CmsVersion, ContentInfo};
    use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
    let fail = |e: der::Error| Refusal {
        status: 500,
        reason: format!("cannot encode the certificates: {e}"),
    };
    let set: Vec<cms::cert::CertificateChoices> = certs
        .iter()
        .cloned()
        .map(cms::cert::CertificateChoices::Certificate)
        .collect();
    let signed = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: der::oid::db::rfc5911::ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(set).map_err(fail)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    let info = ContentInfo {
        content_type: der::oid::db::rfc5911::ID_SIGNED_DATA,
        content: der::Any::encode_from(&signed).map_err(fail)?,
    };
    info.to_der().map_err(fail)
}

/// The certificates of a certs-only PKCS#7, DER (what a client reads back).
pub fn certs_of(pkcs7: &[u8]) -> Result<Vec<Certificate>, Refusal> {
    use cms::content_info::ContentInfo;
    use cms::signed_data::SignedData;
    let info = ContentInfo::from_der(pkcs7)
        .map_err(|e| Refusal::bad(format!("the answer is not a PKCS#7: {e}")))?;
    let signed: SignedData = info
        .content
        .decode_as()
        .map_err(|e| Refusal::bad(format!("the answer is not a PKCS#7 SignedData: {e}")))?;
    Ok(signed
        .certificates
        .map(|s| s.0.into_vec())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| match c {
            cms::cert::CertificateChoices::Certificate(c) => Some(c),
            _ => None,
        })
        .collect())
}

/// The CSR attributes keyward asks for (RFC 7030 §4.5.2): a SEQUENCE of OIDs —
/// ecdsa-with-SHA256 and sha256WithRSAEncryption (how to sign), DER.
pub fn csr_attrs() -> Vec<u8> {
    let oids: [ObjectIdentifier; 2] = [
        der::oid::db::rfc5912::ECDSA_WITH_SHA_256,
        der::oid::db::rfc5912::SHA_256_WITH_RSA_ENCRYPTION,
    ];
    oids.to_vec().to_der().unwrap_or_default()
}

/// serverkeygen's multipart/mixed answer (RFC 7030 §4.4.2): the EnvelopedData of the new
/// key, then a certs-only PKCS#7 of its certificate, both base64.
pub fn serverkeygen_body(enveloped: &[u8], certs_only_der: &[u8]) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Type: {SERVER_KEY}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{BOUNDARY}\r\nContent-Type: {CERTS_ONLY}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{BOUNDARY}--\r\n",
        encode_body(enveloped),
        encode_body(certs_only_der),
    )
}

/// keyward-archive's multipart/mixed answer: per key, its SignedData(EnvelopedData) part (as
/// serverkeygen's) and its certificate, certs-only, all base64.
pub fn keys_body(keys: &[(Vec<u8>, Vec<u8>)]) -> String {
    let mut body = String::new();
    for (key, certs) in keys {
        body.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Type: {SERVER_KEY}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--{BOUNDARY}\r\nContent-Type: {CERTS_ONLY}\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            encode_body(key),
            encode_body(certs),
        ));
    }
    body.push_str(&format!("--{BOUNDARY}--\r\n"));
    body
}

/// The two parts of a serverkeygen answer, decoded: (EnvelopedData, certs-only PKCS#7).
pub fn split_serverkeygen(body: &str) -> Result<(Vec<u8>, Vec<u8>), Refusal> {
    let mut parts = Vec::new();
    for part in body.split(&format!("--{BOUNDARY}")).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let (_, content) = part
            .split_once("\r\n\r\n")
            .ok_or_else(|| Refusal::bad("a serverkeygen part has no header end"))?;
        parts.push(decode_body(content.as_bytes())?);
    }
    match <[Vec<u8>; 2]>::try_from(parts) {
        Ok([key, cert]) => Ok((key, cert)),
        Err(p) => Err(Refusal::bad(format!(
            "a serverkeygen answer has {} parts, not 2",
            p.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parses_and_refuses() {
        let b = parse_basic(b"Basic YWxpY2U6czNjcjN0").unwrap();
        assert_eq!(b.user, "alice");
        assert_eq!(parse_basic(b"Bearer x").unwrap_err().status, 401);
        assert_eq!(parse_basic(b"Basic !!!").unwrap_err().status, 401);
        assert_eq!(parse_basic(b"Basic YWxpY2U=").unwrap_err().status, 401);
    }

    #[test]
    fn bodies_decode_with_line_breaks() {
        assert_eq!(decode_body(b"aGVs\r\nbG8=\n").unwrap(), b"hello");
        assert_eq!(decode_body(b"%%%").unwrap_err().status, 400);
        assert_eq!(decode_body(b"  ").unwrap_err().status, 400);
        assert_eq!(
            decode_body(&vec![b'A'; MAX_BODY + 1]).unwrap_err().status,
            413
        );
        assert_eq!(decode_body(encode_body(b"xyz").as_bytes()).unwrap(), b"xyz");
    }

    #[test]
    fn content_type_is_checked() {
        assert!(check_content_type(Some(b"application/pkcs10")).is_ok());
        assert!(check_content_type(Some(b"Application/PKCS10; charset=x")).is_ok());
        assert_eq!(
            check_content_type(Some(b"text/plain")).unwrap_err().status,
            400
        );
        assert_eq!(check_content_type(None).unwrap_err().status, 400);
    }

    #[test]
    fn multipart_round_trips() {
        let body = serverkeygen_body(b"key", b"cert");
        assert_eq!(
            split_serverkeygen(&body).unwrap(),
            (b"key".to_vec(), b"cert".to_vec())
        );
    }
}
