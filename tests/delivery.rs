//! Capabilities and key delivery on SoftHSM2, with the real `keyward` binary. A token that lacks
//! a wrap flavour is SoftHSM seen through the PKCS#11 shim with that mechanism hidden
//! (`KEYWARD_SHIM_HIDE_MECHANISMS`): a real module with one thing taken away, not a fake one.

mod util;

use util::{
    module, p11_object_set, shim_module, AuthorityBed, TestBed, AUTHORITY_PIN, AUTHORITY_TOKEN,
    USER_PIN,
};

/// `CKM_AES_KEY_WRAP_PAD`: SoftHSM's only RFC 5649 mechanism.
const PAD: &str = "0x210A";

/// Environment that sends keyward through the shim with `hidden` mechanisms hidden.
fn hiding(hidden: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "KEYWARD_MODULE",
            shim_module().to_string_lossy().into_owned(),
        ),
        (
            "KEYWARD_SHIM_MODULE",
            module().to_string_lossy().into_owned(),
        ),
        ("KEYWARD_SHIM_HIDE_MECHANISMS", hidden.to_string()),
    ]
}

fn env_refs<'a>(
    v: &'a [(&'static str, String)],
    more: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
    out.extend_from_slice(more);
    out
}

#[test]
fn token_info_shows_the_probed_capabilities_and_softhsms_pad_by_known_answer() {
    let bed = TestBed::new();
    bed.init_token("caps", USER_PIN);
    let info = bed
        .run_env(
            &["--json", "token", "info", "--token", "caps", "--login"],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok()
        .json();
    let c = &info["capabilities"];
    assert_eq!(info["label"], "caps", "{info}");
    // RFC 3394's vector wraps right; SoftHSM 2.6 has no KWP; its PAD unwraps RFC 5649's vectors
    // but wraps the key zero-padded to 8 bytes first.
    assert_eq!(c["aes_wrap"]["kw"]["result"], "yes", "{c}");
    assert_eq!(c["aes_wrap"]["kwp"]["result"], "no", "{c}");
    assert_eq!(c["aes_wrap"]["pad"], "rfc5649-zero-padded", "{c}");
    assert_eq!(c["rfc5649"], "pad", "{c}");
    assert_eq!(c["oaep"], serde_json::json!(["sha1"]), "{c}");
    assert_eq!(c["unwrap_private_key"]["rfc5649"]["result"], "yes", "{c}");
    assert_eq!(c["import_private_key"]["result"], "yes", "{c}");
    assert_eq!(c["context_specific_login"]["result"], "yes", "{c}");
    assert_eq!(c["key_generation"]["ec_p256"], true, "{c}");
    assert_eq!(c["pin_min"], 4, "{c}");
    assert!(
        c["mechanisms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "CKM_AES_KEY_WRAP_PAD" && m["code"] == "0x210a"),
        "{c}"
    );
    // Without --login, what needs the PIN says so; nothing is left on the token either way.
    let plain = bed
        .run(&["--json", "token", "info", "--token", "caps"])
        .ok()
        .json();
    assert_eq!(
        plain["capabilities"]["import_private_key"]["result"], "not-probed",
        "{plain}"
    );
    assert!(bed.token_objects("caps", USER_PIN).is_empty());
    // The same token with PAD hidden: no RFC 5649 at all, so no unwrap of private keys.
    let env = hiding(PAD);
    let hidden = bed
        .run_env(
            &["--json", "token", "info", "--token", "caps", "--login"],
            &env_refs(&env, &[("KEYWARD_PIN", USER_PIN)]),
        )
        .ok()
        .json();
    let c = &hidden["capabilities"];
    assert_eq!(c["aes_wrap"]["pad"], "absent", "{c}");
    assert_eq!(c["rfc5649"], serde_json::Value::Null, "{c}");
    assert_eq!(c["unwrap_private_key"]["rfc5649"]["result"], "no", "{c}");
    // Text output names the flavours.
    let text = bed.run(&["token", "info", "--token", "caps"]).ok();
    assert!(
        text.stdout
            .contains("AES key wrap PAD (0x210A):        RFC 5649 to unwrap"),
        "{}",
        text.stdout
    );
}

#[test]
fn a_key_type_the_token_lacks_is_refused_before_anything_is_generated() {
    let bed = TestBed::new();
    bed.init_token("no-ec", USER_PIN);
    let env = hiding("0x1040"); // CKM_EC_KEY_PAIR_GEN
    bed.run_env(
        &[
            "keyset",
            "create",
            "ec",
            "--token",
            "no-ec",
            "--key-type",
            "p256",
        ],
        &env_refs(&env, &[("KEYWARD_PIN", USER_PIN)]),
    )
    .fails(
        1,
        "token \"no-ec\" cannot generate p256 keys: it cannot generate EC P-256 key pairs",
    );
    assert!(bed.token_objects("no-ec", USER_PIN).is_empty());
    assert!(bed.registry_text().is_none_or(|t| !t.contains("\"ec\"")));
}

#[test]
fn security_high_on_a_token_without_the_context_specific_login_is_refused_up_front() {
    let a = AuthorityBed::new(&["plain"], "CN=High Test");
    let mut env = hiding("");
    env.push(("KEYWARD_SHIM_NO_CONTEXT_LOGIN", "1".to_string()));
    let refusal = "token \"plain\" cannot hold --security high keys: it does not support the context-specific login";
    a.run_env(
        &[
            "keyset",
            "create",
            "hi",
            "--token",
            "plain",
            "--security",
            "high",
        ],
        &env_refs(&env, &[("KEYWARD_PIN", USER_PIN)]),
    )
    .fails(1, refusal);
    let tk = a.add_user("hal", &[]);
    a.run_env(
        &[
            "enroll",
            "--user",
            "hal",
            "--keyset",
            "Hal 1",
            "--token",
            "plain",
            "--security",
            "high",
            "--authority-cert",
            &a.bundle,
            "-o",
            &a.path("hal.toml").to_string_lossy(),
        ],
        &env_refs(
            &env,
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", &tk)],
        ),
    )
    .fails(1, refusal);
    assert!(a.token_objects("plain", USER_PIN).is_empty());
    assert!(a.registry_text().is_none_or(|t| !t.contains("[[keyset]]")));
    // Standard security on the same token is fine.
    a.run_env(
        &["keyset", "create", "std", "--token", "plain"],
        &env_refs(&env, &[("KEYWARD_PIN", USER_PIN)]),
    )
    .ok();
}

/// Request, process and complete as separate steps, with the user's token able to unwrap
/// (native SoftHSM) or not (PAD hidden), against an authority without `--allow-import`.
#[test]
fn deliveries_are_chosen_by_capability_and_refused_before_any_key_is_generated() {
    let a = AuthorityBed::new(&["card"], "CN=Delivery Test");
    let bundle = std::fs::read_to_string(&a.bundle).unwrap();
    assert!(
        bundle.contains("# keyward-deliveries: rfc5649\n"),
        "{bundle}"
    );
    let no_pad = hiding(PAD);
    let card_before = p11_object_set(&a.token_objects("card", USER_PIN));
    let auth_before = p11_object_set(&a.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN));

    // 1. A token that cannot unwrap, for an authority that does not import: refused at request
    // time, before a key is generated.
    let tk = a.add_user("ann", &[]);
    let req_args = |bundle: &str, out: &str| {
        vec![
            "enroll".to_string(),
            "--user".into(),
            "ann".into(),
            "--keyset".into(),
            "Ann 1".into(),
            "--token".into(),
            "card".into(),
            "--authority-cert".into(),
            bundle.to_string(),
            "-o".into(),
            a.path(out).to_string_lossy().into_owned(),
        ]
    };
    let args = req_args(&a.bundle, "req0.toml");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.run_env(
        &args,
        &env_refs(
            &no_pad,
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", &tk)],
        ),
    )
    .fails(
        1,
        "token \"card\" cannot receive the encryption key: it has no RFC 5649 AES key wrap",
    );
    assert_eq!(
        p11_object_set(&a.token_objects("card", USER_PIN)),
        card_before
    );
    assert!(a.registry_text().is_none_or(|t| !t.contains("Ann 1")));

    // 2. The same token with a bundle that (wrongly) says the authority imports: the request
    // says "import" only, and the authority refuses it before generating anything.
    let forged = a.file(
        "bundle-import.pem",
        bundle
            .replace(
                "# keyward-deliveries: rfc5649",
                "# keyward-deliveries: rfc5649, import",
            )
            .as_bytes(),
    );
    let args = req_args(&forged, "req1.toml");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    a.run_env(
        &args,
        &env_refs(
            &no_pad,
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", &tk)],
        ),
    )
    .ok();
    let req = std::fs::read_to_string(a.path("req1.toml")).unwrap();
    assert!(req.contains("receives = [\"import\"]"), "{req}");
    a.process("req1.toml", "reply1.toml")
        .fails(1, "this authority does not allow import");
    assert_eq!(
        p11_object_set(&a.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN)),
        auth_before
    );
    assert!(!a.path("reply1.toml").exists());
    assert_eq!(a.user("ann")["state"], "pending");
    let log = a.authority("log", &[]).ok().stdout;
    assert!(log.contains("does not allow import"), "{log}");
    // (Abandon that pending keyset.)
    a.run_env(
        &["keyset", "remove", "Ann 1", "--destroy-keys", "--yes"],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();

    // 3. A token that can unwrap: the request offers both, the reply says rfc5649 …
    a.request("ann", "Ann 2", "card", &tk, "req2.toml").ok();
    let req = std::fs::read_to_string(a.path("req2.toml")).unwrap();
    assert!(
        req.contains("receives = [\n    \"rfc5649\",\n    \"import\",\n]")
            || req.contains("receives = [\"rfc5649\", \"import\"]"),
        "{req}"
    );
    a.process("req2.toml", "reply2.toml").ok();
    let reply = std::fs::read_to_string(a.path("reply2.toml")).unwrap();
    assert!(reply.contains("delivery = \"rfc5649\""), "{reply}");
    // … and completing it where the token (now) lacks PAD changes nothing …
    let before = p11_object_set(&a.token_objects("card", USER_PIN));
    a.complete_env("reply2.toml", USER_PIN, &env_refs(&no_pad, &[]))
        .fails(1, "the reply delivers its keys by rfc5649");
    assert_eq!(p11_object_set(&a.token_objects("card", USER_PIN)), before);
    assert_eq!(a.keyset_json("Ann 2")["state"], "pending");
    // … and where it can, it completes, recording the delivery.
    let done = a.complete_env("reply2.toml", USER_PIN, &[]).ok();
    assert!(
        done.stdout.contains("unwrapped inside the token"),
        "{}",
        done.stdout
    );
    assert!(a
        .registry_text()
        .unwrap()
        .contains("delivery = \"rfc5649\""));
}

#[test]
fn with_allow_import_a_token_that_cannot_unwrap_gets_its_keys_by_import() {
    let bed = TestBed::new();
    bed.init_token(AUTHORITY_TOKEN, AUTHORITY_PIN);
    bed.init_token("card", USER_PIN);
    let dir = bed.path("auth").to_string_lossy().into_owned();
    let init = bed
        .run_env(
            &[
                "authority",
                "init",
                "--dir",
                &dir,
                "--token",
                AUTHORITY_TOKEN,
                "--allow-import",
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .ok();
    assert!(
        init.stdout
            .contains("key delivery: rfc5649, import (import with C_CreateObject"),
        "{}",
        init.stdout
    );
    let cert = bed.run(&["authority", "cert", "--dir", &dir]).ok();
    assert!(
        cert.stdout
            .contains("# keyward-deliveries: rfc5649, import"),
        "{}",
        cert.stdout
    );
    let bundle = bed.file("bundle.pem", cert.stdout.as_bytes());
    let tk = bed
        .run_env(
            &["authority", "add-user", "--dir", &dir, "bob"],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .ok()
        .stdout
        .trim()
        .to_string();
    let no_pad = hiding(PAD);
    let req = bed.path("req.toml").to_string_lossy().into_owned();
    let reply = bed.path("reply.toml").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "enroll",
            "--user",
            "bob",
            "--keyset",
            "Bob 1",
            "--token",
            "card",
            "--authority-cert",
            &bundle,
            "-o",
            &req,
        ],
        &env_refs(
            &no_pad,
            &[("KEYWARD_PIN", USER_PIN), ("KEYWARD_TEMP_KEY", &tk)],
        ),
    )
    .ok();
    let processed = bed
        .run_env(
            &["authority", "process", "--dir", &dir, &req, "-o", &reply],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .ok();
    assert!(
        processed.stdout.contains("delivery import"),
        "{}",
        processed.stdout
    );
    assert!(std::fs::read_to_string(&reply)
        .unwrap()
        .contains("delivery = \"import\""));
    let done = bed
        .run_env(
            &["enroll", "--complete", &reply],
            &env_refs(&no_pad, &[("KEYWARD_PIN", USER_PIN)]),
        )
        .ok();
    assert!(
        done.stdout.contains("imported with C_CreateObject"),
        "{}",
        done.stdout
    );
    assert!(bed
        .registry_text()
        .unwrap()
        .contains("delivery = \"import\""));
    let log = bed.run(&["authority", "log", "--dir", &dir]).ok().stdout;
    assert!(log.contains("delivery import"), "{log}");
    // The imported key is sensitive and decrypts: mail to the keyset opens.
    let enc = bed.run(&["keyset", "cert", "Bob 1", "--encryption"]).ok();
    let enc = bed.file("enc.pem", enc.stdout.as_bytes());
    let msg = bed.file("msg.txt", b"by import\n");
    let sealed = bed.path("msg.p7m").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "send", "--keyset", "Bob 1", "--to", &enc, &msg, "-o", &sealed,
        ],
        &env_refs(&no_pad, &[("KEYWARD_PIN", USER_PIN)]),
    )
    .ok();
    let read = bed
        .run_env(
            &["read", "--keyset", "Bob 1", &sealed],
            &env_refs(&no_pad, &[("KEYWARD_PIN", USER_PIN)]),
        )
        .ok();
    assert!(read.stdout.contains("by import"), "{}", read.stdout);
    let keys = bed.token_objects("card", USER_PIN);
    assert!(
        keys.iter()
            .filter(|o| o.is_private_key())
            .all(|o| o.items("Access").iter().any(|a| a == "sensitive")),
        "{keys:?}"
    );
}
