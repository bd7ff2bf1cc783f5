//! `keyward enroll --server URL`: the file enrollment's request, sent to an EST node's
//! one-call extension (`/.well-known/est/keyward-enroll`), and its reply completed on the token
//! as `enroll --complete` does. The request is kept under `KEYWARD_HOME/replies/` until the
//! reply is completed: a lost answer is asked for again by running the command again (the
//! node answers a request it recorded with its recorded reply, so the key is spent once).

use std::path::Path;

use secrecy::SecretString;

use super::args::EnrollArgs;
use super::enroll_cmd::{abandon_request, local_files, remove_local_files};
use super::Context;
use crate::enroll::client::{self, AuthorityCerts};
use crate::est::client::{post, ClientError};
use crate::est::server::{KEYWARD_ENROLL, KEYWARD_REQUEST, PREFIX};
use crate::keyset::registry::{write_atomic, KeysetState};
use crate::keyset::{KeysetError, KeysetName};
use crate::Error;

/// Sends the request kept for `name` and completes its reply; a refusal removes the pending
/// keyset, an unreachable node keeps it for the next run.
pub fn send(
    ctx: &mut Context,
    url: &str,
    authority: &AuthorityCerts,
    name: &KeysetName,
    pin: &SecretString,
    new: Option<SecretString>,
) -> Result<(), Error> {
    let done = send_kept(ctx, url, authority, name, pin, new)?;
    super::enroll_cmd::report(ctx, &done);
    Ok(())
}

fn send_kept(
    ctx: &mut Context,
    url: &str,
    authority: &AuthorityCerts,
    name: &KeysetName,
    pin: &SecretString,
    new: Option<SecretString>,
) -> Result<client::Completed, Error> {
    let home = ctx.home()?;
    let (req_path, reply_path) = local_files(&home, name);
    let request =
        std::fs::read(&req_path).map_err(|e| crate::error::IoError::new("read", &req_path, e))?;
    let spinner = super::progress::Spinner::start("enrolling with the EST node");
    let path = format!("{PREFIX}/{KEYWARD_ENROLL}");
    let answer = post(url, &path, &authority.ca, KEYWARD_REQUEST, request);
    drop(spinner);
    let reply = match answer {
        Ok(reply) => reply,
        Err(e @ ClientError::Refused { .. }) => {
            remove_local_files(&home, name);
            abandon_request(ctx, &home, name, pin);
            return Err(Error::Est(e.into()));
        }
        Err(e) => {
            log::warn!(
                "keeping the request in {}: run the same command again to send it again",
                req_path.display()
            );
            return Err(Error::Est(e.into()));
        }
    };
    write_atomic(&reply_path, &reply)
        .map_err(|e| crate::error::IoError::new("write", &reply_path, e))?;
    let policy = ctx.login_policy();
    let done = client::complete(ctx.module()?, &home, &reply_path, pin, new.as_ref(), policy)
        .map_err(|e| kept_reply(&reply_path, e))?;
    remove_local_files(&home, name);
    Ok(done)
}

fn kept_reply(reply: &Path, e: crate::enroll::EnrollError) -> Error {
    Error::Io {
        action: "complete the enrollment on your token",
        path: reply.to_path_buf(),
        reason: format!(
            "{e}; the authority recorded it, and its reply is kept in {}; finish with `keyward enroll --complete {}`",
            reply.display(),
            reply.display()
        ),
    }
}

/// An online enrollment of `name` for `user` that an unreachable node or a kill left
/// pending: its kept request is sent again (the node answers it once) and completed.
pub fn resume(
    ctx: &mut Context,
    a: &EnrollArgs,
    user: &str,
    name: &KeysetName,
    authority: &AuthorityCerts,
) -> Result<Option<client::Completed>, Error> {
    let home = ctx.home()?;
    let registry = crate::keyset::Registry::load(&home).map_err(KeysetError::from)?;
    let Ok(record) = registry.get(name.as_str()) else {
        return Ok(None);
    };
    let ours = record
        .enrollment
        .as_ref()
        .is_some_and(|e| e.user == user && e.authority_ca == authority.ca_pem);
    let (req_path, _) = local_files(&home, name);
    if !ours || record.state != KeysetState::Pending || !req_path.exists() {
        return Ok(None);
    }
    let pin = ctx.pin()?;
    let new = ctx.new_password_if_given(name.as_str())?;
    let url = a.server.as_deref().unwrap_or_default();
    send_kept(ctx, url, authority, name, &pin, new).map(Some)
}

/// `enroll --renew NAME --server URL`: the renewal request (signed by the keyset's current
/// signing key, as `enroll --renew -o` writes it) sent to the node's one-call extension, which
/// processes it as `authority process` does, and its reply completed on the token. A refusal
/// takes the renewal back (the new keys and the pending entry go; the keyset is as before); a
/// node that cannot be reached, or an answer lost, keeps the pending renewal and its request
/// under `KEYWARD_HOME/replies/`: the node answers that request again with its recorded reply
/// (`curl --data-binary @REQUEST -H 'Content-Type: application/vnd.keyward.request'
/// …/keyward-enroll -o REPLY`, then `keyward enroll --complete REPLY`).
pub fn renew_online(
    ctx: &mut Context,
    url: &str,
    authority: &AuthorityCerts,
    keyset: &str,
    request: Vec<u8>,
    password: &SecretString,
) -> Result<client::Completed, Error> {
    let home = ctx.home()?;
    let (replies, stem) = super::enroll_cmd::replies_and_stem(&home, keyset);
    let req_path = replies.join(format!("{stem}.online-renewal.request"));
    let reply_path = replies.join(format!("{stem}.online-renewal.reply"));
    write_atomic(&req_path, &request)
        .map_err(|e| crate::error::IoError::new("write", &req_path, e))?;
    let spinner = super::progress::Spinner::start("renewing with the EST node");
    let path = format!("{PREFIX}/{KEYWARD_ENROLL}");
    let answer = post(url, &path, &authority.ca, KEYWARD_REQUEST, request);
    drop(spinner);
    let reply = match answer {
        Ok(reply) => reply,
        Err(e @ ClientError::Refused { .. }) => {
            let _ = std::fs::remove_file(&req_path);
            if let Err(undo) =
                crate::enroll::renew::abandon_renewal(ctx.module()?, &home, keyset, password)
            {
                log::warn!("could not take back the refused renewal of keyset {keyset:?}: {undo}");
            }
            return Err(Error::Est(e.into()));
        }
        Err(e) => {
            log::warn!(
                "the renewal of keyset {keyset:?} stays pending; its request is kept in {}: send it to the node's keyward-enroll endpoint again and complete the reply with `keyward enroll --complete REPLY`",
                req_path.display()
            );
            return Err(Error::Est(e.into()));
        }
    };
    write_atomic(&reply_path, &reply)
        .map_err(|e| crate::error::IoError::new("write", &reply_path, e))?;
    let policy = ctx.login_policy();
    let done =
        crate::enroll::renew::complete_renewal(ctx.module()?, &home, &reply_path, password, policy)
            .map_err(|e| kept_reply(&reply_path, e))?;
    for f in [&req_path, &reply_path] {
        let _ = std::fs::remove_file(f);
    }
    Ok(done)
}
