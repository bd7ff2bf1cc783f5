//! Token identity (issue 10, item 4) on NSS softokn, whose two tokens share the serial
//! `0000000000000000`: keyward needs its module arguments, tells the tokens apart by label, records
//! manufacturer, model, serial and label, and calls a URI that matches both "ambiguous" with the
//! URI of each. The NSS database is made here with `certutil`.

mod util;

use std::path::{Path, PathBuf};

use util::TestBed;

const NSS_PIN: &str = "nss-pin-12345";
const DB_TOKEN: &str = "NSS Certificate DB";
const ZERO_SERIAL: &str = "0000000000000000";

/// NSS softokn, or a panic saying how to install it.
fn softokn() -> String {
    for p in [
        "/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
        "/usr/lib/aarch64-linux-gnu/libsoftokn3.so",
        "/usr/lib64/libsoftokn3.so",
    ] {
        if Path::new(p).exists() {
            return p.to_string();
        }
    }
    panic!("NSS softokn (libsoftokn3.so) is not installed: apt-get install libnss3");
}

/// A bed with an NSS database whose user PIN is [`NSS_PIN`]; returns the module arguments.
fn nss_bed() -> (TestBed, String) {
    let bed = TestBed::new().native();
    let db: PathBuf = bed.path("nssdb");
    std::fs::create_dir_all(&db).expect("nss db dir");
    let pw = bed.secret_file("nss-pw", NSS_PIN);
    let db_arg = format!("sql:{}", db.display());
    bed.run_tool(
        "certutil",
        "libnss3-tools",
        &["-N", "-d", &db_arg, "-f", &pw.to_string_lossy()],
    )
    .ok();
    let args = format!("configdir='{db_arg}' certPrefix='' keyPrefix='' secmod='secmod.db' flags=");
    (bed, args)
}

fn nss(bed: &TestBed, args: &str, cmd: &[&str]) -> util::Run {
    let module = softokn();
    bed.run_env(
        cmd,
        &[
            ("KEYWARD_MODULE", module.as_str()),
            ("KEYWARD_MODULE_ARGS", args),
            ("KEYWARD_PIN", NSS_PIN),
        ],
    )
}

#[test]
fn without_its_arguments_nss_fails_with_what_to_pass() {
    let (bed, _) = nss_bed();
    let module = softokn();
    bed.run(&["--module", &module, "token", "list"])
        .fails(1, "--module-args");
}

#[test]
fn both_tokens_share_a_serial_and_are_told_apart_by_label() {
    let (bed, args) = nss_bed();
    let list = nss(&bed, &args, &["--json", "token", "list"]).ok().json();
    let tokens: Vec<&serde_json::Value> = list["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .filter_map(|s| s.get("token").filter(|t| !t.is_null()))
        .collect();
    assert_eq!(tokens.len(), 2, "{list}");
    for t in &tokens {
        assert_eq!(t["serial"], ZERO_SERIAL, "{list}");
    }
    // The keyset goes on the Certificate DB and stays there: signing finds that token, not the
    // other one with the same serial.
    nss(
        &bed,
        &args,
        &["keyset", "create", "alice", "--token", DB_TOKEN],
    )
    .ok();
    let shown = nss(&bed, &args, &["--json", "keyset", "show", "alice"])
        .ok()
        .json();
    assert_eq!(shown["token_label"], DB_TOKEN);
    assert_eq!(shown["token_serial"], ZERO_SERIAL);
    assert_eq!(shown["token_manufacturer"], "Mozilla Foundation");
    assert_eq!(shown["token_model"], "NSS 3");
    assert_eq!(shown["token_status"], "present", "{shown}");
    let uri = shown["signing_key_uri"].as_str().unwrap();
    assert!(
        uri.contains("manufacturer=Mozilla%20Foundation") && uri.contains("model=NSS%203"),
        "{uri}"
    );
    let data = bed.file("data.txt", b"signed on the right token\n");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    nss(&bed, &args, &["keyset", "sign", "alice", &data, "-o", &sig]).ok();
    nss(&bed, &args, &["keyset", "verify", "alice", &data, &sig]).ok();
}

#[test]
fn a_uri_with_manufacturer_and_model_picks_or_is_ambiguous() {
    let (bed, args) = nss_bed();
    let both = "pkcs11:manufacturer=Mozilla%20Foundation;model=NSS%203";
    let run = nss(&bed, &args, &["token", "info", "--token", both]).fails(1, "ambiguous");
    for label in [
        "NSS%20Certificate%20DB",
        "NSS%20Generic%20Crypto%20Services",
    ] {
        assert!(
            run.stderr.contains(&format!("pkcs11:token={label};")),
            "{label}: {}",
            run.stderr
        );
    }
    let one = format!("{both};token=NSS%20Certificate%20DB;serial={ZERO_SERIAL}");
    let info = nss(&bed, &args, &["--json", "token", "info", "--token", &one])
        .ok()
        .json();
    assert_eq!(info["label"], DB_TOKEN);
}

#[test]
fn config_toml_carries_the_module_and_its_arguments() {
    let (bed, args) = nss_bed();
    let module = softokn();
    bed.write_config(&format!(
        "module = {module:?}\nmodule_args = {}\n",
        toml_string(&args)
    ));
    let info = bed
        .run(&["--json", "token", "info", "--token", DB_TOKEN])
        .ok()
        .json();
    assert_eq!(info["serial"], ZERO_SERIAL);
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}
