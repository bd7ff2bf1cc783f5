//! `read`: find the recipient slot for one of the keyset's encryption keys (current or
//! archived), decrypt the content key on the token, decrypt, and verify the signer's chain.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::time::SystemTime;

use secrecy::SecretString;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;

use super::{content, decryption_keys_of, describe, stream, MessageError};
use crate::keyset::ops::unhex_id;
use crate::keyset::{KeysetRecord, KeysetSession};
use crate::pki::cms::{self, KeyTransport};
use crate::pki::smime;
use crate::pki::x509;
use crate::token::{KeyTransportScheme, LoginPolicy, Module, OaepHash};

/// How to read.
pub struct ReadOptions<'a> {
    /// The reader's keyset (enrolled).
    pub keyset: &'a KeysetRecord,
    /// The CA that must have issued the signer's certificate (default: the keyset's authority).
    pub ca: Option<Certificate>,
    /// A CRL to check the signer against.
    pub crl: Option<CertificateList>,
    /// The keyset password.
    pub password: &'a SecretString,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// A message that decrypted and verified.
pub struct ReadOutcome {
    /// The bytes written (the body, or the whole entity with `--mime`).
    pub bytes: u64,
    /// The signed content's MIME type, when it is a MIME entity.
    pub content_type: Option<String>,
    /// Who signed, `CN <email>`.
    pub signer: String,
    /// The signer certificate's serial, hex.
    pub signer_serial: String,
    /// When it was signed (the signingTime attribute: the signer's own claim).
    pub signed_at: Option<SystemTime>,
    /// When the signer's certificate expired, if it has since the message was signed (the
    /// signature was checked at the signing time it states).
    pub signer_expired: Option<SystemTime>,
    /// The serial of the encryption certificate whose key opened it.
    pub opened_with: String,
    /// Whether that key is an archived (older) one.
    pub archived_key: bool,
    /// The CA certificate the signer's certificate was checked against: the keyset's CA,
    /// or, across a CA rollover, the one a link certificate leads to (whose CRL applies).
    pub issuer: Certificate,
}

/// The most of a decrypted message held in memory when it is not streamable: a
/// clear-signed (multipart/signed) entity inside the envelope, as other clients write.
pub const MAX_IN_MEMORY: usize = 48 * 1024 * 1024;

/// Decrypts and verifies a message read from `input`, writing the content (the body of its
/// MIME entity, or all of it with `whole`) to `out` as it goes, in bounded memory. The
/// caller must discard what was written unless this returns `Ok`: nothing counts unless
/// the signature and the signer's chain (and CRL, when given) check out.
pub fn read(
    module: &Module,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
    whole: bool,
    o: ReadOptions<'_>,
) -> Result<ReadOutcome, MessageError> {
    let record = o.keyset;
    let (keys, authority_ca) = decryption_keys_of(record)?;
    let der = message_body(input)?;
    let mut ber = stream::BerReader::new(der);
    let env = open_enveloped(&mut ber)?;
    let mut certs = Vec::new();
    for k in keys {
        certs.push(
            x509::certs_from_pem(&k.certificate)?
                .into_iter()
                .next()
                .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))?,
        );
    }
    let (slot, index) = cms::match_recipient(&env.slots, &certs)?;
    let key = &keys[index];
    let scheme = match slot.transport {
        Some(KeyTransport::RsaPkcs1v15) => KeyTransportScheme::RsaPkcs1v15,
        Some(KeyTransport::RsaOaepSha1) => KeyTransportScheme::RsaOaep(OaepHash::Sha1),
        Some(KeyTransport::RsaOaepSha256) => KeyTransportScheme::RsaOaep(OaepHash::Sha256),
        None => return Err(MessageError::Cms(cms::CmsError::NoRecipients)),
    };
    let id = unhex_id(&key.id)?;
    let mut session = KeysetSession::open(module, record, o.password, o.policy, false)?;
    let cek =
        session.decrypt_key_transport(module, &record.name, &id, scheme, &slot.encrypted_key)?;
    if cek.len() != env.key_len {
        return Err(cms::CmsError::ContentKeyLength {
            got: cek.len(),
            want: env.key_len,
            algorithm: env.cipher,
        }
        .into());
    }
    let ciphertext = ber.octets(env.content_header);
    let plain =
        stream::CbcReader::new(ciphertext, &cek, &env.iv).ok_or(cms::CmsError::DecryptFailed)?;
    let mut plain = BufReader::with_capacity(stream::CHUNK, plain);
    let found = verify_inner(&mut plain, env.inner_signed_data, out, whole)?;
    // The rest of the plaintext (a line break after the S/MIME body) and the padding.
    let rest =
        std::io::copy(&mut plain.take(1 << 20), &mut std::io::sink()).map_err(parse_error)?;
    if rest >= 1 << 20 {
        return Err(cms::CmsError::Corrupted("data after the signed message".into()).into());
    }
    close_enveloped(&mut ber, &env)?;
    let verified = found;

    let ca = match o.ca {
        Some(c) => c,
        None => {
            let pem = authority_ca.ok_or_else(|| MessageError::Untrusted {
                signer: describe(&verified.signer),
                why: format!(
                    "cannot be checked: keyset {:?} was adopted and has no authority; pass --ca FILE, the CA certificate that issued the sender's certificate",
                    record.name
                ),
            })?;
            let trust = x509::certs_from_pem(pem)?;
            let anchor = trust
                .first()
                .cloned()
                .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))?;
            // The keyset's CA, or one a link certificate of a CA rollover (in the keyset's
            // trust or the message) leads to from it.
            crate::authority::chain::issuer_of(&verified.signer, &trust, &verified.certificates)
                .unwrap_or(anchor)
        }
    };
    check_signer(&verified.signer, &ca, o.crl.as_ref(), verified.signing_time)?;
    Ok(ReadOutcome {
        bytes: verified.bytes,
        content_type: match verified.found {
            content::Found::Entity(ct) => Some(ct),
            _ => None,
        },
        signer: describe(&verified.signer),
        signer_serial: x509::serial_hex(&verified.signer),
        signed_at: verified.signing_time,
        signer_expired: expired_since(&verified.signer),
        opened_with: key.cert_serial.clone(),
        archived_key: !key.current,
        issuer: ca,
    })
}

/// A stream error as the message error it is: damaged data, a truncated message, or the
/// system's I/O error.
fn parse_error(e: std::io::Error) -> MessageError {
    match e.kind() {
        ErrorKind::UnexpectedEof => cms::CmsError::Truncated(e.to_string()).into(),
        ErrorKind::InvalidData if e.to_string().contains(stream::BAD_PADDING) => {
            cms::CmsError::DecryptFailed.into()
        }
        ErrorKind::InvalidData => cms::CmsError::Corrupted(e.to_string()).into(),
        _ => MessageError::Io {
            action: "read the message",
            source: e,
        },
    }
}

/// The CMS bytes of a DER/BER, PEM or S/MIME message, as a stream.
fn message_body<'a>(input: &'a mut dyn BufRead) -> Result<Box<dyn Read + 'a>, MessageError> {
    // Leading blank lines are allowed before PEM or MIME text.
    loop {
        let buf = input.fill_buf().map_err(parse_error)?;
        match buf.first() {
            None => return Err(smime::SmimeError::NotSmime("the input is empty".into()).into()),
            Some(0x30) => return Ok(Box::new(input)),
            Some(b) if b.is_ascii_whitespace() => input.consume(1),
            Some(_) => break,
        }
    }
    let head = input.fill_buf().map_err(parse_error)?;
    if head.starts_with(b"-----BEGIN ") {
        let mut line = Vec::new();
        input.read_until(b'\n', &mut line).map_err(parse_error)?;
        let label = String::from_utf8_lossy(&line);
        let label = label
            .trim()
            .trim_start_matches("-----BEGIN ")
            .trim_end_matches('-');
        let upper = label.to_ascii_uppercase();
        if !(upper == "CMS" || upper.starts_with("PKCS7") || upper.starts_with("PKCS #7")) {
            return Err(smime::SmimeError::NotSmime(format!(
                "the PEM block is {label}, not CMS or PKCS7"
            ))
            .into());
        }
        return Ok(Box::new(stream::Base64Reader::new(input, "PEM body")));
    }
    let block = header_block(input)?.ok_or_else(|| {
        smime::SmimeError::NotSmime("it is neither DER, PEM nor an S/MIME message".into())
    })?;
    let (mime, _, cte) = smime::header_summary(&block).ok_or_else(|| {
        smime::SmimeError::NotSmime("it has MIME headers but no Content-Type".into())
    })?;
    if mime == "multipart/signed" {
        return Err(smime::SmimeError::Unsupported(
            "this is a multipart/signed message (a detached signature), not an encrypted one; read it as a signed message".into(),
        )
        .into());
    }
    if !smime::is_cms_content_type(&mime) {
        return Err(smime::SmimeError::NotSmime(format!(
            "its Content-Type is {mime}, not application/pkcs7-mime"
        ))
        .into());
    }
    body_of(input, cte.as_deref(), "S/MIME body")
}

/// An S/MIME body by its transfer encoding: base64 decoded, binary DER as it is.
fn body_of<'a, R: BufRead + 'a>(
    mut input: R,
    cte: Option<&str>,
    what: &'static str,
) -> Result<Box<dyn Read + 'a>, MessageError> {
    let binary = input.fill_buf().map_err(parse_error)?.first() == Some(&0x30);
    match cte {
        Some("base64") => Ok(Box::new(stream::Base64Reader::new(input, what))),
        Some("binary") | Some("8bit") | Some("7bit") | None if binary => Ok(Box::new(input)),
        None => Ok(Box::new(stream::Base64Reader::new(input, what))),
        Some(other) => Err(smime::SmimeError::Unsupported(format!(
            "the {what} uses Content-Transfer-Encoding {other}; keyward reads base64 and binary"
        ))
        .into()),
    }
}

/// The MIME header block at the start of `input`, up to and including its empty line;
/// `None` when the input does not start with header lines.
fn header_block(input: &mut dyn BufRead) -> Result<Option<Vec<u8>>, MessageError> {
    let mut block = Vec::new();
    loop {
        let start = block.len();
        let n = input
            .take(MAX_HEADER as u64)
            .read_until(b'\n', &mut block)
            .map_err(parse_error)?;
        let line = &block[start..];
        if n == 0 || block.len() >= MAX_HEADER {
            return Ok(None);
        }
        if line == b"\n" || line == b"\r\n" {
            return Ok((start > 0).then_some(block));
        }
        let text = String::from_utf8_lossy(line);
        let looks_like_header = text.starts_with([' ', '\t'])
            || text
                .split_once(':')
                .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_graphic()));
        if !looks_like_header {
            return Ok(None);
        }
    }
}

/// The longest MIME header block read.
const MAX_HEADER: usize = 64 * 1024;

/// What [`open_enveloped`] found before the encrypted content.
struct Envelope {
    slots: Vec<cms::RecipientSlot>,
    cipher: &'static str,
    key_len: usize,
    iv: Vec<u8>,
    inner_signed_data: bool,
    content_header: stream::Header,
    /// ContentInfo, its [0], EnvelopedData, EncryptedContentInfo: to close after the content.
    open: [stream::Header; 4],
}

/// Reads the end of a ContentInfo(EnvelopedData) after its encrypted content: the message
/// must end there.
fn close_enveloped<R: Read>(
    ber: &mut stream::BerReader<R>,
    env: &Envelope,
) -> Result<(), MessageError> {
    let e = parse_error;
    let [ci, explicit, enveloped, eci] = env.open;
    ber.end_of(eci, "the encrypted content").map_err(e)?;
    if !ber.at_end().map_err(e)? && ber.peek().map_err(e)?.tag == 0xa1 {
        ber.skip().map_err(e)?; // unprotectedAttrs
    }
    ber.end_of(enveloped, "the EnvelopedData").map_err(e)?;
    ber.end_of(explicit, "the ContentInfo").map_err(e)?;
    ber.end_of(ci, "the ContentInfo").map_err(e)?;
    if !ber.at_end().map_err(e)? {
        return Err(cms::CmsError::Corrupted(
            "unexpected data after the end of the message".into(),
        )
        .into());
    }
    Ok(())
}

fn oid_of(raw: &[u8]) -> Result<der::asn1::ObjectIdentifier, MessageError> {
    match raw {
        [0x06, len, body @ ..] if usize::from(*len) == body.len() => {
            der::asn1::ObjectIdentifier::from_bytes(body)
                .map_err(|e| cms::CmsError::Corrupted(format!("bad OBJECT IDENTIFIER: {e}")).into())
        }
        _ => Err(cms::CmsError::Corrupted("an OBJECT IDENTIFIER is missing".into()).into()),
    }
}

/// Reads a ContentInfo(EnvelopedData) up to the start of its encrypted content.
fn open_enveloped<R: Read>(ber: &mut stream::BerReader<R>) -> Result<Envelope, MessageError> {
    use der::oid::db::rfc5911;
    let e = parse_error;
    let ci = ber.expect(0x30, "the ContentInfo").map_err(e)?;
    let oid = oid_of(&ber.element(64).map_err(e)?)?;
    if oid == rfc5911::ID_SIGNED_DATA {
        return Err(cms::CmsError::NotEnveloped("a signed message (SignedData)".into()).into());
    }
    if oid != rfc5911::ID_ENVELOPED_DATA {
        return Err(
            cms::CmsError::NotEnveloped(if oid == rfc5911::ID_CT_AUTH_ENVELOPED_DATA {
                "an AES-GCM encrypted message (AuthEnvelopedData), which keyward cannot read".into()
            } else {
                format!("a CMS message of type {oid}")
            })
            .into(),
        );
    }
    let explicit = ber.expect(0xa0, "the ContentInfo's content").map_err(e)?;
    let enveloped = ber.expect(0x30, "the EnvelopedData").map_err(e)?;
    if ber.peek().map_err(e)?.tag != 0x02 {
        return Err(cms::CmsError::Corrupted("the EnvelopedData has no version".into()).into());
    }
    ber.skip().map_err(e)?;
    if ber.peek().map_err(e)?.tag == 0xa0 {
        ber.skip().map_err(e)?; // originatorInfo
    }
    if ber.peek().map_err(e)?.tag != 0x31 {
        return Err(cms::CmsError::Corrupted(
            "the EnvelopedData lacks its recipients or its encrypted content".into(),
        )
        .into());
    }
    let slots = cms::recipients_of_set(&ber.element(stream::MAX_ELEMENT).map_err(e)?)?;
    let eci = ber.expect(0x30, "the EncryptedContentInfo").map_err(e)?;
    let inner = oid_of(&ber.element(64).map_err(e)?)?;
    let inner_signed_data = if inner == rfc5911::ID_DATA {
        false
    } else if inner == rfc5911::ID_SIGNED_DATA {
        true
    } else {
        return Err(cms::CmsError::UnsupportedInnerType(inner.to_string()).into());
    };
    let (cipher, key_len, iv) = cms::content_cipher(&ber.element(4096).map_err(e)?)?;
    let content_header = match ber.at_end().map_err(e)? {
        true => None,
        false => Some(ber.header().map_err(e)?),
    };
    let content_header = match content_header {
        Some(h) if h.tag == 0x80 || h.tag == 0xa0 => h,
        _ => return Err(cms::CmsError::NoEncryptedContent.into()),
    };
    Ok(Envelope {
        slots,
        cipher,
        key_len,
        iv,
        inner_signed_data,
        content_header,
        open: [ci, explicit, enveloped, eci],
    })
}

/// What the streamed signature check found.
struct StreamVerified {
    signer: Certificate,
    /// Every certificate the message carries (for a path across a CA rollover).
    certificates: Vec<Certificate>,
    signing_time: Option<SystemTime>,
    found: content::Found,
    bytes: u64,
}

/// The decrypted content: an S/MIME signed entity (opaque, base64 or binary), a
/// ContentInfo(SignedData), a bare SignedData (`bare`), or — not streamable, held in
/// memory up to [`MAX_IN_MEMORY`] — a clear-signed multipart/signed entity.
fn verify_inner(
    plain: &mut dyn BufRead,
    bare: bool,
    out: &mut dyn Write,
    whole: bool,
) -> Result<StreamVerified, MessageError> {
    let first = plain.fill_buf().map_err(parse_error)?.first().copied();
    if bare || first == Some(0x30) {
        return verify_signed_stream(plain, bare, out, whole);
    }
    let not_signed = |why: String| -> MessageError { smime::SmimeError::Unsigned(why).into() };
    let Some(block) = header_block(plain)? else {
        return Err(not_signed(
            "it is encrypted, but what it holds is not a signed message".into(),
        ));
    };
    let Some((mime, smime_type, cte)) = smime::header_summary(&block) else {
        return Err(not_signed(
            "it is encrypted, but what it holds has no Content-Type".into(),
        ));
    };
    if mime == "multipart/signed" {
        let mut all = block;
        plain
            .take((MAX_IN_MEMORY - all.len().min(MAX_IN_MEMORY)) as u64 + 1)
            .read_to_end(&mut all)
            .map_err(parse_error)?;
        if all.len() > MAX_IN_MEMORY {
            return Err(MessageError::Content(format!(
                "the message holds a clear-signed (multipart/signed) entity larger than {} MiB, which keyward checks in memory only; ask the sender for an opaque-signed message (keyward send, or openssl cms -sign -nodetach)",
                MAX_IN_MEMORY >> 20
            )));
        }
        let verified = smime::verify_any(&all)?;
        let mut body = content::BodyWriter::new(out, whole);
        body.write_all(&verified.content).map_err(io_write)?;
        let (found, bytes, _) = body.finish().map_err(io_write)?;
        return Ok(StreamVerified {
            signer: verified.signer,
            certificates: verified.certificates,
            signing_time: verified.signing_time,
            found,
            bytes,
        });
    }
    let signed = smime::is_cms_content_type(&mime)
        && !matches!(
            smime_type.as_deref(),
            Some("enveloped-data") | Some("certs-only")
        );
    if !signed {
        return Err(not_signed(format!(
            "it is encrypted, but what it holds is {mime}{}",
            smime_type.map(|t| format!(" ({t})")).unwrap_or_default()
        )));
    }
    let mut body = body_of(plain, cte.as_deref(), "signed S/MIME body")?;
    let mut body = BufReader::with_capacity(stream::CHUNK, &mut body);
    verify_signed_stream(&mut body, false, out, whole)
}

fn io_write(e: std::io::Error) -> MessageError {
    match e.kind() {
        ErrorKind::InvalidData => cms::CmsError::Corrupted(e.to_string()).into(),
        _ => MessageError::Io {
            action: "write the content",
            source: e,
        },
    }
}

/// Streams a SignedData (in a ContentInfo, or `bare`), hashing the content while it is
/// written to `out`, then checks the signer.
fn verify_signed_stream(
    input: &mut dyn Read,
    bare: bool,
    out: &mut dyn Write,
    whole: bool,
) -> Result<StreamVerified, MessageError> {
    use der::oid::db::rfc5911;
    let e = parse_error;
    let mut ber = stream::BerReader::new(input);
    ber.expect(0x30, "the signed message").map_err(e)?;
    if !bare {
        if ber.peek().map_err(e)?.tag != 0x06 {
            return Err(smime::SmimeError::Unsigned(
                "it is encrypted, but what it holds is not a ContentInfo".into(),
            )
            .into());
        }
        let oid = oid_of(&ber.element(64).map_err(e)?)?;
        if oid != rfc5911::ID_SIGNED_DATA {
            return Err(smime::SmimeError::Unsigned(format!(
                "it is encrypted, but what it holds is a CMS message of type {oid}"
            ))
            .into());
        }
        ber.expect(0xa0, "the ContentInfo's content").map_err(e)?;
        ber.expect(0x30, "the SignedData").map_err(e)?;
    }
    ber.element(64).map_err(e)?; // version
    if ber.peek().map_err(e)?.tag != 0x31 {
        return Err(
            cms::CmsError::Corrupted("the SignedData has no digest algorithms".into()).into(),
        );
    }
    ber.skip().map_err(e)?; // digestAlgorithms: the SignerInfo's own is checked
    let encap = ber.expect(0x30, "the signed content").map_err(e)?;
    let econtent_type = oid_of(&ber.element(64).map_err(e)?)?;
    if econtent_type != rfc5911::ID_DATA {
        return Err(cms::CmsError::NotData(econtent_type.to_string()).into());
    }
    if ber.peek().map_err(e)?.tag != 0xa0 {
        return Err(cms::CmsError::Detached.into());
    }
    let explicit = ber.header().map_err(e)?;
    let octets = ber.header().map_err(e)?;
    if octets.tag != 0x04 && octets.tag != 0x24 {
        return Err(
            cms::CmsError::Corrupted("the signed content is not an OCTET STRING".into()).into(),
        );
    }
    let mut hashed = stream::Sha256Writer::new(content::BodyWriter::new(out, whole));
    std::io::copy(&mut ber.octets(octets), &mut hashed).map_err(|err| match err.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::InvalidData => parse_error(err),
        _ => io_write(err),
    })?;
    let (digest, body) = hashed.finish();
    let (found, bytes, _) = body.finish().map_err(io_write)?;
    ber.end_of(explicit, "the signed content").map_err(e)?;
    ber.end_of(encap, "the signed content").map_err(e)?;
    let mut certificates = None;
    let infos = loop {
        let h = ber.peek().map_err(e)?;
        match h.tag {
            0xa0 => certificates = Some(ber.element(stream::MAX_ELEMENT).map_err(e)?),
            0xa1 => ber.skip().map_err(e)?,
            0x31 => break ber.element(stream::MAX_ELEMENT).map_err(e)?,
            t => {
                return Err(cms::CmsError::Corrupted(format!(
                    "an unexpected element (tag {t:#04x}) in the SignedData"
                ))
                .into())
            }
        }
    };
    let (signer, signing_time) =
        cms::check_streamed_signer(&infos, certificates.as_deref(), &digest)?;
    Ok(StreamVerified {
        signer,
        certificates: cms::streamed_certificates(certificates.as_deref())?,
        signing_time,
        found,
        bytes,
    })
}

/// What [`parse_unverified`] got through, for the fuzz target (`fuzz/checks/message.rs`).
#[derive(Debug, Default)]
pub struct ParseReport {
    /// Recipient slots found.
    pub recipients: usize,
    /// Whether the input, read as a signed message (the decrypted layer), verified.
    pub signed_verified: bool,
}

/// Runs the streaming parsers over untrusted bytes without a token: the outer layers
/// (DER/BER, PEM or S/MIME, then the EnvelopedData up to and through its encrypted content,
/// decrypted with an all-zero key), and the same bytes as the decrypted layer (a signed
/// S/MIME entity or SignedData, streamed and checked). For fuzzing: it must never panic
/// and must stay in bounded memory.
pub fn parse_unverified(input: &[u8]) -> ParseReport {
    let mut report = ParseReport::default();
    let mut reader = input;
    if let Ok(der) = message_body(&mut reader) {
        let mut ber = stream::BerReader::new(der);
        if let Ok(env) = open_enveloped(&mut ber) {
            report.recipients = env.slots.len();
            let key = vec![0u8; env.key_len];
            if let Some(plain) =
                stream::CbcReader::new(ber.octets(env.content_header), &key, &env.iv)
            {
                let mut plain = BufReader::new(plain);
                let _ = verify_inner(
                    &mut plain,
                    env.inner_signed_data,
                    &mut std::io::sink(),
                    false,
                );
            }
        }
    }
    let mut plain = input;
    report.signed_verified = verify_inner(&mut plain, false, &mut std::io::sink(), false).is_ok();
    report
}

/// How far ahead of this machine's clock a signer's clock may be.
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The signer must chain to `ca`, have been valid when it says it signed (a time not in the
/// future), and not be on the CRL.
fn check_signer(
    signer: &Certificate,
    ca: &Certificate,
    crl: Option<&CertificateList>,
    signed_at: Option<SystemTime>,
) -> Result<(), MessageError> {
    let who = describe(signer);
    let untrusted = |why: String| MessageError::Untrusted {
        signer: who.clone(),
        why,
    };
    x509::verify_issued_by(signer, ca).map_err(|_| {
        untrusted(format!(
            "is unknown: its certificate was not issued by {} (pass --ca FILE for another authority)",
            describe(ca)
        ))
    })?;
    let now = SystemTime::now();
    if let Some(at) = signed_at.filter(|at| *at > now + CLOCK_SKEW) {
        return Err(untrusted(format!(
            "claims to have signed at {}, in the future (more than {} ahead of this clock)",
            humantime::format_rfc3339_seconds(at),
            humantime::format_duration(CLOCK_SKEW)
        )));
    }
    x509::check_validity(signer, signed_at.unwrap_or(now))
        .map_err(|e| untrusted(format!("had no valid certificate when signing: {e}")))?;
    if let Some(crl) = crl {
        x509::verify_crl(crl, ca).map_err(|e| {
            untrusted(format!(
                "cannot be checked: the CRL is not from the CA ({e})"
            ))
        })?;
        check_crl_current(crl, now).map_err(untrusted)?;
        let serial = signer.tbs_certificate.serial_number.as_bytes();
        if x509::is_revoked(crl, serial) {
            return Err(untrusted(
                "has a REVOKED certificate (it is on the CRL)".into(),
            ));
        }
    }
    Ok(())
}

/// A CRL is evidence only while current: issued (thisUpdate) no later than now, plus the
/// clock skew, and not past its nextUpdate — a stale one would miss later revocations.
fn check_crl_current(crl: &CertificateList, now: SystemTime) -> Result<(), String> {
    let tbs = &crl.tbs_cert_list;
    let this_update = tbs.this_update.to_system_time();
    if this_update > now + CLOCK_SKEW {
        return Err(format!(
            "cannot be checked: the CRL says it was issued at {}, in the future",
            humantime::format_rfc3339_seconds(this_update)
        ));
    }
    if let Some(next) = tbs.next_update.map(|t| t.to_system_time()) {
        if next < now {
            return Err(format!(
                "cannot be checked: the CRL is out of date (its next update was due {}); get a current one (`keyward authority crl`)",
                humantime::format_rfc3339_seconds(next)
            ));
        }
    }
    Ok(())
}

/// The certificate's notAfter, when that is in the past.
fn expired_since(cert: &Certificate) -> Option<SystemTime> {
    let not_after = cert.tbs_certificate.validity.not_after.to_system_time();
    (not_after < SystemTime::now()).then_some(not_after)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pki::cms::test_pki::Pki;

    #[test]
    fn the_signing_time_must_not_be_in_the_future_nor_outside_the_certificate() {
        let pki = Pki::new();
        let signer = &pki.user("alice").sign_cert;
        let now = SystemTime::now();
        let check = |at: Option<SystemTime>| check_signer(signer, &pki.ca, None, at);
        check(Some(now)).expect("now");
        check(None).expect("no signing time: checked at now");
        check(Some(now + Duration::from_secs(120))).expect("within the clock skew");
        let e = check(Some(now + Duration::from_secs(3600)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("in the future"), "{e}");
        let before = signer.tbs_certificate.validity.not_before.to_system_time();
        let e = check(Some(before - Duration::from_secs(86_400)))
            .unwrap_err()
            .to_string();
        assert!(e.contains("had no valid certificate when signing"), "{e}");
        assert_eq!(expired_since(signer), None);
    }

    #[test]
    fn a_crl_counts_only_while_it_is_current() {
        let mut pki = Pki::new();
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        let signer = pki.user("alice").sign_cert.clone();
        let ca = pki.ca.clone();
        let check = |crl: &CertificateList| check_signer(&signer, &ca, Some(crl), Some(now));
        check(&pki.crl(now - hour, now + hour)).expect("a current CRL");
        let stale = check(&pki.crl(now - 3 * hour, now - hour))
            .unwrap_err()
            .to_string();
        assert!(stale.contains("the CRL is out of date"), "{stale}");
        let future = check(&pki.crl(now + 2 * hour, now + 3 * hour))
            .unwrap_err()
            .to_string();
        assert!(future.contains("in the future"), "{future}");
    }
}
