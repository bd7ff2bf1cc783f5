//! `keyward enroll`: request, complete, or both at once with a local authority.

use super::output::say;
use std::path::Path;

use super::args::EnrollArgs;
use super::authority_cmd::bundle;
use super::output::print_json;
use super::Context;
use crate::authority::tempkey::TempKey;
use crate::enroll::client::{self, AuthorityCerts, RequestParams};
use crate::enroll::EnrollError;
use crate::error::Error;
use crate::keyset::registry::write_atomic;
use crate::keyset::{KeysetError, KeysetName};

/// Runs `keyward enroll`.
pub fn run(ctx: &mut Context, a: EnrollArgs) -> Result<(), Error> {
    if let Some(reply) = &a.complete {
        return complete(ctx, reply);
    }
    if let Some(keyset) = &a.renew {
        return super::renew_cmd::renew(ctx, keyset, &a);
    }
    let (Some(user), Some(keyset), Some(token)) = (&a.user, &a.keyset, &a.token) else {
        return Err(Error::Usage(
            "pass --user, --keyset and --token (or --complete REPLY)".into(),
        ));
    };
    let name = KeysetName::parse(keyset).map_err(KeysetError::from)?;
    let certs_text = match (&a.authority, &a.authority_cert) {
        (Some(dir), _) => bundle(dir)?,
        (None, Some(file)) => std::fs::read_to_string(file).map_err(|e| Error::Io {
            action: "read",
            path: file.clone(),
            reason: e.to_string(),
        })?,
        (None, None) => {
            return Err(Error::Usage(
                "pass --authority DIR (local authority) or --authority-cert FILE -o REQUEST".into(),
            ))
        }
    };
    let authority = AuthorityCerts::parse(&certs_text)?;
    let home = ctx.home()?;
    crate::keyset::Registry::load(&home)
        .and_then(|r| r.check_free(name.as_str(), &name.label()))
        .map_err(KeysetError::from)?;
    let token = ctx.token(token)?;
    client::check_can_enroll(ctx.module()?, &token)?;
    let temp_key = TempKey::parse(secrecy::ExposeSecret::expose_secret(&ctx.temp_key()?))
        .map_err(crate::authority::AuthorityError::from)?;
    let pin = ctx.pin()?;
    // With a local authority the same command completes: read and check a new password now,
    // so one the token cannot take fails before the authority spends the temporary key.
    let new_password = match &a.authority {
        Some(_) => ctx.new_password_if_given(name.as_str())?,
        None => None,
    };
    if let Some(new) = &new_password {
        token.check_pin_length(crate::token::PinRole::User, new)?;
    }
    let policy = ctx.login_policy();
    let params = RequestParams {
        user,
        keyset: name.clone(),
        token: &token,
        security: a.security,
        key_type: a.key_type,
        pin: &pin,
        temp_key: &temp_key,
        authority: &authority,
        policy,
    };
    let spinner =
        super::progress::Spinner::start("generating your keys and the enrollment request");
    let request = client::make_request(ctx.module()?, &home, &params);
    drop(spinner);
    let request = request?;
    match (&a.authority, &a.output) {
        (Some(dir), _) => local(ctx, dir, &name, &request, &pin, new_password),
        (None, Some(out)) => {
            write_atomic(out, &request).map_err(|e| Error::Io {
                action: "write",
                path: out.clone(),
                reason: e.to_string(),
            })?;
            if ctx.json() {
                print_json(&serde_json::json!({
                    "keyset": name.as_str(),
                    "request": out.display().to_string(),
                }));
                return Ok(());
            }
            say!(
                "wrote enrollment request for keyset {:?} to {}; send it to the authority, then run `keyward enroll --complete REPLY`",
                name.as_str(),
                out.display()
            );
            Ok(())
        }
        (None, None) => Err(Error::Usage("pass -o REQUEST".into())),
    }
}

/// Request → process → complete, with the authority in a local directory. The request and
/// reply are kept under `KEYWARD_HOME/replies/` (not a temporary folder): once the authority has
/// recorded the enrollment, the reply is the user's way to finish it, and they are told where
/// it is when this command cannot finish.
fn local(
    ctx: &mut Context,
    dir: &Path,
    name: &KeysetName,
    request: &[u8],
    pin: &secrecy::SecretString,
    new: Option<secrecy::SecretString>,
) -> Result<(), Error> {
    let home = ctx.home()?;
    let replies = home.join("replies");
    crate::authority::state::clean_temp_files(&replies);
    let stem: String = name
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let req_path = replies.join(format!("{stem}.request"));
    let reply_path = replies.join(format!("{stem}.reply"));
    let io_err = |path: &Path, e: std::io::Error| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    write_atomic(&req_path, request).map_err(|e| io_err(&req_path, e))?;
    let policy = ctx.login_policy();
    // The authority answers, but records nothing (the temporary key stays unspent) until the
    // user's token holds everything: a failure on either token leaves both as they were.
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
            let _ = std::fs::remove_file(&req_path);
            abandon_request(ctx, &home, name, pin);
            return Err(e);
        }
    };
    let completion = write_atomic(&reply_path, prepared.reply_bytes())
        .map_err(|e| io_err(&reply_path, e))
        .and_then(|()| {
            client::prepare_completion(ctx.module()?, &home, &reply_path, pin, new.as_ref(), policy)
                .map_err(Error::from)
        });
    let completion = match completion {
        Ok(c) => c,
        Err(e) => {
            prepared.abandon(ctx.module()?, &apin, &e.to_string());
            for f in [&req_path, &reply_path] {
                let _ = std::fs::remove_file(f);
            }
            abandon_request(ctx, &home, name, pin);
            return Err(e);
        }
    };
    match prepared.commit(ctx.module()?, &apin, &reply_path) {
        Ok(_) => {}
        // Recorded; the reply is on disk already from above: finish with it.
        Err(crate::authority::AuthorityError::ReplyNotWritten { .. }) => {}
        Err(e) => {
            completion.undo(ctx.module()?);
            for f in [&req_path, &reply_path] {
                let _ = std::fs::remove_file(f);
            }
            abandon_request(ctx, &home, name, pin);
            return Err(e.into());
        }
    }
    let done = completion
        .commit(ctx.module()?, pin, new.as_ref())
        .map_err(|e| Error::Io {
            action: "complete the enrollment on your token",
            path: reply_path.clone(),
            reason: format!(
                "{e}; the authority recorded it, and the authority's reply is kept in {}; finish with `keyward enroll --complete {}`",
                reply_path.display(),
                reply_path.display()
            ),
        })?;
    for f in [&req_path, &reply_path] {
        let _ = std::fs::remove_file(f);
    }
    report(ctx, &done);
    Ok(())
}

/// Removes the pending keyset of a local enrollment that failed (its keys and its entry).
fn abandon_request(ctx: &mut Context, home: &Path, name: &KeysetName, pin: &secrecy::SecretString) {
    let undone = ctx
        .module()
        .and_then(|m| client::abandon(m, home, name.as_str(), pin).map_err(Error::from));
    if let Err(undo) = undone {
        log::error!("could not remove the pending keyset after a failed enrollment: {undo}");
    }
}

fn complete(ctx: &mut Context, reply: &Path) -> Result<(), Error> {
    // The reply must be there and readable before any PIN is asked for.
    std::fs::File::open(reply).map_err(|e| crate::error::IoError::new("read", reply, e))?;
    let home = ctx.home()?;
    if let Some(keyset) = crate::enroll::renew::renewal_for_reply(&home, reply)? {
        return super::renew_cmd::complete(ctx, &keyset, reply);
    }
    let pin = ctx.pin()?;
    let new = ctx.new_password_if_given("the enrolled keyset")?;
    let policy = ctx.login_policy();
    let spinner = super::progress::Spinner::start("completing the enrollment on your token");
    let done = client::complete(ctx.module()?, &home, reply, &pin, new.as_ref(), policy);
    spinner.finish();
    let done = done?;
    report(ctx, &done);
    Ok(())
}

pub(super) fn report(ctx: &Context, done: &client::Completed) {
    if ctx.json() {
        print_json(done);
        return;
    }
    say!(
        "enrolled keyset {:?} for user {:?}: signing certificate and {} encryption key(s) stored on the token, {}",
        done.keyset,
        done.user,
        done.encryption_keys,
        done.delivery.describe()
    );
    for r in &done.retired {
        say!("keyset {r:?} is now retired (its keys stay on its token for old mail)");
    }
}

impl From<EnrollError> for Error {
    fn from(e: EnrollError) -> Self {
        Error::Enroll(e)
    }
}
