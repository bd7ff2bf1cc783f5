//! The command line as a contract (issue 15), with the real binary on SoftHSM2:
//! - every command's `--json` document validates against `docs/keyward.schema.json` (checked
//!   by python3-jsonschema, testbeds/setup.sh installs it), and every command the binary has
//!   has a shape there;
//! - exit statuses: 0 success, 1 error, 2 usage, 3 checked and found bad; an error with
//!   `--json` is one JSON document on standard error, standard output empty;
//! - data and result lines on standard output, nothing but errors with `--quiet`;
//! - `-v` names the PKCS#11 call and its `CKR_` code, found through the error's sources;
//! - inputs are checked before a PIN is asked for;
//! - completions and the man page are generated.
//!
//! A new command is one line in [`STEPS`] (or a step of its own story) and one shape in the
//! schema (docs/json.md, "Adding a command").

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use util::{AuthorityBed, Run, AUTHORITY_PIN, SO_PIN, USER_PIN};

const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/keyward.schema.json");
const NEW_PIN: &str = "user-secret-2";
const PASSWORD: &str = "a long keyset password";

/// One command of the story: its arguments (`{tk:USER}` stands for the temporary key an
/// earlier step printed for USER, `{dir}` for the test's directory), its secrets, and the exit
/// status it must have.
struct Step {
    args: &'static str,
    env: &'static [(&'static str, &'static str)],
    exit: i32,
    /// A copy of a file an earlier step wrote, altered, made before the step runs: (the file,
    /// the copy, how it is altered), names relative to the test's directory.
    tamper: Option<Tamper>,
}

type Tamper = (&'static str, &'static str, fn(&str) -> String);

/// Flips one base64 character in the middle of a PEM file's second-to-last body line: inside
/// the signature, which is the last thing a certificate or CRL holds.
fn flip_in_signature(pem: &str) -> String {
    let mut lines: Vec<String> = pem.lines().map(str::to_string).collect();
    let end = lines
        .iter()
        .rposition(|l| l.starts_with("-----END"))
        .unwrap();
    let line = &mut lines[end - 2];
    let mid = line.len() / 2;
    let c = if &line[mid..=mid] == "A" { "B" } else { "A" };
    line.replace_range(mid..=mid, c);
    lines.join("\n") + "\n"
}

/// A step that reads an altered copy and must find it bad (exit status 3).
const fn found_bad(
    args: &'static str,
    env: &'static [(&'static str, &'static str)],
    tamper: Tamper,
) -> Step {
    Step {
        args,
        env,
        exit: 3,
        tamper: Some(tamper),
    }
}

const PIN: &[(&str, &str)] = &[("KEYWARD_PIN", USER_PIN)];
const APIN: &[(&str, &str)] = &[("KEYWARD_PIN", AUTHORITY_PIN)];
const OPERATOR: &[(&str, &str)] = &[
    ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
    ("KEYWARD_OPERATOR_PIN", USER_PIN),
];

const fn ok(args: &'static str, env: &'static [(&'static str, &'static str)]) -> Step {
    Step {
        args,
        env,
        exit: 0,
        tamper: None,
    }
}

/// The story every command appears in, in order (later steps use what earlier ones made).
/// Arguments split on `|`.
const STEPS: &[Step] = &[
    ok("token|list", &[]),
    ok("token|info|--token|card", &[]),
    ok(
        "token|init|--free|--label|spare",
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    ),
    ok(
        "token|change-pin|--token|spare",
        &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", NEW_PIN)],
    ),
    ok(
        "token|unblock|--token|spare",
        &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    ),
    ok("keyset|create|alice|--token|card", PIN),
    ok("keyset|list", &[]),
    ok("keyset|show|alice", &[]),
    ok("keyset|pubkey|alice", &[]),
    ok("keyset|csr|alice|--subject|CN=Alice", PIN),
    ok("keyset|sign|alice|{dir}/data.txt|-o|{dir}/data.sig", PIN),
    ok("keyset|verify|alice|{dir}/data.txt|{dir}/data.sig", &[]),
    Step {
        args: "keyset|verify|alice|{dir}/other.txt|{dir}/data.sig",
        env: &[],
        exit: 3,
        tamper: None,
    },
    ok(
        "keyset|passwd|alice",
        &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", USER_PIN)],
    ),
    ok(
        "keyset|create|hard|--token|hard-card|--harden",
        &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_NEW_PIN", PASSWORD)],
    ),
    ok("keyset|pin|hard", &[("KEYWARD_PIN", PASSWORD)]),
    ok("keyset|remove|hard|--yes", &[]),
    ok("authority|cert|--dir|{auth}", &[]),
    ok("authority|add-user|--dir|{auth}|ann", APIN),
    ok("authority|add-user|--dir|{auth}|bob", APIN),
    ok(
        "enroll|--user|ann|--keyset|Ann 1|--token|card|--authority|{auth}",
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ("KEYWARD_TEMP_KEY", "{tk:ann}"),
        ],
    ),
    ok(
        "enroll|--user|bob|--keyset|Bob 1|--token|bob-card|--authority-cert|{bundle}|-o|{dir}/bob.req",
        &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", "{tk:bob}")],
    ),
    // A request altered after signing: checked and found bad.
    found_bad(
        "authority|process|--dir|{auth}|{dir}/bob-t.req|-o|{dir}/bob-t.reply",
        APIN,
        ("bob.req", "bob-t.req", |t| {
            t.replacen("keyset = \"Bob 1\"", "keyset = \"Bob 2\"", 1)
        }),
    ),
    ok(
        "authority|process|--dir|{auth}|{dir}/bob.req|-o|{dir}/bob.reply",
        APIN,
    ),
    // A reply altered after signing: checked and found bad, the request still pending.
    found_bad(
        "enroll|--complete|{dir}/bob-t.reply",
        PIN,
        ("bob.reply", "bob-t.reply", |t| {
            t.replacen("current = true", "current = false", 1)
        }),
    ),
    ok("enroll|--complete|{dir}/bob.reply", PIN),
    ok(
        "authority|reply|--dir|{auth}|bob|-o|{dir}/bob.reply2",
        &[],
    ),
    ok("keyset|cert|Ann 1", &[]),
    ok("keyset|cert|Bob 1|--encryption", &[]),
    ok(
        "send|--keyset|Ann 1|--to|Bob 1|{dir}/data.txt|-o|{dir}/msg.p7",
        PIN,
    ),
    ok("read|--keyset|Bob 1|{dir}/msg.p7|-o|{dir}/plain.txt", PIN),
    ok(
        "enroll|--renew|Ann 1|--authority|{auth}",
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
        ],
    ),
    ok("authority|users|--dir|{auth}|--expiring|3650d", &[]),
    ok("authority|token|--dir|{auth}|bob", &[]),
    // Lost (certificates on hold, a temporary key printed), then found again.
    ok("authority|token|--dir|{auth}|bob|--state|lost", APIN),
    ok("authority|token|--dir|{auth}|bob|--state|found", APIN),
    ok(
        "authority|add-users|--dir|{auth}|--from|{dir}/users.csv|--out|{dir}/keys",
        APIN,
    ),
    ok("authority|rollover|--dir|{auth}|--archive", APIN),
    ok("authority|policy|show|--dir|{auth}", &[]),
    // No operators yet: the change is made at once.
    ok("authority|policy|set|--dir|{auth}|revoke|1", APIN),
    // KEYWARD_AUTHORITY_DIR stands for --dir.
    ok("authority|users", &[("KEYWARD_AUTHORITY_DIR", "{auth}")]),
    ok("authority|crl|--dir|{auth}|-o|{dir}/crl.pem", APIN),
    ok("authority|recover|--dir|{auth}|bob", APIN),
    ok("authority|revoke|--dir|{auth}|ann", APIN),
    ok("authority|crl|--dir|{auth}|-o|{dir}/crl2.pem", APIN),
    // A CRL whose signature was altered: checked and found bad, not kept.
    found_bad(
        "crl|import|{dir}/crl-t.pem",
        &[],
        ("crl2.pem", "crl-t.pem", flip_in_signature),
    ),
    ok("crl|import|{dir}/crl2.pem", &[]),
    // Ann's certificate is revoked now: her message is checked and found bad.
    Step {
        args: "read|--keyset|Bob 1|{dir}/msg.p7|-o|{dir}/plain2.txt|--crl|{dir}/crl2.pem",
        env: PIN,
        exit: 3,
        tamper: None,
    },
    ok("authority|log|--dir|{auth}", &[]),
    ok("authority|log|--dir|{auth}|--verify", &[]),
    // A CA key rollover: a dry run, the rollover, the chain, one CRL per CA generation.
    ok("authority|rollover|--dir|{auth}|--ca|--dry-run", APIN),
    ok("authority|rollover|--dir|{auth}|--ca", APIN),
    ok("authority|cert|--dir|{auth}|--all", &[]),
    // A keyset enrolled before the rollover learns the new CA from the bundle ({chain}:
    // `authority cert --all`'s output in a file).
    ok("keyset|trust|Bob 1|--chain|{chain}", &[]),
    ok("authority|crl|--dir|{auth}|-o|{dir}/crl3.pem", APIN),
    ok("authority|log|--dir|{auth}|--verify", &[]),
    ok(
        "token|provision|--manifest|{dir}/tokens.toml",
        &[("KEYWARD_SO_PIN", SO_PIN)],
    ),
    // pin_out = "-": the user PINs on standard output.
    ok(
        "token|provision|--manifest|{dir}/pins-stdout.toml",
        &[("KEYWARD_SO_PIN", SO_PIN)],
    ),
    // An operator: added while there is none (the authority's PIN holder alone), then
    // removed with their own approval (one operator: one approval needed).
    ok(
        "authority|operator|add|--dir|{auth}|opa|--token|op-card",
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
        ],
    ),
    // A second operator, approved by the first (adding one needs one approval).
    ok(
        "authority|operator|add|--dir|{auth}|opb|--token|opb-card|--as|opa",
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ("KEYWARD_OPERATOR_PIN", USER_PIN),
        ],
    ),
    ok("authority|operator|list|--dir|{auth}", &[]),
    // With two operators a policy change needs both: opa asks, opb approves ({req} is the
    // pending request's id)…
    ok("authority|policy|set|--dir|{auth}|revoke|1|--as|opa", OPERATOR),
    ok("authority|request|list|--dir|{auth}", &[]),
    ok("authority|approve|--dir|{auth}|{req}|--as|opb", OPERATOR),
    // … or rejects.
    ok("authority|policy|set|--dir|{auth}|revoke|1|--as|opa", OPERATOR),
    ok("authority|reject|--dir|{auth}|{req}|--as|opb", OPERATOR),
    ok(
        "authority|operator|remove|--dir|{auth}|opa|--as|opa",
        &[
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ("KEYWARD_OPERATOR_PIN", USER_PIN),
        ],
    ),
    // Errors: a missing file (before any PIN: none is given here), a usage error.
    Step {
        args: "enroll|--complete|{dir}/nope.reply",
        env: &[],
        exit: 1,
        tamper: None,
    },
    Step {
        args: "keyset|frobnicate",
        env: &[],
        exit: 2,
        tamper: None,
    },
    Step {
        args: "authority|process|--dir|{auth}|{dir}/nope.req|-o|{dir}/nope.reply",
        env: &[],
        exit: 1,
        tamper: None,
    },
];

/// Commands the story does not reach, each with the test that runs it (their shapes are in
/// the schema all the same).
const ELSEWHERE: &[(&str, &str)] = &[
    (
        "authority join",
        "tests/postgres_nodes.rs (a second node on one PostgreSQL database; its document is validated there)",
    ),
    (
        "authority serve",
        "tests/est.rs (a node that runs until stopped; its ready document is checked there)",
    ),
    (
        "keyset adopt",
        "tests/keyset_adopt.rs (keys made by pkcs11-tool)",
    ),
    (
        "authority init",
        "AuthorityBed::new, checked in schema_covers_authority_init",
    ),
    (
        "authority migrate",
        "tests/authority_migrate.rs (an old TOML directory)",
    ),
    (
        "crl fetch",
        "tests/revocation.rs (an authority publishing at a distribution point)",
    ),
    ("completions", "completions_and_man_page (not JSON)"),
    ("man", "completions_and_man_page (not JSON)"),
];

fn schema() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(SCHEMA).expect("docs/keyward.schema.json"))
        .expect("the schema is JSON")
}

/// `keyset list` → `cmd_keyset_list`, the schema's name for a command's shape.
fn def_name(command: &str) -> String {
    format!("cmd_{}", command.replace([' ', '-'], "_"))
}

use util::schema_errors as validate;

/// The leaf commands the binary has, from its own `--help` (`keyset list`, `enroll`).
fn commands_of_binary(bed: &util::TestBed) -> BTreeSet<String> {
    fn walk(bed: &util::TestBed, path: &mut Vec<String>, out: &mut BTreeSet<String>) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = bed.run(&args).ok().stdout;
        let subs: Vec<String> = help
            .split("Commands:\n")
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .take_while(|l| l.starts_with("  "))
                    .filter_map(|l| l.split_whitespace().next())
                    .filter(|name| *name != "help")
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if subs.is_empty() {
            out.insert(path.join(" "));
        }
        for s in subs {
            path.push(s);
            walk(bed, path, out);
            path.pop();
        }
    }
    let mut out = BTreeSet::new();
    walk(bed, &mut Vec::new(), &mut out);
    out
}

/// `{dir}`, `{auth}`, `{bundle}` and `{tk:USER}` filled in.
fn fill(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut s = text.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

fn run_step(
    bed: &AuthorityBed,
    step: &Step,
    vars: &BTreeMap<String, String>,
    extra: &[&str],
) -> Run {
    if let Some((from, to, alter)) = step.tamper {
        let text = std::fs::read_to_string(bed.path(from)).unwrap();
        let altered = alter(&text);
        assert_ne!(
            altered, text,
            "{}: the copy of {from} is not altered",
            step.args
        );
        std::fs::write(bed.path(to), altered).unwrap();
    }
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    let mut vars = vars.clone();
    if step.args.contains("{req}") {
        vars.insert("req".into(), pending_request(bed));
    }
    if step.args.contains("{chain}") {
        let all = bed
            .run(&["authority", "cert", "--all", "--dir", &bed.dir])
            .ok();
        vars.insert("chain".into(), bed.file("chain.pem", all.stdout.as_bytes()));
    }
    args.extend(step.args.split('|').map(|a| fill(a, &vars)));
    let env: Vec<(String, String)> = step
        .env
        .iter()
        .map(|(k, v)| (k.to_string(), fill(v, &vars)))
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    bed.run_env(&args, &env)
}

/// The id of the authority's newest pending approval request.
fn pending_request(bed: &AuthorityBed) -> String {
    let list = bed
        .run(&["--json", "authority", "request", "list", "--dir", &bed.dir])
        .ok()
        .json();
    let pending: Vec<&str> = list["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["state"] == "pending")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(pending.len(), 1, "one pending request: {list}");
    pending[0].to_string()
}

/// The bed the story runs on, and its variables.
fn story_bed() -> (AuthorityBed, BTreeMap<String, String>) {
    let bed = AuthorityBed::new(
        &["card", "bob-card", "hard-card", "op-card", "opb-card"],
        "CN=Contract CA",
    );
    let dir = bed
        .path("")
        .to_string_lossy()
        .trim_end_matches('/')
        .to_string();
    std::fs::write(bed.path("data.txt"), b"the contract\n").unwrap();
    std::fs::write(bed.path("other.txt"), b"not the contract\n").unwrap();
    std::fs::write(
        bed.path("users.csv"),
        b"user,email\ncarl,carl@example.org\ndora,\n",
    )
    .unwrap();
    let so_pin = bed.secret_file("so.pin", SO_PIN);
    std::fs::set_permissions(&so_pin, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::write(
        bed.path("tokens.toml"),
        b"so_pin_file = \"so.pin\"\npin_out = \"pins\"\n[[token]]\nlabel = \"prov\"\n",
    )
    .unwrap();
    std::fs::write(
        bed.path("pins-stdout.toml"),
        b"so_pin_file = \"so.pin\"\npin_out = \"-\"\n[[token]]\nlabel = \"prov2\"\n",
    )
    .unwrap();
    let vars = BTreeMap::from([
        ("dir".to_string(), dir),
        ("auth".to_string(), bed.dir.clone()),
        ("bundle".to_string(), bed.bundle.clone()),
    ]);
    (bed, vars)
}

/// Commands whose text output is data (kept by `--quiet`); every other command's standard
/// output is its result line, which `--quiet` drops.
const DATA: &[&str] = &[
    "token list",
    "token info",
    "keyset list",
    "keyset show",
    "keyset pubkey",
    "keyset csr",
    "keyset pin",
    "keyset cert",
    "authority cert",
    "authority add-user",
    "authority recover",
    "authority users",
    "authority log",
    "authority token",
    "authority operator list",
    "authority policy show",
    "authority request list",
];

/// Steps of a data command that print a result line instead (an action's outcome), and steps
/// of an action that print data (the user PINs of `token provision` with `pin_out = "-"`).
const RESULT_STEPS: &[&str] = &["authority|token|--dir|{auth}|bob|--state|found"];
const DATA_STEPS: &[&str] = &["token|provision|--manifest|{dir}/pins-stdout.toml"];

/// The same story in text with `--quiet`: the same exit statuses; on success nothing on
/// standard error, and on standard output the data of a data command and nothing for an
/// action; on failure one `keyward: error:` line on standard error and nothing on standard
/// output.
#[test]
fn every_command_keeps_data_on_stdout_and_is_silent_with_quiet() {
    let (bed, mut vars) = story_bed();
    for step in STEPS {
        let run = run_step(&bed, step, &vars, &["--quiet"]);
        let label = step.args.replace('|', " ");
        assert_eq!(
            run.code, step.exit,
            "{label}: exit status\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        if step.exit != 0 {
            assert_eq!(run.stdout, "", "{label}: stdout on failure");
            let lines: Vec<&str> = run.stderr.lines().collect();
            assert!(
                lines.len() == 1 && lines[0].starts_with("keyward: error: "),
                "{label}: one error line:\n{}",
                run.stderr
            );
            continue;
        }
        assert_eq!(run.stderr, "", "{label}: stderr with --quiet");
        let words: Vec<&str> = step.args.split('|').take(3).collect();
        // `authority log --verify` checks: its result is a line, not data.
        let is_data = DATA_STEPS.contains(&step.args)
            || !step.args.ends_with("--verify")
                && !RESULT_STEPS.contains(&step.args)
                && DATA
                    .iter()
                    .any(|d| *d == words[0] || *d == words[..2].join(" ") || *d == words.join(" "));
        if is_data {
            assert!(!run.stdout.trim().is_empty(), "{label}: its data");
        } else {
            assert_eq!(run.stdout, "", "{label}: a result line despite --quiet");
        }
        if words[..2].join(" ") == "authority add-user" {
            let user = step.args.rsplit('|').next().unwrap();
            vars.insert(format!("tk:{user}"), run.stdout.trim().to_string());
        }
    }
}

/// The story with `--json`: each step's exit status; on success one JSON document on standard
/// output; on failure one on standard error and nothing on standard output; every document
/// valid against the schema; every command of the binary has a shape and is run or named in
/// [`ELSEWHERE`].
#[test]
fn every_command_prints_one_valid_json_document_and_the_right_exit_status() {
    let (bed, mut vars) = story_bed();
    let schema = schema();
    let mut docs = Vec::new();
    let mut ran = BTreeSet::new();
    for step in STEPS {
        let run = run_step(&bed, step, &vars, &["--json"]);
        let label = step.args.replace('|', " ");
        assert_eq!(
            run.code, step.exit,
            "{label}: exit status\nstdout:\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        );
        let doc = if step.exit == 0 {
            assert!(
                run.stderr.trim().is_empty() || !run.stderr.contains("error"),
                "{label}: stderr on success: {}",
                run.stderr
            );
            run.json()
        } else {
            assert_eq!(run.stdout, "", "{label}: stdout on failure");
            let lines: Vec<&str> = run.stderr.lines().collect();
            assert_eq!(
                lines.len(),
                1,
                "{label}: one JSON line on stderr:\n{}",
                run.stderr
            );
            let doc: serde_json::Value = serde_json::from_str(lines[0])
                .unwrap_or_else(|e| panic!("{label}: stderr is not JSON ({e}): {}", run.stderr));
            assert_eq!(doc["error"]["exit_status"], step.exit, "{label}: {doc}");
            doc
        };
        if let Some(command) = doc["command"].as_str() {
            assert!(
                schema["$defs"].get(def_name(command)).is_some(),
                "{label}: no shape {} for {command:?} in docs/keyward.schema.json",
                def_name(command)
            );
            ran.insert(command.to_string());
            if command == "authority add-user" {
                let user = doc["user"].as_str().unwrap().to_string();
                let key = doc["temporary_key"].as_str().unwrap().to_string();
                vars.insert(format!("tk:{user}"), key);
            }
        }
        docs.push((label, doc));
    }
    let failures = validate(&docs);
    assert!(failures.is_empty(), "not valid:\n{}", failures.join("\n"));

    // Every command the binary has is run here or named in ELSEWHERE, and has a shape.
    let elsewhere: BTreeSet<String> = ELSEWHERE.iter().map(|(c, _)| c.to_string()).collect();
    for command in commands_of_binary(&bed) {
        assert!(
            ran.contains(&command) || elsewhere.contains(&command),
            "`keyward {command}` is neither in this test's STEPS nor in ELSEWHERE"
        );
        if !["completions", "man"].contains(&command.as_str()) {
            assert!(
                schema["$defs"].get(def_name(&command)).is_some(),
                "no shape {} for `keyward {command}` in docs/keyward.schema.json (docs/json.md: adding a command)",
                def_name(&command)
            );
        }
    }
}

/// `authority init --json` (run by the bed without it) validates too.
#[test]
fn schema_covers_authority_init() {
    let bed = util::TestBed::new();
    bed.init_token("ca", AUTHORITY_PIN);
    let dir = bed.path("auth").to_string_lossy().into_owned();
    let run = bed
        .run_env(
            &[
                "--json",
                "authority",
                "init",
                "--dir",
                &dir,
                "--token",
                "ca",
            ],
            APIN,
        )
        .ok();
    assert_eq!(run.stderr, "", "with --json, nothing but the document");
    let failures = validate(&[("authority init".into(), run.json())]);
    assert!(failures.is_empty(), "not valid:\n{}", failures.join("\n"));
}

/// Text mode: data and result lines on stdout; `--quiet` leaves data and errors only; an
/// error is one line on stderr and nothing on stdout.
#[test]
fn quiet_keeps_data_and_errors_only() {
    let bed = util::TestBed::new();
    bed.init_token("card", USER_PIN);
    let data = bed.file("data.txt", b"quiet\n");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();

    // An action: its result line on stdout, gone with --quiet.
    let loud = bed
        .run_env(&["keyset", "create", "q", "--token", "card"], PIN)
        .ok();
    assert!(
        loud.stdout.contains("created keyset \"q\""),
        "{}",
        loud.stdout
    );
    let quiet = bed
        .run_env(&["--quiet", "keyset", "sign", "q", &data, "-o", &sig], PIN)
        .ok();
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));
    assert!(Path::new(&sig).exists(), "--quiet still does the work");
    let loud = bed.run(&["keyset", "verify", "q", &data, &sig]).ok();
    assert!(loud.stdout.contains("signature OK"), "{}", loud.stdout);
    assert_eq!(loud.stderr, "");
    let quiet = bed.run(&["-q", "keyset", "verify", "q", &data, &sig]).ok();
    assert_eq!((quiet.stdout.as_str(), quiet.stderr.as_str()), ("", ""));

    // Data stays with --quiet.
    let pem = bed.run(&["--quiet", "keyset", "pubkey", "q"]).ok();
    assert!(
        pem.stdout.starts_with("-----BEGIN PUBLIC KEY-----"),
        "{}",
        pem.stdout
    );
    let list = bed.run(&["--quiet", "keyset", "list"]).ok();
    assert!(list.stdout.contains("\"q\""), "{}", list.stdout);

    // A bad signature: exit 3, one error line, nothing on stdout, even with --quiet.
    let other = bed.file("other.txt", b"loud\n");
    let bad = bed.run(&["--quiet", "keyset", "verify", "q", &other, &sig]);
    let bad = bad.fails(3, "signature does NOT verify");
    assert_eq!(bad.stdout, "");
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);

    // A missing file: exit 1; a usage error: exit 2.
    bed.run(&[
        "keyset",
        "verify",
        "q",
        &bed.path("nope").to_string_lossy(),
        &sig,
    ])
    .fails(1, "nope");
    bed.run(&["keyset", "sign", "q"]).fails(2, "usage");
}

/// `-v` names the PKCS#11 call and its CKR_ name and value, found through the error's
/// sources; `--json` puts them in the error document.
#[test]
fn a_wrong_pin_names_the_call_and_its_code() {
    let bed = util::TestBed::new();
    bed.init_token("card", USER_PIN);
    bed.run_env(&["keyset", "create", "k", "--token", "card"], PIN)
        .ok();
    let data = bed.file("data.txt", b"pin\n");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    let wrong = [("KEYWARD_PIN", "not-the-pin")];
    let run = bed.run_env(&["-v", "keyset", "sign", "k", &data, "-o", &sig], &wrong);
    let run = run.fails(1, "wrong user PIN");
    assert!(
        run.stderr.contains("C_Login: CKR_PIN_INCORRECT (0xa0)"),
        "{}",
        run.stderr
    );
    let run = bed.run_env(
        &["--json", "keyset", "sign", "k", &data, "-o", &sig],
        &wrong,
    );
    assert_eq!(run.code, 1);
    let doc: serde_json::Value = serde_json::from_str(run.stderr.trim()).expect("JSON error");
    assert_eq!(doc["error"]["pkcs11"]["function"], "C_Login", "{doc}");
    assert_eq!(doc["error"]["pkcs11"]["code"], "CKR_PIN_INCORRECT", "{doc}");
    assert_eq!(doc["error"]["pkcs11"]["value"], 0xa0, "{doc}");
    assert!(doc["error"]["hint"].is_string(), "{doc}");
    let failures = validate(&[("wrong pin".into(), doc)]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `enroll --complete` with a reply that is not there says so before asking for the PIN
/// (standard input is no terminal here and no PIN is given: asking would fail differently).
#[test]
fn inputs_are_checked_before_the_pin() {
    let bed = util::TestBed::new();
    let nope = bed.path("nope.reply").to_string_lossy().into_owned();
    let run = bed
        .run(&["enroll", "--complete", &nope])
        .fails(1, "nope.reply");
    assert!(!run.stderr.contains("PIN"), "{}", run.stderr);
}

/// `keyward completions bash|zsh|fish` and `keyward man` are generated; bash parses its
/// script; the man page states the exit statuses; help has headings and the environment.
#[test]
fn completions_and_man_page() {
    let bed = util::TestBed::new();
    for shell in ["bash", "zsh", "fish"] {
        let run = bed.run(&["completions", shell]).ok();
        assert!(run.stdout.contains("keyward"), "{shell}: {}", run.stdout);
        assert!(run.stdout.contains("keyset"), "{shell}: subcommands");
    }
    let bash = bed.run(&["completions", "bash"]).ok().stdout;
    let script = bed.file("keyward.bash", bash.as_bytes());
    let check = Command::new("bash").args(["-n", &script]).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    bed.run(&["completions", "tcsh"]).fails(2, "tcsh");

    let man = bed.run(&["man"]).ok().stdout;
    for want in [".TH keyward", "EXIT STATUS", "found bad", "KEYWARD_MODULE"] {
        assert!(man.contains(want), "man page lacks {want:?}");
    }
    let help = bed.run(&["keyset", "sign", "--help"]).ok().stdout;
    for want in [
        "Secrets:",
        "Output and state:",
        "Module:",
        "[env: KEYWARD_MODULE=",
    ] {
        assert!(help.contains(want), "help lacks {want:?}:\n{help}");
    }
    let help = bed.run(&["authority", "users", "--help"]).ok().stdout;
    assert!(help.contains("[env: KEYWARD_AUTHORITY_DIR="), "{help}");

    // Secret-source flags only where a secret is read.
    let sign = bed.run(&["keyset", "sign", "--help"]).ok().stdout;
    assert!(sign.contains("--pin-file"), "{sign}");
    assert!(!sign.contains("--so-pin-file"), "{sign}");
    let list = bed.run(&["keyset", "list", "--help"]).ok().stdout;
    assert!(!list.contains("pin-file"), "{list}");
    let enroll = bed.run(&["enroll", "--help"]).ok().stdout;
    for flag in [
        "--pin-file",
        "--new-pin-file",
        "--temp-key-file",
        "--authority-pin-file",
    ] {
        assert!(enroll.contains(flag), "enroll --help lacks {flag}");
    }
    let pin = bed.file("pin", b"x\n");
    bed.run(&["keyset", "list", "--pin-file", &pin])
        .fails(2, "--pin-file");
}

/// `--dir` of the `authority` commands comes from the flag, else `KEYWARD_AUTHORITY_DIR`,
/// else `authority_dir` in config.toml.
#[test]
fn the_authority_directory_comes_from_the_flag_the_environment_or_config_toml() {
    let bed = AuthorityBed::new(&[], "CN=Dir CA");
    let users = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["authority", "users"];
        all.extend_from_slice(args);
        bed.run_env(&all, env)
    };
    let elsewhere = bed.path("elsewhere").to_string_lossy().into_owned();
    users(&[], &[]).fails(2, "--dir");
    users(&[], &[("KEYWARD_AUTHORITY_DIR", &bed.dir)]).ok();
    bed.write_config(&format!("authority_dir = {:?}\n", bed.dir));
    users(&[], &[]).ok();
    // The environment and the flag win over config.toml.
    users(&[], &[("KEYWARD_AUTHORITY_DIR", &elsewhere)]).fails(1, "not an authority directory");
    users(&["--dir", &elsewhere], &[]).fails(1, "not an authority directory");
}
