//! `keyward enroll --renew NAME`: renew a keyset with its password, locally with
//! `--authority DIR` or as a request file (`-o REQUEST`) completed later with
//! `enroll --complete REPLY`.

use std::path::Path;

use secrecy::SecretString;

use super::args::EnrollArgs;
use super::authority_cmd::bundle;
use super::output::{print_json, say};
use super::Context;
use crate::enroll::client::AuthorityCerts;
use crate::enroll::renew::{self, RenewParams};
use crate::error::Error;
use crate::keyset::registry::write_atomic;

/// Runs `enroll --renew NAME`.
pub fn renew(ctx: &mut Context, keyset: &str, a: &EnrollArgs) -> Result<(), Error> {
    let certs_text = match (&a.authority, &a.authority_cert) {
        (Some(dir), _) => Some(bundle(dir)?),
        (None, Some(file)) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| Error::File(crate::error::IoError::new("read", file, e)))?,
        ),
        (None, None) => None,
    };
    if a.authority.is_none() && a.output.is_none() {
        return Err(Error::Usage(
            "with --renew pass --authority DIR (local authority) or -o REQUEST".into(),
        ));
    }
    let authority = certs_text
        .as_deref()
        .map(AuthorityCerts::parse)
        .transpose()?;
    let home = ctx.home()?;
    // Refused before the password is asked for: a keyset that cannot renew here.
    {
        let registry =
            crate::keyset::Registry::load(&home).map_err(crate::keyset::KeysetError::from)?;
        let record = registry
            .get(keyset)
            .map_err(crate::keyset::KeysetError::from)?;
        renew::check_renewable(record, authority.as_ref())?;
    }
    let password = ctx.password(keyset)?;
    let params = RenewParams {
        keyset,
        password: &password,
        authority: authority.as_ref(),
        revoke_old: a.revoke_old,
        policy: ctx.login_policy(),
    };
    let request = renew::make_renewal(ctx.module()?, &home, &params)?;
    match (&a.authority, &a.output) {
        (Some(dir), _) => local(ctx, dir, keyset, &request, &password),
        (None, Some(out)) => {
            write_atomic(out, &request)
                .map_err(|e| Error::File(crate::error::IoError::new("write", out, e)))?;
            if ctx.json() {
                print_json(&serde_json::json!({
                    "keyset": keyset,
                    "request": out.display().to_string(),
                }));
            } else {
                say!(
                    "wrote a renewal request for keyset {keyset:?} to {} (signed by its current signing key); send it to the authority, then run `keyward enroll --complete REPLY`",
                    out.display()
                );
            }
            Ok(())
        }
        (None, None) => unreachable!("checked above"),
    }
}

/// Request → process → complete with a local authority; the authority records the renewal
/// only once the user's token holds everything.
fn local(
    ctx: &mut Context,
    dir: &Path,
    keyset: &str,
    request: &[u8],
    password: &SecretString,
) -> Result<(), Error> {
    let home = ctx.home()?;
    let replies = home.join("replies");
    crate::authority::state::clean_temp_files(&replies);
    let stem: String = keyset
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let req_path = replies.join(format!("{stem}.renewal.request"));
    let reply_path = replies.join(format!("{stem}.renewal.reply"));
    let io_err =
        |path: &Path, e: std::io::Error| Error::File(crate::error::IoError::new("write", path, e));
    let policy = ctx.login_policy();
    let abandon = |ctx: &mut Context| {
        let undone = ctx
            .module()
            .and_then(|m| renew::abandon_renewal(m, &home, keyset, password).map_err(Error::from));
        if let Err(e) = undone {
            log::error!("could not take back the renewal request after a failure: {e}");
        }
        for f in [&req_path, &reply_path] {
            let _ = std::fs::remove_file(f);
        }
    };
    if let Err(e) = write_atomic(&req_path, request) {
        abandon(ctx);
        return Err(io_err(&req_path, e));
    }
    let prepared = ctx.authority_pin().and_then(|apin| {
        let ch = crate::authority::init::Change {
            module: ctx.module()?,
            pin: &apin,
            policy,
        };
        let p = crate::authority::process::prepare(&ch, dir, &req_path).map_err(Error::from)?;
        Ok((p, apin))
    });
    let (prepared, apin) = match prepared {
        Ok(p) => p,
        Err(e) => {
            abandon(ctx);
            return Err(e);
        }
    };
    let completion = write_atomic(&reply_path, prepared.reply_bytes())
        .map_err(|e| io_err(&reply_path, e))
        .and_then(|()| {
            renew::prepare_renewal(ctx.module()?, &home, &reply_path, password, policy, false)
                .map_err(Error::from)
        });
    let completion = match completion {
        Ok(c) => c,
        Err(e) => {
            prepared.abandon(ctx.module()?, &apin, &e.to_string());
            abandon(ctx);
            return Err(e);
        }
    };
    match prepared.commit(ctx.module()?, &apin, &reply_path) {
        Ok(_) | Err(crate::authority::AuthorityError::ReplyNotWritten { .. }) => {}
        Err(e) => {
            completion.undo(ctx.module()?);
            abandon(ctx);
            return Err(e.into());
        }
    }
    let done = completion.commit().map_err(|e| Error::Unfinished {
        action: "complete the renewal on your token",
        path: reply_path.clone(),
        next: format!(
            "the authority recorded it, and its reply is kept in {}; finish with `keyward enroll --complete {}`",
            reply_path.display(),
            reply_path.display()
        ),
        source: Box::new(e.into()),
    })?;
    for f in [&req_path, &reply_path] {
        let _ = std::fs::remove_file(f);
    }
    report(ctx, &done);
    Ok(())
}

/// `enroll --complete REPLY` for a renewal.
pub fn complete(ctx: &mut Context, keyset: &str, reply: &Path) -> Result<(), Error> {
    let home = ctx.home()?;
    let password = ctx.password(keyset)?;
    let policy = ctx.login_policy();
    let done = renew::complete_renewal(ctx.module()?, &home, reply, &password, policy)?;
    report(ctx, &done);
    Ok(())
}

fn report(ctx: &Context, done: &crate::enroll::client::Completed) {
    if ctx.json() {
        print_json(done);
        return;
    }
    say!(
        "renewed keyset {:?} for user {:?}: new signing certificate and encryption key stored on the token ({} encryption keys in all; the earlier ones stay for old mail), {}",
        done.keyset,
        done.user,
        done.encryption_keys,
        done.delivery.describe()
    );
}
