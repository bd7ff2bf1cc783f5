//! S/MIME (RFC 8551) framing of CMS messages: the MIME entities `openssl cms` and mail
//! clients write, and the DER inside them.
//!
//! Written ([`wrap_enveloped`], [`wrap_signed`]): `application/pkcs7-mime` entities with
//! the headers `openssl cms` writes, base64 at 64 columns, CRLF line ends (openssl writes
//! LF unless given `-crlfeol`; both read either).
//!
//! Read:
//! - [`read_any`]: DER (or BER); PEM (`-----BEGIN CMS-----`, `PKCS7`, `PKCS #7 …`); an
//!   S/MIME entity `application/pkcs7-mime` or `application/x-pkcs7-mime` (any
//!   `smime-type`), or a lone `application/(x-)pkcs7-signature`, with a base64 (or binary)
//!   body. Header lines may end in CRLF or LF and may be folded; other headers (From, To,
//!   Subject, …) are ignored, so a whole mail with such a body reads too.
//! - [`read_signed`] / [`verify_any`]: all of that, plus `multipart/signed` (detached
//!   signature, what `openssl cms -sign` writes by default). Its signed content is the first
//!   part, as openssl reads it: lines re-joined with CRLF (the canonical form every
//!   non-`-binary` signer signs); when that does not match, the part's bytes as they are
//!   (`-binary` signers). The content returned is the first part itself, MIME headers
//!   included if the signer put any (e.g. `openssl cms -sign -text`).
//!
//! Not read: S/MIME inside `multipart/mixed` or `message/rfc822` wrappers, quoted-printable
//! bodies, more than one signer.

use base64ct::{Base64, Base64Unpadded, Encoding};

use super::cms::{self, CmsError, Verified};

/// What went wrong reading an S/MIME, PEM or DER message.
#[derive(Debug, thiserror::Error)]
pub enum SmimeError {
    /// The bytes are neither DER, PEM nor an S/MIME entity with CMS content.
    #[error("not a CMS message: {0}")]
    NotSmime(String),
    /// [`verify_any`] was given something that is no signed message in any shape.
    #[error("the message is not signed ({0}); keyward reads signed messages only")]
    Unsigned(String),
    /// A base64 body does not decode.
    #[error("the {0} is not valid base64; the message was damaged, get it again")]
    Base64(&'static str),
    /// A PEM block has no end line.
    #[error("the message is truncated: the PEM block has no -----END {0}----- line")]
    PemEnd(String),
    /// A multipart/signed entity is malformed.
    #[error("the multipart/signed message is malformed: {0}")]
    Multipart(String),
    /// The entity is S/MIME, but not one this function reads.
    #[error("{0}")]
    Unsupported(String),
    /// The CMS inside is bad.
    #[error("{0}")]
    Cms(#[from] CmsError),
}

/// A signed message as [`read_signed`] finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedInput {
    /// A ContentInfo(SignedData) (or bare SignedData), DER or BER, content attached.
    Attached(Vec<u8>),
    /// A multipart/signed message.
    Detached {
        /// The `application/pkcs7-signature` part, DER.
        signature: Vec<u8>,
        /// The first part, byte for byte as it is in the message.
        content: Vec<u8>,
    },
}

/// An EnvelopedData as an S/MIME entity, as `openssl cms -encrypt` writes it (with CRLF).
pub fn wrap_enveloped(der: &[u8]) -> Vec<u8> {
    wrap(der, "enveloped-data")
}

/// A SignedData (content attached) as an S/MIME entity, as `openssl cms -sign -nodetach`
/// writes it (with CRLF): what keyward encrypts when it signs, then encrypts.
pub fn wrap_signed(der: &[u8]) -> Vec<u8> {
    wrap(der, "signed-data")
}

fn wrap(der: &[u8], smime_type: &str) -> Vec<u8> {
    let mut out = format!(
        "MIME-Version: 1.0\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
    .into_bytes();
    let b64 = Base64::encode_string(der);
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The CMS DER of a DER, PEM or S/MIME (`application/(x-)pkcs7-mime`) message; see the
/// module documentation. A `multipart/signed` message is refused: use [`read_signed`].
pub fn read_any(bytes: &[u8]) -> Result<Vec<u8>, SmimeError> {
    match classify(bytes)? {
        Shape::Der => Ok(bytes.to_vec()),
        Shape::Pem => pem_body(bytes),
        Shape::Mime(entity) => {
            let ct = entity.content_type()?;
            if is_cms_type(&ct.mime) {
                entity.decoded_body("S/MIME body")
            } else if ct.mime == "multipart/signed" {
                Err(SmimeError::Unsupported(
                    "this is a multipart/signed message (a detached signature), not an encrypted one; read it as a signed message".to_owned(),
                ))
            } else {
                Err(SmimeError::NotSmime(format!(
                    "its Content-Type is {}, not application/pkcs7-mime",
                    ct.mime
                )))
            }
        }
    }
}

/// A signed message in any of the shapes the module documentation lists.
pub fn read_signed(bytes: &[u8]) -> Result<SignedInput, SmimeError> {
    if let Shape::Mime(entity) = classify(bytes)? {
        let ct = entity.content_type()?;
        if ct.mime == "multipart/signed" {
            return read_multipart_signed(&entity, &ct);
        }
    }
    read_any(bytes).map(SignedInput::Attached)
}

/// Reads a signed message in any supported shape and checks it with [`cms::verify`] or
/// [`cms::verify_detached`]: the usual last step of reading a decrypted message, whose
/// inner content may be an S/MIME entity (openssl, mail clients, keyward), DER, PEM, or a
/// bare SignedData ([`cms::InnerType::SignedData`]).
pub fn verify_any(bytes: &[u8]) -> Result<Verified, SmimeError> {
    let input = read_signed(bytes).map_err(|e| match e {
        SmimeError::NotSmime(why) => SmimeError::Unsigned(why),
        other => other,
    })?;
    match input {
        SignedInput::Attached(der) => Ok(cms::verify(&der)?),
        SignedInput::Detached { signature, content } => {
            let canonical = canonical_crlf(&content);
            match cms::verify_detached(&signature, &canonical) {
                Err(CmsError::DigestMismatch) if canonical != content => {
                    Ok(cms::verify_detached(&signature, &content)?)
                }
                other => Ok(other?),
            }
        }
    }
}

/// What a streamed reader needs from a MIME header block (up to and including the empty
/// line): the Content-Type (`type/subtype`, lower case), its `smime-type` parameter and the
/// Content-Transfer-Encoding (lower case). `None` when the block is not MIME headers with a
/// Content-Type.
pub(crate) fn header_summary(block: &[u8]) -> Option<(String, Option<String>, Option<String>)> {
    let entity = Entity::parse(block)?;
    let ct = parse_content_type(entity.header("content-type")?);
    let cte = entity
        .header("content-transfer-encoding")
        .map(|v| v.trim().to_ascii_lowercase());
    let smime_type = ct.param("smime-type").map(|s| s.to_ascii_lowercase());
    Some((ct.mime, smime_type, cte))
}

/// Whether a Content-Type (lower case) is one of the CMS ones.
pub(crate) fn is_cms_content_type(mime: &str) -> bool {
    is_cms_type(mime)
}

/// The S/MIME headers [`wrap_enveloped`] and [`wrap_signed`] write before the base64 body.
pub(crate) fn smime_header(smime_type: &str) -> String {
    format!(
        "MIME-Version: 1.0\r\n\
         Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
         Content-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\n\
         Content-Transfer-Encoding: base64\r\n\r\n"
    )
}

// ---------------------------------------------------------------------------------------
// Internals

enum Shape<'a> {
    Der,
    Pem,
    Mime(Entity<'a>),
}

fn classify(bytes: &[u8]) -> Result<Shape<'_>, SmimeError> {
    if bytes.first() == Some(&0x30) {
        return Ok(Shape::Der);
    }
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if bytes[start..].starts_with(b"-----BEGIN ") {
        return Ok(Shape::Pem);
    }
    if bytes.is_empty() {
        return Err(SmimeError::NotSmime("the input is empty".to_owned()));
    }
    match Entity::parse(bytes) {
        Some(e) if e.header("content-type").is_some() => Ok(Shape::Mime(e)),
        Some(_) => Err(SmimeError::NotSmime(
            "it has MIME headers but no Content-Type".to_owned(),
        )),
        None => Err(SmimeError::NotSmime(
            "it is neither DER, PEM nor an S/MIME message".to_owned(),
        )),
    }
}

fn is_cms_type(mime: &str) -> bool {
    matches!(
        mime,
        "application/pkcs7-mime"
            | "application/x-pkcs7-mime"
            | "application/pkcs7-signature"
            | "application/x-pkcs7-signature"
    )
}

/// A MIME entity: header fields and the raw body.
struct Entity<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

struct ContentType {
    /// `type/subtype`, lower case.
    mime: String,
    /// Parameters, names lower case, values unquoted.
    params: Vec<(String, String)>,
}

impl ContentType {
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

impl<'a> Entity<'a> {
    /// Header block up to the first empty line; `None` if the text does not start with one.
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        loop {
            let rest = &bytes[pos..];
            let (line, next) = match rest.iter().position(|b| *b == b'\n') {
                Some(i) => (&rest[..i], pos + i + 1),
                None if rest.is_empty() => (rest, bytes.len()),
                None => return None, // the text ends inside the header block
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if headers.is_empty() {
                    return None;
                }
                return Some(Entity {
                    headers,
                    body: &bytes[next..],
                });
            }
            let line = std::str::from_utf8(line).ok()?;
            if line.starts_with([' ', '\t']) {
                let (_, value) = headers.last_mut()?;
                value.push(' ');
                value.push_str(line.trim());
            } else {
                let (name, value) = line.split_once(':')?;
                let valid =
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
                if !valid {
                    return None;
                }
                headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
            }
            pos = next;
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn content_type(&self) -> Result<ContentType, SmimeError> {
        let value = self
            .header("content-type")
            .ok_or_else(|| SmimeError::NotSmime("a MIME part has no Content-Type".to_owned()))?;
        Ok(parse_content_type(value))
    }

    /// The body, base64-decoded unless it is sent as binary DER.
    fn decoded_body(&self, what: &'static str) -> Result<Vec<u8>, SmimeError> {
        let cte = self
            .header("content-transfer-encoding")
            .map(|v| v.trim().to_ascii_lowercase());
        match cte.as_deref() {
            Some("base64") => decode_base64(self.body, what),
            Some("binary") | Some("8bit") | Some("7bit") | None
                if self.body.first() == Some(&0x30) =>
            {
                Ok(self.body.to_vec())
            }
            None => decode_base64(self.body, what),
            Some(other) => Err(SmimeError::Unsupported(format!(
                "the {what} uses Content-Transfer-Encoding {other}; keyward reads base64 and binary"
            ))),
        }
    }
}

fn parse_content_type(value: &str) -> ContentType {
    let mut pieces = split_unquoted(value, ';').into_iter();
    let mime = pieces
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| {
            let (n, v) = p.split_once('=')?;
            let v = v.trim();
            let v = match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                Some(q) => q.replace("\\\"", "\"").replace("\\\\", "\\"),
                None => v.to_owned(),
            };
            Some((n.trim().to_ascii_lowercase(), v))
        })
        .collect();
    ContentType { mime, params }
}

fn split_unquoted(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let (mut quoted, mut escaped) = (false, false);
    for c in s.chars() {
        if c == sep && !quoted {
            out.push(String::new());
            continue;
        }
        if quoted && c == '\\' && !escaped {
            escaped = true;
        } else {
            if c == '"' && !escaped {
                quoted = !quoted;
            }
            escaped = false;
        }
        if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn decode_base64(text: &[u8], what: &'static str) -> Result<Vec<u8>, SmimeError> {
    let clean: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if clean.is_empty() {
        return Err(SmimeError::NotSmime(format!("the {what} is empty")));
    }
    Base64::decode_vec(&String::from_utf8_lossy(&clean))
        .or_else(|_| Base64Unpadded::decode_vec(&String::from_utf8_lossy(&clean)))
        .map_err(|_| SmimeError::Base64(what))
}

/// The decoded body of the first PEM block, if it is a CMS/PKCS #7 one.
fn pem_body(bytes: &[u8]) -> Result<Vec<u8>, SmimeError> {
    let text = String::from_utf8_lossy(bytes);
    let begin = text
        .find("-----BEGIN ")
        .ok_or_else(|| SmimeError::NotSmime("no PEM block".to_owned()))?;
    let after = &text[begin + "-----BEGIN ".len()..];
    let label_end = after
        .find("-----")
        .ok_or_else(|| SmimeError::NotSmime("a malformed PEM header line".to_owned()))?;
    let label = &after[..label_end];
    let upper = label.to_ascii_uppercase();
    if !(upper == "CMS" || upper.starts_with("PKCS7") || upper.starts_with("PKCS #7")) {
        return Err(SmimeError::NotSmime(format!(
            "the PEM block is {label}, not CMS or PKCS7"
        )));
    }
    let body = &after[label_end + 5..];
    let end_line = format!("-----END {label}-----");
    let end = body
        .find(&end_line)
        .ok_or_else(|| SmimeError::PemEnd(label.to_owned()))?;
    decode_base64(&body.as_bytes()[..end], "PEM body")
}

fn read_multipart_signed(entity: &Entity<'_>, ct: &ContentType) -> Result<SignedInput, SmimeError> {
    let boundary = ct
        .param("boundary")
        .filter(|b| !b.is_empty())
        .ok_or_else(|| SmimeError::Multipart("the Content-Type has no boundary".to_owned()))?;
    let parts = multipart_parts(entity.body, boundary)?;
    let [content, signature] = parts.as_slice() else {
        return Err(SmimeError::Multipart(format!(
            "it has {} parts; a signed message has two (content and signature)",
            parts.len()
        )));
    };
    let sig = Entity::parse(signature).ok_or_else(|| {
        SmimeError::Multipart("the signature part has no MIME headers".to_owned())
    })?;
    let sig_ct = sig.content_type()?;
    if !is_cms_type(&sig_ct.mime) {
        return Err(SmimeError::Multipart(format!(
            "the second part is {}, not application/pkcs7-signature",
            sig_ct.mime
        )));
    }
    Ok(SignedInput::Detached {
        signature: sig.decoded_body("signature part")?,
        content: content.to_vec(),
    })
}

/// The parts of a multipart body (RFC 2046 5.1.1): each without the line break that belongs
/// to the next delimiter. The closing delimiter must be present.
fn multipart_parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, SmimeError> {
    let dash = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut part_start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let rest = &body[pos..];
        let line_end = rest.iter().position(|b| *b == b'\n');
        let line = &rest[..line_end.unwrap_or(rest.len())];
        let next = line_end.map_or(body.len(), |i| pos + i + 1);
        if let Some(tail) = line.strip_prefix(dash.as_bytes()) {
            let tail = trim_end(tail);
            let close = tail == b"--";
            if close || tail.is_empty() {
                if let Some(start) = part_start {
                    let mut end = pos;
                    if end > start && body[end - 1] == b'\n' {
                        end -= 1;
                        if end > start && body[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push(&body[start..end.max(start)]);
                }
                if close {
                    return Ok(parts);
                }
                part_start = Some(next);
            }
        }
        pos = next;
    }
    Err(SmimeError::Multipart(
        "the closing boundary is missing; the message is truncated".to_owned(),
    ))
}

fn trim_end(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if last.is_ascii_whitespace() {
            s = rest;
        } else {
            break;
        }
    }
    s
}

/// Lines re-joined with CRLF, trailing CRs dropped: how openssl reads a multipart part.
fn canonical_crlf(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 32);
    let mut lines = content.split(|b| *b == b'\n').peekable();
    while let Some(line) = lines.next() {
        let mut line = line;
        while let [rest @ .., b'\r'] = line {
            line = rest;
        }
        out.extend_from_slice(line);
        if lines.peek().is_some() {
            out.extend_from_slice(b"\r\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::cms::test_pki::*;
    use crate::pki::cms::{self, InnerType, KeyTransport};

    const MSG: &[u8] = b"Hello Bob,\nline two\n\nlast line, no newline";

    fn crlf(s: &[u8]) -> Vec<u8> {
        canonical_crlf(s)
    }

    #[test]
    fn wrap_writes_openssl_headers_base64_64_columns_crlf() {
        let der: Vec<u8> = (0..200u8).collect();
        let text = wrap_enveloped(&der);
        let s = std::str::from_utf8(&text).unwrap();
        assert!(s.starts_with(
            "MIME-Version: 1.0\r\n\
             Content-Disposition: attachment; filename=\"smime.p7m\"\r\n\
             Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n"
        ));
        assert!(s.ends_with("\r\n\r\n"));
        let body = s.split("\r\n\r\n").nth(1).unwrap();
        let lines: Vec<_> = body.split("\r\n").collect();
        assert_eq!(lines[0].len(), 64);
        assert!(lines.iter().all(|l| l.len() <= 64));
        assert!(!s.replace("\r\n", "").contains('\n'));
        // DER starting with 0x30 reads back through every shape.
        let der = [vec![0x30, 0x82, 0x00, 0xc6], der[4..].to_vec()].concat();
        for text in [wrap_enveloped(&der), wrap_signed(&der)] {
            assert_eq!(read_any(&text).unwrap(), der);
            let lf = String::from_utf8(text.clone())
                .unwrap()
                .replace("\r\n", "\n");
            assert_eq!(read_any(lf.as_bytes()).unwrap(), der);
        }
        assert_eq!(read_any(&der).unwrap(), der);
    }

    #[test]
    fn read_any_accepts_pem_old_mime_types_and_folded_headers() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x05];
        let b64 = Base64::encode_string(&der);
        for label in ["CMS", "PKCS7"] {
            let pem = format!("\n-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n");
            assert_eq!(read_any(pem.as_bytes()).unwrap(), der);
        }
        let pem = format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n");
        assert!(matches!(
            read_any(pem.as_bytes()),
            Err(SmimeError::NotSmime(_))
        ));
        let pem = format!("-----BEGIN CMS-----\n{b64}\n");
        assert!(matches!(
            read_any(pem.as_bytes()),
            Err(SmimeError::PemEnd(_))
        ));

        let mail = format!(
            "From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\
             Content-Type: application/x-pkcs7-mime;\r\n\tsmime-type=enveloped-data;\r\n name=smime.p7m\r\n\
             Content-Transfer-Encoding: BASE64\r\n\r\n{}\r\n{}\r\n",
            &b64[..4],
            &b64[4..]
        );
        assert_eq!(read_any(mail.as_bytes()).unwrap(), der);
        let binary = [
            b"Content-Type: application/pkcs7-mime\n\n".to_vec(),
            der.clone(),
        ]
        .concat();
        assert_eq!(read_any(&binary).unwrap(), der);

        for bad in [
            &b"hello world"[..],
            b"",
            b"Subject: hi\r\n\r\nbody",
            b"Content-Type: text/plain\r\n\r\nbody",
        ] {
            assert!(
                matches!(read_any(bad), Err(SmimeError::NotSmime(_))),
                "{bad:?}"
            );
        }
        let qp = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nx";
        assert!(matches!(read_any(qp), Err(SmimeError::Unsupported(_))));
        let bad64 = b"Content-Type: application/pkcs7-mime\r\nContent-Transfer-Encoding: base64\r\n\r\nMII*\r\n";
        assert!(matches!(read_any(bad64), Err(SmimeError::Base64(_))));
    }

    #[test]
    fn multipart_parts_follow_rfc_2046() {
        let body = b"preamble\r\n--b\r\nfirst\r\nline\r\n--b  \r\nContent-Type: x\r\n\r\nsig\r\n--b--\r\nepilogue";
        assert_eq!(
            multipart_parts(body, "b").unwrap(),
            vec![&b"first\r\nline"[..], &b"Content-Type: x\r\n\r\nsig"[..]]
        );
        let lf = b"--b\nfirst\n\n--b\nsecond\n--b--\n";
        assert_eq!(
            multipart_parts(lf, "b").unwrap(),
            vec![&b"first\n"[..], &b"second"[..]]
        );
        assert!(matches!(
            multipart_parts(b"--b\r\nx\r\n--b\r\ny", "b"),
            Err(SmimeError::Multipart(_))
        ));
        // "--bx" is not the boundary "b".
        assert_eq!(
            multipart_parts(b"--b\r\n--bx\r\n--b--", "b").unwrap(),
            vec![&b"--bx"[..]]
        );
        assert_eq!(
            canonical_crlf(b"a\nb\r\nc\r\r\n\nd"),
            b"a\r\nb\r\nc\r\n\r\nd"
        );
        let ct = parse_content_type(
            "multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=\"sha-256\"; boundary=\"----A;B\"",
        );
        assert_eq!(ct.mime, "multipart/signed");
        assert_eq!(ct.param("boundary"), Some("----A;B"));
        assert_eq!(ct.param("micalg"), Some("sha-256"));
    }

    /// `openssl cms -sign SIGN… | openssl cms -encrypt ENC… bob.pem`, read by keyward as bob.
    fn openssl_to_keyward(sign: &[&str], enc: &[&str]) {
        let pki = Pki::new();
        std::fs::write(pki.path("msg"), MSG).unwrap();
        let mut args = vec![
            "cms",
            "-sign",
            "-in",
            "msg",
            "-signer",
            "alice.pem",
            "-inkey",
            "alice.key",
            "-md",
            "sha256",
        ];
        args.extend_from_slice(sign);
        let (ok, signed, err) = pki.openssl(&args, None);
        assert!(ok, "{args:?}: {err}");
        // -keyopt applies to the -recip before it.
        let mut args = vec!["cms", "-encrypt", "-aes256", "-recip", "bob.pem"];
        args.extend_from_slice(enc);
        let (ok, env, err) = pki.openssl(&args, Some(&signed));
        assert!(ok, "{args:?}: {err}");

        let v = pki
            .read_as("bob", &env)
            .unwrap_or_else(|e| panic!("{sign:?} {enc:?}: {e}"));
        let mut want = if sign.contains(&"-binary") {
            MSG.to_vec()
        } else {
            crlf(MSG)
        };
        if sign.contains(&"-text") {
            // -text signs a text/plain MIME entity; the content is that entity.
            want = [&b"Content-Type: text/plain\r\n\r\n"[..], &want].concat();
        }
        assert_eq!(v.content, want, "{sign:?} {enc:?}");
        assert_eq!(v.signer, pki.user("alice").sign_cert);
        let age = std::time::SystemTime::now()
            .duration_since(v.signing_time.unwrap())
            .unwrap();
        assert!(age.as_secs() < 120);

        // Not for carol.
        let der = read_any(&env).unwrap();
        let slots = cms::recipients(&der).unwrap();
        assert!(matches!(
            cms::match_recipient(&slots, &[pki.user("carol").enc_cert.clone()]),
            Err(cms::CmsError::NotForYou { .. })
        ));
    }

    #[test]
    fn openssl_detached_pkcs1v15() {
        openssl_to_keyward(&[], &[]);
    }

    #[test]
    fn openssl_detached_oaep() {
        openssl_to_keyward(&[], &["-keyopt", "rsa_padding_mode:oaep"]);
    }

    #[test]
    fn openssl_nodetach_pkcs1v15_and_oaep() {
        openssl_to_keyward(&["-nodetach"], &[]);
        openssl_to_keyward(&["-nodetach"], &["-keyopt", "rsa_padding_mode:oaep"]);
    }

    #[test]
    fn openssl_binary_der_pem_and_oaep_sha256() {
        openssl_to_keyward(
            &["-nodetach", "-binary"],
            &[
                "-binary",
                "-outform",
                "DER",
                "-keyopt",
                "rsa_padding_mode:oaep",
                "-keyopt",
                "rsa_oaep_md:sha256",
            ],
        );
        openssl_to_keyward(&["-binary"], &["-binary", "-outform", "PEM"]);
        openssl_to_keyward(
            &["-nodetach", "-outform", "DER"],
            &["-binary", "-outform", "DER"],
        );
        openssl_to_keyward(&["-nodetach", "-outform", "PEM"], &["-outform", "PEM"]);
    }

    #[test]
    fn openssl_streamed_ber_and_key_identifiers() {
        openssl_to_keyward(
            &["-nodetach", "-stream", "-outform", "DER"],
            &["-binary", "-stream", "-outform", "DER"],
        );
        openssl_to_keyward(&["-stream"], &["-stream"]);
        openssl_to_keyward(
            &["-nodetach", "-keyid", "-text"],
            &["-keyid", "-keyopt", "rsa_padding_mode:oaep"],
        )
    }

    #[test]
    fn tampered_multipart_signed_fails() {
        let pki = Pki::new();
        std::fs::write(pki.path("msg"), MSG).unwrap();
        let (ok, signed, err) = pki.openssl(
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
                "sha256",
            ],
            None,
        );
        assert!(ok, "{err}");
        let v = verify_any(&signed).unwrap();
        assert_eq!(v.content, crlf(MSG));
        // Line ends changed in transit still verify (canonical form), as with openssl.
        let lf = String::from_utf8(signed.clone())
            .unwrap()
            .replace("\r\n", "\n");
        assert_eq!(verify_any(lf.as_bytes()).unwrap().content, crlf(MSG));
        // A changed word does not.
        let text = String::from_utf8(signed.clone()).unwrap();
        let bad = text.replacen("line two", "line 2!!", 1);
        assert!(matches!(
            verify_any(bad.as_bytes()),
            Err(SmimeError::Cms(cms::CmsError::DigestMismatch))
        ));
        // Cut before the closing boundary.
        let cut = &signed[..signed.len() - 60];
        assert!(verify_any(cut).is_err());
        // read_any refuses multipart/signed with a pointer to read_signed.
        assert!(matches!(read_any(&signed), Err(SmimeError::Unsupported(_))));
        // A message encrypted (no signature inside) is not a signed message.
        let env = cms::encrypt(
            MSG,
            InnerType::Data,
            &[pki.user("bob").recipient(KeyTransport::RsaPkcs1v15)],
        )
        .unwrap();
        let err = pki.read_as("bob", &env).unwrap_err();
        assert!(matches!(err, SmimeError::Unsigned(_)), "{err}");
        assert!(
            err.to_string().starts_with("the message is not signed"),
            "{err}"
        );
    }
}
