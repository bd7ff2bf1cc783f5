//! The registry's intent journal, `$KEYWARD_HOME/keysets.journal.toml`.
//!
//! A command that changes a token and then the registry (`keyset create`, an enrollment request,
//! `enroll --complete`) cannot change both at once. Before it touches the token it writes (and
//! syncs) what it is about to do: the registry record the keyset gets, and the token object
//! whose presence shows that the token's part was done. Killed between the token and the
//! registry, it leaves the journal behind, and the next keyward that opens the registry
//! ([`recover`]) finishes the change when the token shows it done, else drops the journal —
//! with a read-only session and no login, so that even `keyset list` can do it. The marker is a
//! public object (a public key, a certificate), made by the token's part in one step with the
//! rest of it: no file is written between the first token change and the registry's rename.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ops::unhex_id;
use super::registry::{
    remove_leftovers, write_atomic, KeysetRecord, KeysetState, Registry, RegistryError,
    RegistryLock,
};
use super::{keyset_token, KeysetError};
use crate::pki::PublicKey;
use crate::token::{Module, ObjectKindFilter};

/// The journal's file name in keyward's home.
pub const FILE: &str = "keysets.journal.toml";

/// The token object that shows the token's part done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Marker {
    /// The new signing key's public half (its value becomes the record's public key).
    PublicKey,
    /// The signing certificate (stored first by a completion).
    Certificate,
}

/// What a command is about to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Intent {
    /// The command, for messages.
    pub action: String,
    /// The record the registry gets (for [`Marker::PublicKey`], without its public key).
    pub record: KeysetRecord,
    /// Keysets the change retires.
    #[serde(default)]
    pub retire: Vec<String>,
    /// What shows the token's part done.
    pub marker: Marker,
    /// The marker's `CKA_ID`, hex.
    pub marker_id: String,
}

fn path(home: &Path) -> PathBuf {
    home.join(FILE)
}

/// Whether a journal is waiting in `home`.
pub fn pending(home: &Path) -> bool {
    path(home).exists()
}

impl Intent {
    /// Writes the journal (synced, renamed into place, directory synced). Needs the lock.
    pub fn write(&self, home: &Path, _lock: &RegistryLock) -> Result<(), RegistryError> {
        let p = path(home);
        let text = toml::to_string_pretty(self).map_err(|source| RegistryError::Encode {
            path: p.clone(),
            source,
        })?;
        let text = format!("# keyward: a registry change under way; finished or dropped by the next keyward that opens the registry\n{text}");
        if let Err(e) = write_atomic(&p, text.as_bytes()) {
            // Renamed but not synced, or not renamed at all: either way nothing was done yet.
            clear(home);
            return Err(RegistryError::Io {
                action: "write",
                path: p,
                source: e,
            });
        }
        Ok(())
    }
}

/// Removes the journal (the change is done or undone). A failure is only logged: a journal
/// left behind is dropped or found done by the next [`recover`].
pub fn clear(home: &Path) {
    let p = path(home);
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => log::warn!(
            "could not remove {} ({e}); the next keyward that opens the registry removes it",
            p.display()
        ),
    }
}

/// Takes the registry lock, reads the registry and finishes or drops a journal left by a
/// killed command.
pub fn lock_recovered(
    module: &Module,
    home: &Path,
) -> Result<(RegistryLock, Registry), KeysetError> {
    let (lock, mut registry) = Registry::lock(home)?;
    recover(module, home, &lock, &mut registry)?;
    Ok((lock, registry))
}

/// Like [`lock_recovered`], only when a journal is waiting (for commands that read the
/// registry without changing it).
pub fn recover_if_pending(module: &Module, home: &Path) -> Result<(), KeysetError> {
    if pending(home) {
        lock_recovered(module, home)?;
    }
    Ok(())
}

/// Finishes or drops the journal in `home`, if any, with `registry` read under `lock`; also
/// removes temporary files that killed writes of the registry or the journal left.
pub fn recover(
    module: &Module,
    home: &Path,
    lock: &RegistryLock,
    registry: &mut Registry,
) -> Result<(), KeysetError> {
    let p = path(home);
    remove_leftovers(home, &format!(".keyward-{FILE}."));
    remove_leftovers(home, ".keyward-keysets.toml.");
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(RegistryError::Io {
                action: "read",
                path: p,
                source: e,
            }
            .into())
        }
    };
    let intent: Intent = match toml::from_str(&text) {
        Ok(i) => i,
        Err(e) => {
            // Written by a rename after a sync: a journal that does not parse was not written
            // by keyward; nothing can be finished from it.
            log::warn!("dropping {}, which does not parse ({e})", p.display());
            clear(home);
            return Ok(());
        }
    };
    let token = keyset_token(module, &intent.record)?;
    let session = token.open_ro(module)?;
    let id = unhex_id(&intent.marker_id)?;
    let mut record = intent.record.clone();
    let done = match intent.marker {
        Marker::PublicKey => match session.public_key(&id)? {
            Some(raw) => {
                record.signing_public_key = PublicKey::from_raw(&raw)?.to_pem()?;
                true
            }
            None => false,
        },
        Marker::Certificate => session
            .find_object(ObjectKindFilter::Certificate, &id)?
            .is_some(),
    };
    if done {
        finish(registry, lock, &intent, record)?;
        log::warn!(
            "finished the {} of keyset {:?}, which was interrupted after its token's part",
            intent.action,
            intent.record.name
        );
    } else {
        log::warn!(
            "dropped the {} of keyset {:?}, which was interrupted before it changed the token",
            intent.action,
            intent.record.name
        );
    }
    clear(home);
    Ok(())
}

/// Puts the journal's record in the registry (replacing the same keyset's, as a completion
/// does) and retires what it retires; writes the registry only when that changes it.
fn finish(
    registry: &mut Registry,
    lock: &RegistryLock,
    intent: &Intent,
    record: KeysetRecord,
) -> Result<(), KeysetError> {
    let mut changed = false;
    match registry.get_mut(&record.name) {
        // The same keyset, or (a renewal's completion) the keyset whose pending renewal made
        // the record's new signing key.
        Ok(existing)
            if existing.signing_id == record.signing_id
                || existing
                    .enrollment
                    .as_ref()
                    .and_then(|e| e.renewal.as_ref())
                    .is_some_and(|r| r.signing_id == record.signing_id) =>
        {
            if *existing != record {
                *existing = record;
                changed = true;
            }
        }
        Ok(_) => {
            log::warn!(
                "not finishing the {} of keyset {:?}: the registry names another keyset so now",
                intent.action,
                record.name
            );
            return Ok(());
        }
        Err(_) => {
            registry.add(record)?;
            changed = true;
        }
    }
    for name in &intent.retire {
        if let Ok(k) = registry.get_mut(name) {
            if k.state != KeysetState::Retired {
                k.state = KeysetState::Retired;
                changed = true;
            }
        }
    }
    if changed {
        registry.save(lock)?;
    }
    Ok(())
}
