//! `keyset adopt` on SoftHSM2: keys and certificates made by another tool (OpenSC's
//! pkcs11-tool, OpenSSL), then adopted by usage and `CKA_ID` or by URI, and used.
//! (The same on a real driver stack and a PIV card: tests/piv_card.rs.)

mod util;

use util::*;

const TOKEN: &str = "adoptee";

/// pkcs11-tool on the bed's SoftHSM token, logged in.
fn p11(bed: &TestBed, args: &[&str]) -> Run {
    let module = module();
    let mut all = vec![
        "--module",
        module.to_str().unwrap(),
        "--token-label",
        TOKEN,
        "--login",
        "--pin",
        USER_PIN,
    ];
    all.extend_from_slice(args);
    bed.run_tool("pkcs11-tool", "opensc", &all)
}

/// An RSA-2048 key pair made by pkcs11-tool with `id`, `label` and usage flags.
fn keypair(bed: &TestBed, id: &str, label: &str, usage: &[&str]) {
    let mut args = vec![
        "--keypairgen",
        "--key-type",
        "rsa:2048",
        "--id",
        id,
        "--label",
        label,
    ];
    args.extend_from_slice(usage);
    p11(bed, &args).ok();
}

/// A certificate for the public key `id` (issued by a throw-away CA), stored with that id.
fn certify(bed: &TestBed, id: &str) -> String {
    let path = |n: &str| {
        bed.path(&format!("{id}.{n}"))
            .to_string_lossy()
            .into_owned()
    };
    let openssl = |args: &[&str]| bed.run_tool("openssl", "openssl", args).ok();
    p11(
        bed,
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            id,
            "-o",
            &path("pub.der"),
        ],
    )
    .ok();
    openssl(&[
        "pkey",
        "-pubin",
        "-inform",
        "DER",
        "-in",
        &path("pub.der"),
        "-out",
        &path("pub.pem"),
    ]);
    let (ca_key, ca) = (path("ca.key"), path("ca.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
        "-subj",
        "/CN=Test CA",
        "-days",
        "30",
    ]);
    openssl(&[
        "x509",
        "-new",
        "-subj",
        &format!("/CN=key {id}"),
        "-force_pubkey",
        &path("pub.pem"),
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-days",
        "30",
        "-outform",
        "DER",
        "-out",
        &path("cert.der"),
    ]);
    p11(
        bed,
        &[
            "--write-object",
            &path("cert.der"),
            "--type",
            "cert",
            "--id",
            id,
            "--label",
            &format!("cert {id}"),
        ],
    )
    .ok();
    path("cert.der")
}

fn adopt(bed: &TestBed, name: &str, extra: &[&str]) -> Run {
    let mut args = vec!["keyset", "adopt", name, "--token", TOKEN];
    args.extend_from_slice(extra);
    bed.run_env(&args, &[("KEYWARD_PIN", USER_PIN)])
}

fn sign_and_verify(bed: &TestBed, name: &str) {
    let data = bed.file("data.txt", b"adopted\n");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    bed.run_env(
        &["keyset", "sign", name, &data, "-o", &sig],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .ok();
    bed.run(&["keyset", "verify", name, &data, &sig]).ok();
}

#[test]
fn keys_made_by_other_tools_are_adopted_by_usage_and_used() {
    let bed = TestBed::new();
    bed.init_token(TOKEN, USER_PIN);
    // No key at all: nothing to adopt, said as such.
    adopt(&bed, "Soft", &[]).fails(1, "no private key that can sign");

    keypair(&bed, "0a", "sig", &["--usage-sign"]);
    keypair(&bed, "0b", "dec", &["--usage-decrypt"]);
    // SoftHSM lets both keys sign and decrypt (pkcs11-tool sets only the usage it is given,
    // SoftHSM's defaults do the rest): which one signs must be said.
    let run = adopt(&bed, "Soft", &[]).fails(1, "ambiguous: 2 private keys");
    for id in ["id=%0A", "id=%0B"] {
        assert!(run.stderr.contains(id), "{id} not listed: {}", run.stderr);
    }
    // The other key is then the decryption key, which needs its certificate: mail is
    // addressed to one.
    let sig = ["--signing-key", "pkcs11:object=sig;type=private"];
    adopt(&bed, "Soft", &sig).fails(1, "has no certificate");
    let cert = certify(&bed, "0b");

    let run = adopt(&bed, "Soft", &sig).ok();
    assert!(run.stdout.contains("security standard"), "{}", run.stdout);
    let shown = bed.keyset_json("Soft");
    assert_eq!(shown["signing_id"], "0a", "{shown}");
    assert_eq!(shown["adopted"]["decryption_key"]["id"], "0b", "{shown}");
    let pem = bed.run(&["keyset", "cert", "Soft", "--encryption"]).ok();
    let der = bed
        .run_tool(
            "openssl",
            "openssl",
            &["x509", "-inform", "DER", "-in", &cert],
        )
        .ok();
    assert_eq!(pem.stdout.trim(), der.stdout.trim());
    sign_and_verify(&bed, "Soft");
    // The name is taken.
    adopt(&bed, "soft", &sig).fails(1, "already exists");
}

#[test]
fn two_candidates_are_ambiguous_until_a_uri_names_one() {
    let bed = TestBed::new();
    bed.init_token(TOKEN, USER_PIN);
    p11(
        &bed,
        &[
            "--keypairgen",
            "--key-type",
            "EC:prime256v1",
            "--id",
            "0a",
            "--label",
            "ec",
        ],
    )
    .ok();
    keypair(&bed, "0c", "high", &["--usage-sign", "--always-auth"]);
    let run = adopt(&bed, "High", &[]).fails(1, "ambiguous: 2 private keys");
    for id in ["id=%0A", "id=%0C"] {
        assert!(run.stderr.contains(id), "{id} not listed: {}", run.stderr);
    }
    assert!(bed.registry_text().is_none_or(|t| !t.contains("High")));
    // A URI that matches nothing lists what there is.
    adopt(&bed, "High", &["--signing-key", "pkcs11:id=%ff"]).fails(1, "no private key");
    // A URI naming another kind of object.
    adopt(&bed, "High", &["--signing-key", "pkcs11:id=%0c;type=cert"])
        .fails(1, "name the private key");

    // CKA_ALWAYS_AUTHENTICATE gives security high; the signature does the context login.
    let run = adopt(&bed, "High", &["--signing-key", "pkcs11:object=high"]).ok();
    assert!(run.stdout.contains("security high"), "{}", run.stdout);
    assert_eq!(bed.keyset_json("High")["signing_id"], "0c");
    sign_and_verify(&bed, "High");

    // No decryption key on the token: the keyset signs, it cannot read mail.
    let msg = bed.file("msg.p7m", b"not a message");
    bed.run_env(
        &["read", "--keyset", "High", &msg],
        &[("KEYWARD_PIN", USER_PIN)],
    )
    .fails(1, "without a decryption key");

    // The password is the token PIN, and changes like any keyset's.
    bed.run_env(
        &["keyset", "passwd", "High"],
        &[
            ("KEYWARD_PIN", USER_PIN),
            ("KEYWARD_NEW_PIN", "user-secret-2"),
        ],
    )
    .ok();
    let data = bed.file("data.txt", b"x");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    bed.run_env(
        &["keyset", "sign", "High", &data, "-o", &sig],
        &[("KEYWARD_PIN", "user-secret-2")],
    )
    .ok();

    // Adopted keys are not keyward's to destroy.
    bed.run_env(
        &["keyset", "remove", "High", "--destroy-keys", "--yes"],
        &[("KEYWARD_PIN", "user-secret-2")],
    )
    .fails(1, "was adopted");
    bed.run(&["keyset", "remove", "High", "--yes"]).ok();
    let objects = bed.token_objects(TOKEN, "user-secret-2");
    assert_eq!(
        objects.iter().filter(|o| o.is_private_key()).count(),
        2,
        "the keys stay on the token"
    );
}
