//! `authority init`: the CA key, the exchange key and the archive key on the authority's token,
//! the self-signed CA certificate and the state directory — or nothing at all.

use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;

use super::records::IssuingOptions;
use super::signer::CaSigner;
use super::state::{self, head_labels, now_rfc3339, AuthorityConfig, AuthorityDir, SCHEMA};
use super::store::postgres::{PgLocation, PgStore, StoreFile, STORE_FILE};
use super::store::sqlite::{SqliteStore, DB_FILE};
use super::store::Store;
use super::AuthorityError;
use crate::keyset::csr::parse_subject;
use crate::pki::x509::{self, CertParams, CertProfile};
use crate::pki::PublicKey;
use crate::token::keys::hex;
use crate::token::{
    DecryptionPair, KeySpec, KeyTemplate, LoginPolicy, Module, OaepHash, PinRole, Token,
    TokenSession,
};

/// Ten years, the CA certificate's lifetime.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What `authority init` needs.
pub struct InitRequest<'a> {
    /// The state directory to create.
    pub dir: &'a Path,
    /// The authority's token.
    pub token: &'a Token,
    /// The CA's subject, e.g. `CN=Example Authority,O=Example`.
    pub name: &'a str,
    /// The token's user PIN.
    pub pin: &'a SecretString,
    /// `--final-try`.
    pub policy: LoginPolicy,
    /// `--allow-import`: deliver keys by import to tokens that cannot unwrap them.
    pub allow_import: bool,
    /// `--policy-oid`, `--crl-url`, `--aia-url`: put in every certificate issued after.
    pub issuing: IssuingOptions,
    /// `--force`: create the authority even on a token that already holds one.
    pub force: bool,
    /// `--db`: keep the state in this PostgreSQL database (empty) instead of SQLite.
    pub db: Option<PgLocation>,
}

/// The three key ids of a new authority.
struct KeyIds {
    ca: Vec<u8>,
    exchange: Vec<u8>,
    archive: Vec<u8>,
}

/// What every change to an authority needs: the module, the authority token's PIN and the
/// login policy. Every command that changes the state logs in to the token first.
pub struct Change<'a> {
    /// The module.
    pub module: &'a Module,
    /// The authority token's user PIN.
    pub pin: &'a SecretString,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// Opens the authority for a change: its lock and transaction, a login to its token, and the
/// state checked against what the token vouches for.
pub fn open_vouched(
    ch: &Change<'_>,
    dir: &Path,
) -> Result<(AuthorityDir, TokenSession), AuthorityError> {
    let mut a = AuthorityDir::open_locked(dir)?;
    let session = open_authority_token(ch.module, &a.config, ch.pin, ch.policy)?;
    a.vouch(&session)?;
    Ok((a, session))
}

/// The database of an authority being created, renamed to [`DB_FILE`] once committed.
const DB_INIT: &str = "authority.db.init";

/// Creates the authority. On failure, keys made on the token are destroyed and no state is written.
pub fn init(module: &Module, req: InitRequest<'_>) -> Result<AuthorityConfig, AuthorityError> {
    crate::names::check_dn_text(req.name).map_err(AuthorityError::BadRequest)?;
    let subject = parse_subject(req.name).map_err(AuthorityError::Name)?;
    let policy = req.issuing.policy()?;
    let exists = |d: &Path| {
        d.join(DB_FILE).exists() || d.join(STORE_FILE).exists() || d.join("authority.toml").exists()
    };
    if exists(req.dir) {
        let _lock = state::lock_dir(req.dir)?;
        InitIntent::committed(req.dir);
        return Err(AuthorityError::AlreadyExists {
            dir: req.dir.to_path_buf(),
        });
    }
    // The database must be reachable and empty before the token changes.
    if let Some(db) = &req.db {
        check_db_empty(db)?;
    }
    let mut session = req.token.open_rw(module)?;
    session.login(module, PinRole::User, req.pin, req.policy)?;
    // The archive and every delivery wrap with RFC 5649: refused before any key is made and
    // before the directory exists.
    crate::enroll::delivery::authority_wrap(&session, module)?;
    // The state head lives in private data objects on the token: refused up front too.
    session.check_data_objects()?;
    // A retry of an init killed midway finds that init's own keys on the token: they are
    // removed below (InitIntent::undo), and the token is checked for another authority after.
    let resuming = req.dir.join(INIT_INTENT).exists();
    if !req.force && !resuming {
        refuse_second_authority(&session, req.token)?;
    }
    let wraps_cbc_pad = session.cbc_pad_wraps(module)?;
    crate::fsguard::create_private_dir(req.dir)?;
    let _lock = state::lock_dir(req.dir)?;
    if exists(req.dir) {
        InitIntent::committed(req.dir);
        return Err(AuthorityError::AlreadyExists {
            dir: req.dir.to_path_buf(),
        });
    }
    // An init killed before its commit: its keys go, then it starts again.
    InitIntent::undo(req.dir, req.token, &session)?;
    if !req.force && resuming {
        refuse_second_authority(&session, req.token)?;
    }
    state::clean_temp_files(req.dir);
    let placeholder = AuthorityConfig {
        schema: SCHEMA,
        name: req.name.to_string(),
        token_label: req.token.label().to_string(),
        token_serial: req.token.serial().to_string(),
        ca_key_id: String::new(),
        exchange_key_id: String::new(),
        archive_key_id: String::new(),
        exchange_oaep: OaepHash::Sha1,
        allow_import: req.allow_import,
        wraps_cbc_pad: false,
        crl_number: 0,
        log_seq: 0,
        log_hash: String::new(),
        created: now_rfc3339(),
        ca_pem: String::new(),
        issuing: req.issuing.clone(),
        previous_cas: Vec::new(),
        extra: toml::Table::new(),
    };
    let mut config = placeholder;
    config.wraps_cbc_pad = wraps_cbc_pad;
    let ids = KeyIds {
        ca: session.random(16)?,
        exchange: session.random(16)?,
        archive: session.random(16)?,
    };
    // Before the token changes: what this init will make there, for a retry to remove.
    InitIntent::of(req.token, &ids, &config).write(req.dir)?;
    let result = make_everything(
        module,
        &mut session,
        &mut config,
        &ids,
        (&subject, &policy),
        req.pin,
    )
    .and_then(|()| match &req.db {
        Some(db) => write_state_pg(module, &mut session, req.dir, &config, req.pin, db),
        None => write_state(module, &mut session, req.dir, &config, req.pin),
    });
    if result.is_err() {
        let mut fresh = session.for_cleanup(module);
        let session = fresh.as_mut().unwrap_or(&mut session);
        for id in [&ids.ca, &ids.exchange, &ids.archive] {
            if let Err(e) = session.destroy_by_id(id) {
                log::error!("could not remove key {} after a failed init: {e}", hex(id));
            }
        }
        if !config.ca_key_id.is_empty() {
            let (head, pending) = head_labels(&config);
            for label in [head, pending] {
                if let Err(e) = session.destroy_data_object(&label) {
                    log::error!("could not remove {label:?} after a failed init: {e}");
                }
            }
        }
        for f in [
            "ca.pem",
            DB_INIT,
            "authority.db.init-wal",
            "authority.db.init-shm",
        ] {
            let _ = std::fs::remove_file(req.dir.join(f));
        }
    }
    // Done or undone: either way the intent is spent.
    InitIntent::clear(req.dir);
    result.map(|()| config)
}

/// What an `authority init` under way makes on the token, written (and synced) in the new
/// directory before the token changes, removed when the init committed or was undone. A
/// retry of the init finds it left by a killed run and removes those objects first, so no key
/// the authority does not name stays on the token.
#[derive(serde::Serialize, serde::Deserialize)]
struct InitIntent {
    token_label: String,
    token_serial: String,
    /// The `CKA_ID`s of the CA, exchange and archive keys (hex).
    key_ids: Vec<String>,
    /// The labels of the token head objects.
    head_labels: Vec<String>,
}

const INIT_INTENT: &str = "init.intent.toml";

/// The label of the token an `authority init` in `dir` was making keys on when it was
/// interrupted (its intent is still there, and no database), if any.
pub fn interrupted(dir: &Path) -> Option<String> {
    if dir.join(DB_FILE).exists() {
        return None;
    }
    let text = std::fs::read_to_string(dir.join(INIT_INTENT)).ok()?;
    toml::from_str::<InitIntent>(&text)
        .ok()
        .map(|i| i.token_label)
}

impl InitIntent {
    fn of(token: &Token, ids: &KeyIds, config: &AuthorityConfig) -> InitIntent {
        let mut probe = config.clone();
        probe.ca_key_id = hex(&ids.ca);
        let (head, pending) = head_labels(&probe);
        InitIntent {
            token_label: token.label().to_string(),
            token_serial: token.serial().to_string(),
            key_ids: [&ids.ca, &ids.exchange, &ids.archive]
                .iter()
                .map(|id| hex(id))
                .collect(),
            head_labels: vec![head, pending],
        }
    }

    fn write(&self, dir: &Path) -> Result<(), AuthorityError> {
        let path = dir.join(INIT_INTENT);
        let text =
            toml::to_string(self).map_err(|e| AuthorityError::serialize("init intent", e))?;
        crate::keyset::registry::write_atomic(&path, text.as_bytes()).map_err(|e| {
            Self::clear(dir);
            state::io("write", &path, e)
        })
    }

    /// Removes the intent (a failure is logged: the next init or retry removes it).
    fn clear(dir: &Path) {
        let path = dir.join(INIT_INTENT);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("could not remove {}: {e}", path.display()),
        }
    }

    /// The init committed (the database is in place): its keys are the authority's, and an
    /// intent left by a kill after the commit is only removed.
    fn committed(dir: &Path) {
        if dir.join(INIT_INTENT).exists() {
            Self::clear(dir);
        }
        state::clean_temp_files(dir);
        // A copy for people: written before the commit, but a kill can still lose it to a
        // crash of the file system; the database holds the original.
    }

    /// Removes what a killed init left on `token` (logged in), as its intent names, and the
    /// intent; refuses when the intent names another token.
    fn undo(dir: &Path, token: &Token, session: &TokenSession) -> Result<(), AuthorityError> {
        let path = dir.join(INIT_INTENT);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(state::io("read", &path, e)),
        };
        let Ok(intent) = toml::from_str::<InitIntent>(&text) else {
            // Renamed into place after a sync: one that does not parse is not keyward's.
            log::warn!("ignoring {}, which does not parse", path.display());
            Self::clear(dir);
            return Ok(());
        };
        if intent.token_serial != token.serial() || intent.token_label != token.label() {
            return Err(AuthorityError::BadRequest(format!(
                "an earlier `authority init` in {} was interrupted after it began making keys on token {:?} (serial {}); run it again with that token (`--token {}`) so that those keys are removed",
                dir.display(),
                intent.token_label,
                intent.token_serial,
                intent.token_label
            )));
        }
        // The intent is a file anyone who can write the directory can forge: nothing it
        // names is removed while the token vouches for an authority that may use it.
        let own = own_heads(&intent)?;
        state::refuse_vouched_state(
            session,
            &own.0,
            &format!(
                "{}/{INIT_INTENT} asks to remove the keys of an interrupted `authority init` (if it is stale, remove it and any keys that init left by hand)",
                dir.display()
            ),
        )?;
        for id in &intent.key_ids {
            let raw = state::key_id("new key", id)?;
            session.destroy_by_id(&raw)?;
        }
        for label in [&own.0, &own.1] {
            session.destroy_data_object(label)?;
        }
        log::warn!(
            "removed the keys of an earlier `authority init` in {} that was interrupted",
            dir.display()
        );
        for f in ["ca.pem", "authority.db.init-wal", "authority.db.init-shm"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        Self::clear(dir);
        Ok(())
    }
}

/// The head labels an init whose first key (the CA key) is `key_ids[0]` gives its authority,
/// derived from the key id as [`state::head_labels`] does (not read from the intent).
fn own_heads(intent: &InitIntent) -> Result<(String, String), AuthorityError> {
    let ca = intent
        .key_ids
        .first()
        .ok_or_else(|| AuthorityError::BadRequest("init.intent.toml names no key".into()))?;
    state::key_id("new key", ca)?;
    let id: String = ca.chars().take(16).collect();
    Ok((
        format!("keyward head {id}"),
        format!("keyward head {id} pending"),
    ))
}

/// Writes the new authority's database (configuration and the `init` entry, committed with
/// its first checkpoint and token head) under a temporary name, then puts it in place.
fn write_state(
    module: &Module,
    session: &mut TokenSession,
    dir: &Path,
    config: &AuthorityConfig,
    pin: &SecretString,
) -> Result<(), AuthorityError> {
    let tmp = dir.join(DB_INIT);
    let _ = std::fs::remove_file(&tmp);
    let store = SqliteStore::create(&tmp, state::BUCKETS)?;
    let mut a = AuthorityDir::create(dir, Box::new(store), config.clone(), None)?;
    let detail = format!(
        "token {:?} serial {}; exchange OAEP {:?}; delivery by import {}",
        config.token_label,
        config.token_serial,
        config.exchange_oaep,
        if config.allow_import {
            "allowed"
        } else {
            "not allowed"
        }
    );
    a.audit("operator", "init", &config.name, "ok", &detail);
    a.commit(module, session, pin)?;
    a.checkpoint_store()?;
    drop(a);
    // The database file alone, its log moved in: what the rename below puts in place.
    SqliteStore::checkpoint_file(&tmp)?;
    // A copy for people and tools (keyward itself reads the one in the database), in place
    // before the commit so that a committed authority always has it.
    crate::keyset::registry::write_atomic(&dir.join("ca.pem"), config.ca_pem.as_bytes())
        .map_err(|e| state::io("write", &dir.join("ca.pem"), e))?;
    // The commit: from here on the authority exists and its keys are named.
    std::fs::rename(&tmp, dir.join(DB_FILE)).map_err(|e| state::io("create", &tmp, e))?;
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!(
            "authority {} was created, but syncing its directory failed ({e}): it stands, but may be lost if the system stops before it syncs again",
            dir.display()
        );
    }
    Ok(())
}

/// Refuses a database that cannot be reached or holds an authority already.
fn check_db_empty(db: &PgLocation) -> Result<(), AuthorityError> {
    db.check()?;
    let store = PgStore::open(db)?;
    if store.has_schema()? {
        return Err(AuthorityError::BadRequest(format!(
            "the database {} holds an authority already; add a node to it with `keyward authority join --db URL --dir DIR`, or give an empty database",
            db.display()
        )));
    }
    Ok(())
}

/// [`write_state`] for PostgreSQL: the schema, the configuration and the `init` entry in one
/// database transaction, committed with the first checkpoint; then `ca.pem` and `store.toml`
/// (the directory's commit: from then on it names the database).
fn write_state_pg(
    module: &Module,
    session: &mut TokenSession,
    dir: &Path,
    config: &AuthorityConfig,
    pin: &SecretString,
    db: &PgLocation,
) -> Result<(), AuthorityError> {
    let store = PgStore::create(db, state::BUCKETS)?;
    let mut a = AuthorityDir::create(dir, Box::new(store), config.clone(), None)?;
    a.audit(
        "operator",
        "init",
        &config.name,
        "ok",
        &format!(
            "token {:?} serial {}; exchange OAEP {:?}; state in PostgreSQL",
            config.token_label, config.token_serial, config.exchange_oaep
        ),
    );
    a.commit(module, session, pin)?;
    drop(a);
    write_node_files(dir, config, db)
}

/// Writes a node's `ca.pem` and its `store.toml` naming the database (last: its rename is
/// the directory's commit).
pub fn write_node_files(
    dir: &Path,
    config: &AuthorityConfig,
    db: &PgLocation,
) -> Result<(), AuthorityError> {
    crate::keyset::registry::write_atomic(&dir.join("ca.pem"), config.ca_pem.as_bytes())
        .map_err(|e| state::io("write", &dir.join("ca.pem"), e))?;
    let file = StoreFile {
        backend: "postgres".into(),
        location: db.clone(),
    };
    crate::keyset::registry::write_atomic(&dir.join(STORE_FILE), file.to_text().as_bytes())
        .map_err(|e| state::io("write", &dir.join(STORE_FILE), e))?;
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        log::warn!("syncing {} failed ({e})", dir.display());
    }
    Ok(())
}

/// What `authority join` needs.
pub struct JoinRequest<'a> {
    /// The new node's directory (created).
    pub dir: &'a Path,
    /// The database the other nodes use.
    pub db: &'a PgLocation,
    /// This node's copy of the authority token.
    pub token: &'a Token,
    /// Its user PIN.
    pub pin: &'a SecretString,
    /// `--final-try`.
    pub policy: LoginPolicy,
}

/// Adds a node to an authority kept in PostgreSQL: checks the whole signed log and the state
/// against the CA key on this node's copy of the token, advances the copy's head to the
/// database's last checkpoint, records the join in the log, and writes the directory.
pub fn join(module: &Module, req: JoinRequest<'_>) -> Result<AuthorityConfig, AuthorityError> {
    req.db.check()?;
    let exists = |d: &Path| {
        d.join(DB_FILE).exists() || d.join(STORE_FILE).exists() || d.join("authority.toml").exists()
    };
    if exists(req.dir) {
        return Err(AuthorityError::AlreadyExists {
            dir: req.dir.to_path_buf(),
        });
    }
    let mut store = PgStore::open(req.db)?;
    if !store.has_schema()? {
        return Err(AuthorityError::BadRequest(format!(
            "the database {} holds no authority; create one with `keyward authority init --db URL`",
            req.db.display()
        )));
    }
    store.begin()?;
    let mut a = AuthorityDir::from_shared_store(req.dir, Box::new(store))?;
    if a.config.token_serial != req.token.serial() || a.config.token_label != req.token.label() {
        return Err(AuthorityError::BadRequest(format!(
            "token {:?} (serial {}) is not the authority's token {:?} (serial {}); give this node a copy of that token",
            req.token.label(),
            req.token.serial(),
            a.config.token_label,
            a.config.token_serial
        )));
    }
    let mut session = open_authority_token(module, &a.config, req.pin, req.policy)?;
    a.verify_log_with_token(&session)?;
    a.seed_head_if_missing(&session)?;
    a.vouch(&session)?;
    a.verify_all()?;
    crate::fsguard::create_private_dir(req.dir)?;
    let _lock = state::lock_dir(req.dir)?;
    InitIntent::clear(req.dir);
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    a.audit(
        "operator",
        "join",
        &a.config.name.clone(),
        "ok",
        &format!("node {} on host {:?}", req.dir.display(), host.trim()),
    );
    a.commit(module, &mut session, req.pin)?;
    let config = a.config.clone();
    drop(a);
    write_node_files(req.dir, &config, req.db)?;
    Ok(config)
}

fn make_everything(
    module: &Module,
    session: &mut TokenSession,
    config: &mut AuthorityConfig,
    ids: &KeyIds,
    (subject, policy): (&x509_cert::name::Name, &x509::IssuingPolicy),
    pin: &SecretString,
) -> Result<(), AuthorityError> {
    session.generate_signing_pair(&KeyTemplate {
        id: &ids.ca,
        private_label: "keyward authority CA key",
        public_label: "keyward authority CA key (public)",
        spec: KeySpec::Rsa(3072),
        always_authenticate: false,
    })?;
    let (exchange_public, _) = session.generate_decryption_pair(&DecryptionPair {
        id: &ids.exchange,
        label: "keyward authority exchange key",
        bits: 2048,
        persistent: true,
        extractable: false,
        always_authenticate: false,
    })?;
    session.generate_archive_key(&ids.archive, "keyward authority archive key")?;
    let oaep = if session.supports_oaep(exchange_public, OaepHash::Sha256)? {
        OaepHash::Sha256
    } else {
        OaepHash::Sha1
    };

    let ca_raw = session
        .public_key(&ids.ca)?
        .ok_or_else(|| missing("CA public key"))?;
    let ca_spki = PublicKey::from_raw(&ca_raw)?.to_der()?;
    let ex_raw = session.rsa_public_key(exchange_public)?;
    let ex_spki = PublicKey::from_raw(&ex_raw)?.to_der()?;
    let key = session
        .find_private_key(&ids.ca)?
        .ok_or_else(|| missing("CA private key"))?;
    let now = SystemTime::now();
    let not_before = now - Duration::from_secs(3600);
    let mut signer = CaSigner {
        module,
        session,
        key,
        pin,
    };
    let ca = x509::self_signed_ca(
        &CertParams {
            subject,
            spki_der: &ca_spki,
            serial: &x509::random_serial()?,
            not_before,
            not_after: now + CA_LIFETIME,
            profile: CertProfile::Ca,
            email: None,
        },
        &mut signer,
    )?;
    let exchange_subject = parse_subject(&format!(
        "CN={} key exchange",
        sanitize(&x509::common_name(&ca).unwrap_or_else(|| "keyward authority".into()))
    ))
    .map_err(AuthorityError::Name)?;
    let exchange = x509::issue_with_policy(
        &ca,
        &CertParams {
            subject: &exchange_subject,
            spki_der: &ex_spki,
            serial: &x509::random_serial()?,
            not_before,
            not_after: now + CA_LIFETIME,
            profile: CertProfile::AuthorityExchange,
            email: None,
        },
        policy,
        &mut signer,
    )?;
    let bundle = format!(
        "{}{}",
        x509::cert_to_pem(&ca)?,
        x509::cert_to_pem(&exchange)?
    );

    config.ca_key_id = hex(&ids.ca);
    config.exchange_key_id = hex(&ids.exchange);
    config.archive_key_id = hex(&ids.archive);
    config.exchange_oaep = oaep;
    config.ca_pem = bundle;
    Ok(())
}

/// Refuses a token that already holds an authority's CA key (another authority directory
/// relies on it; `--force` creates a second one anyway).
fn refuse_second_authority(session: &TokenSession, token: &Token) -> Result<(), AuthorityError> {
    if session
        .private_keys()?
        .iter()
        .any(|k| k.label == "keyward authority CA key")
    {
        return Err(AuthorityError::BadRequest(format!(
            "token {:?} already holds an authority (its CA key); give the new authority a token of its own, or pass --force to put a second one on it",
            token.label()
        )));
    }
    Ok(())
}

/// Keeps a common name safe to put back into an RFC 4514 string.
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if ",+;\"\\<>=#".contains(c) { ' ' } else { c })
        .collect()
}

fn missing(what: &str) -> AuthorityError {
    AuthorityError::BadRequest(format!("the {what} just generated is not on the token"))
}

/// Finds the authority's token by serial and logs in.
pub fn open_authority_token(
    module: &Module,
    config: &AuthorityConfig,
    pin: &SecretString,
    policy: LoginPolicy,
) -> Result<TokenSession, AuthorityError> {
    let token = crate::token::list_tokens(module)?
        .into_iter()
        .find(|t| {
            // Label and serial together: NSS and tpm2-pkcs11 give every token one serial.
            t.serial() == config.token_serial
                && t.label() == config.token_label
                && t.summary().initialized
        })
        .ok_or_else(|| AuthorityError::TokenMissing {
            label: config.token_label.clone(),
            serial: config.token_serial.clone(),
        })?;
    let mut session = token.open_rw(module)?;
    session.login(module, PinRole::User, pin, policy)?;
    Ok(session)
}
