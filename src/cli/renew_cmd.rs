//! `keyward enroll --renew NAME`: renew a keyset with its password, locally with
//! `--authority DIR` or as a request file (`-o REQUEST`) completed later with
//! `enroll --complete REPLY`.

use std::path::{Path, PathBuf};

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
    if a.authority.is_none() && a.output.is_none() && a.server.is_none() {
        return Err(Error::Usage(
            "with --renew pass --authority DIR (local authority), --server URL --authority-cert FILE (an EST node) or -o REQUEST".into(),
        ));
    }
    if a.server.is_some() && a.authority_cert.is_none() {
        return Err(Error::Usage(
            "with --renew --server pass --authority-cert FILE (the authority's certificates: the node's TLS certificate is checked against them)".into(),
        ));
    }
    let authority = certs_text
        .as_deref()
        .map(AuthorityCerts::parse)
        .transpose()?;
    let home = ctx.home()?;
    // Refused before the password is asked for: a keyset that cannot renew here. A pending
    // renewal is settled below when it is an unfinished request, or one of a local renewal
    // this command finishes.
    let (unfinished_request, pending) = {
        let registry =
            crate::keyset::Registry::load(&home).map_err(crate::keyset::KeysetError::from)?;
        let record = registry
            .get(keyset)
            .map_err(crate::keyset::KeysetError::from)?;
        let unfinished_request = renew::is_unfinished_request(record);
        // A pending renewal this command settles: one of a local renewal that was stopped
        // (its marker is there).
        let pending = a.authority.is_some()
            && local_paths(&home, keyset).2.exists()
            && record
                .enrollment
                .as_ref()
                .is_some_and(|e| e.renewal.is_some());
        if !unfinished_request && !pending {
            renew::check_renewable(record, authority.as_ref())?;
        }
        (unfinished_request, pending)
    };
    let password = ctx.password(keyset)?;
    if unfinished_request {
        log::warn!(
            "taking back the unfinished renewal request of keyset {keyset:?} (stopped before its request was written)"
        );
        renew::abandon_renewal(ctx.module()?, &home, keyset, &password)?;
    }
    let params = RenewParams {
        keyset,
        password: &password,
        authority: authority.as_ref(),
        revoke_old: a.revoke_old,
        policy: ctx.login_policy(),
    };
    if let (Some(dir), true, false) = (&a.authority, pending, unfinished_request) {
        if let Some(done) = resume_local(ctx, dir, keyset, &password)? {
            report(ctx, &done);
            return Ok(());
        }
    }
    if a.authority.is_some() {
        // Before anything changes: a local renewal is under way (see `resume_local`).
        let marker = local_paths(&home, keyset).2;
        write_atomic(&marker, b"")
            .map_err(|e| Error::File(crate::error::IoError::new("write", &marker, e)))?;
    }
    let request = match renew::make_renewal(ctx.module()?, &home, &params) {
        Ok(r) => r,
        Err(e) => {
            if a.authority.is_some() {
                let _ = std::fs::remove_file(local_paths(&home, keyset).2);
            }
            return Err(e.into());
        }
    };
    if let (Some(url), Some(certs), None) = (&a.server, &authority, &a.authority) {
        return super::est_enroll_cmd::renew_online(ctx, url, certs, keyset, request, &password)
            .map(|done| report(ctx, &done));
    }
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

/// Where a local renewal of `keyset` keeps its request and reply (under `KEYWARD_HOME/replies`).
fn local_files(home: &Path, keyset: &str) -> (PathBuf, PathBuf) {
    let (req, reply, _) = local_paths(home, keyset);
    (req, reply)
}

/// The request, the reply and the marker that says a local renewal of `keyset` is under way
/// (written before its request is made, removed last).
fn local_paths(home: &Path, keyset: &str) -> (PathBuf, PathBuf, PathBuf) {
    let (replies, stem) = super::enroll_cmd::replies_and_stem(home, keyset);
    (
        replies.join(format!("{stem}.renewal.request")),
        replies.join(format!("{stem}.renewal.reply")),
        replies.join(format!("{stem}.renewal.local")),
    )
}

/// Removes the request and reply of a local renewal, then its marker (last: while it is
/// there, a rerun settles the renewal).
fn remove_local_files(home: &Path, keyset: &str) {
    let (req_path, reply_path, marker) = local_paths(home, keyset);
    for f in [&req_path, &reply_path] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_file(marker);
}

/// The authority did not record the renewal: its files go first (so that a stop in between
/// leaves a pending renewal without files, which the rerun takes back), then its new keys
/// and the pending entry.
fn give_up_local(ctx: &mut Context, home: &Path, keyset: &str, password: &SecretString) {
    let (req_path, reply_path, marker) = local_paths(home, keyset);
    for f in [&req_path, &reply_path] {
        let _ = std::fs::remove_file(f);
    }
    let undone = ctx
        .module()
        .and_then(|m| renew::abandon_renewal(m, home, keyset, password).map_err(Error::from));
    match undone {
        Ok(()) => {
            let _ = std::fs::remove_file(marker);
        }
        Err(e) => log::error!("could not take back the renewal request after a failure: {e}"),
    }
}

/// The error of a renewal the authority recorded but this run could not finish on the token.
fn unfinished(reply_path: &Path, e: Error) -> Error {
    Error::Unfinished {
        action: "complete the renewal on your token",
        path: reply_path.to_path_buf(),
        next: format!(
            "the authority recorded it, and its reply is kept in {}; run this command again, or finish with `keyward enroll --complete {}`",
            reply_path.display(),
            reply_path.display()
        ),
        source: Box::new(e),
    }
}

/// Request → process → complete with a local authority, in the order a stop at any point
/// can be finished from: the authority records the renewal first (and its reply), then the
/// token and the registry take it under the registry's journal. A rerun of the same command
/// finishes what a stopped one left ([`resume_local`]).
fn local(
    ctx: &mut Context,
    dir: &Path,
    keyset: &str,
    request: &[u8],
    password: &SecretString,
) -> Result<(), Error> {
    let home = ctx.home()?;
    let (req_path, reply_path) = local_files(&home, keyset);
    let user = user_of(&home, keyset)?;
    let policy = ctx.login_policy();
    let recorded = write_atomic(&req_path, request)
        .map_err(|e| Error::File(crate::error::IoError::new("write", &req_path, e)))
        .and_then(|()| {
            let apin = ctx.authority_pin()?;
            let ch = crate::authority::init::Change {
                module: ctx.module()?,
                pin: &apin,
                policy,
            };
            let p = crate::authority::process::prepare(&ch, dir, &req_path)?;
            Ok(p.commit(ch.module, &apin, &reply_path))
        });
    match recorded {
        Ok(Ok(_)) => {}
        // Recorded; its reply is written again from the authority's record.
        Ok(Err(crate::authority::AuthorityError::ReplyNotWritten { .. })) => {
            crate::authority::process::reply_again(dir, &user, &reply_path)
                .map_err(|e| unfinished(&reply_path, e.into()))?;
        }
        Ok(Err(e)) => {
            give_up_local(ctx, &home, keyset, password);
            return Err(e.into());
        }
        Err(e) => {
            give_up_local(ctx, &home, keyset, password);
            return Err(e);
        }
    }
    let done = renew::complete_renewal(ctx.module()?, &home, &reply_path, password, policy)
        .map_err(|e| unfinished(&reply_path, e.into()))?;
    remove_local_files(&home, keyset);
    report(ctx, &done);
    Ok(())
}

/// The user a keyset is enrolled as.
fn user_of(home: &Path, keyset: &str) -> Result<String, Error> {
    let registry = crate::keyset::Registry::load(home).map_err(crate::keyset::KeysetError::from)?;
    let record = registry
        .get(keyset)
        .map_err(crate::keyset::KeysetError::from)?;
    Ok(record
        .enrollment
        .as_ref()
        .map(|e| e.user.clone())
        .unwrap_or_default())
}

/// What a stopped local renewal of `keyset` left, settled before a new one starts: a renewal
/// the authority recorded is completed from its reply (returned); one it did not record is
/// taken back (its keys and pending entry) and the renewal starts over (None).
fn resume_local(
    ctx: &mut Context,
    dir: &Path,
    keyset: &str,
    password: &SecretString,
) -> Result<Option<crate::enroll::client::Completed>, Error> {
    let home = ctx.home()?;
    if crate::keyset::journal::pending(&home) {
        crate::keyset::journal::recover_if_pending(ctx.module()?, &home)?;
    }
    let (_, reply_path) = local_files(&home, keyset);
    let registry =
        crate::keyset::Registry::load(&home).map_err(crate::keyset::KeysetError::from)?;
    let record = registry
        .get(keyset)
        .map_err(crate::keyset::KeysetError::from)?
        .clone();
    let Some(enrollment) = record.enrollment.as_ref() else {
        return Ok(None);
    };
    let policy = ctx.login_policy();
    if enrollment.renewal.is_none() {
        // Nothing pending (a renewal that was completed): files left beside it go, and this
        // is a new renewal.
        remove_local_files(&home, keyset);
        return Ok(None);
    }
    if let Some(reply) = crate::authority::process::committed_reply(dir, &enrollment.user)? {
        write_atomic(&reply_path, &reply)
            .map_err(|e| Error::File(crate::error::IoError::new("write", &reply_path, e)))?;
        match renew::complete_renewal(ctx.module()?, &home, &reply_path, password, policy) {
            Ok(done) => {
                remove_local_files(&home, keyset);
                return Ok(Some(done));
            }
            // The authority's last reply answers another request: this one was not recorded.
            Err(crate::enroll::EnrollError::NoPendingRequest { .. }) => {}
            Err(e) => return Err(unfinished(&reply_path, e.into())),
        }
    }
    log::warn!(
        "taking back the pending renewal of keyset {keyset:?}, left by an interrupted local renewal the authority did not record; renewing again"
    );
    give_up_local(ctx, &home, keyset, password);
    let still = crate::keyset::Registry::load(&home)
        .map_err(crate::keyset::KeysetError::from)?
        .get(keyset)
        .map_err(crate::keyset::KeysetError::from)?
        .enrollment
        .as_ref()
        .is_some_and(|e| e.renewal.is_some());
    if still {
        return Err(Error::Usage(format!(
            "the interrupted renewal of keyset {keyset:?} could not be taken back; see the error above, then run this command again"
        )));
    }
    Ok(None)
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

pub(super) fn report(ctx: &Context, done: &crate::enroll::client::Completed) {
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
