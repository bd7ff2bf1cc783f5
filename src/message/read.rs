//! `read`: find the recipient slot for one of the keyset's encryption keys (current or
//! archived), decrypt the content key on the token, decrypt, and verify the signer's chain.

use std::time::SystemTime;

use secrecy::SecretString;
use x509_cert::crl::CertificateList;
use x509_cert::Certificate;
use zeroize::Zeroizing;

use super::cms::{self, KeyTransport};
use super::{decryption_keys_of, describe, smime, MessageError};
use crate::authority::x509;
use crate::keyset::ops::unhex_id;
use crate::keyset::{KeysetRecord, KeysetSession};
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
    /// The content.
    pub content: Zeroizing<Vec<u8>>,
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
}

/// Decrypts and verifies a message. Nothing is returned unless the signature and the signer's
/// chain (and CRL, when given) check out.
pub fn read(
    module: &Module,
    input: &[u8],
    o: ReadOptions<'_>,
) -> Result<ReadOutcome, MessageError> {
    let record = o.keyset;
    let (keys, authority_ca) = decryption_keys_of(record)?;
    let der = smime::read_any(input)?;
    let slots = cms::recipients(&der)?;
    let mut certs = Vec::new();
    for k in keys {
        certs.push(
            x509::certs_from_pem(&k.certificate)?
                .into_iter()
                .next()
                .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))?,
        );
    }
    let (slot, index) = cms::match_recipient(&slots, &certs)?;
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
    let (_, inner) = cms::decrypt_content(&der, &cek)?;
    let verified = smime::verify_any(&inner)?;
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
            x509::certs_from_pem(pem)?
                .into_iter()
                .next()
                .ok_or_else(|| MessageError::NotEnrolled(record.name.clone()))?
        }
    };
    check_signer(&verified.signer, &ca, o.crl.as_ref(), verified.signing_time)?;
    Ok(ReadOutcome {
        content: Zeroizing::new(verified.content),
        signer: describe(&verified.signer),
        signer_serial: x509::serial_hex(&verified.signer),
        signed_at: verified.signing_time,
        signer_expired: expired_since(&verified.signer),
        opened_with: key.cert_serial.clone(),
        archived_key: !key.current,
    })
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
    use crate::message::cms::test_pki::Pki;

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
