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
use crate::keyset::registry::KeysetState;
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
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| Error::File(crate::error::IoError::new("read", file, e)))?,
        (None, None) => {
            return Err(Error::Usage(
                "pass --authority DIR (local authority) or --authority-cert FILE -o REQUEST".into(),
            ))
        }
    };
    let authority = AuthorityCerts::parse(&certs_text)?;
    let home = ctx.home()?;
    if a.server.is_some() {
        if let Some(done) = super::est_enroll_cmd::resume(ctx, &a, user, &name, &authority)? {
            report(ctx, &done);
            return Ok(());
        }
    }
    if let Some(dir) = &a.authority {
        // A local enrollment of this keyset that was interrupted: finished or undone first.
        if let Some(done) = resume_local(ctx, dir, user, &name, &authority)? {
            report(ctx, &done);
            return Ok(());
        }
    }
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
    let new_password = match (&a.authority, &a.server) {
        (None, None) => None,
        _ => ctx.new_password_if_given(name.as_str())?,
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
    if let Some(url) = &a.server {
        let home = ctx.home()?;
        let (req_path, _) = local_files(&home, &name);
        write_atomic(&req_path, &request)
            .map_err(|e| crate::error::IoError::new("write", &req_path, e))?;
        return super::est_enroll_cmd::send(ctx, url, &authority, &name, &pin, new_password);
    }
    match (&a.authority, &a.output) {
        (Some(dir), _) => local(ctx, dir, user, &name, &request, &pin, new_password),
        (None, Some(out)) => {
            write_atomic(out, &request)
                .map_err(|e| Error::File(crate::error::IoError::new("write", out, e)))?;
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
/// reply are kept under `KEYWARD_HOME/replies/` (not a temporary folder). The authority records
/// the enrollment first (certificates, archive, spent temporary key, reply: one transaction),
/// then the reply is completed on the user's token like `enroll --complete`: when that cannot
/// finish, the user is told where the reply is, and running this command again finishes it
/// (see [`resume_local`]).
fn local(
    ctx: &mut Context,
    dir: &Path,
    user: &str,
    name: &KeysetName,
    request: &[u8],
    pin: &secrecy::SecretString,
    new: Option<secrecy::SecretString>,
) -> Result<(), Error> {
    let home = ctx.home()?;
    let (req_path, reply_path) = local_files(&home, name);
    let io_err =
        |path: &Path, e: std::io::Error| Error::File(crate::error::IoError::new("write", path, e));
    let policy = ctx.login_policy();
    let recorded = write_atomic(&req_path, request)
        .map_err(|e| io_err(&req_path, e))
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
            crate::authority::process::reply_again(dir, user, &reply_path).map_err(|e| {
                Error::Unfinished {
                    action: "write the reply of",
                    path: reply_path.clone(),
                    next: format!(
                        "the authority recorded the enrollment: run this command again, or write the reply with `keyward authority reply --dir {} {user} -o REPLY` and finish with `keyward enroll --complete REPLY`",
                        dir.display()
                    ),
                    source: Box::new(e.into()),
                }
            })?;
        }
        Ok(Err(e)) => {
            give_up_local(ctx, &home, name, pin);
            return Err(e.into());
        }
        Err(e) => {
            give_up_local(ctx, &home, name, pin);
            return Err(e);
        }
    }
    let done = client::complete(ctx.module()?, &home, &reply_path, pin, new.as_ref(), policy)
        .map_err(|e| Error::Unfinished {
            action: "complete the enrollment on your token",
            path: reply_path.clone(),
            next: format!(
                "the authority recorded it, and the authority's reply is kept in {}; finish with `keyward enroll --complete {}` (or run this command again)",
                reply_path.display(),
                reply_path.display()
            ),
            source: Box::new(e.into()),
        })?;
    remove_local_files(&home, name);
    report(ctx, &done);
    Ok(())
}

/// Where a local enrollment of `name` keeps its request and reply.
pub(super) fn local_files(
    home: &Path,
    name: &KeysetName,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let (replies, stem) = replies_and_stem(home, name.as_str());
    (
        replies.join(format!("{stem}.request")),
        replies.join(format!("{stem}.reply")),
    )
}

/// `KEYWARD_HOME/replies` (its leftover temporary files removed) and the file-name stem of
/// keyset `name` there: its letters, digits, `-` and `_`, anything else as `_`.
pub(super) fn replies_and_stem(home: &Path, name: &str) -> (std::path::PathBuf, String) {
    let replies = home.join("replies");
    crate::authority::state::clean_temp_files(&replies);
    let stem = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    (replies, stem)
}

pub(super) fn remove_local_files(home: &Path, name: &KeysetName) {
    let (req_path, reply_path) = local_files(home, name);
    for f in [&req_path, &reply_path] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir(home.join("replies"));
}

/// The authority did not record the enrollment: its files and the pending keyset go.
fn give_up_local(ctx: &mut Context, home: &Path, name: &KeysetName, pin: &secrecy::SecretString) {
    remove_local_files(home, name);
    abandon_request(ctx, home, name, pin);
}

/// A local enrollment of keyset `name` for `user` that a kill (or a failure after the
/// authority recorded it) left unfinished: when the authority recorded it, its reply is
/// completed (returned); when not, the pending keyset is removed (its keys too) and the
/// enrollment starts over (None). A keyset already enrolled whose local files are still there
/// is done: the files go, and it is reported.
fn resume_local(
    ctx: &mut Context,
    dir: &Path,
    user: &str,
    name: &KeysetName,
    authority: &AuthorityCerts,
) -> Result<Option<client::Completed>, Error> {
    let home = ctx.home()?;
    if crate::keyset::journal::pending(&home) {
        crate::keyset::journal::recover_if_pending(ctx.module()?, &home)?;
    }
    let registry = crate::keyset::Registry::load(&home).map_err(KeysetError::from)?;
    let Ok(record) = registry.get(name.as_str()) else {
        return Ok(None);
    };
    let ours = record
        .enrollment
        .as_ref()
        .is_some_and(|e| e.user == user && e.authority_ca == authority.ca_pem);
    let (req_path, reply_path) = local_files(&home, name);
    if !ours {
        return Ok(None);
    }
    match record.state {
        KeysetState::Pending => {}
        KeysetState::Active if req_path.exists() || reply_path.exists() => {
            remove_local_files(&home, name);
            return Ok(Some(client::Completed {
                keyset: record.name.clone(),
                user: user.to_string(),
                encryption_keys: record
                    .enrollment
                    .as_ref()
                    .map_or(0, |e| e.encryption_keys.len()),
                retired: Vec::new(),
                delivery: record
                    .enrollment
                    .as_ref()
                    .and_then(|e| e.delivery.clone())
                    .and_then(|d| serde_json::from_value(serde_json::Value::String(d)).ok())
                    .unwrap_or(crate::enroll::delivery::Delivery::Rfc5649),
            }));
        }
        _ => return Ok(None),
    }
    let pin = ctx.pin()?;
    let policy = ctx.login_policy();
    if let Some(reply) = crate::authority::process::committed_reply(dir, user)? {
        write_atomic(&reply_path, &reply)
            .map_err(|e| Error::File(crate::error::IoError::new("write", &reply_path, e)))?;
        let new = ctx.new_password_if_given(name.as_str())?;
        match client::complete(ctx.module()?, &home, &reply_path, &pin, new.as_ref(), policy) {
            Ok(done) => {
                remove_local_files(&home, name);
                return Ok(Some(done));
            }
            // The authority's last reply answers another request: this one was not recorded.
            Err(EnrollError::NoPendingRequest { .. }) => {}
            Err(e) => {
                return Err(Error::Unfinished {
                    action: "complete the enrollment on your token",
                    path: reply_path.clone(),
                    next: format!(
                        "the authority recorded it, and its reply is kept in {}; finish with `keyward enroll --complete {}`",
                        reply_path.display(),
                        reply_path.display()
                    ),
                    source: Box::new(e.into()),
                })
            }
        }
    }
    log::warn!(
        "removing pending keyset {:?}, left by an interrupted local enrollment the authority did not record; enrolling again",
        name.as_str()
    );
    remove_local_files(&home, name);
    client::abandon(ctx.module()?, &home, name.as_str(), &pin)?;
    Ok(None)
}

/// Removes the pending keyset of an enrollment that failed (its keys and its entry). Tried
/// twice: a token that briefly cannot be found or read (SoftHSM's store while another process
/// writes it) is usually back at once. When both fail, the user is told how to remove it.
pub(super) fn abandon_request(
    ctx: &mut Context,
    home: &Path,
    name: &KeysetName,
    pin: &secrecy::SecretString,
) {
    let mut undo = || {
        ctx.module()
            .and_then(|m| client::abandon(m, home, name.as_str(), pin).map_err(Error::from))
    };
    let Err(first) = undo() else { return };
    log::debug!("removing the pending keyset failed once ({first}); trying again");
    if let Err(again) = undo() {
        log::error!(
            "the pending keyset {:?} of this failed enrollment could not be removed ({again}); remove it with `keyward keyset remove {:?} --destroy-keys`",
            name.as_str(),
            name.as_str()
        );
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
