//! The authority's audit log reader: `verify` (with and without the recorded head), `entries`,
//! `head` and `check_appendable` on an arbitrary file. A damaged or tampered log must be
//! reported, never panic; and what `verify` accepts, the others must read too.
//!
//! Shared by the cargo-fuzz target `fuzz_targets/audit.rs` and the corpus replay in
//! `tests/fuzz_corpus.rs` (part of the test suite).

use std::io::Write;

use keyward::authority::audit::AuditLog;

/// One input: must not panic; see the module comment for what else must hold.
pub fn check(data: &[u8]) {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(data).expect("write the log");
    let log = AuditLog::open(file.path());
    let verified = log.verify(None);
    let entries = log.entries();
    let head = log.head();
    let appendable = log.check_appendable();
    if let Ok(count) = verified {
        let entries = entries.expect("a verified log has readable entries");
        assert_eq!(entries.len() as u64, count);
        let head = head.expect("a verified log has a head");
        appendable.expect("a verified log takes another entry");
        match (entries.last(), &head) {
            (Some(last), Some((seq, hash))) => {
                assert_eq!((last.seq, &last.hash), (*seq, hash));
                assert_eq!(log.verify(Some((*seq, hash))).ok(), Some(count));
            }
            (None, None) => assert_eq!(log.verify(Some((0, ""))).ok(), Some(0)),
            other => panic!("entries and head disagree: {other:?}"),
        }
    } else {
        let _ = verified.map_err(|e| e.to_string());
    }
    if let Some((seq, hash)) = log.head().ok().flatten() {
        // A head past the last entry must be refused, whatever the file holds.
        if let Some(next) = seq.checked_add(1) {
            assert!(log.verify(Some((next, &hash))).is_err());
        }
    }
}
