//! A token that goes away in the middle of a command and stays away (a card pulled out of its
//! reader), played by the PKCS#11 shim on SoftHSM2: from a chosen call on, every call answers
//! `CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT` or `CKR_SESSION_HANDLE_INVALID` (what modules
//! answer once a card is gone). The fault sweep (`tests/fault_sweep.rs`) fails one call at a
//! time and lets the next ones work, so keyward can clean up; here nothing works after the
//! removal, not even the clean-up. Each run must end with one error line that says the token
//! was removed and what to do, exit status 1, the keyset registry unchanged, no output file,
//! and the same command must work once the token is back.
//!
//! The same story on a real driver stack (a virtual PIV card pulled out of vpcd's reader) is
//! in `tests/piv_card.rs`.

mod util;

use util::*;

const PIN: &str = "24681357";

/// What keyward must say for a token that is gone: that it is (or may be), and what to do.
const GONE: [&str; 2] = ["removed", "insert it and run the command again"];

/// The codes a module answers once its token is gone.
const CODES: [&str; 3] = [
    "CKR_DEVICE_REMOVED",
    "CKR_TOKEN_NOT_PRESENT",
    "CKR_SESSION_HANDLE_INVALID",
];

/// How many PKCS#11 calls `args` makes through the shim (the run must succeed).
fn calls(bed: &TestBed, args: &[&str]) -> u64 {
    let count = bed.path("count.txt");
    let count_str = count.to_string_lossy().into_owned();
    bed.run_shim(
        args,
        &[
            ("KEYWARD_PIN", PIN),
            ("KEYWARD_SHIM_COUNT_FILE", &count_str),
        ],
    )
    .ok();
    ShimCounts::read(&count).total
}

/// `args` with the token gone from call `at` on, answering `code`.
fn removed_at(bed: &TestBed, args: &[&str], code: &str, at: u64) -> Run {
    let fault = format!("{code}@{at}+");
    bed.run_shim(
        args,
        &[("KEYWARD_PIN", PIN), ("KEYWARD_SHIM_FAULT", &fault)],
    )
}

/// The points a sweep tries: a few spread over the command's calls, past its start-up and
/// before its last calls (a removal during the final `C_CloseSession` or `C_Finalize` comes
/// after the work is done: the command succeeds).
fn points(total: u64) -> Vec<u64> {
    let mut out: Vec<u64> = [total / 4, total / 2, total * 3 / 4]
        .into_iter()
        .filter(|&k| k > 1)
        .collect();
    out.dedup();
    out
}

/// The one error line of a run that met a removed token: it says so and what to do.
#[track_caller]
fn says_removed(run: Run, code: &str, at: u64) {
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("keyward: error:"))
        .collect();
    assert_eq!(
        (run.code, errors.len()),
        (1, 1),
        "{code} from call {at} on: want exit 1 and one error line:\n{}",
        run.stderr
    );
    assert!(
        GONE.iter().all(|g| errors[0].contains(g)),
        "{code} from call {at} on: the error does not say the token was removed and what to do:\n{}",
        run.stderr
    );
}

#[test]
fn signing_with_the_token_pulled_midway() {
    let bed = TestBed::new();
    bed.init_token("card", PIN);
    bed.create_keyset("Mail", "card", PIN, &[]).ok();
    let data = bed.file("data.txt", &vec![b'x'; 1 << 20]);
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    let args = ["keyset", "sign", "Mail", data.as_str(), "-o", sig.as_str()];
    let total = calls(&bed, &args);
    std::fs::remove_file(&sig).unwrap();
    let registry = bed.registry_text();
    let objects = || -> Vec<String> {
        bed.token_objects("card", PIN)
            .iter()
            .map(|o| o.get("label").to_string())
            .collect()
    };
    let tokens = objects();
    for code in CODES {
        for at in points(total) {
            says_removed(removed_at(&bed, &args, code, at), code, at);
            assert!(
                !std::path::Path::new(&sig).exists(),
                "{code} from call {at} on: a signature was written"
            );
            assert_eq!(bed.registry_text(), registry, "{code} at {at}: registry");
            assert_eq!(objects(), tokens, "{code} at {at}: token");
        }
    }
    // The token is back: the same command works.
    bed.run_shim(&args, &[("KEYWARD_PIN", PIN)]).ok();
    bed.run(&["keyset", "verify", "Mail", &data, &sig]).ok();
}

#[test]
fn creating_a_keyset_with_the_token_pulled_midway() {
    let bed = TestBed::new();
    bed.init_token("card", PIN);
    // Counted on a keyset of the same shape, made and then left in place.
    let total = calls(&bed, &["keyset", "create", "Counted", "--token", "card"]);
    let registry = bed.registry_text();
    let labels = |objects: Vec<P11Object>| -> Vec<String> {
        objects.iter().map(|o| o.get("label").to_string()).collect()
    };
    for code in CODES {
        for at in points(total) {
            let before = labels(bed.token_objects("card", PIN));
            let run = removed_at(
                &bed,
                &["keyset", "create", "Mail", "--token", "card"],
                code,
                at,
            );
            says_removed(run, code, at);
            assert_eq!(bed.registry_text(), registry, "{code} at {at}: registry");
            // Nothing but the new keyset's own key pair: when the token goes after the pair
            // was made, keyward cannot destroy it (known open: the crash sweep's "the token
            // changed before the registry names it"); it is left for `keyset create` to use
            // another id, and nothing else on the token is touched.
            let after = labels(bed.token_objects("card", PIN));
            let mut extra = after;
            for l in &before {
                let i = extra.iter().position(|a| a == l).unwrap_or_else(|| {
                    panic!("{code} from call {at} on: {l:?} is gone from the token")
                });
                extra.remove(i);
            }
            assert!(
                extra
                    .iter()
                    .all(|l| l == "Mail signing key" || l == "Mail signing key (public)"),
                "{code} from call {at} on: the token changed: {extra:?}"
            );
            if !extra.is_empty() {
                eprintln!("{code} from call {at} on: left on the token: {extra:?}");
            }
        }
    }
    // The token is back: the same command works.
    bed.create_keyset("Mail", "card", PIN, &[]).ok();
    bed.keyset_json("Mail");
}
