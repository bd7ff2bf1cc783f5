//! keyward's tokens and PINs as other PKCS#11 tools see them: softhsm2-util, OpenSC
//! pkcs11-tool and GnuTLS p11tool, on a throw-away SoftHSM2 token per test.

mod util;

use std::collections::BTreeSet;

use util::{TestBed, SO_PIN, USER_PIN};

/// (slot id, label, serial) of every initialised token.
type Tokens = BTreeSet<(u64, String, String)>;

fn module_arg() -> String {
    util::module().to_string_lossy().into_owned()
}

/// Initialised tokens in `keyward token list --json`.
fn keyward_tokens(bed: &TestBed) -> Tokens {
    let list = bed.run(&["token", "list", "--json"]).ok().json();
    list["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .filter(|s| s["token"]["initialized"] == true)
        .map(|s| {
            let t = &s["token"];
            (
                s["slot_id"].as_u64().unwrap(),
                t["label"].as_str().unwrap().to_string(),
                t["serial"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Number of slots in `keyward token list --json`.
fn keyward_slot_count(bed: &TestBed) -> usize {
    bed.run(&["--json", "token", "list"]).ok().json()["slots"]
        .as_array()
        .unwrap()
        .len()
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim_start().strip_prefix(key)?;
    Some(rest.trim_start().strip_prefix(':')?.trim())
}

/// Initialised tokens in `softhsm2-util --show-slots`, and the number of slots.
fn softhsm_tokens(bed: &TestBed) -> (Tokens, usize) {
    let run = bed
        .run_tool("softhsm2-util", "softhsm2", &["--show-slots"])
        .ok();
    let mut out = Tokens::new();
    let mut slots = 0;
    let (mut slot, mut serial, mut init) = (0u64, String::new(), false);
    for line in run.stdout.lines() {
        if let Some(id) = line.strip_prefix("Slot ") {
            slots += 1;
            slot = id.trim().parse().expect("slot id");
            init = false;
        } else if let Some(v) = field(line, "Serial number") {
            serial = v.to_string();
        } else if let Some(v) = field(line, "Initialized") {
            init = v == "yes";
        } else if let Some(v) = field(line, "Label") {
            if init {
                out.insert((slot, v.to_string(), serial.clone()));
            }
        }
    }
    (out, slots)
}

/// Initialised tokens in `pkcs11-tool -L`, and the number of slots.
fn opensc_tokens(bed: &TestBed) -> (Tokens, usize) {
    let m = module_arg();
    let run = bed
        .run_tool("pkcs11-tool", "opensc", &["--module", &m, "-L"])
        .ok();
    let mut out = Tokens::new();
    let mut slots = 0;
    let (mut slot, mut label) = (0u64, None::<String>);
    for line in run.stdout.lines() {
        if line.starts_with("Slot ") {
            // "Slot 0 (0x41814ad9): SoftHSM slot ID 0x41814ad9"
            slots += 1;
            let hex = line
                .split(['(', ')'])
                .nth(1)
                .expect("slot id in parentheses");
            slot = u64::from_str_radix(hex.trim_start_matches("0x"), 16).expect("hex slot id");
            label = None;
        } else if let Some(v) = field(line, "token label") {
            label = Some(v.to_string());
        } else if let Some(v) = field(line, "serial num") {
            if let Some(l) = label.take() {
                out.insert((slot, l, v.to_string()));
            }
        }
    }
    (out, slots)
}

#[test]
fn token_list_agrees_with_softhsm2_util_and_pkcs11_tool() {
    let bed = TestBed::new();
    // Before any token: no initialised token anywhere, the same number of slots.
    assert!(keyward_tokens(&bed).is_empty());
    assert_eq!(
        softhsm_tokens(&bed),
        (Tokens::new(), keyward_slot_count(&bed))
    );
    assert_eq!(
        opensc_tokens(&bed),
        (Tokens::new(), keyward_slot_count(&bed))
    );

    let a = bed.init_token("alpha", USER_PIN);
    let b = bed.init_token("beta with spaces", USER_PIN);
    let ours = keyward_tokens(&bed);
    let pairs: BTreeSet<(String, String)> = ours
        .iter()
        .map(|(_, l, s)| (l.clone(), s.clone()))
        .collect();
    assert_eq!(
        pairs,
        BTreeSet::from([
            ("alpha".to_string(), a),
            ("beta with spaces".to_string(), b)
        ])
    );
    let slots = keyward_slot_count(&bed);
    assert_eq!(slots, 3, "two tokens and a free slot");
    assert_eq!(
        softhsm_tokens(&bed),
        (ours.clone(), slots),
        "softhsm2-util --show-slots"
    );
    assert_eq!(opensc_tokens(&bed), (ours, slots), "pkcs11-tool -L");
}

#[test]
fn pins_set_and_changed_by_keyward_work_with_pkcs11_tool() {
    let bed = TestBed::new();
    let first = "first-pin-1";
    let second = "second-pin-2";
    bed.init_token("opensc", first);
    bed.pkcs11_tool_login("opensc", first).ok();
    bed.pkcs11_tool_login("opensc", second)
        .refused("CKR_PIN_INCORRECT");

    bed.run_env(
        &["token", "change-pin", "--token", "opensc"],
        &[("KEYWARD_PIN", first), ("KEYWARD_NEW_PIN", second)],
    )
    .ok();
    bed.pkcs11_tool_login("opensc", second).ok();
    bed.pkcs11_tool_login("opensc", first)
        .refused("CKR_PIN_INCORRECT");

    // The SO PIN keyward set works for pkcs11-tool's SO login too.
    let m = module_arg();
    let so_login = |so_pin: &str| {
        bed.run_tool(
            "pkcs11-tool",
            "opensc",
            &[
                "--module",
                &m,
                "--token-label",
                "opensc",
                "--login",
                "--login-type",
                "so",
                "--so-pin",
                so_pin,
                "--session-rw",
                "-O",
            ],
        )
    };
    so_login(SO_PIN).ok();
    so_login("not-the-so-pin").refused("CKR_PIN_INCORRECT");
}

#[test]
fn a_softhsm2_util_token_works_with_keyward() {
    let bed = TestBed::new();
    let (so, pin) = ("util-so-pin", "util-user-pin");
    let run = bed
        .run_tool(
            "softhsm2-util",
            "softhsm2",
            &[
                "--init-token",
                "--free",
                "--label",
                "made-by-util",
                "--so-pin",
                so,
                "--pin",
                pin,
            ],
        )
        .ok();
    let (theirs, _) = softhsm_tokens(&bed);
    assert_eq!(theirs.len(), 1, "{}", run.stdout);
    assert_eq!(keyward_tokens(&bed), theirs);
    let info = bed
        .run(&["--json", "token", "info", "--token", "made-by-util"])
        .ok()
        .json();
    assert_eq!(info["user_pin_initialized"], true);
    assert_eq!(info["serial"], theirs.iter().next().unwrap().2.as_str());

    bed.run_env(
        &["token", "change-pin", "--token", "made-by-util"],
        &[("KEYWARD_PIN", pin), ("KEYWARD_NEW_PIN", "changed-pin-1")],
    )
    .ok();
    bed.pkcs11_tool_login("made-by-util", "changed-pin-1").ok();
    bed.pkcs11_tool_login("made-by-util", pin)
        .refused("CKR_PIN_INCORRECT");

    bed.run_env(
        &["token", "unblock", "--token", "made-by-util"],
        &[
            ("KEYWARD_SO_PIN", so),
            ("KEYWARD_NEW_PIN", "unblocked-pin-2"),
        ],
    )
    .ok();
    bed.pkcs11_tool_login("made-by-util", "unblocked-pin-2")
        .ok();
    bed.pkcs11_tool_login("made-by-util", "changed-pin-1")
        .refused("CKR_PIN_INCORRECT");
}

/// The attributes of a PKCS#11 URI's path, in any order.
fn uri_attrs(uri: &str) -> BTreeSet<String> {
    let path = uri.strip_prefix("pkcs11:").expect("pkcs11: URI");
    let path = path.split('?').next().unwrap();
    path.split(';')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn p11tool_lists_the_token_and_accepts_keywards_uri() {
    let bed = TestBed::new();
    let serial = bed.init_token("gnutls", USER_PIN);
    bed.init_token("gnutls-other", USER_PIN);
    let m = module_arg();
    let provider = ["--provider", m.as_str()];

    let run = bed
        .run_tool(
            "p11tool",
            "gnutls-bin",
            &[&provider[..], &["--list-tokens"]].concat(),
        )
        .ok();
    assert!(run.stdout.contains("Label: gnutls\n"), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("Serial: {serial}")),
        "{}",
        run.stdout
    );

    let info = bed
        .run(&["--json", "token", "info", "--token", "gnutls"])
        .ok()
        .json();
    let uri = info["uri"].as_str().expect("uri").to_string();
    // p11tool prints the same token URI, attributes in another order.
    let theirs = run
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("URL: "))
        .find(|u| u.contains(&format!("serial={serial}")))
        .expect("p11tool URL for the token")
        .to_string();
    assert_eq!(uri_attrs(&theirs), uri_attrs(&uri), "{theirs} vs {uri}");
    // And keyward accepts p11tool's URI.
    let back = bed
        .run(&["--json", "token", "info", "--token", &theirs])
        .ok()
        .json();
    assert_eq!(back["serial"], serial.as_str());

    // An empty token has nothing to list (p11tool exits 2): give it one public and one
    // private data object with pkcs11-tool.
    // (By slot id: pkcs11-tool's --token-label is a prefix match and would pick "gnutls-other".)
    let slot = info["slot_id"].as_u64().expect("slot id").to_string();
    let data = bed.secret_file("data.bin", "interop");
    let data = data.to_str().unwrap();
    for (label, private) in [("kw-public", false), ("kw-private", true)] {
        let mut args = vec![
            "--module",
            &m,
            "--slot",
            &slot,
            "--login",
            "--pin",
            USER_PIN,
            "--write-object",
            data,
            "--type",
            "data",
            "--label",
            label,
        ];
        if private {
            args.push("--private");
        }
        bed.run_tool("pkcs11-tool", "opensc", &args).ok();
    }

    let list = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = bed.tool("p11tool", "gnutls-bin");
        cmd.args(provider).args(extra).arg("--list-all").arg(&uri);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run p11tool");
        let text = format!(
            "{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, out) = list(&[], &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("kw-public") && !out.contains("kw-private"),
        "{out}"
    );
    assert!(out.contains(&format!("serial={serial}")), "{out}");
    // With a login (PIN from GNUTLS_PIN, as p11tool reads it) the private object shows too:
    // the PIN keyward set works for GnuTLS.
    let (code, out) = list(&["--login"], &[("GNUTLS_PIN", USER_PIN)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("kw-public") && out.contains("kw-private"),
        "{out}"
    );
    let (code, _) = list(&["--login"], &[("GNUTLS_PIN", "not-the-pin")]);
    assert_ne!(code, Some(0), "a wrong PIN must fail p11tool's login");

    // The URI picks this token only: the other token's URI lists none of these objects.
    let other = bed
        .run(&["--json", "token", "info", "--token", "gnutls-other"])
        .ok()
        .json();
    let other_uri = other["uri"].as_str().unwrap();
    let out = bed.run_tool(
        "p11tool",
        "gnutls-bin",
        &[&provider[..], &["--list-all", other_uri]].concat(),
    );
    assert!(!out.stdout.contains("kw-public"), "{out:?}");
}
