//! `keyward crl import` and `keyward crl fetch`: the CRLs `send` and `read` check against.

use std::path::Path;

use super::args::{CrlCommand, CrlFetchArgs, CrlImportArgs};
use super::output::{print_json, say};
use super::Context;
use crate::error::Error;
use crate::keyset::{KeysetError, Registry};
use crate::pki::x509;
use crate::revocation::{self, CrlStore, Imported};

/// Runs a `keyward crl` subcommand.
pub fn run(ctx: &mut Context, cmd: CrlCommand) -> Result<(), Error> {
    match cmd {
        CrlCommand::Import(a) => import(ctx, a),
        CrlCommand::Fetch(a) => fetch(ctx, a),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::File(crate::error::IoError::new("read", path, e)))
}

fn read_certs(path: &Path) -> Result<Vec<x509_cert::Certificate>, Error> {
    let bytes = read(path)?;
    let certs = match std::str::from_utf8(&bytes) {
        Ok(t) if t.contains("-----BEGIN") => x509::certs_from_pem(t),
        _ => x509::cert_from_der(&bytes).map(|c| vec![c]),
    };
    certs.map_err(|e| crate::revocation::RevocationError::from(e).into())
}

/// The CAs a CRL may come from: `--ca`, else the authorities of the keysets here and the CAs
/// kept beside earlier CRLs.
fn cas(ctx: &Context, ca: Option<&Path>) -> Result<Vec<x509_cert::Certificate>, Error> {
    let home = ctx.home()?;
    if let Some(p) = ca {
        return read_certs(p);
    }
    let registry = Registry::load(&home).map_err(KeysetError::from)?;
    let mut out = revocation::enrolled_cas(&registry);
    out.extend(CrlStore::new(&home).cas());
    Ok(out)
}

/// One kept CRL's result line (text only: `--json` prints the document).
fn report(what: &str, i: &Imported) {
    let next = i
        .next_update
        .as_deref()
        .map(|n| format!(", next update due {n}"))
        .unwrap_or_default();
    if i.unchanged {
        say!(
            "{what}: the CRL of {:?} number {} is the one kept already (issued {}{next})",
            i.issuer,
            i.number,
            i.this_update
        );
    } else {
        say!(
            "{what}: kept the CRL of {:?} number {} listing {} revoked certificates (issued {}{next}); send and read check against it now",
            i.issuer,
            i.number,
            i.revoked,
            i.this_update
        );
    }
}

fn import(ctx: &mut Context, a: CrlImportArgs) -> Result<(), Error> {
    let cas = cas(ctx, a.ca.as_deref())?;
    let bytes = read(&a.file)?;
    let imported = CrlStore::new(&ctx.home()?).import(&bytes, &cas)?;
    if ctx.json() {
        print_json(&imported);
    } else {
        report(&a.file.display().to_string(), &imported);
    }
    Ok(())
}

fn fetch(ctx: &mut Context, a: CrlFetchArgs) -> Result<(), Error> {
    let home = ctx.home()?;
    let mut certs = Vec::new();
    if let Some(name) = &a.keyset {
        let registry = Registry::load(&home).map_err(KeysetError::from)?;
        let record = registry.get(name).map_err(KeysetError::from)?;
        let e = record.enrollment.as_ref().ok_or_else(|| {
            Error::Usage(format!(
                "keyset {name:?} is not enrolled with an authority; give certificate files instead"
            ))
        })?;
        let pems = e
            .signing_certificate
            .iter()
            .chain(e.encryption_keys.iter().map(|k| &k.certificate));
        for pem in pems {
            certs.extend(x509::certs_from_pem(pem).map_err(revocation::RevocationError::from)?);
        }
    }
    for p in &a.certs {
        certs.extend(read_certs(p)?);
    }
    let mut urls: Vec<String> = Vec::new();
    for c in &certs {
        for u in x509::crl_urls_of(c) {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
    }
    if urls.is_empty() {
        return Err(Error::Usage(
            "none of these certificates names a CRL distribution point; get the CRL from the authority and `keyward crl import` it (or name --keyset or certificate files)".into(),
        ));
    }
    let cas = cas(ctx, a.ca.as_deref())?;
    let store = CrlStore::new(&home);
    /// `crl fetch --json`: each distribution point and what was kept from it.
    #[derive(serde::Serialize)]
    struct Fetched {
        url: String,
        #[serde(flatten)]
        imported: Imported,
    }
    let mut fetched = Vec::new();
    for url in urls {
        let bytes = revocation::fetch(&url)?;
        let imported = store.import(&bytes, &cas)?;
        if !ctx.json() {
            report(&url, &imported);
        }
        fetched.push(Fetched { url, imported });
    }
    if ctx.json() {
        print_json(&serde_json::json!({ "crls": fetched }));
    }
    Ok(())
}
