//! `send`: sign with the keyset's signing key on its token, then encrypt to every recipient.

use std::time::SystemTime;

use secrecy::SecretString;
use spki::AlgorithmIdentifierOwned;
use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
use x509_cert::Certificate;

use super::cms::{self, ContentSigner, InnerType, KeyTransport, Recipient};
use super::{decryption_keys_of, describe, enrollment_of, smime, MessageError};
use crate::authority::x509;
use crate::keyset::{KeysetRecord, KeysetSession, PublicKey};
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
}

struct TokenSigner<'a> {
    module: &'a Module,
    session: &'a mut KeysetSession,
    record: &'a KeysetRecord,
    cert: Certificate,
    algorithm: AlgorithmIdentifierOwned,
}

impl ContentSigner for TokenSigner<'_> {
    fn certificate(&self) -> &Certificate {
        &self.cert
    }

    fn algorithm(&self) -> AlgorithmIdentifierOwned {
        self.algorithm.clone()
    }

    fn sign(&mut self, signed_attrs_der: &[u8]) -> Result<Vec<u8>, String> {
        self.session
            .sign_bytes(self.module, self.record, signed_attrs_der)
            .map_err(|e| e.to_string())
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
/// its authority's CA; an adopted keyset's certificate from the card (its issuer is not
/// known to keyward, so none goes along).
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
    Ok((
        first_cert(signing_pem)?,
        vec![first_cert(&enrollment.authority_ca)?],
    ))
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
    x509::check_validity(cert, SystemTime::now()).map_err(|e| err(e.to_string()))?;
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
    let key = PublicKey::from_spki_der(&x509::spki_der_of(cert)).map_err(|e| err(e.to_string()))?;
    if key.rsa_parts().is_none() {
        return Err(err(
            "the certificate's key is not RSA; only RSA keys can receive messages".into(),
        ));
    }
    Ok(())
}

/// Signs `content` on the sender's token and encrypts it to the recipients and the sender.
pub fn send(module: &Module, content: &[u8], o: SendOptions<'_>) -> Result<Vec<u8>, MessageError> {
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
    let algorithm = PublicKey::from_pem(&record.signing_public_key)
        .map_err(crate::keyset::KeysetError::from)?
        .signature_algorithm();
    let mut session = KeysetSession::open(module, record, o.password, o.policy, false)?;
    let mut signer = TokenSigner {
        module,
        session: &mut session,
        record,
        cert: signing_cert,
        algorithm,
    };
    log::info!("signing as {}", describe(&signer.cert));
    let signed = cms::sign(content, &mut signer, &chain, SystemTime::now())?;
    let entity = smime::wrap_signed(&signed);
    let enveloped = cms::encrypt(&entity, InnerType::Data, &all)?;
    Ok(if o.smime {
        smime::wrap_enveloped(&enveloped)
    } else {
        enveloped
    })
}
