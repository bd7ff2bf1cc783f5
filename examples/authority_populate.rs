//! Fills an authority with N synthetic enrolled users for `benches/authority_scale.sh`:
//! each with a user record (one shared Argon2id hash: the cost of hashing is not what is
//! measured), two issued certificates and one archived key of realistic sizes. Goes through
//! keyward's own store and integrity layer (checked open, one signed commit per batch), so the
//! result is an authority every command accepts.
//!
//! Usage: `authority_populate DIR COUNT` with the authority token's PIN in `KEYWARD_PIN`
//! (and `KEYWARD_MODULE` / `SOFTHSM2_CONF` as for keyward).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use keyward::authority::init::{open_vouched, Change};
use keyward::authority::records::{ArchivedKey, CertKind, IssuedCert, UserRecord, UserState};
use keyward::authority::state::kind;
use keyward::authority::tempkey::{TempKey, TempKeyRecord};
use keyward::token::{LoginPolicy, Module};
use secrecy::SecretString;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: authority_populate DIR COUNT")?);
    let count: usize = args
        .next()
        .ok_or("usage: authority_populate DIR COUNT")?
        .parse()?;
    let pin = SecretString::from(std::env::var("KEYWARD_PIN")?);
    let path = std::env::var("KEYWARD_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
    let module = Module::load(&path)?;
    let ch = Change {
        module: &module,
        pin: &pin,
        policy: LoginPolicy::default(),
    };
    let key = TempKey::generate()?;
    let record = TempKeyRecord::new(&key, SystemTime::now(), Duration::from_secs(72 * 3600))?;
    let cert_pem = format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        "A".repeat(1400)
    );
    let blob = vec![0x5a; 1232];
    let now = keyward::authority::state::now_rfc3339();
    let batch = 10_000;
    let mut done = 0;
    while done < count {
        let (mut a, mut session) = open_vouched(&ch, &dir)?;
        let end = (done + batch).min(count);
        for i in done..end {
            let name = format!("pop{i:06}");
            let (s1, s2) = (format!("{i:08x}a1"), format!("{i:08x}e2"));
            let mut spent = record.clone();
            spent.mark_spent();
            a.add_user(UserRecord {
                name: name.clone(),
                email: None,
                state: UserState::Active,
                created: now.clone(),
                temp_key: Some(spent),
                keysets: vec![format!("{name} 1")],
                certs: [(&s1, CertKind::Signing), (&s2, CertKind::Encryption)]
                    .into_iter()
                    .map(|(serial, kind)| IssuedCert {
                        serial: serial.clone(),
                        kind,
                        keyset: format!("{name} 1"),
                        issued: now.clone(),
                        not_after: now.clone(),
                        revoked: None,
                        superseded: None,
                    })
                    .collect(),
                archive: vec![ArchivedKey {
                    cert_serial: s2.clone(),
                    archived: now.clone(),
                }],
                extra: Default::default(),
            })?;
            a.put(kind::ISSUED, &s1, &name, cert_pem.clone().into_bytes())?;
            a.put(kind::ISSUED, &s2, &name, cert_pem.clone().into_bytes())?;
            a.put(kind::ARCHIVE, &s2, &name, blob.clone())?;
        }
        a.audit(
            "operator",
            "populate",
            &format!("pop{done:06}..pop{:06}", end - 1),
            "ok",
            "synthetic users for a benchmark",
        );
        a.commit(&module, &mut session, &pin)?;
        done = end;
        eprintln!("{done} users");
    }
    Ok(())
}
