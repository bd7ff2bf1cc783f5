//! The authority's audit log: append-only JSON lines, each chained to the one before by hash.
//!
//! # Format (version 1)
//! One JSON object per line, `\n`-terminated, fields in this order:
//! `seq, time, actor, action, subject, outcome, detail, prev, hash`.
//! - `seq` counts from 1 with no gaps.
//! - `prev` is the hex SHA-256 of the previous line's bytes (without its `\n`); 64 zeros on
//!   the first line.
//! - `hash` is the hex SHA-256 of the *canonical JSON* of the other eight fields: the compact
//!   `serde_json` serialisation of an object with exactly those keys in the order above.
//!
//! An edited line fails its own `hash` (or, if its hash was recomputed, the next line's
//! `prev`); a reordered or deleted line breaks `seq`; a torn last line (a crash during
//! [`AuditLog::append`]) has no final `\n`. Deleting trailing lines leaves a valid, shorter
//! chain: it is caught by comparing with the head `(seq, hash)` the authority records in its
//! own state ([`AuditLog::verify`] with `Some(head)`). The hash is not keyed: someone who
//! rewrites the whole tail consistently is caught only by that head.
//!
//! **Never log a secret**: no PIN, temporary key, private key or password goes into any field.
//! Debug builds assert against the obvious shapes of one.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Bytes read at a time when looking for the last line from the end.
const TAIL_CHUNK: u64 = 4096;

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When (RFC 3339, UTC).
    pub time: String,
    /// Who acted (operator or user name).
    pub actor: String,
    /// What was done (`add-user`, `process`, `revoke`, …).
    pub action: String,
    /// What it was done to (a user, a request file, a serial number).
    pub subject: String,
    /// How it ended (`ok`, `refused`, `failed`).
    pub outcome: String,
    /// Free text; never a secret.
    pub detail: String,
    /// Hex SHA-256 of the previous line's bytes, or 64 zeros on the first line.
    pub prev: String,
    /// Hex SHA-256 of the canonical JSON of all the other fields.
    pub hash: String,
}

/// The fields covered by [`AuditEntry::hash`], in canonical order.
#[derive(Serialize)]
struct Canonical<'a> {
    seq: u64,
    time: &'a str,
    actor: &'a str,
    action: &'a str,
    subject: &'a str,
    outcome: &'a str,
    detail: &'a str,
    prev: &'a str,
}

impl AuditEntry {
    /// The hash this entry should carry, computed from its other fields.
    pub fn compute_hash(&self) -> Result<String, AuditError> {
        let canonical = Canonical {
            seq: self.seq,
            time: &self.time,
            actor: &self.actor,
            action: &self.action,
            subject: &self.subject,
            outcome: &self.outcome,
            detail: &self.detail,
            prev: &self.prev,
        };
        let json = serde_json::to_vec(&canonical).map_err(AuditError::Encode)?;
        Ok(hex_sha256(&json))
    }
}

/// What is wrong with a line of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// The line's contents changed (or it cannot be read).
    Edited,
    /// Lines are out of order or repeated.
    Reordered,
    /// One or more entries are missing.
    Deleted,
    /// The last line is only partly written (a crash during an append).
    Truncated,
    /// Entries follow the head the authority recorded.
    Unrecorded,
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tamper::Edited => "edited",
            Tamper::Reordered => "reordered",
            Tamper::Deleted => "deleted",
            Tamper::Truncated => "truncated",
            Tamper::Unrecorded => "unrecorded",
        })
    }
}

/// Why the audit log could not be read, written or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file operation failed.
    #[error("cannot {action} the audit log {}: {source}", .path.display())]
    Io {
        /// "open", "read", "write", "sync".
        action: &'static str,
        /// The log file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a valid entry.
    #[error(
        "line {line} of the audit log {} cannot be read: {}; the log is damaged or \
         was edited — keep a copy and investigate",
        .path.display(),
        .source.as_ref().map_or_else(|| "the line is empty".to_string(), ToString::to_string)
    )]
    Parse {
        /// The log file.
        path: PathBuf,
        /// Line number, from 1.
        line: u64,
        /// The parser's complaint (none for an empty line).
        #[source]
        source: Option<serde_json::Error>,
    },
    /// `append` refuses to chain onto a last line that does not parse.
    #[error(
        "will not append to the audit log {}: its last line cannot be read ({source}); run \
         `keyward authority log --verify` and repair the log first",
        .path.display()
    )]
    LastLine {
        /// The log file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The chain is broken at `line`.
    #[error(
        "the audit log {} fails verification at line {line}: {kind} — {detail}; keep a copy \
         and investigate before anything else is logged",
        .path.display()
    )]
    Broken {
        /// The log file.
        path: PathBuf,
        /// The first bad line, from 1.
        line: u64,
        /// What is wrong.
        kind: Tamper,
        /// Details for a person.
        detail: String,
    },
    /// `append` refuses to chain onto a damaged last line.
    #[error(
        "will not append to the audit log {}: {reason}; run `keyward authority log --verify` \
         and repair the log first",
        .path.display()
    )]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// What is wrong with its end.
        reason: String,
    },
    /// An entry could not be serialised.
    #[error("cannot encode an audit entry: {0}")]
    Encode(#[source] serde_json::Error),
}

impl AuditError {
    /// The bad line and what is wrong with it, for a broken chain or unreadable line.
    pub fn tamper(&self) -> Option<(u64, Tamper)> {
        match self {
            AuditError::Broken { line, kind, .. } => Some((*line, *kind)),
            AuditError::Parse { line, .. } => Some((*line, Tamper::Edited)),
            _ => None,
        }
    }
}

/// The audit log file. Appends are serialised by the authority's lock, held by the caller.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// A handle on the log at `path`; nothing is read or created yet.
    pub fn open(path: &Path) -> Self {
        AuditLog {
            path: path.to_path_buf(),
        }
    }

    /// The log file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and fsyncs. The caller holds the authority's lock. Returns the new
    /// head `(seq, hash)`. Callers must never pass a secret (PIN, temporary key, key material)
    /// in any field. Refuses a log whose last line is torn or damaged.
    pub fn append(
        &self,
        actor: &str,
        action: &str,
        subject: &str,
        outcome: &str,
        detail: &str,
    ) -> Result<(u64, String), AuditError> {
        // Only the free-text detail is checked: a user name may legally look like a key.
        debug_assert!(
            !looks_secret(detail),
            "an audit field looks like a secret; never log secrets"
        );
        let mut opts = OpenOptions::new();
        opts.read(true).append(true).create(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let existed = self.path.exists();
        let mut file = opts.open(&self.path).map_err(|e| self.io("open", e))?;
        let len = file.metadata().map_err(|e| self.io("read", e))?.len();

        let (seq, prev) = self.next_link(&mut file, len)?;

        let mut entry = AuditEntry {
            seq,
            time: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            actor: actor.to_string(),
            action: action.to_string(),
            subject: subject.to_string(),
            outcome: outcome.to_string(),
            detail: detail.to_string(),
            prev,
            hash: String::new(),
        };
        entry.hash = entry.compute_hash()?;
        let mut line = serde_json::to_vec(&entry).map_err(AuditError::Encode)?;
        line.push(b'\n');

        if let Err(e) = file.write_all(&line).and_then(|()| file.sync_all()) {
            // Leave no torn line behind if we can help it.
            let _ = file.set_len(len).and_then(|()| file.sync_all());
            return Err(self.io("write", e));
        }
        if !existed {
            self.sync_dir()?;
        }
        Ok((entry.seq, entry.hash))
    }

    /// Refuses, as [`AuditLog::append`] would, a log that cannot be appended to (a torn or
    /// damaged last line). Commands that change the authority's state call it before they
    /// act, so nothing is done that could not be logged.
    pub fn check_appendable(&self) -> Result<(), AuditError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("open", e)),
        };
        let len = file.metadata().map_err(|e| self.io("read", e))?.len();
        self.next_link(&mut file, len).map(|_| ())
    }

    /// The `(seq, prev)` of the entry that would follow the last one of a `len`-byte log.
    fn next_link(&self, file: &mut File, len: u64) -> Result<(u64, String), AuditError> {
        match self.last_line(file, len)? {
            None => Ok((1, GENESIS.to_string())),
            Some(line) => {
                let last: AuditEntry =
                    serde_json::from_slice(&line).map_err(|source| AuditError::LastLine {
                        path: self.path.clone(),
                        source,
                    })?;
                if last.compute_hash()? != last.hash {
                    return Err(self.damaged(format!(
                        "its last line (entry {}) was edited: its hash does not match",
                        last.seq
                    )));
                }
                let next = last
                    .seq
                    .checked_add(1)
                    .ok_or_else(|| self.damaged("its sequence number is at its maximum".into()))?;
                Ok((next, hex_sha256(&line)))
            }
        }
    }

    /// All entries, in file order; a line that cannot be parsed is reported by number.
    /// A missing file is an empty log.
    pub fn entries(&self) -> Result<Vec<AuditEntry>, AuditError> {
        let Some(bytes) = self.read_all()? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (i, raw) in split_lines(&bytes).into_iter().enumerate() {
            out.push(self.parse_line(line_no(i), raw.bytes)?);
        }
        Ok(out)
    }

    /// Verifies the chain: each line's hash, each `prev` link, `seq` increasing by 1 from 1;
    /// and, when `head` is given (recorded by the authority's state), that the last entry
    /// matches it (catches deleted trailing lines). Returns the number of entries; an error
    /// names the first bad line and what is wrong.
    pub fn verify(&self, head: Option<(u64, &str)>) -> Result<u64, AuditError> {
        let bytes = self.read_all()?.unwrap_or_default();
        let lines = split_lines(&bytes);
        let mut prev_hash = GENESIS.to_string();
        let mut last: Option<AuditEntry> = None;
        let head_seq = head.map(|(seq, _)| seq);
        let mut hash_at_head: Option<String> = None;
        // One pass, so the first bad line is the one reported, whatever is wrong with it.
        for (i, raw) in lines.iter().enumerate() {
            let n = line_no(i);
            if !raw.terminated {
                return Err(self.broken(
                    n,
                    Tamper::Truncated,
                    "the last line has no end of line: it was only partly written \
                     (a crash during an append?) or cut off"
                        .into(),
                ));
            }
            let entry = self.parse_line(n, raw.bytes)?;
            if entry.compute_hash()? != entry.hash {
                return Err(self.broken(
                    n,
                    Tamper::Edited,
                    format!("entry {}'s hash does not match its contents", entry.seq),
                ));
            }
            if entry.seq != n {
                return Err(self.seq_error(n, entry.seq, &lines[i + 1..]));
            }
            if entry.prev != prev_hash {
                // Its own hash holds, so the line before changed (and had its hash redone).
                let (line, detail) = if i == 0 {
                    (n, "the first entry does not start the chain".to_string())
                } else {
                    (
                        n - 1,
                        format!("it no longer matches the link (prev) recorded in line {n}"),
                    )
                };
                return Err(self.broken(line, Tamper::Edited, detail));
            }
            prev_hash = hex_sha256(raw.bytes);
            if Some(entry.seq) == head_seq {
                hash_at_head = Some(entry.hash.clone());
            }
            last = Some(entry);
        }

        let count = last.as_ref().map_or(0, |e| e.seq);
        if let Some((head_seq, head_hash)) = head {
            if head_seq == 0 {
                if count == 0 {
                    return Ok(0);
                }
                return Err(self.broken(
                    1,
                    Tamper::Unrecorded,
                    "the authority recorded an empty log but it has entries".into(),
                ));
            }
            if count < head_seq {
                let what = if count + 1 == head_seq {
                    format!("entry {head_seq} is missing")
                } else {
                    format!("entries {}..={head_seq} are missing", count + 1)
                };
                return Err(self.broken(
                    count + 1,
                    Tamper::Deleted,
                    format!(
                        "the log ends at entry {count} but the authority recorded entry \
                         {head_seq} as the last: {what} from the end"
                    ),
                ));
            }
            if hash_at_head.as_deref() != Some(head_hash) {
                return Err(self.broken(
                    head_seq,
                    Tamper::Edited,
                    "it does not match the head the authority recorded".into(),
                ));
            }
            if count > head_seq {
                return Err(self.broken(
                    head_seq + 1,
                    Tamper::Unrecorded,
                    format!(
                        "the authority recorded entry {head_seq} as the last, but the log goes \
                         on to entry {count}: appended outside the authority, or its state is \
                         older than its log"
                    ),
                ));
            }
        }
        Ok(count)
    }

    /// The last entry's `(seq, hash)`, or `None` for an empty or missing log.
    pub fn head(&self) -> Result<Option<(u64, String)>, AuditError> {
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("open", e)),
        };
        let len = file.metadata().map_err(|e| self.io("read", e))?.len();
        let Some(line) = self.last_line(&mut file, len)? else {
            return Ok(None);
        };
        let entry: AuditEntry =
            serde_json::from_slice(&line).map_err(|source| AuditError::LastLine {
                path: self.path.clone(),
                source,
            })?;
        Ok(Some((entry.seq, entry.hash)))
    }

    /// The last complete line (without `\n`) of a `len`-byte file, or `None` if empty;
    /// an error if the file does not end with `\n` (a torn line).
    fn last_line(&self, file: &mut File, len: u64) -> Result<Option<Vec<u8>>, AuditError> {
        if len == 0 {
            return Ok(None);
        }
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))
            .and_then(|_| file.read_exact(&mut last))
            .map_err(|e| self.io("read", e))?;
        if last[0] != b'\n' {
            return Err(self.damaged(
                "its last line is only partly written (no end of line; a crash during an \
                 append?)"
                    .into(),
            ));
        }
        // Walk back from before the final '\n' to the previous '\n' (or the start).
        let end = len - 1;
        let mut start = end;
        let mut tail: Vec<u8> = Vec::new();
        while start > 0 {
            let from = start.saturating_sub(TAIL_CHUNK);
            let mut chunk = vec![0u8; usize::try_from(start - from).unwrap_or(0)];
            file.seek(SeekFrom::Start(from))
                .and_then(|_| file.read_exact(&mut chunk))
                .map_err(|e| self.io("read", e))?;
            if let Some(p) = chunk.iter().rposition(|&b| b == b'\n') {
                chunk.drain(..=p);
                chunk.extend_from_slice(&tail);
                return Ok(Some(chunk));
            }
            chunk.extend_from_slice(&tail);
            tail = chunk;
            start = from;
        }
        Ok(Some(tail))
    }

    /// The whole file, or `None` if it does not exist.
    fn read_all(&self) -> Result<Option<Vec<u8>>, AuditError> {
        match std::fs::read(&self.path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io("read", e)),
        }
    }

    /// Parses line `n`.
    fn parse_line(&self, n: u64, bytes: &[u8]) -> Result<AuditEntry, AuditError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(AuditError::Parse {
                path: self.path.clone(),
                line: n,
                source: None,
            });
        }
        serde_json::from_slice(bytes).map_err(|e| AuditError::Parse {
            path: self.path.clone(),
            line: n,
            source: Some(e),
        })
    }

    /// Explains a `seq` that is not the line number `n`.
    fn seq_error(&self, n: u64, seq: u64, later: &[RawLine<'_>]) -> AuditError {
        let holds_n = |raw: &RawLine<'_>| {
            serde_json::from_slice::<AuditEntry>(raw.bytes).is_ok_and(|e| e.seq == n)
        };
        if later.iter().any(holds_n) {
            self.broken(
                n,
                Tamper::Reordered,
                format!("it holds entry {seq} but entry {n} comes later in the file"),
            )
        } else if seq > n {
            let what = if seq == n + 1 {
                format!("entry {n} is missing")
            } else {
                format!("entries {n}..={} are missing", seq - 1)
            };
            self.broken(n, Tamper::Deleted, format!("it holds entry {seq}: {what}"))
        } else {
            self.broken(
                n,
                Tamper::Reordered,
                format!("it holds entry {seq}, which came earlier (repeated or moved)"),
            )
        }
    }

    /// Fsyncs the directory holding the log, so a newly created file survives a crash.
    fn sync_dir(&self) -> Result<(), AuditError> {
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        #[cfg(unix)]
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io("sync", e))?;
        #[cfg(not(unix))]
        let _ = dir;
        Ok(())
    }

    fn io(&self, action: &'static str, e: std::io::Error) -> AuditError {
        AuditError::Io {
            action,
            path: self.path.clone(),
            source: e,
        }
    }

    fn damaged(&self, reason: String) -> AuditError {
        AuditError::Damaged {
            path: self.path.clone(),
            reason,
        }
    }

    fn broken(&self, line: u64, kind: Tamper, detail: String) -> AuditError {
        AuditError::Broken {
            path: self.path.clone(),
            line,
            kind,
            detail,
        }
    }
}

/// One line of the file and whether it ended with `\n`.
struct RawLine<'a> {
    bytes: &'a [u8],
    terminated: bool,
}

/// Splits on `\n`; a final piece without `\n` is kept and marked unterminated.
fn split_lines(bytes: &[u8]) -> Vec<RawLine<'_>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match rest.iter().position(|&b| b == b'\n') {
            Some(p) => {
                out.push(RawLine {
                    bytes: &rest[..p],
                    terminated: true,
                });
                rest = &rest[p + 1..];
            }
            None => {
                out.push(RawLine {
                    bytes: rest,
                    terminated: false,
                });
                rest = &[];
            }
        }
    }
    out
}

/// The 1-based line number of index `i`.
fn line_no(i: usize) -> u64 {
    u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1)
}

/// Lower-case hex SHA-256.
fn hex_sha256(bytes: &[u8]) -> String {
    crate::token::keys::hex(&Sha256::digest(bytes))
}

/// Obvious shapes of a secret: PEM private keys, and a temporary key as displayed
/// (`XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-C`) or typed without dashes (25 base32 characters in a row).
fn looks_secret(field: &str) -> bool {
    if field.contains("PRIVATE KEY") {
        return true;
    }
    let crockford =
        |c: char| c.is_ascii_digit() || (c.is_ascii_alphabetic() && !"ILOUilou".contains(c));
    field
        .split(|c: char| !(crockford(c) || c == '-'))
        .any(|word| {
            let groups: Vec<&str> = word.split('-').collect();
            let dashed = groups.len() == 7
                && groups[..6].iter().all(|g| g.len() == 4)
                && groups[6].len() == 1;
            let bare = !word.contains('-')
                && word.len() == 25
                && word.chars().any(|c| c.is_ascii_digit())
                && word.chars().any(|c| c.is_ascii_alphabetic());
            dashed || bare
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_with(n: u64) -> (tempfile::TempDir, AuditLog) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&dir.path().join("audit.log"));
        for i in 1..=n {
            let head = log
                .append(
                    "operator",
                    "add-user",
                    &format!("user{i}"),
                    "ok",
                    "email=u@example.org",
                )
                .expect("append");
            assert_eq!(head.0, i);
        }
        (dir, log)
    }

    fn lines(log: &AuditLog) -> Vec<String> {
        std::fs::read_to_string(log.path())
            .expect("read")
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn write_lines(log: &AuditLog, lines: &[String]) {
        let mut text = lines.join("\n");
        text.push('\n');
        std::fs::write(log.path(), text).expect("write");
    }

    fn tamper_of(r: Result<u64, AuditError>) -> (u64, Tamper, String) {
        let err = r.expect_err("verification must fail");
        let (line, kind) = err
            .tamper()
            .unwrap_or_else(|| panic!("not a tamper error: {err}"));
        (line, kind, err.to_string())
    }

    #[test]
    fn empty_and_missing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&dir.path().join("none.log"));
        assert_eq!(log.verify(None).expect("verify"), 0);
        assert_eq!(log.entries().expect("entries"), vec![]);
        assert_eq!(log.head().expect("head"), None);
        let (line, kind, _) = tamper_of(log.verify(Some((2, "ab"))));
        assert_eq!((line, kind), (1, Tamper::Deleted));
    }

    #[test]
    fn append_five_and_verify() {
        let (_dir, log) = log_with(5);
        let head = log.head().expect("head").expect("some");
        assert_eq!(head.0, 5);
        assert_eq!(log.verify(None).expect("verify"), 5);
        assert_eq!(log.verify(Some((5, &head.1))).expect("verify head"), 5);
        let entries = log.entries().expect("entries");
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].prev, GENESIS);
        assert_eq!(entries[2].subject, "user3");
        let raw = lines(&log);
        for i in 1..5 {
            assert_eq!(entries[i].prev, hex_sha256(raw[i - 1].as_bytes()));
            assert_eq!(entries[i].seq, i as u64 + 1);
        }
        assert_eq!(entries[4].hash, head.1);
        assert!(humantime::parse_rfc3339(&entries[0].time).is_ok());
        // The hash is over the canonical JSON of the other fields.
        let e = &entries[0];
        let canon = format!(
            r#"{{"seq":1,"time":"{}","actor":"operator","action":"add-user","subject":"user1","outcome":"ok","detail":"email=u@example.org","prev":"{}"}}"#,
            e.time, GENESIS
        );
        assert_eq!(e.hash, hex_sha256(canon.as_bytes()));
        // Field order on disk.
        assert!(raw[0].starts_with(r#"{"seq":1,"time":"#));
        assert!(raw[0].ends_with(&format!(r#""hash":"{}"}}"#, e.hash)));
        // Appending goes on from the head.
        let (seq, hash) = log
            .append("op", "revoke", "user2", "ok", "")
            .expect("append");
        assert_eq!(seq, 6);
        assert_eq!(log.verify(Some((6, &hash))).expect("verify"), 6);
    }

    #[test]
    fn edited_field_names_line() {
        let (_dir, log) = log_with(5);
        let mut raw = lines(&log);
        raw[2] = raw[2].replace("user3", "mallory");
        write_lines(&log, &raw);
        let (line, kind, msg) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (3, Tamper::Edited), "{msg}");
        assert!(msg.contains("line 3") && msg.contains("edited"), "{msg}");
        // Appending onto an edited log still works (only the last line is checked)...
        // ...but an edited *last* line is refused.
        let mut raw = lines(&log);
        raw[4] = raw[4].replace("user5", "mallory");
        write_lines(&log, &raw);
        let err = log.append("op", "x", "y", "ok", "").expect_err("refuse");
        assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
    }

    #[test]
    fn edited_with_recomputed_hash_names_line() {
        let (_dir, log) = log_with(5);
        let mut entries = log.entries().expect("entries");
        let mut raw = lines(&log);
        entries[2].outcome = "refused".into();
        entries[2].hash = entries[2].compute_hash().expect("hash");
        raw[2] = serde_json::to_string(&entries[2]).expect("json");
        write_lines(&log, &raw);
        let (line, kind, msg) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (3, Tamper::Edited), "{msg}");
        // The same on the last line is caught by the head only.
        let (_dir2, log2) = log_with(3);
        let head = log2.head().expect("head").expect("some");
        let mut entries = log2.entries().expect("entries");
        let mut raw = lines(&log2);
        entries[2].detail = "nothing to see".into();
        entries[2].hash = entries[2].compute_hash().expect("hash");
        raw[2] = serde_json::to_string(&entries[2]).expect("json");
        write_lines(&log2, &raw);
        assert_eq!(log2.verify(None).expect("chain alone holds"), 3);
        let (line, kind, _) = tamper_of(log2.verify(Some((3, &head.1))));
        assert_eq!((line, kind), (3, Tamper::Edited));
    }

    #[test]
    fn reformatted_line_is_caught_by_next_link() {
        let (_dir, log) = log_with(4);
        let mut raw = lines(&log);
        raw[1] = raw[1].replace(",\"time\"", ", \"time\"");
        write_lines(&log, &raw);
        let (line, kind, _) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (2, Tamper::Edited));
    }

    #[test]
    fn first_bad_line_wins() {
        let (_dir, log) = log_with(5);
        let mut raw = lines(&log);
        raw[1] = raw[1].replace("user2", "eve");
        raw[3] = "garbage".into();
        write_lines(&log, &raw);
        let (line, kind, _) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (2, Tamper::Edited));
    }

    #[test]
    fn swapped_lines_detected() {
        let (_dir, log) = log_with(5);
        let mut raw = lines(&log);
        raw.swap(1, 2);
        write_lines(&log, &raw);
        let (line, kind, msg) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (2, Tamper::Reordered), "{msg}");
    }

    #[test]
    fn deleted_middle_line_detected() {
        let (_dir, log) = log_with(5);
        let mut raw = lines(&log);
        raw.remove(2);
        write_lines(&log, &raw);
        let (line, kind, msg) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (3, Tamper::Deleted), "{msg}");
        assert!(msg.contains("entry 3 is missing"), "{msg}");
    }

    #[test]
    fn deleted_last_line_detected_only_with_head() {
        let (_dir, log) = log_with(5);
        let head = log.head().expect("head").expect("some");
        let mut raw = lines(&log);
        raw.pop();
        write_lines(&log, &raw);
        assert_eq!(
            log.verify(None).expect("a shorter chain is still a chain"),
            4
        );
        let (line, kind, msg) = tamper_of(log.verify(Some((head.0, &head.1))));
        assert_eq!((line, kind), (5, Tamper::Deleted), "{msg}");
        // Entries beyond the recorded head are flagged too.
        let (_d, log2) = log_with(3);
        let h2 = log2.head().expect("head").expect("some");
        log2.append("op", "x", "y", "ok", "").expect("append");
        let (line, kind, _) = tamper_of(log2.verify(Some((h2.0, &h2.1))));
        assert_eq!((line, kind), (4, Tamper::Unrecorded));
        // A head that is not in the log at all (the tail was rewritten).
        let (line, kind, _) = tamper_of(log2.verify(Some((3, &"0".repeat(64)))));
        assert_eq!((line, kind), (3, Tamper::Edited));
        // An empty recorded head with entries present.
        let (line, kind, _) = tamper_of(log2.verify(Some((0, ""))));
        assert_eq!((line, kind), (1, Tamper::Unrecorded));
    }

    #[test]
    fn torn_last_line_detected_and_append_refused() {
        let (_dir, log) = log_with(5);
        let bytes = std::fs::read(log.path()).expect("read");
        let cut = bytes.len() - 30;
        std::fs::write(log.path(), &bytes[..cut]).expect("write");
        let (line, kind, msg) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (5, Tamper::Truncated), "{msg}");
        let err = log.append("op", "x", "y", "ok", "").expect_err("refuse");
        assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("partly written"), "{err}");
        assert_eq!(
            std::fs::read(log.path()).expect("read").len(),
            cut,
            "file untouched"
        );
        assert!(log.head().is_err());
        // Only the newline missing: still torn.
        let (_d2, log2) = log_with(2);
        let bytes = std::fs::read(log2.path()).expect("read");
        std::fs::write(log2.path(), &bytes[..bytes.len() - 1]).expect("write");
        let (line, kind, _) = tamper_of(log2.verify(None));
        assert_eq!((line, kind), (2, Tamper::Truncated));
    }

    #[test]
    fn entries_parse_error_names_line() {
        let (_dir, log) = log_with(4);
        let mut raw = lines(&log);
        raw[2] = "{\"seq\":3, oops".into();
        write_lines(&log, &raw);
        let err = log.entries().expect_err("parse");
        assert!(matches!(err, AuditError::Parse { line: 3, .. }), "{err}");
        assert!(err.to_string().contains("line 3"), "{err}");
        let (line, kind, _) = tamper_of(log.verify(None));
        assert_eq!((line, kind), (3, Tamper::Edited));
        // An extra field is an edit as well.
        let (_d2, log2) = log_with(2);
        let mut raw = lines(&log2);
        raw[0] = raw[0].replacen('{', "{\"pin\":\"1234\",", 1);
        write_lines(&log2, &raw);
        assert!(matches!(
            log2.entries(),
            Err(AuditError::Parse { line: 1, .. })
        ));
        // An empty line in the middle.
        let (_d3, log3) = log_with(3);
        let mut raw = lines(&log3);
        raw.insert(1, String::new());
        write_lines(&log3, &raw);
        assert!(matches!(
            log3.entries(),
            Err(AuditError::Parse { line: 2, .. })
        ));
    }

    #[test]
    fn long_lines_and_tail_reading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(&dir.path().join("audit.log"));
        let long = "x".repeat(10_000);
        for i in 0..4 {
            let detail = if i % 2 == 0 { long.as_str() } else { "short" };
            log.append("op", "note", "s", "ok", detail).expect("append");
        }
        assert_eq!(log.verify(None).expect("verify"), 4);
        let head = log.head().expect("head").expect("some");
        assert_eq!(head.0, 4);
        // First line longer than a tail chunk.
        let dir2 = tempfile::tempdir().expect("tempdir");
        let log2 = AuditLog::open(&dir2.path().join("audit.log"));
        log2.append("op", "note", "s", "ok", &long).expect("append");
        log2.append("op", "note", "s", "ok", &long).expect("append");
        assert_eq!(log2.verify(None).expect("verify"), 2);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "never log secrets")]
    fn secrets_are_refused_in_debug_builds() {
        let (_dir, log) = log_with(0);
        let _ = log.append(
            "op",
            "add-user",
            "alice",
            "ok",
            "key KX4T-9QMA-7D2H-WB0C-3NRE-Z8FJ-Q",
        );
    }

    #[test]
    fn secret_shapes() {
        assert!(looks_secret("key KX4T-9QMA-7D2H-WB0C-3NRE-Z8FJ-Q issued"));
        assert!(looks_secret("KX4T9QMA7D2HWB0C3NREZ8FJQ"));
        assert!(looks_secret("-----BEGIN PRIVATE KEY-----"));
        assert!(!looks_secret(
            "user alice, email alice@example.org, expires 2024-01-01T00:00:00Z"
        ));
        assert!(!looks_secret("serial 3F2A, pkcs:token=alice-card"));
        assert!(
            !looks_secret(&"ab".repeat(32)),
            "a sha-256 hex is not a key"
        );
    }
}
