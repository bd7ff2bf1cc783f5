//! keyward's keysets as other PKCS#11 tools see and use them: OpenSC pkcs11-tool, GnuTLS
//! p11tool, OpenSSH ssh-keygen, and OpenSSL (the PKCS#11 engine and plain `openssl dgst`), on a
//! throw-away SoftHSM2 token per test.

mod util;

use std::path::PathBuf;

use util::{TestBed, USER_PIN};

const CARD: &str = "card";

fn module_arg() -> String {
    util::module().to_string_lossy().into_owned()
}

/// A bed with one token and two keysets on it: "RSA key" (RSA-2048) and "EC key" (P-256).
fn bed_with_keysets() -> TestBed {
    let bed = TestBed::new();
    bed.init_token(CARD, USER_PIN);
    bed.create_keyset("RSA key", CARD, USER_PIN, &[]).ok();
    bed.create_keyset("EC key", CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    bed
}

const KEYSETS: [&str; 2] = ["RSA key", "EC key"];

fn field(shown: &serde_json::Value, key: &str) -> String {
    shown[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {shown}"))
        .to_string()
}

/// Writes the keyset's public key (from `keyward keyset pubkey`) to a file.
fn pubkey_file(bed: &TestBed, name: &str) -> String {
    let pem = bed.run(&["keyset", "pubkey", name]).ok().stdout;
    bed.file(&format!("{name}.pub.pem"), pem.as_bytes())
}

#[test]
fn pkcs11_tool_shows_the_keys_with_one_id_and_their_attributes() {
    let bed = bed_with_keysets();
    let objects = bed.token_objects(CARD, USER_PIN);
    assert_eq!(objects.len(), 4, "{objects:#?}");
    for (name, algo) in [("RSA key", "RSA"), ("EC key", "EC")] {
        let id = field(&bed.keyset_json(name), "signing_id");
        let mine: Vec<_> = objects.iter().filter(|o| o.get("ID") == id).collect();
        assert_eq!(mine.len(), 2, "one private and one public key share {id}");

        let private = mine
            .iter()
            .find(|o| o.is_private_key())
            .unwrap_or_else(|| panic!("no private key with {id}: {mine:#?}"));
        assert!(private.header.contains(algo), "{}", private.header);
        assert_eq!(private.get("label"), format!("{name} signing key"));
        assert_eq!(private.items("Usage"), ["sign"], "signing only");
        let access = private.items("Access");
        for want in ["sensitive", "always sensitive", "never extractable"] {
            assert!(access.iter().any(|a| a == want), "{want}: {access:?}");
        }
        assert!(
            !access.iter().any(|a| a == "extractable"),
            "not extractable: {access:?}"
        );

        let public = mine
            .iter()
            .find(|o| o.is_public_key())
            .unwrap_or_else(|| panic!("no public key with {id}: {mine:#?}"));
        assert!(public.header.contains(algo), "{}", public.header);
        assert_eq!(public.get("label"), format!("{name} signing key (public)"));
        assert_eq!(public.items("Usage"), ["verify"]);
    }

    // The private keys are CKA_PRIVATE: without a login only the public keys show.
    let m = module_arg();
    let run = bed
        .run_tool(
            "pkcs11-tool",
            "opensc",
            &["--module", &m, "--token-label", CARD, "-O"],
        )
        .ok();
    let public_only = util::parse_pkcs11_tool_objects(&run.stdout);
    assert_eq!(public_only.len(), 2, "{}", run.stdout);
    assert!(public_only.iter().all(|o| o.is_public_key()));
}

/// The objects `p11tool --list-all --login` prints, as (Type, Label, Flags, ID) per object.
fn p11tool_objects(bed: &TestBed, url: &str) -> Vec<[String; 4]> {
    let m = module_arg();
    let run = bed
        .tool("p11tool", "gnutls-bin")
        .env("GNUTLS_PIN", USER_PIN)
        .args(["--provider", &m, "--list-all", "--login", url])
        .output()
        .expect("run p11tool");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "p11tool failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut out: Vec<[String; 4]> = Vec::new();
    for line in stdout.lines() {
        if line.starts_with("Object ") {
            out.push(Default::default());
        }
        let Some(obj) = out.last_mut() else { continue };
        let Some((k, v)) = line.trim().split_once(':') else {
            continue;
        };
        let slot = match k {
            "Type" => 0,
            "Label" => 1,
            "Flags" => 2,
            "ID" => 3,
            _ => continue,
        };
        obj[slot] = v.trim().to_string();
    }
    out
}

/// `ab:cd:…`, as p11tool prints ids.
fn colon_hex(hex: &str) -> String {
    (0..hex.len())
        .step_by(2)
        .map(|i| &hex[i..i + 2])
        .collect::<Vec<_>>()
        .join(":")
}

#[test]
fn p11tool_lists_the_keys_with_one_shared_id_and_accepts_keywards_uris() {
    let bed = bed_with_keysets();
    let all = p11tool_objects(&bed, &format!("pkcs11:token={CARD}"));
    assert_eq!(all.len(), 4, "{all:#?}");
    for (name, kind) in [("RSA key", "RSA-2048"), ("EC key", "EC")] {
        let shown = bed.keyset_json(name);
        let id = colon_hex(&field(&shown, "signing_id"));
        let mine: Vec<_> = all.iter().filter(|o| o[3] == id).collect();
        assert_eq!(mine.len(), 2, "{name}: {all:#?}");
        let private = mine
            .iter()
            .find(|o| o[0].starts_with("Private key"))
            .expect("private key");
        assert!(private[0].contains(kind), "{private:?}");
        assert_eq!(private[1], format!("{name} signing key"));
        for flag in ["CKA_PRIVATE", "CKA_SENSITIVE", "CKA_NEVER_EXTRACTABLE"] {
            assert!(private[2].contains(flag), "{flag}: {private:?}");
        }
        let public = mine
            .iter()
            .find(|o| o[0].starts_with("Public key"))
            .expect("public key");
        assert!(public[0].contains(kind), "{public:?}");
        assert_eq!(public[1], format!("{name} signing key (public)"));

        // keyward's own pkcs11: URIs select exactly its key in p11tool.
        for (uri_field, want) in [
            ("signing_key_uri", "Private key"),
            ("public_key_uri", "Public key"),
        ] {
            let found = p11tool_objects(&bed, &field(&shown, uri_field));
            assert_eq!(found.len(), 1, "{uri_field}: {found:#?}");
            assert!(found[0][0].starts_with(want), "{found:?}");
            assert_eq!(found[0][3], id);
        }
    }
}

#[test]
fn ssh_keygen_lists_the_public_keys_keyward_exports() {
    let bed = bed_with_keysets();
    let m = module_arg();
    // ssh-keygen -D reads public keys without a PIN.
    let listed = bed
        .run_tool("ssh-keygen", "openssh-client", &["-D", &m])
        .ok();
    let listed: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (name, ssh_type) in [("RSA key", "ssh-rsa"), ("EC key", "ecdsa-sha2-nistp256")] {
        let pem = pubkey_file(&bed, name);
        let converted = bed
            .run_tool(
                "ssh-keygen",
                "openssh-client",
                &["-i", "-m", "PKCS8", "-f", &pem],
            )
            .ok();
        let mut want = converted.stdout.split_whitespace();
        let (kind, blob) = (want.next().unwrap(), want.next().unwrap());
        assert_eq!(kind, ssh_type);
        let line = listed
            .iter()
            .find(|l| l.split_whitespace().nth(1) == Some(blob))
            .unwrap_or_else(|| panic!("{name}'s key not in ssh-keygen -D: {listed:?}"));
        assert!(line.starts_with(ssh_type), "{line}");
        assert!(
            line.ends_with(&format!("{name} signing key (public)")),
            "{line}"
        );
    }
}

/// OpenSSL's directory of engines, with the PKCS#11 engine in it, or a panic saying how to get it.
fn pkcs11_engine() -> PathBuf {
    util::require_tool("openssl", "openssl");
    let out = std::process::Command::new("openssl")
        .args(["version", "-e"])
        .output()
        .expect("openssl version -e");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let dir = text
        .split('"')
        .nth(1)
        .unwrap_or_else(|| panic!("no ENGINESDIR in {text:?}"));
    let engine = PathBuf::from(dir).join("pkcs11.so");
    assert!(
        engine.exists(),
        "the OpenSSL PKCS#11 engine is not installed at {}: apt-get install libengine-pkcs11-openssl",
        engine.display()
    );
    engine
}

#[test]
fn a_signature_made_through_the_openssl_pkcs11_engine_verifies_with_keyward() {
    pkcs11_engine();
    let bed = bed_with_keysets();
    let data = bed.file("data.txt", b"signed through OpenSSL's PKCS#11 engine\n");
    let other = bed.file("other.txt", b"not what was signed\n");
    for name in KEYSETS {
        let uri = field(&bed.keyset_json(name), "signing_key_uri");
        let sig = bed
            .path(&format!("{name}.sig"))
            .to_string_lossy()
            .into_owned();
        bed.tool("openssl", "openssl")
            .env("PKCS11_MODULE_PATH", util::module())
            .args([
                "dgst",
                "-sha256",
                "-engine",
                "pkcs11",
                "-keyform",
                "engine",
                "-sign",
                &format!("{uri};pin-value={USER_PIN}"),
                "-out",
                &sig,
                &data,
            ])
            .status()
            .map(|s| assert!(s.success(), "openssl engine signing with {uri} failed"))
            .expect("run openssl");
        let ok = bed.run(&["keyset", "verify", name, &data, &sig]).ok();
        assert!(ok.stdout.contains("signature OK"), "{}", ok.stdout);
        bed.run(&["keyset", "verify", name, &other, &sig])
            .fails(3, "does NOT verify");
    }
}

#[test]
fn a_signature_made_by_keyward_verifies_with_openssl() {
    let bed = bed_with_keysets();
    let data = bed.file("data.txt", b"signed by keyward\n");
    let other = bed.file("other.txt", b"signed by keyward?\n");
    for name in KEYSETS {
        let sig = bed
            .path(&format!("{name}.sig"))
            .to_string_lossy()
            .into_owned();
        bed.run_env(
            &["keyset", "sign", name, &data, "-o", &sig],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
        let pem = pubkey_file(&bed, name);
        let ok = bed
            .run_tool(
                "openssl",
                "openssl",
                &[
                    "dgst",
                    "-sha256",
                    "-verify",
                    &pem,
                    "-signature",
                    &sig,
                    &data,
                ],
            )
            .ok();
        assert!(ok.stdout.contains("Verified OK"), "{}", ok.stdout);
        bed.run_tool(
            "openssl",
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-verify",
                &pem,
                "-signature",
                &sig,
                &other,
            ],
        )
        .refused("Verification failure");
    }
    // The other keyset's key does not verify it.
    let ec_pem = pubkey_file(&bed, "EC key");
    let rsa_sig = bed.path("RSA key.sig").to_string_lossy().into_owned();
    bed.run_tool(
        "openssl",
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &ec_pem,
            "-signature",
            &rsa_sig,
            &data,
        ],
    )
    .refused("Error verifying data");
}
