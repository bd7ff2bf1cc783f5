//! Module configuration (issue 10, item 3) and tolerance of what modules report (item 7), on
//! SoftHSM2 and through the shim: initialisation arguments reach `C_Initialize` (SoftHSM2
//! refuses any, which shows they arrive), where they come from, and a token the module cannot
//! read is listed as such while the others are listed too.

mod util;

use std::path::PathBuf;

use util::{TestBed, USER_PIN};

fn softhsm() -> String {
    util::module().to_string_lossy().into_owned()
}

#[test]
fn module_args_reach_c_initialize() {
    let bed = TestBed::new().native();
    let module = softhsm();
    // SoftHSM2 answers CKR_ARGUMENTS_BAD to any pReserved: the string reached it.
    bed.run(&["--module", &module, "--module-args", "x=1", "token", "list"])
        .fails(1, "refused the initialisation arguments given");
    bed.run_env(
        &["--module", &module, "token", "list"],
        &[("KEYWARD_MODULE_ARGS", "x=1")],
    )
    .fails(1, "C_Initialize: CKR_ARGUMENTS_BAD (0x7)");
    // An empty string passes none.
    let run = bed
        .run(&["--module", &module, "--module-args", "", "token", "list"])
        .ok();
    assert!(run.stdout.contains("Module: "), "{}", run.stdout);
}

#[test]
fn configured_module_args_go_with_the_configured_module_only() {
    let bed = TestBed::new().native();
    let module = softhsm();
    bed.write_config(&format!("module = {module:?}\nmodule_args = \"x=1\"\n"));
    bed.run(&["token", "list"])
        .fails(1, "refused the initialisation arguments given");
    // The flag's empty string overrides the file.
    bed.run(&["--module-args", "", "token", "list"]).ok();
    // A module named on the command line does not get the configured module's arguments.
    bed.run(&["--module", &module, "token", "list"]).ok();
}

#[test]
fn the_library_is_named_in_token_list() {
    let bed = TestBed::new();
    let list = bed.run(&["--json", "token", "list"]).ok().json();
    assert_eq!(list["library"]["manufacturer"], "SoftHSM", "{list}");
    let human = bed.run(&["token", "list"]).ok();
    assert!(human.stdout.contains("(SoftHSM "), "{}", human.stdout);
}

#[test]
fn a_token_the_module_does_not_recognise_is_listed_as_such_and_the_rest_too() {
    let bed = TestBed::new().native();
    let first = bed.init_token("first", USER_PIN);
    let second = bed.init_token("second", USER_PIN);
    let shim = util::shim_module();
    let shim = shim.to_string_lossy();
    let env = [
        ("KEYWARD_SHIM_MODULE", softhsm()),
        (
            "KEYWARD_SHIM_FAULT",
            "TOKEN_NOT_RECOGNIZED@C_GetTokenInfo:1".to_string(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let list = bed
        .run_env(&["--module", &shim, "--json", "token", "list"], &env)
        .ok()
        .json();
    let slots = list["slots"].as_array().expect("slots");
    let unreadable: Vec<&serde_json::Value> = slots
        .iter()
        .filter(|s| !s["unreadable"].is_null())
        .collect();
    assert_eq!(unreadable.len(), 1, "{list}");
    let why = unreadable[0]["unreadable"].as_str().unwrap();
    assert!(why.contains("not recognised"), "{why}");
    assert!(unreadable[0]["token"].is_null(), "{list}");
    let listed: Vec<&str> = slots
        .iter()
        .filter_map(|s| s["token"]["serial"].as_str())
        .collect();
    // Every other slot is listed: one of the two tokens and SoftHSM's free slot.
    assert_eq!(slots.len(), 3, "{list}");
    assert_eq!(listed.len(), 2, "{list}");
    assert!(
        listed.contains(&first.as_str()) ^ listed.contains(&second.as_str()),
        "{list}"
    );
    let human = bed
        .run_env(&["--module", &shim, "token", "list"], &env)
        .ok();
    assert!(
        human.stdout.contains("token not recognised by the module"),
        "{}",
        human.stdout
    );
    // A command on another token goes on past the unreadable one.
    let other = if listed.contains(&first.as_str()) {
        "first"
    } else {
        "second"
    };
    let info = bed
        .run_env(
            &[
                "--module", &shim, "--json", "token", "info", "--token", other,
            ],
            &env,
        )
        .ok()
        .json();
    assert_eq!(info["label"], other);
}

/// p11-kit's proxy, or a panic saying how to install it.
fn p11kit_proxy() -> String {
    for p in [
        "/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
        "/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
        "/usr/lib64/p11-kit-proxy.so",
    ] {
        if std::path::Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("p11-kit-proxy.so is not installed: apt-get install p11-kit-modules");
}

/// Through p11-kit's proxy, each `C_GetFunctionList` gives a new, uninitialised instance: the
/// context-specific login of a high-security key must use the one keyward initialised
/// (before, it failed with `CKR_CRYPTOKI_NOT_INITIALIZED`). The proxy finds this bed's SoftHSM
/// through Debian's p11-kit registration of SoftHSM2 and `SOFTHSM2_CONF`.
#[test]
fn a_high_security_signature_works_through_the_p11_kit_proxy() {
    let bed = TestBed::new().native();
    assert!(
        std::path::Path::new("/usr/share/p11-kit/modules/softhsm2.module").exists(),
        "SoftHSM2's p11-kit registration is missing: apt-get install softhsm2"
    );
    bed.init_token("proxied", USER_PIN);
    let proxy = p11kit_proxy();
    let env = [("KEYWARD_PIN", USER_PIN)];
    bed.run_env(
        &[
            "--module",
            &proxy,
            "keyset",
            "create",
            "high",
            "--token",
            "proxied",
            "--security",
            "high",
        ],
        &env,
    )
    .ok();
    let data = bed.file("data.txt", b"through the proxy\n");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    bed.run_env(
        &[
            "--module", &proxy, "keyset", "sign", "high", &data, "-o", &sig,
        ],
        &env,
    )
    .ok();
    bed.run_env(
        &["--module", &proxy, "keyset", "verify", "high", &data, &sig],
        &env,
    )
    .ok();
}

/// Runs keyward through the shim (wrapping SoftHSM2) with `fault` injected.
fn via_shim_with(bed: &TestBed, args: &[&str], fault: &str, env: &[(&str, &str)]) -> util::Run {
    let shim = util::shim_module();
    let shim = shim.to_string_lossy();
    let softhsm = softhsm();
    let mut all: Vec<(&str, &str)> = vec![
        ("KEYWARD_SHIM_MODULE", softhsm.as_str()),
        ("KEYWARD_SHIM_FAULT", fault),
    ];
    all.extend_from_slice(env);
    let mut argv = vec!["--module", &shim];
    argv.extend_from_slice(args);
    bed.run_env(&argv, &all)
}

/// A module that changes PINs only in a logged-in session (tpm2-pkcs11) answers `C_SetPIN`
/// with `CKR_USER_NOT_LOGGED_IN` (0x101): keyward logs in with the old PIN and changes it then.
#[test]
fn change_pin_logs_in_first_when_the_module_wants_it() {
    let bed = TestBed::new().native();
    bed.init_token("cp", USER_PIN);
    via_shim_with(
        &bed,
        &["token", "change-pin", "--token", "cp"],
        "0x101@C_SetPIN:1",
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_NEW_PIN", "user-secret-7"),
        ],
    )
    .ok();
    bed.pkcs11_tool_login("cp", "user-secret-7").ok();
    bed.pkcs11_tool_login("cp", USER_PIN)
        .refused("CKR_PIN_INCORRECT");
}

/// `C_InitToken` answering `CKR_FUNCTION_NOT_SUPPORTED` (a smart card), or refusing to
/// re-initialise (tpm2-pkcs11 answers `CKR_ARGUMENTS_BAD`): one sentence naming the module's own
/// tool, and the token unchanged.
#[test]
fn init_on_a_module_that_cannot_says_what_to_use() {
    let bed = TestBed::new().native();
    let env = [
        ("KEYWARD_SO_PIN", util::SO_PIN),
        ("KEYWARD_NEW_PIN", USER_PIN),
    ];
    let before = bed.token_snapshot();
    via_shim_with(
        &bed,
        &["token", "init", "--free", "--label", "card"],
        "0x54@C_InitToken:1",
        &env,
    )
    .fails(1, "cannot initialise token")
    .fails(1, "administration tool that comes with the module (SoftHSM");
    assert_eq!(bed.token_snapshot(), before, "the token changed");

    bed.init_token("card", USER_PIN);
    let before = bed.token_snapshot();
    via_shim_with(
        &bed,
        &[
            "token", "init", "--token", "card", "--label", "card2", "--force",
        ],
        "0x7@C_InitToken:1",
        &env,
    )
    .fails(1, "cannot re-initialise token \"card\" through PKCS#11")
    .fails(1, "nothing was changed");
    // keyward logs in as SO first (a wrong SO PIN, or a token without an SO, is refused before
    // C_InitToken wipes anything), and SoftHSM2 rewrites its token flags on every login: the
    // token's content is compared, not SoftHSM2's write counter (token.object's first 8 bytes).
    assert_eq!(
        without_write_counter(bed.token_snapshot()),
        without_write_counter(before),
        "the token changed"
    );
    // A wrong SO PIN is still a wrong SO PIN, not an unsupported re-initialisation.
    via_shim_with(
        &bed,
        &[
            "token", "init", "--token", "card", "--label", "card2", "--force",
        ],
        "0xa0@C_InitToken:1",
        &env,
    )
    .fails(1, "wrong SO PIN");
}

/// A SoftHSM2 token snapshot without the write counter that leads `token.object`.
fn without_write_counter(mut files: Vec<(PathBuf, Vec<u8>)>) -> Vec<(PathBuf, Vec<u8>)> {
    for (path, bytes) in &mut files {
        if path.file_name().is_some_and(|n| n == "token.object") && bytes.len() >= 8 {
            bytes[..8].fill(0);
        }
    }
    files
}
