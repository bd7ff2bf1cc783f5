//! `authority add-users --from users.csv --out DIR`: temporary keys for many users at once.
//!
//! The whole file is checked first (names, addresses, duplicates): bad input is refused with
//! nothing changed. Users are then added in batches, each one transaction with one signed
//! checkpoint; a batch's temporary keys are written (one 0600 file per user, or rows of one
//! CSV for a mail merge, synced) *before* the batch commits, so a crash never loses a key the
//! authority recorded: a rerun skips the users that exist and issues the others afresh
//! (overwriting their files, dropping their stale CSV rows). The cost per user does not grow
//! with the authority (one bucket per lookup, one checkpoint per batch).

use std::collections::HashSet;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::init::{open_vouched, Change};
use super::state::{io, now_rfc3339, AuthorityDir, UserRecord, UserState};
use super::tempkey::{format_lifetime, TempKey, TempKeyRecord};
use super::users::{check_email, check_user_name};
use super::AuthorityError;
use crate::fsguard::SecretDir;

/// Users per transaction.
pub const BATCH: usize = 250;
/// The CSV written with `--format csv`.
pub const CSV_NAME: &str = "temporary-keys.csv";

/// One row of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct NewUser {
    /// The user name.
    pub name: String,
    /// The e-mail address, if given.
    pub email: Option<String>,
}

/// Where the temporary keys go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyOutput {
    /// One 0600 file per user, `DIR/USER.tempkey`.
    Files,
    /// One 0600 CSV for a mail merge, `DIR/temporary-keys.csv` (user,email,temporary_key,expires).
    Csv,
}

/// What a run did (or, dry, would do).
#[derive(Debug, Default, serde::Serialize)]
pub struct BulkReport {
    /// Users added.
    pub added: usize,
    /// Users that existed already (skipped).
    pub skipped: usize,
    /// CSV rows of an interrupted earlier run dropped (their users were never recorded).
    pub stale_rows_dropped: usize,
    /// Where the keys are.
    pub output: PathBuf,
    /// Nothing was changed (`--dry-run`).
    pub dry_run: bool,
}

/// Reads `user,email` rows (a header row naming `user` is skipped; `email` may be empty),
/// checking every name and address and refusing duplicates: the whole file or nothing.
pub fn read_users(path: &Path) -> Result<Vec<NewUser>, AuthorityError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .comment(Some(b'#'))
        .from_path(path)
        .map_err(|e| csv_error(path, &e))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_error(path, &e))?;
        let line = record.position().map_or(i as u64 + 1, |p| p.line());
        let name = record.get(0).unwrap_or_default().to_string();
        if i == 0 && name.eq_ignore_ascii_case("user") {
            continue;
        }
        if name.is_empty() {
            continue;
        }
        let at = |e: AuthorityError| {
            let why = match e {
                AuthorityError::BadRequest(m) => m,
                other => other.to_string(),
            };
            AuthorityError::BadRequest(format!(
                "{}:{line}: {why}; nothing was changed",
                path.display()
            ))
        };
        check_user_name(&name).map_err(at)?;
        let email = record.get(1).filter(|e| !e.is_empty()).map(str::to_string);
        if let Some(e) = &email {
            check_email(e).map_err(at)?;
        }
        if !seen.insert(name.clone()) {
            return Err(AuthorityError::BadRequest(format!(
                "{}:{line}: user {name:?} appears twice; nothing was changed",
                path.display()
            )));
        }
        out.push(NewUser { name, email });
    }
    Ok(out)
}

fn csv_error(path: &Path, e: &csv::Error) -> AuthorityError {
    AuthorityError::BadRequest(format!(
        "{}: {e}; write one `user,email` per line; nothing was changed",
        path.display()
    ))
}

/// What `add-users` needs besides the users.
pub struct BulkOptions<'a> {
    /// Where the keys go.
    pub out: &'a Path,
    /// Files or a CSV.
    pub format: KeyOutput,
    /// How long the temporary keys work.
    pub lifetime: Duration,
}

/// `--dry-run`: what a run would do, read-only (no PIN, nothing written).
pub fn dry_run(
    dir: &Path,
    users: &[NewUser],
    opts: &BulkOptions<'_>,
) -> Result<BulkReport, AuthorityError> {
    let mut a = AuthorityDir::open_read(dir)?;
    let mut report = BulkReport {
        output: output_path(opts),
        dry_run: true,
        ..BulkReport::default()
    };
    for u in users {
        if a.user(&u.name).is_ok() {
            report.skipped += 1;
        } else {
            report.added += 1;
        }
    }
    Ok(report)
}

fn output_path(opts: &BulkOptions<'_>) -> PathBuf {
    match opts.format {
        KeyOutput::Files => opts.out.to_path_buf(),
        KeyOutput::Csv => opts.out.join(CSV_NAME),
    }
}

/// Adds the users that do not exist yet, in batches; `progress` is told how many rows are done.
pub fn add_users(
    ch: &Change<'_>,
    dir: &Path,
    users: &[NewUser],
    opts: &BulkOptions<'_>,
    progress: &mut dyn FnMut(usize),
) -> Result<BulkReport, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let out = SecretDir::open(opts.out)?;
    let mut report = BulkReport {
        output: output_path(opts),
        ..BulkReport::default()
    };
    let mut csv_out = match opts.format {
        KeyOutput::Csv => {
            let (file, dropped) = open_csv(&mut a, &out)?;
            report.stale_rows_dropped = dropped;
            Some(file)
        }
        KeyOutput::Files => None,
    };
    let expires = humantime::format_rfc3339_seconds(SystemTime::now() + opts.lifetime).to_string();
    let mut done = 0;
    // Test hook: a smaller batch, so the crash tests can stop between batches.
    let size = std::env::var("KEYWARD_BULK_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(BATCH);
    for (i, batch) in users.chunks(size).enumerate() {
        let mut written = Vec::new();
        let before = report.added;
        for u in batch {
            if a.user(&u.name).is_ok() {
                report.skipped += 1;
                continue;
            }
            let key = TempKey::generate()?;
            a.add_user(UserRecord {
                name: u.name.clone(),
                email: u.email.clone(),
                state: UserState::Pending,
                created: now_rfc3339(),
                temp_key: Some(TempKeyRecord::new(&key, SystemTime::now(), opts.lifetime)?),
                keysets: Vec::new(),
                certs: Vec::new(),
                archive: Vec::new(),
                extra: toml::Table::new(),
            })?;
            a.audit(
                "operator",
                "add-user",
                &u.name,
                "ok",
                &format!(
                    "bulk (add-users): temporary key valid for {}",
                    format_lifetime(opts.lifetime)
                ),
            );
            let display = Zeroizing::new(key.display());
            match csv_out.as_mut() {
                Some(f) => {
                    let row = Zeroizing::new(format!(
                        "{},{},{},{}\n",
                        u.name,
                        csv_field(u.email.as_deref().unwrap_or("")),
                        display.as_str(),
                        expires
                    ));
                    f.write_all(row.as_bytes())
                        .map_err(|e| io("write", &report.output, e))?;
                }
                None => written.push(write_key_file(&out, &u.name, &display)?),
            }
            report.added += 1;
        }
        // The keys are on disk before the authority records them.
        match csv_out.as_mut() {
            Some(f) => f.sync_all().map_err(|e| io("sync", &report.output, e))?,
            None if !written.is_empty() => out.sync()?,
            None => {}
        }
        if report.added > before {
            a.fault(&format!("bulk-batch-{}", i + 1))?;
            a.commit(ch.module, &mut session, ch.pin)?;
        }
        done += batch.len();
        progress(done);
    }
    Ok(report)
}

/// A CSV field, quoted when it must be.
fn csv_field(v: &str) -> String {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

/// `DIR/USER.tempkey`, mode 0600, written to a temporary file created new and renamed (the
/// directory is synced once per batch).
fn write_key_file(dir: &SecretDir, user: &str, key: &str) -> Result<PathBuf, AuthorityError> {
    let line = Zeroizing::new(format!("{key}\n"));
    Ok(dir.write_file(&format!("{user}.tempkey"), line.as_bytes())?)
}

/// Opens the CSV for appending (0600, with a header when new). Rows of users the authority
/// never recorded (an earlier run stopped between writing and committing a batch) are dropped
/// first: those users are issued afresh. Returns the file and how many rows were dropped.
fn open_csv(a: &mut AuthorityDir, dir: &SecretDir) -> Result<(File, usize), AuthorityError> {
    let mut dropped = 0;
    let path = dir.path().join(CSV_NAME);
    let mut existing = false;
    if let Some(mut f) = dir.open_file(CSV_NAME, false)? {
        existing = true;
        let mut text = Zeroizing::new(String::new());
        f.read_to_string(&mut text)
            .map_err(|e| io("read", &path, e))?;
        let mut kept = Zeroizing::new(String::with_capacity(text.len()));
        for line in text.lines() {
            let user = line.split(',').next().unwrap_or_default();
            if user == "user" || a.user(user).is_ok() {
                kept.push_str(line);
                kept.push('\n');
            } else {
                dropped += 1;
            }
        }
        // A CSV made by a run stopped before its header was written (by an earlier keyward)
        // gets it back.
        let headless = !text.starts_with("user,");
        if dropped > 0 || headless {
            if headless {
                kept.insert_str(0, "user,email,temporary_key,expires\n");
            }
            replace_file(dir, kept.as_bytes())?;
        }
    }
    if !existing {
        // Made whole with its header (written, synced, renamed): a run stopped while making
        // it leaves no CSV, never one without its header for the next run to append to.
        replace_file(dir, b"user,email,temporary_key,expires\n")?;
    }
    let f = dir.open_file(CSV_NAME, true)?.ok_or_else(|| {
        io(
            "open",
            &path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    Ok((f, dropped))
}

/// Puts `bytes` in the CSV (0600) by a synced temporary file renamed over it, then syncs the
/// directory.
fn replace_file(dir: &SecretDir, bytes: &[u8]) -> Result<(), AuthorityError> {
    dir.write_file(CSV_NAME, bytes)?;
    Ok(dir.sync()?)
}
