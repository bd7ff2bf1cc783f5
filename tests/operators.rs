//! Operators on their own SoftHSM tokens, the approval policy and M-of-N approval requests,
//! against a real authority with the real `keyward` binary: 2-of-3 and 3-of-4 recovery, and
//! every refusal (wrong token, double approval, expired, rejected, removed operator, the PIN
//! holder alone) changing nothing but the audit log, where it is recorded under the
//! operator's name.

mod util;

use util::{AuthorityBed, AUTHORITY_PIN, USER_PIN};

/// An operator: name, token label, token PIN.
#[derive(Clone, Copy)]
struct Op {
    name: &'static str,
    token: &'static str,
    pin: &'static str,
}

const BOB: Op = Op {
    name: "bob",
    token: "op-bob",
    pin: "bob-pin-1",
};
const CAROL: Op = Op {
    name: "carol",
    token: "op-carol",
    pin: "carol-pin-1",
};
const DAVE: Op = Op {
    name: "dave",
    token: "op-dave",
    pin: "dave-pin-1",
};
const ERIN: Op = Op {
    name: "erin",
    token: "op-erin",
    pin: "erin-pin-1",
};

/// An authority with a card for alice, alice enrolled, and the operators' tokens initialised.
fn bed_with(ops: &[Op]) -> AuthorityBed {
    let bed = AuthorityBed::new(&["card-alice"], "CN=Operators Test CA");
    for op in ops {
        bed.init_token(op.token, op.pin);
    }
    let key = bed.add_user("alice", &["--email", "alice@example.org"]);
    bed.enroll_local("alice", "alice-1", "card-alice", &key, &[], &[])
        .ok();
    bed
}

/// `authority SUB --dir DIR ARGS… [--as OP]` with the authority's PIN and `op`'s PIN.
fn as_op(bed: &AuthorityBed, op: Option<Op>, sub: &[&str], args: &[&str]) -> util::Run {
    let mut all: Vec<&str> = vec!["authority"];
    all.extend_from_slice(sub);
    all.extend_from_slice(&["--dir", &bed.dir]);
    all.extend_from_slice(args);
    let mut env = vec![("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN)];
    if let Some(op) = op {
        all.extend_from_slice(&["--as", op.name]);
        env.push(("KEYWARD_OPERATOR_PIN", op.pin));
    }
    bed.run_env(&all, &env)
}

/// `operator add NEW` on NEW's token (its PIN as KEYWARD_PIN), approved by `by`.
fn add_op(bed: &AuthorityBed, new: Op, by: Option<Op>) -> util::Run {
    let mut all = vec![
        "authority",
        "operator",
        "add",
        "--dir",
        &bed.dir,
        new.name,
        "--token",
        new.token,
    ];
    let mut env = vec![
        ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
        ("KEYWARD_PIN", new.pin),
    ];
    if let Some(by) = by {
        all.extend_from_slice(&["--as", by.name]);
        env.push(("KEYWARD_OPERATOR_PIN", by.pin));
    }
    bed.run_env(&all, &env)
}

/// The request id a pending command printed (`--json`).
fn pending_id(run: &util::Run) -> String {
    let v = run.json();
    assert_eq!(v["state"], "pending", "{v}");
    v["request"].as_str().expect("request id").to_string()
}

/// Every record of the state (kind, key, body), to prove a refusal changed nothing.
fn records(bed: &AuthorityBed) -> Vec<(String, String, Vec<u8>)> {
    let db = bed.db().unwrap();
    let mut stmt = db
        .prepare("SELECT kind, key, body FROM records ORDER BY kind, key")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get_ref(2)?.as_bytes()?.to_vec()))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// The audit log as (actor, action, subject, outcome, detail).
fn log(bed: &AuthorityBed) -> Vec<(String, String, String, String, String)> {
    let db = bed.db().unwrap();
    let mut stmt = db
        .prepare("SELECT actor, action, subject, outcome, detail FROM audit ORDER BY seq")
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

/// Runs `refused`, asserts it fails naming `needle`, that no record changed, and that the
/// log grew by exactly one `refused` entry by `actor`.
#[track_caller]
fn refused_and_logged(
    bed: &AuthorityBed,
    actor: &str,
    needle: &str,
    refused: impl FnOnce() -> util::Run,
) {
    let before = records(bed);
    let log_before = log(bed);
    refused().fails(1, needle);
    assert_eq!(
        records(bed),
        before,
        "a refusal changed the state ({needle})"
    );
    let after = log(bed);
    assert_eq!(
        after.len(),
        log_before.len() + 1,
        "want one audit entry for the refusal"
    );
    let last = after.last().unwrap();
    assert_eq!(last.0, actor, "{last:?}");
    assert_eq!(last.3, "refused", "{last:?}");
    assert!(last.4.contains(needle), "{last:?}");
}

fn user_state(bed: &AuthorityBed, user: &str) -> String {
    bed.user(user)["state"].as_str().unwrap().to_string()
}

fn log_verifies(bed: &AuthorityBed) {
    bed.run(&["authority", "log", "--dir", &bed.dir, "--verify"])
        .ok();
}

/// Three operators; policy recover = 2. Bootstrap by the PIN holder, then everything by
/// operators: returns the bed.
fn three_operators_recover_two() -> AuthorityBed {
    let bed = bed_with(&[BOB, CAROL, DAVE]);
    // Bootstrap: no operators yet, the PIN holder adds the first one alone.
    add_op(&bed, BOB, None).ok();
    // From now on an operator approves additions (add-operator needs 1 by default).
    add_op(&bed, CAROL, None).fails(1, "name yourself with --as NAME");
    add_op(&bed, CAROL, Some(BOB)).ok();
    add_op(&bed, DAVE, Some(CAROL)).ok();
    let ops = bed
        .run(&["--json", "authority", "operator", "list", "--dir", &bed.dir])
        .ok()
        .json();
    let names: Vec<&str> = ops["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol", "dave"]);
    // Each operator certificate is issued by the authority's CA.
    for o in ops["operators"].as_array().unwrap() {
        let cert = bed.file(
            &format!("op-{}.pem", o["name"].as_str().unwrap()),
            o["certificate"].as_str().unwrap().as_bytes(),
        );
        bed.run_tool("openssl", "openssl", &["verify", "-CAfile", &bed.ca, &cert])
            .ok();
    }
    // Changing the policy needs 2 by default (more than any other action): one approval is
    // not enough.
    let run = as_op(
        &bed,
        Some(BOB),
        &["policy", "set"],
        &["recover", "2", "--json"],
    )
    .ok();
    let id = pending_id(&run);
    as_op(&bed, Some(CAROL), &["approve"], &[&id]).ok();
    let policy = bed
        .run(&["--json", "authority", "policy", "show", "--dir", &bed.dir])
        .ok()
        .json();
    let need = |a: &str| {
        policy["actions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["action"] == a)
            .unwrap()["required"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(need("recover"), 2);
    assert_eq!(need("revoke"), 1);
    assert_eq!(
        need("change-policy"),
        3,
        "change-policy follows the highest other action"
    );
    bed
}

#[test]
fn two_of_three_recovery_with_operators_on_their_own_tokens() {
    let bed = three_operators_recover_two();
    // The PIN holder alone can no longer recover.
    refused_and_logged(
        &bed,
        "operator:authority",
        "needs the approval of 2",
        || as_op(&bed, None, &["recover"], &["alice"]),
    );
    // Bob asks: a request with his approval, nothing done yet.
    let run = as_op(&bed, Some(BOB), &["recover"], &["alice", "--json"]).ok();
    let id = pending_id(&run);
    assert_eq!(user_state(&bed, "alice"), "active");
    let list = bed
        .run(&["--json", "authority", "request", "list", "--dir", &bed.dir])
        .ok()
        .json();
    let req = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(req["state"], "pending");
    assert_eq!(req["approvals"], 1);
    assert_eq!(req["required"], 2);
    // Carol's approval is the second: it runs, and she is given the temporary key.
    let run = as_op(&bed, Some(CAROL), &["approve"], &[&id]).ok();
    let key = run.stdout.trim().to_string();
    assert!(!key.is_empty(), "no temporary key printed:\n{}", run.stderr);
    assert_eq!(user_state(&bed, "alice"), "recovering");
    // The key works: alice re-enrolls under a new keyset name and gets her history back.
    bed.enroll_local("alice", "alice-2", "card-alice", &key, &[], &[])
        .ok();
    assert_eq!(user_state(&bed, "alice"), "active");
    assert_eq!(bed.user("alice")["archived_keys"], 2);
    // The log names who did what, and verifies.
    let entries = log(&bed);
    let find = |action: &str| {
        entries
            .iter()
            .filter(|e| e.1 == action)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(find("request")
        .iter()
        .any(|e| e.0 == "operator:bob" && e.2 == id));
    assert!(find("approve")
        .iter()
        .any(|e| e.0 == "operator:carol" && e.2 == id));
    let exec = find("execute");
    let exec = exec.iter().find(|e| e.2 == id).expect("an execute entry");
    assert!(exec.4.contains("approved by bob, carol"), "{exec:?}");
    assert!(find("recover")
        .iter()
        .any(|e| e.0 == "operator:carol" && e.2 == "alice"));
    assert!(entries
        .iter()
        .any(|e| e.0 == "operator:authority" && e.1 == "operator-add" && e.2 == "bob"));
    log_verifies(&bed);
    // The request is executed and takes no more decisions.
    refused_and_logged(&bed, "operator:dave", "is executed already", || {
        as_op(&bed, Some(DAVE), &["approve"], &[&id])
    });
}

#[test]
fn three_of_four_recovery() {
    let bed = bed_with(&[BOB, CAROL, DAVE, ERIN]);
    add_op(&bed, BOB, None).ok();
    add_op(&bed, CAROL, Some(BOB)).ok();
    add_op(&bed, DAVE, Some(BOB)).ok();
    add_op(&bed, ERIN, Some(BOB)).ok();
    // A policy 3-of-4 for recovery; change-policy needs 2 (default with everything at 1).
    let id = pending_id(
        &as_op(
            &bed,
            Some(BOB),
            &["policy", "set"],
            &["recover", "3", "--json"],
        )
        .ok(),
    );
    as_op(&bed, Some(DAVE), &["approve"], &[&id]).ok();
    // An impossible policy (5 of 4) is refused before it is a request.
    refused_and_logged(&bed, "operator:bob", "could never run", || {
        as_op(&bed, Some(BOB), &["policy", "set"], &["revoke", "5"])
    });
    let id = pending_id(&as_op(&bed, Some(ERIN), &["recover"], &["alice", "--json"]).ok());
    let second = as_op(&bed, Some(BOB), &["approve"], &[&id, "--json"])
        .ok()
        .json();
    assert_eq!(second["state"], "pending");
    assert_eq!(second["approvals"], 2);
    assert_eq!(second["required"], 3);
    assert_eq!(user_state(&bed, "alice"), "active");
    let run = as_op(&bed, Some(DAVE), &["approve"], &[&id]).ok();
    assert!(!run.stdout.trim().is_empty());
    assert_eq!(user_state(&bed, "alice"), "recovering");
    log_verifies(&bed);
}

#[test]
fn wrong_token_double_approval_expiry_and_rejection_are_refused_and_logged() {
    let bed = three_operators_recover_two();
    let id = pending_id(&as_op(&bed, Some(BOB), &["recover"], &["alice", "--json"]).ok());
    // Bob cannot approve his own request a second time.
    refused_and_logged(&bed, "operator:bob", "decided on request", || {
        as_op(&bed, Some(BOB), &["approve"], &[&id])
    });
    // Carol's name with Bob's token (and Bob's PIN): the token does not hold her key.
    refused_and_logged(
        &bed,
        "operator:carol",
        "does not hold operator \"carol\"'s key",
        || {
            bed.run_env(
                &[
                    "authority",
                    "approve",
                    "--dir",
                    &bed.dir,
                    &id,
                    "--as",
                    "carol",
                    "--operator-token",
                    BOB.token,
                ],
                &[
                    ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                    ("KEYWARD_OPERATOR_PIN", BOB.pin),
                ],
            )
        },
    );
    // Bob's token with a key of his own made under Carol's key id (outside keyward): the
    // signature does not verify with Carol's certificate.
    let ops = bed
        .run(&["--json", "authority", "operator", "list", "--dir", &bed.dir])
        .ok()
        .json();
    let carol_id = ops["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "carol")
        .unwrap()["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let module = util::module();
    bed.run_tool(
        "pkcs11-tool",
        "opensc",
        &[
            "--module",
            &module.to_string_lossy(),
            "--token-label",
            BOB.token,
            "--login",
            "--pin",
            BOB.pin,
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--id",
            &carol_id,
            "--label",
            "forged carol",
        ],
    )
    .ok();
    refused_and_logged(
        &bed,
        "operator:carol",
        "does not verify with operator \"carol\"'s certificate",
        || {
            bed.run_env(
                &[
                    "authority",
                    "approve",
                    "--dir",
                    &bed.dir,
                    &id,
                    "--as",
                    "carol",
                    "--operator-token",
                    BOB.token,
                ],
                &[
                    ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                    ("KEYWARD_OPERATOR_PIN", BOB.pin),
                ],
            )
        },
    );
    // Carol's token with a wrong PIN.
    refused_and_logged(&bed, "operator:carol", "PIN", || {
        bed.run_env(
            &[
                "authority",
                "approve",
                "--dir",
                &bed.dir,
                &id,
                "--as",
                "carol",
            ],
            &[
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                ("KEYWARD_OPERATOR_PIN", "wrong-pin-9"),
            ],
        )
    });
    // Somebody who is no operator.
    refused_and_logged(&bed, "operator:mallory", "not an operator", || {
        as_op(
            &bed,
            Some(Op {
                name: "mallory",
                token: "op-bob",
                pin: BOB.pin,
            }),
            &["approve"],
            &[&id],
        )
    });
    // One rejection rejects; nothing is done, and no later approval counts.
    let run = as_op(&bed, Some(DAVE), &["reject"], &[&id, "--json"]).ok();
    assert_eq!(run.json()["state"], "rejected");
    assert_eq!(user_state(&bed, "alice"), "active");
    refused_and_logged(&bed, "operator:carol", "is rejected already", || {
        as_op(&bed, Some(CAROL), &["approve"], &[&id])
    });
    assert!(log(&bed)
        .iter()
        .any(|e| e.0 == "operator:dave" && e.1 == "reject" && e.2 == id));
    // An expired request takes no approval.
    let id = pending_id(
        &as_op(
            &bed,
            Some(BOB),
            &["recover"],
            &["alice", "--request-expires", "1s", "--json"],
        )
        .ok(),
    );
    std::thread::sleep(std::time::Duration::from_millis(2100));
    refused_and_logged(&bed, "operator:carol", "expired", || {
        as_op(&bed, Some(CAROL), &["approve"], &[&id])
    });
    let list = bed
        .run(&["--json", "authority", "request", "list", "--dir", &bed.dir])
        .ok()
        .json();
    let req = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(req["state"], "expired");
    assert_eq!(user_state(&bed, "alice"), "active");
    log_verifies(&bed);
}

#[test]
fn an_operator_removed_mid_request_no_longer_counts() {
    let bed = three_operators_recover_two();
    let id = pending_id(&as_op(&bed, Some(BOB), &["recover"], &["alice", "--json"]).ok());
    // Bob is removed (remove-operator needs 1): his approval of the request no longer counts.
    as_op(&bed, Some(CAROL), &["operator", "remove"], &["bob"]).ok();
    let after = as_op(&bed, Some(DAVE), &["approve"], &[&id, "--json"])
        .ok()
        .json();
    assert_eq!(after["state"], "pending", "bob's approval still counted");
    assert_eq!(after["approvals"], 1);
    assert_eq!(user_state(&bed, "alice"), "active");
    // Bob cannot act any more.
    refused_and_logged(&bed, "operator:bob", "not an operator", || {
        as_op(&bed, Some(BOB), &["approve"], &[&id])
    });
    // Removing another would leave recover (2) unreachable with one operator: refused.
    refused_and_logged(&bed, "operator:carol", "could never run", || {
        as_op(&bed, Some(CAROL), &["operator", "remove"], &["dave"])
    });
    // Carol's approval completes it.
    as_op(&bed, Some(CAROL), &["approve"], &[&id]).ok();
    assert_eq!(user_state(&bed, "alice"), "recovering");
    let all = bed
        .run(&[
            "--json",
            "authority",
            "operator",
            "list",
            "--dir",
            &bed.dir,
            "--all",
        ])
        .ok()
        .json();
    let bob = all["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "bob")
        .unwrap();
    assert!(bob["removed"].is_string());
    // A removed operator's name is not reused.
    bed.init_token("op-bob2", "bob2-pin-1");
    refused_and_logged(&bed, "operator:carol", "never reused", || {
        add_op(
            &bed,
            Op {
                name: "bob",
                token: "op-bob2",
                pin: "bob2-pin-1",
            },
            Some(CAROL),
        )
    });
    log_verifies(&bed);
}

#[test]
fn operator_records_policy_and_requests_changed_outside_keyward_are_caught() {
    let bed = three_operators_recover_two();
    let id = pending_id(&as_op(&bed, Some(BOB), &["recover"], &["alice", "--json"]).ok());
    let _ = id;
    // Lowering the policy by hand.
    let db = bed.db().unwrap();
    let policy: Vec<u8> = db
        .query_row("SELECT body FROM records WHERE kind = 'policy'", [], |r| {
            Ok(r.get_ref(0)?.as_bytes()?.to_vec())
        })
        .unwrap();
    let lowered = String::from_utf8(policy.clone())
        .unwrap()
        .replace("\"recover\":2", "\"recover\":1");
    assert_ne!(lowered.as_bytes(), policy.as_slice());
    db.execute(
        "UPDATE records SET body = ?1 WHERE kind = 'policy'",
        [lowered.as_bytes()],
    )
    .unwrap();
    drop(db);
    let before = records(&bed);
    as_op(&bed, Some(CAROL), &["recover"], &["alice"]).fails(3, "changed outside keyward");
    assert_eq!(records(&bed), before);
    bed.run(&["authority", "policy", "show", "--dir", &bed.dir])
        .fails(3, "changed outside keyward");
    assert_eq!(user_state_raw(&bed), "active");
}

/// alice's state read from the database (the listing refuses a tampered state).
fn user_state_raw(bed: &AuthorityBed) -> String {
    let db = bed.db().unwrap();
    let body: Vec<u8> = db
        .query_row(
            "SELECT body FROM records WHERE kind = 'user' AND key = 'alice'",
            [],
            |r| Ok(r.get_ref(0)?.as_bytes()?.to_vec()),
        )
        .unwrap();
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn without_operators_the_pin_holder_acts_alone_and_cannot_act_as_anyone() {
    let bed = bed_with(&[BOB]);
    as_op(&bed, Some(BOB), &["recover"], &["alice"]).fails(1, "no operators yet");
    as_op(&bed, None, &["recover"], &["alice"]).ok();
    assert_eq!(user_state(&bed, "alice"), "recovering");
    assert!(log(&bed)
        .iter()
        .any(|e| e.0 == "operator:authority" && e.1 == "recover"));
    // An operator's token with a wrong PIN: no key is made, no operator added.
    let before = records(&bed);
    add_op(
        &bed,
        Op {
            pin: "wrong-pin-9",
            ..BOB
        },
        None,
    )
    .fails(1, "PIN");
    assert_eq!(records(&bed), before);
    let _ = USER_PIN;
}
