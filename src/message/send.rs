//! `send`: sign with the keyset's signing key on its token, then encrypt to every recipient.

use std::io::{Read, Write};
use std::thread::ScopedJoinHandle;
use std::time::SystemTime;

use der::oid::db::rfc5911;
use zeroize::Zeroizing;

use secrecy::SecretString;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::Certificate;

use super::{content, decryption_keys_of, describe, enrollment_of, stream, MessageError};
use crate::keyset::{KeysetRecord, KeysetSession};
use crate::pki::cms::{self, ContentSigner, KeyTransport, Recipient};
use crate::pki::smime;
use crate::pki::x509;
use crate::pki::PublicKey;
use crate::token::{LoginPolicy, Module};

/// How to send.
pub struct SendOptions<'a> {
    /// The sender's keyset (enrolled).
    pub keyset: &'a KeysetRecord,
    /// Recipients' encryption certificates (the sender's own is added).
    pub recipients: &'a [(String, Certificate)],
    /// Key transport for every recipient.
    pub transport: KeyTransport,
    /// Wrap the result as an S/MIME entity instead of DER.
    pub smime: bool,
    /// The keyset password.
    pub password: &'a SecretString,
    /// `--final-try`.
    pub policy: LoginPolicy,
    /// `--content-type`: the content's MIME type (default: text or binary, by its bytes).
    pub content_type: Option<&'a str>,
    /// The input file's name, for the MIME headers of binary content.
    pub file_name: Option<&'a str>,
}

/// The sender's token once it is ready: a logged-in session and the module it runs on
/// (fields drop in order: the session closes before the module is finalised).
struct ReadyToken {
    session: KeysetSession,
    module: Module,
}

/// The token being made ready on a thread of its own while the content streams.
type PendingToken<'scope> = ScopedJoinHandle<'scope, Result<ReadyToken, MessageError>>;

/// Signs on the sender's token. The token (module load, C_Initialize, session, login) is made
/// ready on another thread while the content is hashed and encrypted, which needs no token:
/// [`TokenSigner::poll`] stops the content as soon as that fails (a wrong password costs no
/// more than one chunk), [`TokenSigner::ready`] waits for it before the signature.
struct TokenSigner<'a, 'scope> {
    pending: Option<PendingToken<'scope>>,
    token: Option<ReadyToken>,
    record: &'a KeysetRecord,
    cert: Certificate,
    algorithm: AlgorithmIdentifierOwned,
}

impl TokenSigner<'_, '_> {
    /// Takes the token's result if it is there; its error, if it failed.
    fn poll(&mut self) -> Result<(), MessageError> {
        if self.pending.as_ref().is_some_and(|p| p.is_finished()) {
            self.ready()?;
        }
        Ok(())
    }

    /// Waits for the token.
    fn ready(&mut self) -> Result<(), MessageError> {
        if let Some(pending) = self.pending.take() {
            let token = pending.join().map_err(|_| MessageError::Io {
                action: "open the token",
                source: std::io::Error::other("the thread opening the token panicked"),
            })??;
            self.token = Some(token);
        }
        Ok(())
    }
}

impl ContentSigner for TokenSigner<'_, '_> {
    fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        self.algorithm.clone()
    }

    fn sign(&mut self, signed_attrs_der: &[u8]) -> Result<Vec<u8>, crate::pki::SignError> {
        let token = self
            .token
            .as_mut()
            .ok_or("the token was not ready before the signature (a bug in keyward)")?;
        Ok(token
            .session
            .sign_bytes(&token.module, self.record, signed_attrs_der)?)
    }
}

/// The keyset's current encryption certificate.
pub fn current_encryption_cert(record: &KeysetRecord) -> Result<Certificate, MessageError> {
    let (keys, _) = decryption_keys_of(record)?;
    let key = keys
        .iter()
        .rev()
        .find(|k| k.current)
        .or_else(|| keys.last())
        .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))?;
    first_cert(&key.certificate)
}

/// The signer's certificate and the chain sent with it: an enrolled keyset's certificate and
/// the link certificates of its authority's CA rollovers, if it knows any; an adopted
/// keyset's certificate from the card (its issuer is not known to keyward, so none goes
/// along).
///
/// The root (a self-signed CA certificate) never goes along: RFC 5652 5.1 lets the sender
/// leave out what the reader must hold anyway, and a reader trusting another root of the
/// same authority (after a CA rollover) would otherwise be handed the sender's root as the
/// issuer and stop at it (OpenSSL picks the message's certificates before its own
/// `-certfile` ones). Without the root, `openssl cms -verify -CAfile EITHER-ROOT -certfile
/// LINKS` checks the message in one step, whichever root the reader holds.
fn signer_certs(record: &KeysetRecord) -> Result<(Certificate, Vec<Certificate>), MessageError> {
    if let Some(adopted) = &record.adopted {
        let pem = adopted.signing_certificate.as_deref().ok_or_else(|| {
            MessageError::Keyset(crate::keyset::KeysetError::Unsupported(format!(
                "keyset {:?} was adopted from a token without a certificate for its signing key, and a message carries the signer's certificate; load one with the card's tools and adopt again",
                record.name
            )))
        })?;
        return Ok((first_cert(pem)?, Vec::new()));
    }
    let enrollment = enrollment_of(record)?;
    let signing_pem = enrollment
        .signing_certificate
        .as_deref()
        .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))?;
    let links: Vec<Certificate> = x509::certs_from_pem(&enrollment.authority_ca)?
        .into_iter()
        .filter(|c| !is_self_signed(c))
        .collect();
    Ok((first_cert(signing_pem)?, links))
}

/// Whether `c` verifies with its own key (a root, not a link between two keys of one name).
fn is_self_signed(c: &Certificate) -> bool {
    x509::verify_issued_by(c, c).is_ok()
}

fn first_cert(pem: &str) -> Result<Certificate, MessageError> {
    x509::certs_from_pem(pem)?
        .into_iter()
        .next()
        .ok_or(MessageError::Cms(cms::CmsError::NoRecipients))
}

/// Checks a recipient certificate: RSA, currently valid, meant for key encipherment.
pub fn check_recipient(who: &str, cert: &Certificate) -> Result<(), MessageError> {
    let err = |why: String| MessageError::Recipient {
        who: who.to_string(),
        why,
    };
    let unusable =
        |source: Box<dyn std::error::Error + Send + Sync>| MessageError::RecipientCertificate {
            who: who.to_string(),
            source,
        };
    x509::check_validity(cert, SystemTime::now()).map_err(|e| unusable(e.into()))?;
    let for_encryption = match cert.tbs_certificate.get::<KeyUsage>() {
        Ok(Some((_, ku))) => ku.0.contains(KeyUsages::KeyEncipherment),
        Ok(None) => true,
        Err(_) => false,
    };
    if !for_encryption {
        return Err(err(format!(
            "the certificate of {} is not for encryption (its key usage lacks keyEncipherment); \
             use their encryption certificate",
            describe(cert)
        )));
    }
    let key = PublicKey::from_spki_der(&x509::spki_der_of(cert)).map_err(|e| unusable(e.into()))?;
    if key.rsa_parts().is_none() {
        return Err(err(
            "the certificate's key is not RSA; only RSA keys can receive messages".into(),
        ));
    }
    Ok(())
}

/// Signs the content read from `input` on the sender's token and encrypts it to the
/// recipients and the sender, writing the message to `out` as it goes: memory stays
/// bounded whatever the size (see [`super::stream`]). Returns the bytes written.
///
/// `load_module` loads the PKCS#11 module; it runs, with the login, on a thread of its own
/// while the content streams (see [`TokenSigner`]), as `openssl cms -sign | openssl cms
/// -encrypt` overlaps its two processes.
///
/// The message is BER with indefinite lengths (as `openssl cms -stream` writes): a
/// ContentInfo(EnvelopedData), AES-256-CBC, recipients' SET OF in DER order, whose content is
/// the S/MIME entity of a ContentInfo(SignedData) (base64, as every client reads it), whose
/// content is the input as a MIME entity ([`super::content`], body not base64-encoded). The
/// token signs the signed attributes, which carry the content's SHA-256.
pub fn send<L>(
    load_module: L,
    input: &mut dyn Read,
    out: &mut dyn Write,
    o: SendOptions<'_>,
) -> Result<u64, MessageError>
where
    L: FnOnce() -> Result<Module, MessageError> + Send,
{
    let record = o.keyset;
    let (signing_cert, chain) = signer_certs(record)?;
    let own = current_encryption_cert(record)?;
    for (who, cert) in o.recipients {
        check_recipient(who, cert)?;
    }
    let mut all: Vec<Recipient<'_>> = o
        .recipients
        .iter()
        .map(|(_, cert)| Recipient {
            cert,
            transport: o.transport,
        })
        .collect();
    if !o.recipients.iter().any(|(_, c)| c == &own) {
        all.push(Recipient {
            cert: &own,
            transport: o.transport,
        });
    }
    // The content's first bytes decide its MIME type; a bad --content-type stops here.
    // Capacity for all of it: the pages are touched only as far as the content goes.
    let mut head = Vec::with_capacity(content::SNIFF);
    input
        .take(content::SNIFF as u64)
        .read_to_end(&mut head)
        .map_err(|e| io_error("read the content", e))?;
    let complete = head.len() < content::SNIFF;
    let entity_header = content::header_for(&head, complete, o.file_name, o.content_type)
        .map_err(MessageError::Content)?;

    let algorithm = PublicKey::from_pem(&record.signing_public_key)
        .map_err(crate::keyset::KeysetError::from)?
        .signature_algorithm();
    let (password, policy) = (o.password, o.policy);
    std::thread::scope(|scope| {
        let pending = scope.spawn(move || -> Result<ReadyToken, MessageError> {
            let module = load_module()?;
            let session = KeysetSession::open(&module, record, password, policy, false)?;
            Ok(ReadyToken { session, module })
        });
        let mut signer = TokenSigner {
            pending: Some(pending),
            token: None,
            record,
            cert: signing_cert,
            algorithm,
        };
        log::info!("signing as {}", describe(&signer.cert));
        let parts = Parts {
            entity_header: entity_header.as_bytes(),
            head: &head,
            rest: input,
            chain: &chain,
            recipients: &all,
        };
        write_message(out, o.smime, parts, &mut signer)
    })
}

/// The message, DER or S/MIME, to `out`; the bytes written.
fn write_message(
    out: &mut dyn Write,
    smime: bool,
    parts: Parts<'_, '_>,
    signer: &mut TokenSigner<'_, '_>,
) -> Result<u64, MessageError> {
    let mut counted = Counted { out, n: 0 };
    if smime {
        counted
            .write_all(smime::smime_header("enveloped-data").as_bytes())
            .map_err(|e| io_error("write the message", e))?;
        let lines = write_enveloped(stream::Base64Lines::new(&mut counted), parts, signer)?;
        let c = lines
            .finish()
            .map_err(|e| io_error("write the message", e))?;
        c.write_all(b"\r\n")
            .map_err(|e| io_error("write the message", e))?;
    } else {
        write_enveloped(&mut counted, parts, signer)?;
    }
    counted
        .flush()
        .map_err(|e| io_error("write the message", e))?;
    Ok(counted.n)
}

/// What goes into a message.
struct Parts<'a, 'r> {
    entity_header: &'a [u8],
    head: &'a [u8],
    rest: &'r mut dyn Read,
    chain: &'a [Certificate],
    recipients: &'a [Recipient<'a>],
}

fn io_error(action: &'static str, e: std::io::Error) -> MessageError {
    MessageError::Io { action, source: e }
}

/// Counts what passes through.
struct Counted<'a> {
    out: &'a mut dyn Write,
    n: u64,
}

impl Write for Counted<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.out.write(data)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The ContentInfo(EnvelopedData), BER, to `out`.
fn write_enveloped<W: Write>(
    mut out: W,
    p: Parts<'_, '_>,
    signer: &mut TokenSigner<'_, '_>,
) -> Result<W, MessageError> {
    let w = |e: std::io::Error| io_error("write the message", e);
    let mut cek = Zeroizing::new([0u8; 32]);
    let mut iv = [0u8; 16];
    getrandom::getrandom(cek.as_mut_slice()).map_err(cms::CmsError::Random)?;
    getrandom::getrandom(&mut iv).map_err(cms::CmsError::Random)?;
    let mut infos = Vec::new();
    let mut seen = Vec::new();
    for r in p.recipients {
        if seen.contains(&r.cert) {
            continue;
        }
        seen.push(r.cert);
        infos.push(cms::recipient_info_der(r, cek.as_slice())?);
    }
    let mut head = vec![0x30, 0x80];
    head.extend(oid_der(&rfc5911::ID_ENVELOPED_DATA));
    head.extend([0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x00]);
    head.extend(stream::set_of(0x31, infos));
    head.extend([0x30, 0x80]);
    head.extend(oid_der(&rfc5911::ID_DATA));
    head.extend(cms::aes256_cbc_der(&iv)?);
    head.extend([0xa0, 0x80]);
    out.write_all(&head).map_err(w)?;

    let chunks = stream::OctetChunks::new(out);
    let mut cbc = stream::CbcWriter::new(chunks, &cek, &iv);
    cbc.write_all(smime::smime_header("signed-data").as_bytes())
        .map_err(w)?;
    let lines = stream::Base64Lines::new(cbc);
    let lines = write_signed(lines, p, signer)?;
    let mut cbc = lines.finish().map_err(w)?;
    cbc.write_all(b"\r\n").map_err(w)?;
    let chunks = cbc.finish().map_err(w)?;
    let mut out = chunks.finish().map_err(w)?;
    // [0] encryptedContent, EncryptedContentInfo, EnvelopedData, [0], ContentInfo
    out.write_all(&[0u8; 10]).map_err(w)?;
    Ok(out)
}

/// The ContentInfo(SignedData), BER, of the content to `out`.
fn write_signed<W: Write>(
    mut out: W,
    p: Parts<'_, '_>,
    signer: &mut TokenSigner<'_, '_>,
) -> Result<W, MessageError> {
    let w = |e: std::io::Error| io_error("write the message", e);
    let mut head = vec![0x30, 0x80];
    head.extend(oid_der(&rfc5911::ID_SIGNED_DATA));
    head.extend([0xa0, 0x80, 0x30, 0x80, 0x02, 0x01, 0x01]);
    head.extend(stream::tlv(0x31, &cms::sha256_algorithm_der()?));
    head.extend([0x30, 0x80]);
    head.extend(oid_der(&rfc5911::ID_DATA));
    head.extend([0xa0, 0x80, 0x24, 0x80]);
    out.write_all(&head).map_err(w)?;

    let mut hashed = stream::Sha256Writer::new(stream::OctetChunks::new(out));
    hashed.write_all(p.entity_header).map_err(w)?;
    hashed.write_all(p.head).map_err(w)?;
    let mut buf = vec![0u8; stream::CHUNK];
    loop {
        let n = match p.rest.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("read the content", e)),
        };
        hashed.write_all(&buf[..n]).map_err(w)?;
        signer.poll()?;
    }
    signer.ready()?;
    let (digest, chunks) = hashed.finish();
    let mut out = chunks.finish().map_err(w)?;
    // OCTET STRING, [0] eContent, EncapsulatedContentInfo
    out.write_all(&[0u8; 6]).map_err(w)?;

    let signer_info = cms::signer_info_der(signer, &digest, SystemTime::now())?;
    let certs = cms::certificate_ders(signer.certificate(), p.chain)?;
    let mut tail = stream::set_of(0xa0, certs);
    tail.extend(stream::tlv(0x31, &signer_info));
    // SignedData, [0], ContentInfo
    tail.extend([0u8; 6]);
    out.write_all(&tail).map_err(w)?;
    Ok(out)
}

fn oid_der(oid: &der::asn1::ObjectIdentifier) -> Vec<u8> {
    stream::tlv(0x06, oid.as_bytes())
}
