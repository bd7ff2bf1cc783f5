//! `authority migrate`: converts a schema-1 directory (TOML files, `issued/`, `archive/`,
//! `audit.log`) into the store, once. The old audit log must verify against the head in
//! `authority.toml`; it is kept whole as a `legacy` record, and the new chain starts with a
//! `migrate` entry naming its head. The old files move to `pre-migration/`.

use std::path::Path;

use super::init::{open_authority_token, Change};
use super::legacy;
use super::state::{self, kind, AuthorityDir, SCHEMA};
use super::store::sqlite::{SqliteStore, DB_FILE};
use super::AuthorityError;

/// What was migrated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    /// Users.
    pub users: usize,
    /// Issued certificates.
    pub certificates: usize,
    /// Archived keys.
    pub archived_keys: usize,
    /// Entries of the old audit log.
    pub log_entries: u64,
}

/// Converts the directory; refuses when it holds a store already.
pub fn migrate(ch: &Change<'_>, dir: &Path) -> Result<Migrated, AuthorityError> {
    if dir.join(DB_FILE).exists() {
        return Err(AuthorityError::AlreadyMigrated {
            dir: dir.to_path_buf(),
        });
    }
    if !dir.join("authority.toml").exists() {
        return Err(AuthorityError::NotAnAuthority {
            dir: dir.to_path_buf(),
        });
    }
    let _lock = state::lock_dir(dir)?;
    state::clean_temp_files(dir);
    if dir.join(DB_FILE).exists() {
        return Err(AuthorityError::AlreadyMigrated {
            dir: dir.to_path_buf(),
        });
    }
    let old = legacy::read(dir)?;
    let log = super::audit::AuditLog::open(&dir.join("audit.log"));
    let head =
        (old.config.log_seq > 0).then_some((old.config.log_seq, old.config.log_hash.as_str()));
    let log_entries = log.verify(head)?;
    let mut session = open_authority_token(ch.module, &old.config, ch.pin, ch.policy)?;
    // A schema-1 directory predates the token-kept head: a token that vouches for a state
    // means these files are someone's copy written after the database was moved away, and
    // importing them would sign whatever they say.
    state::refuse_vouched_state(
        &session,
        &state::head_labels(&old.config).0,
        &format!(
            "{} holds an authority in the old TOML format",
            dir.display()
        ),
    )?;

    let mut config = old.config.clone();
    config.schema = SCHEMA;
    config.ca_pem = read_text(dir, "ca.pem")?;
    let tmp = dir.join("authority.db.init");
    let _ = std::fs::remove_file(&tmp);
    let store = SqliteStore::create(&tmp, state::BUCKETS)?;
    let mut a = AuthorityDir::create(dir, Box::new(store), config, None)?;
    let mut done = Migrated {
        users: 0,
        certificates: 0,
        archived_keys: 0,
        log_entries,
    };
    for user in &old.users {
        for cert in &user.certs {
            let pem = read_text(dir, &format!("issued/{}.pem", cert.serial))?;
            a.put(kind::ISSUED, &cert.serial, &user.name, pem.into_bytes())?;
            done.certificates += 1;
        }
        for arch in &user.archive {
            let blob = read(
                dir,
                &format!("archive/{}/{}.kwp", user.name, arch.cert_serial),
            )?;
            a.put(kind::ARCHIVE, &arch.cert_serial, &user.name, blob)?;
            done.archived_keys += 1;
        }
        a.add_user(user.clone())?;
        done.users += 1;
    }
    a.put(kind::LEGACY, "audit.log", "", read(dir, "audit.log")?)?;
    a.audit(
        "operator",
        "migrate",
        &old.config.name,
        "ok",
        &format!(
            "schema-1 directory imported: {} users, {} certificates, {} archived keys; its audit log ({log_entries} entries, head {}) kept as the legacy record audit.log",
            done.users, done.certificates, done.archived_keys, old.config.log_hash
        ),
    );
    a.commit(ch.module, &mut session, ch.pin)?;
    a.checkpoint_store()?;
    drop(a);
    // The file alone, its log moved in and checked (a failure on close goes unreported).
    super::store::sqlite::SqliteStore::checkpoint_file(&tmp)?;
    std::fs::rename(&tmp, dir.join(DB_FILE)).map_err(|e| state::io("create", &tmp, e))?;
    sync_dir(dir)?;
    // The store is in place and is all keyward reads now; the old files move aside.
    let aside = dir.join("pre-migration");
    std::fs::create_dir_all(&aside).map_err(|e| state::io("create", &aside, e))?;
    for name in [
        "authority.toml",
        "users.toml",
        "audit.log",
        "issued",
        "archive",
    ] {
        let from = dir.join(name);
        if from.exists() {
            std::fs::rename(&from, aside.join(name)).map_err(|e| state::io("move", &from, e))?;
        }
    }
    sync_dir(dir)?;
    Ok(done)
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, AuthorityError> {
    let p = dir.join(name);
    std::fs::read(&p).map_err(|e| state::io("read", &p, e))
}

fn read_text(dir: &Path, name: &str) -> Result<String, AuthorityError> {
    Ok(String::from_utf8_lossy(&read(dir, name)?).into_owned())
}

fn sync_dir(dir: &Path) -> Result<(), AuthorityError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| state::io("sync", dir, e))
}
