//! `keyward keyset trust NAME --chain FILE`: after its authority rolled its CA key over
//! (`authority rollover --ca`), a keyset that neither renews nor enrolls again learns the new
//! CA and the link certificates from the bundle `authority cert --all` prints, instead of
//! only from the messages that carry them.
//!
//! Only certificates that chain from the CA the keyset trusts, by link certificates whose
//! signatures verify, are taken (see [`chain::learn`]); one that does not refuses the whole
//! bundle and nothing changes. The registry is written atomically under its lock; a second
//! run with the same bundle finds nothing new and writes nothing.

use serde::Serialize;
use x509_cert::Certificate;

use super::args::TrustArgs;
use super::output::{print_json, say};
use super::Context;
use crate::authority::chain;
use crate::error::{Error, IoError};
use crate::keyset::{self, Registry};
use crate::pki::x509;

/// One certificate the keyset now trusts.
#[derive(Serialize)]
struct AddedCert {
    subject: String,
    issuer: String,
    serial: String,
    /// Subject key identifier, hex.
    key_id: String,
    /// A root (its own key signed it), not a link certificate.
    self_signed: bool,
    not_after: String,
}

/// The `--json` document.
#[derive(Serialize)]
struct Trusted {
    keyset: String,
    chain: String,
    added: Vec<AddedCert>,
    already_trusted: usize,
    skipped: usize,
}

/// Runs `keyset trust`.
pub fn run(ctx: &mut Context, a: TrustArgs) -> Result<(), Error> {
    let text = std::fs::read_to_string(&a.chain).map_err(|e| IoError::new("read", &a.chain, e))?;
    let file = a.chain.display().to_string();
    let home = ctx.home()?;
    let (lock, mut registry) = Registry::lock(&home).map_err(keyset::KeysetError::from)?;
    let record = registry
        .get_mut(&a.name)
        .map_err(keyset::KeysetError::from)?;
    let name = record.name.clone();
    let enrollment = record
        .enrollment
        .as_mut()
        .ok_or_else(|| chain::TrustError::NotEnrolled {
            keyset: name.clone(),
        })?;
    let learned = chain::learn(&name, &enrollment.authority_ca, &text, &file)?;
    if !learned.added.is_empty() {
        enrollment.authority_ca = learned.trust_pem.clone();
        registry.save(&lock).map_err(keyset::KeysetError::from)?;
    }
    drop(lock);
    if ctx.json() {
        print_json(&Trusted {
            keyset: name,
            chain: file,
            added: learned.added.iter().map(view).collect(),
            already_trusted: learned.known,
            skipped: learned.skipped,
        });
        return Ok(());
    }
    if learned.added.is_empty() {
        say!(
            "keyset {name:?} trusts every CA certificate in {file} already ({}); nothing was changed",
            learned.known
        );
        return Ok(());
    }
    say!(
        "keyset {name:?} now trusts {} more CA certificates of its authority (each chains from the CA it trusted by link certificates):",
        learned.added.len()
    );
    for c in &learned.added {
        let v = view(c);
        say!(
            "  {} {} serial {} (key id {}), valid until {}",
            if v.self_signed { "CA" } else { "link" },
            v.subject,
            v.serial,
            v.key_id,
            v.not_after
        );
    }
    Ok(())
}

fn view(c: &Certificate) -> AddedCert {
    AddedCert {
        subject: c.tbs_certificate.subject.to_string(),
        issuer: c.tbs_certificate.issuer.to_string(),
        serial: x509::serial_hex(c),
        key_id: crate::token::keys::hex(&x509::key_id_of(c)),
        self_signed: x509::verify_issued_by(c, c).is_ok(),
        not_after: c.tbs_certificate.validity.not_after.to_string(),
    }
}
