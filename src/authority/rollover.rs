//! `authority rollover --archive`: a new archive key on the authority's token, and every
//! archived encryption key re-wrapped under it, inside the token (unwrapped as a session
//! object, wrapped again, destroyed).
//!
//! Resumable: the new key's id and a cursor (the last user and certificate serial done, in
//! the order of the checked user listing) are a record of their own (kind `rollover`), and
//! each batch of re-wrapped keys commits with it. A rollover stopped half way is finished by
//! running the command again; meanwhile `authority process` (the one command that reads the
//! archive) refuses. When every key is re-wrapped the configuration names the new key, and
//! the old key is destroyed on the token after that commit.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::init::{open_vouched, Change};
use super::state::{kind, now_rfc3339, tampered, AuthorityDir};
use super::AuthorityError;
use crate::token::keys::hex;
use crate::token::{ObjectKindFilter, UnwrapTemplate};

/// The record kind of a rollover's progress (key `archive`, owner "").
pub const KIND: &str = "rollover";
const KEY: &str = "archive";
/// Keys re-wrapped per transaction.
pub const BATCH: usize = 100;

/// A rollover's progress.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArchiveRollover {
    /// The archive key being replaced, hex `CKA_ID`.
    pub old_key_id: String,
    /// The new archive key, hex `CKA_ID`.
    pub new_key_id: String,
    /// Started, RFC 3339.
    pub started: String,
    /// The last (user, certificate serial) re-wrapped.
    #[serde(default)]
    pub cursor: Option<(String, String)>,
    /// How many keys are re-wrapped.
    pub done: usize,
    /// Finished, RFC 3339 (the configuration names the new key).
    #[serde(default)]
    pub finished: Option<String>,
}

fn read(a: &mut AuthorityDir) -> Result<Option<ArchiveRollover>, AuthorityError> {
    let Some(row) = a.get(KIND, KEY, "")? else {
        return Ok(None);
    };
    serde_json::from_slice(&row.body)
        .map(Some)
        .map_err(|e| tampered(&format!("the archive rollover record does not parse: {e}")))
}

fn write(a: &mut AuthorityDir, r: &ArchiveRollover) -> Result<(), AuthorityError> {
    let body = serde_json::to_vec(r).map_err(|e| AuthorityError::serialize("rollover", e))?;
    a.put(KIND, KEY, "", body)
}

/// Refuses while an archive rollover is unfinished (the archive is under two keys).
pub fn check_no_archive_rollover(a: &mut AuthorityDir) -> Result<(), AuthorityError> {
    match read(a)? {
        Some(r) if r.finished.is_none() => Err(AuthorityError::BadRequest(format!(
            "an archive key rollover started at {} is unfinished ({} keys re-wrapped); finish it with `keyward authority rollover --dir DIR --archive` first; nothing was changed",
            r.started, r.done
        ))),
        _ => Ok(()),
    }
}

/// Whether the authority's token holds the secret key `id` (hex).
fn has_key(session: &crate::token::TokenSession, id: &str) -> Result<bool, AuthorityError> {
    let id = super::state::key_id("archive key", id)?;
    Ok(session
        .find_object(ObjectKindFilter::SecretKey, &id)?
        .is_some())
}

/// What a rollover did.
#[derive(Debug, Serialize)]
pub struct RolledOver {
    /// The new archive key, hex `CKA_ID`.
    pub new_key_id: String,
    /// Keys re-wrapped in all.
    pub rewrapped: usize,
    /// This run resumed an unfinished one.
    pub resumed: bool,
    /// The old key could not be destroyed (why); it no longer wraps anything.
    pub old_key_left: Option<String>,
}

/// Runs (or resumes) an archive key rollover.
pub fn archive(
    ch: &Change<'_>,
    dir: &Path,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RolledOver, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let mech = crate::enroll::delivery::authority_wrap(&session, ch.module)?;
    let (mut state, resumed) = match read(&mut a)? {
        Some(r) if r.finished.is_none() => (r, true),
        // Finished and committed, but stopped before the old key was destroyed: that is
        // what is left to do (not a second rollover).
        Some(r) if r.old_key_id != a.config.archive_key_id && has_key(&session, &r.old_key_id)? => {
            let id = super::state::key_id("old CA key", &r.old_key_id)?;
            session.destroy_by_id(&id)?;
            return Ok(RolledOver {
                new_key_id: r.new_key_id,
                rewrapped: r.done,
                resumed: true,
                old_key_left: None,
            });
        }
        _ => {
            // Recorded before the key is made: a run stopped between the two leaves a record
            // naming a key not made yet, which the rerun makes (below), never a key on the
            // token that nothing names.
            let id = session.random(16)?;
            let r = ArchiveRollover {
                old_key_id: a.config.archive_key_id.clone(),
                new_key_id: hex(&id),
                started: now_rfc3339(),
                cursor: None,
                done: 0,
                finished: None,
            };
            write(&mut a, &r)?;
            a.audit(
                "operator",
                "rollover",
                "archive",
                "started",
                &format!(
                    "new archive key {} to be made on the token; re-wrapping every archived key under it",
                    r.new_key_id
                ),
            );
            a.commit(ch.module, &mut session, ch.pin)?;
            (r, false)
        }
    };
    let key = |session: &crate::token::TokenSession, id: &str| {
        let id = super::state::key_id("archive key", id)?;
        session
            .find_object(ObjectKindFilter::SecretKey, &id)?
            .ok_or_else(|| {
                AuthorityError::BadRequest(format!(
                    "archive key {} is missing from the authority's token",
                    hex(&id)
                ))
            })
    };
    if state.done == 0 && state.cursor.is_none() {
        let id = super::state::key_id("new CA key", &state.new_key_id)?;
        if session
            .find_object(ObjectKindFilter::SecretKey, &id)?
            .is_none()
        {
            a.fault("rollover-archive-key")?;
            session.generate_archive_key(&id, "keyward authority archive key")?;
        }
    }
    let old_key = key(&session, &state.old_key_id)?;
    let new_key = key(&session, &state.new_key_id)?;
    // Every archived key, in a fixed order (the checked listing: linear by design).
    let mut todo: Vec<(String, String)> = a
        .all_users()?
        .into_iter()
        .flat_map(|u| {
            let name = u.name.clone();
            u.archive
                .into_iter()
                .map(move |k| (name.clone(), k.cert_serial))
        })
        .collect();
    todo.sort();
    let total = todo.len();
    if let Some(c) = &state.cursor {
        todo.retain(|k| k > c);
    }
    let size = std::env::var("KEYWARD_ROLLOVER_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(BATCH);
    for (i, batch) in todo.chunks(size).enumerate() {
        for (user, serial) in batch {
            let blob = a
                .get(kind::ARCHIVE, serial, user)?
                .ok_or_else(|| {
                    tampered(&format!(
                        "the archived key of user {user:?}'s certificate {serial} is missing"
                    ))
                })?
                .body
                .clone();
            let id = session.random(16)?;
            let private = session.unwrap_private_rfc5649(
                mech,
                old_key,
                &blob,
                &UnwrapTemplate {
                    persistent: false,
                    id: &id,
                    label: "keyward archived key (rollover)",
                    extractable: true,
                    always_authenticate: false,
                },
            )?;
            let wrapped = session.wrap_rfc5649(mech, new_key, private);
            session.destroy(private)?;
            a.put(kind::ARCHIVE, serial, user, wrapped?)?;
            state.cursor = Some((user.clone(), serial.clone()));
            state.done += 1;
        }
        write(&mut a, &state)?;
        a.audit(
            "operator",
            "rollover",
            "archive",
            "ok",
            &format!("{} of {total} archived keys re-wrapped", state.done),
        );
        a.fault(&format!("rollover-batch-{}", i + 1))?;
        a.commit(ch.module, &mut session, ch.pin)?;
        progress(state.done, total);
    }
    state.finished = Some(now_rfc3339());
    write(&mut a, &state)?;
    a.config.archive_key_id = state.new_key_id.clone();
    a.config_changed();
    a.audit(
        "operator",
        "rollover",
        "archive",
        "ok",
        &format!(
            "finished: {} archived keys under the new archive key {}; the old key {} is destroyed",
            state.done, state.new_key_id, state.old_key_id
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    let old_key_left = session.destroy(old_key).err().map(|e| {
        log::warn!("the old archive key could not be destroyed: {e}");
        e.to_string()
    });
    Ok(RolledOver {
        new_key_id: state.new_key_id,
        rewrapped: state.done,
        resumed,
        old_key_left,
    })
}
