//! `authority rollover --archive` on SoftHSM2 with the real binary: a new archive key on the
//! authority's token, every archived key re-wrapped under it; stopped between batches it is
//! resumed by running it again, `authority process` refusing meanwhile; afterwards the old key
//! is gone, and a recovered user still gets the archived key back (it unwraps under the new key).

mod util;

use util::{AuthorityBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

fn config(bed: &AuthorityBed) -> serde_json::Value {
    serde_json::from_slice(&bed.state_file("authority.toml")).expect("the configuration record")
}

/// `CKA_ID`s of the secret keys on the authority's token.
fn secret_key_ids(bed: &AuthorityBed) -> Vec<String> {
    bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN)
        .iter()
        .filter(|o| o.header.starts_with("Secret Key Object"))
        .map(|o| o.get("ID").to_string())
        .collect()
}

fn archive_blobs(bed: &AuthorityBed) -> Vec<Vec<u8>> {
    let db = bed.db().unwrap();
    let mut stmt = db
        .prepare("SELECT body FROM records WHERE kind = 'archive' ORDER BY key")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

#[test]
fn archive_rollover_resumes_and_old_keys_still_recover() {
    let bed = AuthorityBed::new(
        &["alice-card", "bob-card", "alice-card-2"],
        "CN=Rollover Authority,O=Example",
    );
    for (user, keyset, card) in [
        ("alice", "Alice 1", "alice-card"),
        ("bob", "Bob 1", "bob-card"),
    ] {
        let key = bed.add_user(user, &[]);
        bed.enroll_local(user, keyset, card, &key, &[], &[]).ok();
    }
    let old_id = config(&bed)["archive_key_id"].as_str().unwrap().to_string();
    assert_eq!(secret_key_ids(&bed), vec![old_id.clone()]);
    let blobs = archive_blobs(&bed);
    assert_eq!(blobs.len(), 2);

    // Stopped after the first batch (one key per batch here): one key re-wrapped, recorded.
    bed.authority_env(
        "rollover",
        &["--archive"],
        &[
            ("KEYWARD_ROLLOVER_BATCH", "1"),
            ("KEYWARD_FAULT", "rollover-batch-2"),
        ],
    )
    .fails(1, "injected fault");
    let half = archive_blobs(&bed);
    assert_eq!(half.iter().zip(&blobs).filter(|(a, b)| a != b).count(), 1);
    assert_eq!(config(&bed)["archive_key_id"], old_id.as_str());
    assert_eq!(secret_key_ids(&bed).len(), 2, "old and new key meanwhile");
    // Meanwhile the archive is under two keys: process refuses, with nothing changed.
    let key = bed.add_user("carol", &[]);
    bed.request("carol", "Carol 1", "alice-card-2", &key, "c.req")
        .ok();
    let users = bed.users();
    bed.process("c.req", "c.reply")
        .fails(1, "archive key rollover started");
    assert_eq!(bed.users(), users);
    assert!(!bed.path("c.reply").exists());

    // Resumed: finished, every blob re-wrapped, the old key gone, the log verifies.
    let run = bed
        .authority_env(
            "rollover",
            &["--archive"],
            &[("KEYWARD_ROLLOVER_BATCH", "1")],
        )
        .ok();
    assert!(
        run.stdout
            .contains("finished the archive key rollover: 2 archived keys"),
        "{}",
        run.stdout
    );
    let new_id = config(&bed)["archive_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(secret_key_ids(&bed), vec![new_id.clone()]);
    let after = archive_blobs(&bed);
    assert!(after.iter().zip(&blobs).all(|(a, b)| a != b));
    bed.authority("log", &["--verify"]).ok();
    let log = bed.authority("log", &[]).ok().stdout;
    assert!(log.contains("rollover"), "{log}");

    // The archived keys still come back: Alice recovers onto a new card and gets hers.
    let key = bed
        .authority("recover", &["alice"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let other_home = bed.path("home-2").to_string_lossy().into_owned();
    bed.bed
        .run_env(
            &[
                "--home",
                &other_home,
                "enroll",
                "--user",
                "alice",
                "--keyset",
                "Alice 2",
                "--token",
                "alice-card-2",
                "--authority",
                &bed.dir,
            ],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
                ("KEYWARD_TEMP_KEY", &key),
            ],
        )
        .ok();
    assert_eq!(bed.user("alice")["archived_keys"], 2);

    // A second rollover starts afresh.
    bed.authority("rollover", &["--archive"]).ok();
    assert_ne!(config(&bed)["archive_key_id"], new_id.as_str());
    assert_eq!(secret_key_ids(&bed).len(), 1);
}

// ---- `authority rollover --ca` ---------------------------------------------------------------

/// The registry's record of a keyset (keysets.toml, as TOML).
fn registry_keyset(bed: &AuthorityBed, name: &str) -> toml::Table {
    let text = bed.bed.registry_text().expect("keysets.toml");
    let table: toml::Table = toml::from_str(&text).expect("keysets.toml parses");
    table["keyset"]
        .as_array()
        .expect("keyset array")
        .iter()
        .filter_map(|k| k.as_table())
        .find(|k| k["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no keyset {name} in keysets.toml"))
        .clone()
}

/// The signing certificate (PEM) the registry records for a keyset, written to a file.
fn signing_cert_file(bed: &AuthorityBed, keyset: &str, file: &str) -> String {
    let k = registry_keyset(bed, keyset);
    let pem = k["enrollment"]["signing_certificate"]
        .as_str()
        .expect("signing certificate")
        .to_string();
    bed.bed.file(file, pem.as_bytes())
}

/// `openssl verify -CAfile CA [-untrusted LINKS] CERT`.
fn openssl_verify(bed: &AuthorityBed, ca: &str, untrusted: Option<&str>, cert: &str) -> util::Run {
    let mut args = vec!["verify", "-purpose", "smimesign", "-CAfile", ca];
    if let Some(u) = untrusted {
        args.extend_from_slice(&["-untrusted", u]);
    }
    args.push(cert);
    bed.bed.run_tool("openssl", "openssl", &args)
}

/// The CA chain `authority cert --all --json` prints: (role, PEM) pairs.
fn chain(bed: &AuthorityBed) -> Vec<(String, String)> {
    let out = bed
        .bed
        .run(&["--json", "authority", "cert", "--all", "--dir", &bed.dir])
        .ok()
        .json();
    out["chain"]
        .as_array()
        .expect("a chain array")
        .iter()
        .map(|c| {
            (
                c["role"].as_str().unwrap().to_string(),
                c["pem"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn first_pem(text: &str) -> String {
    util::pem_blocks(text)
        .into_iter()
        .next()
        .expect("a PEM block")
}

#[test]
fn ca_rollover_story_old_and_new_users_interoperate() {
    let bed = AuthorityBed::new(&["alice-card", "bob-card"], "CN=Rollover CA,O=Example");
    let key = bed.add_user("alice", &["--email", "alice@example.org"]);
    bed.enroll_local("alice", "Alice 1", "alice-card", &key, &[], &[])
        .ok();
    let old_root = bed.ca.clone();
    let old_config = config(&bed);

    // A dry run checks the token and says what it would do; nothing changes.
    let files = bed.state_files();
    let log = bed.state_file("audit.log");
    let objects = secret_and_private(&bed);
    let dry = bed.authority("rollover", &["--ca", "--dry-run"]).ok();
    assert!(
        dry.stdout.contains("would roll the CA key over"),
        "{}",
        dry.stdout
    );
    assert_eq!(bed.state_file("audit.log"), log);
    assert_eq!(bed.state_files(), files);
    assert_eq!(secret_and_private(&bed), objects);

    let run = bed.authority("rollover", &["--ca"]).ok();
    assert!(run.stdout.contains("CA generation 2"), "{}", run.stdout);
    let after = config(&bed);
    assert_ne!(after["ca_key_id"], old_config["ca_key_id"]);
    assert_eq!(after["previous_cas"][0]["key_id"], old_config["ca_key_id"]);
    // The old CA key stays on the token (for CRLs of what it issued), next to the new one.
    assert_eq!(private_ids(&bed).len(), objects.1.len() + 1);
    bed.authority("log", &["--verify"]).ok();
    bed.authority("log", &["--verify", "--ca", &old_root]).ok();

    // The current CA, and the chain: old root, new root, and the two links.
    let cert = bed
        .bed
        .run(&["authority", "cert", "--dir", &bed.dir])
        .ok()
        .stdout;
    let new_root_pem = first_pem(&cert);
    assert_ne!(
        new_root_pem,
        first_pem(&std::fs::read_to_string(&old_root).unwrap())
    );
    let new_root = bed.bed.file("new-root.pem", new_root_pem.as_bytes());
    bed.authority("log", &["--verify", "--ca", &new_root]).ok();
    let chain = chain(&bed);
    let roles: Vec<&str> = chain.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        roles,
        [
            "ca",
            "exchange",
            "previous-ca",
            "link-new-with-old",
            "link-old-with-new"
        ],
        "{chain:?}"
    );
    let new_with_old = bed.bed.file("new-with-old.pem", chain[3].1.as_bytes());
    let old_with_new = bed.bed.file("old-with-new.pem", chain[4].1.as_bytes());

    // Bob enrolls after the rollover: his certificate comes from the new CA.
    let key = bed.add_user("bob", &["--email", "bob@example.org"]);
    bed.enroll_local("bob", "Bob 1", "bob-card", &key, &[], &[])
        .ok();
    let alice_cert = signing_cert_file(&bed, "Alice 1", "alice-sign.pem");
    let bob_cert = signing_cert_file(&bed, "Bob 1", "bob-sign.pem");
    // OpenSSL: each user's certificate verifies trusting only either root, with the link as
    // an untrusted intermediate, and not without it.
    openssl_verify(&bed, &new_root, None, &bob_cert).ok();
    openssl_verify(&bed, &old_root, Some(&new_with_old), &bob_cert).ok();
    assert_ne!(openssl_verify(&bed, &old_root, None, &bob_cert).code, 0);
    openssl_verify(&bed, &old_root, None, &alice_cert).ok();
    openssl_verify(&bed, &new_root, Some(&old_with_new), &alice_cert).ok();
    assert_ne!(openssl_verify(&bed, &new_root, None, &alice_cert).code, 0);

    // Alice (enrolled before) and Bob (after) exchange signed and encrypted mail both ways.
    let letter = bed.bed.file("letter.txt", b"across the rollover\n");
    for (from, to, out) in [
        ("Alice 1", "Bob 1", "a2b.msg"),
        ("Bob 1", "Alice 1", "b2a.msg"),
    ] {
        let out = bed.bed.path(out).to_string_lossy().into_owned();
        bed.bed
            .run_env(
                &["send", "--keyset", from, "--to", to, &letter, "-o", &out],
                &[("KEYWARD_PIN", USER_PIN)],
            )
            .ok();
        let plain = bed.bed.path("plain.out").to_string_lossy().into_owned();
        let _ = std::fs::remove_file(&plain);
        bed.bed
            .run_env(
                &["read", "--keyset", to, &out, "-o", &plain],
                &[("KEYWARD_PIN", USER_PIN)],
            )
            .ok();
        assert_eq!(std::fs::read(&plain).unwrap(), b"across the rollover\n");
    }

    // OpenSSL: each message decrypted with the recipient's token key, then its signature
    // and its signer's path checked in one `cms -verify`, trusting only the other root, the
    // link certificate given with -certfile: Bob's (new CA) with the old root, Alice's
    // (enrolled before the rollover, her keyset knows no link) with the new root. Neither
    // message carries its root (RFC 5652 lets the sender leave out the trust anchor), so
    // OpenSSL does not stop at the sender's root.
    for (msg, recipient, root, link, links_known) in [
        ("b2a.msg", "Alice 1", &old_root, &new_with_old, true),
        ("a2b.msg", "Bob 1", &new_root, &old_with_new, false),
    ] {
        let k = bed.keyset_json(recipient);
        let enc = k["enrollment"]["encryption_keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["current"] == true)
            .unwrap()
            .clone();
        let key = format!(
            "pkcs11:token={};id={};type=private;pin-value={USER_PIN}",
            k["token_label"].as_str().unwrap(),
            pct(enc["id"].as_str().unwrap())
        );
        let pem = bed
            .bed
            .run(&["keyset", "cert", recipient, "--encryption"])
            .ok()
            .stdout;
        let cert = bed.bed.file(&format!("{msg}.enc.pem"), pem.as_bytes());
        let path = bed.bed.path(msg).to_string_lossy().into_owned();
        let inner = format!("{path}.inner");
        bed.bed
            .openssl_engine(&[
                "cms", "-decrypt", "-inform", "DER", "-in", &path, "-recip", &cert, "-inkey", &key,
                "-keyform", "engine", "-out", &inner,
            ])
            .ok();
        let content = format!("{path}.content");
        let signer = format!("{path}.signer");
        // The root and the link in -CAfile: OpenSSL takes -certfile certificates only as
        // candidates for the signer's, not for its path.
        let trust = bed.bed.file(
            &format!("{msg}.trust.pem"),
            format!(
                "{}{}",
                std::fs::read_to_string(root).unwrap(),
                std::fs::read_to_string(link).unwrap()
            )
            .as_bytes(),
        );
        let certs = format!("{path}.certs");
        let verify = |ca: &str| {
            bed.bed.run_tool(
                "openssl",
                "openssl",
                &[
                    "cms",
                    "-verify",
                    "-CAfile",
                    ca,
                    "-in",
                    &inner,
                    "-binary",
                    "-out",
                    &content,
                    "-signer",
                    &signer,
                    "-certsout",
                    &certs,
                ],
            )
        };
        let run = verify(&trust);
        assert!(
            run.code == 0 && run.stderr.contains("Verification successful"),
            "{msg}: {}",
            run.stderr
        );
        // The signed content is the MIME entity keyward wraps the letter in.
        let signed = std::fs::read(&content).unwrap();
        assert!(signed.ends_with(b"\r\n\r\nacross the rollover\n"), "{msg}");
        // The message carries the signer's certificate and the links the sender knows, no
        // root: Bob's his and the two links, Alice's (no link known) hers alone.
        let carried = std::fs::read_to_string(&certs).unwrap();
        assert_eq!(
            util::pem_blocks(&carried).len(),
            if links_known { 3 } else { 1 },
            "{msg}: {carried}"
        );
        // The root alone: enough when the message carries the links (Bob's), not otherwise.
        assert_eq!(
            verify(root).code == 0,
            links_known,
            "{msg}: the root alone, links carried: {links_known}"
        );
    }

    // A message keyward sent before it left the root out (Alice's key, her certificate and
    // her old root, signed by OpenSSL as keyward did) verifies in the same one step with the
    // new root and the link: OpenSSL searches the trust store first (-trusted_first, its
    // default) and finds the link there before the message's root.
    let alice_key = format!(
        "{};pin-value={USER_PIN}",
        bed.keyset_json("Alice 1")["signing_key_uri"]
            .as_str()
            .unwrap()
    );
    let old_style = bed.bed.path("old-style.p7").to_string_lossy().into_owned();
    bed.bed
        .openssl_engine(&[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            &letter,
            "-signer",
            &alice_cert,
            "-certfile",
            &old_root,
            "-inkey",
            &alice_key,
            "-keyform",
            "engine",
            "-outform",
            "DER",
            "-out",
            &old_style,
        ])
        .ok();
    let trust = bed.bed.file(
        "new-root-and-link.pem",
        format!(
            "{}{}",
            std::fs::read_to_string(&new_root).unwrap(),
            std::fs::read_to_string(&old_with_new).unwrap()
        )
        .as_bytes(),
    );
    let run = bed.bed.run_tool(
        "openssl",
        "openssl",
        &[
            "cms",
            "-verify",
            "-CAfile",
            &trust,
            "-in",
            &old_style,
            "-inform",
            "DER",
            "-binary",
            "-out",
            "/dev/null",
        ],
    );
    assert!(
        run.code == 0 && run.stderr.contains("Verification successful"),
        "a message carrying the old root: {}",
        run.stderr
    );

    // Alice, enrolled before the rollover, renews: her new certificates come from the new
    // CA, her keyset learns it, and Bob reads what she signs with the new key.
    bed.bed
        .run_env(
            &["enroll", "--renew", "Alice 1", "--authority", &bed.dir],
            &[
                ("KEYWARD_PIN", USER_PIN),
                ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ],
        )
        .ok();
    let alice_new = signing_cert_file(&bed, "Alice 1", "alice-sign-2.pem");
    openssl_verify(&bed, &new_root, None, &alice_new).ok();
    openssl_verify(&bed, &old_root, Some(&new_with_old), &alice_new).ok();
    let out = bed.bed.path("a2b-2.msg").to_string_lossy().into_owned();
    bed.bed
        .run_env(
            &[
                "send", "--keyset", "Alice 1", "--to", "Bob 1", &letter, "-o", &out,
            ],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
    let plain = bed.bed.path("plain-2.out").to_string_lossy().into_owned();
    bed.bed
        .run_env(
            &["read", "--keyset", "Bob 1", &out, "-o", &plain],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();
    // And she still reads what Bob sent her before she renewed.
    let plain = bed.bed.path("plain-3.out").to_string_lossy().into_owned();
    let b2a = bed.bed.path("b2a.msg").to_string_lossy().into_owned();
    bed.bed
        .run_env(
            &["read", "--keyset", "Alice 1", &b2a, "-o", &plain],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .ok();

    // Revoking Alice puts her old-CA certificates on the old CA's CRL and her new ones on
    // the new CA's: one CRL per CA, each with its own issuer key and number, each accepted
    // by OpenSSL.
    bed.authority("revoke", &["alice"]).ok();
    let crl_file = bed.bed.path("ca.crl").to_string_lossy().into_owned();
    let crl = bed
        .bed
        .run_env(
            &[
                "--json",
                "authority",
                "crl",
                "--dir",
                &bed.dir,
                "-o",
                &crl_file,
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .ok()
        .json();
    let crls = crl["crls"].as_array().expect("one CRL per CA").clone();
    assert_eq!(crls.len(), 2, "{crl}");
    assert_eq!(
        (crls[0]["generation"].as_u64(), crls[0]["revoked"].as_u64()),
        (Some(2), Some(2)),
        "Alice's renewed certificates, from the new CA: {crl}"
    );
    assert_eq!(
        (crls[1]["generation"].as_u64(), crls[1]["revoked"].as_u64()),
        (Some(1), Some(2)),
        "Alice's first certificates, from the old CA: {crl}"
    );
    assert_eq!(crls[1]["number"], 1, "the old CA's own sequence: {crl}");
    let old_crl = crls[1]["files"][0].as_str().unwrap().to_string();
    assert!(old_crl.ends_with("ca-g1.crl"), "{old_crl}");
    let crl_check = |ca: &str, untrusted: Option<&str>, crl: &str, cert: &str| {
        let mut args = vec!["verify", "-crl_check", "-CRLfile", crl, "-CAfile", ca];
        if let Some(u) = untrusted {
            args.extend_from_slice(&["-untrusted", u]);
        }
        args.push(cert);
        bed.bed.run_tool("openssl", "openssl", &args)
    };
    let revoked = crl_check(&old_root, None, &old_crl, &alice_cert);
    assert!(
        revoked.code != 0 && format!("{}{}", revoked.stdout, revoked.stderr).contains("revoked"),
        "{} {}",
        revoked.stdout,
        revoked.stderr
    );
    let revoked = crl_check(&new_root, None, &crl_file, &alice_new);
    assert!(
        revoked.code != 0 && format!("{}{}", revoked.stdout, revoked.stderr).contains("revoked"),
        "{} {}",
        revoked.stdout,
        revoked.stderr
    );
    crl_check(&new_root, None, &crl_file, &bob_cert).ok();
    // Bob's reader, given the old CA's CRL, finds Alice's first signature revoked.
    let a2b = bed.bed.path("a2b.msg").to_string_lossy().into_owned();
    let plain = bed.bed.path("plain-4.out").to_string_lossy().into_owned();
    bed.bed
        .run_env(
            &[
                "read", "--keyset", "Bob 1", &a2b, "-o", &plain, "--crl", &old_crl,
            ],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .fails(3, "REVOKED");
    // Both CRLs imported, Bob's reader (anchored at the new CA) checks Alice's first
    // signature against the CRL of the CA that issued it, the old one.
    for file in [&crl_file, &old_crl] {
        bed.bed.run(&["crl", "import", file]).ok();
    }
    bed.bed
        .run_env(
            &["read", "--keyset", "Bob 1", &a2b, "-o", &plain],
            &[("KEYWARD_PIN", USER_PIN)],
        )
        .fails(3, "REVOKED");
    bed.authority("log", &["--verify"]).ok();
}

/// (secret key ids, private key ids) on the authority's token.
fn secret_and_private(bed: &AuthorityBed) -> (Vec<String>, Vec<String>) {
    (secret_key_ids(bed), private_ids(bed))
}

fn private_ids(bed: &AuthorityBed) -> Vec<String> {
    bed.token_objects(AUTHORITY_TOKEN, AUTHORITY_PIN)
        .iter()
        .filter(|o| o.is_private_key())
        .map(|o| o.get("ID").to_string())
        .collect()
}

/// What a refused or undone CA rollover must leave exactly as it was: the configuration, the
/// audit log, the files and the objects on the authority's token.
/// (configuration, audit log, files, (secret key ids, private key ids on the token)).
type CaState = (Vec<u8>, Vec<u8>, Vec<String>, (Vec<String>, Vec<String>));

fn ca_state(bed: &AuthorityBed) -> CaState {
    (
        bed.state_file("authority.toml"),
        bed.state_file("audit.log"),
        bed.state_files().into_iter().collect(),
        secret_and_private(bed),
    )
}

#[test]
fn ca_rollover_refusals_change_nothing() {
    let bed = AuthorityBed::new(&["alice-card", "bob-card"], "CN=Refusing CA,O=Example");
    for (user, keyset, card) in [
        ("alice", "Alice 1", "alice-card"),
        ("bob", "Bob 1", "bob-card"),
    ] {
        let key = bed.add_user(user, &[]);
        bed.enroll_local(user, keyset, card, &key, &[], &[]).ok();
    }
    let before = ca_state(&bed);

    // A wrong PIN.
    bed.bed
        .run_env(
            &["authority", "rollover", "--dir", &bed.dir, "--ca"],
            &[("KEYWARD_PIN", "wrong-pin-1234")],
        )
        .fails(1, "PIN");
    assert_eq!(ca_state(&bed), before);

    // A token that cannot generate RSA key pairs (SoftHSM through the shim, with
    // CKM_RSA_PKCS_KEY_PAIR_GEN hidden): refused before anything changes, naming it.
    let shim = util::shim_module().to_string_lossy().into_owned();
    let real = util::module().to_string_lossy().into_owned();
    let run = bed
        .authority_env(
            "rollover",
            &["--ca"],
            &[
                ("KEYWARD_MODULE", shim.as_str()),
                ("KEYWARD_SHIM_MODULE", real.as_str()),
                ("KEYWARD_SHIM_HIDE_MECHANISMS", "0x0000"),
            ],
        )
        .fails(1, "CKM_RSA_PKCS_KEY_PAIR_GEN");
    assert!(run.stderr.contains("nothing was changed"), "{}", run.stderr);
    assert_eq!(ca_state(&bed), before);
    // So does the dry run.
    bed.authority_env(
        "rollover",
        &["--ca", "--dry-run"],
        &[
            ("KEYWARD_MODULE", shim.as_str()),
            ("KEYWARD_SHIM_MODULE", real.as_str()),
            ("KEYWARD_SHIM_HIDE_MECHANISMS", "0x0000"),
        ],
    )
    .fails(1, "CKM_RSA_PKCS_KEY_PAIR_GEN");
    assert_eq!(ca_state(&bed), before);

    // A CA rollover while an archive rollover is half done: refused, nothing changed.
    bed.authority_env(
        "rollover",
        &["--archive"],
        &[
            ("KEYWARD_ROLLOVER_BATCH", "1"),
            ("KEYWARD_FAULT", "rollover-batch-2"),
        ],
    )
    .fails(1, "injected fault");
    let half = ca_state(&bed);
    bed.authority("rollover", &["--ca"])
        .fails(1, "archive key rollover started");
    assert_eq!(ca_state(&bed), half);
    // Finished, the CA rollover goes ahead; both key generations verify the log.
    bed.authority("rollover", &["--archive"]).ok();
    bed.authority("rollover", &["--ca"]).ok();
    bed.authority("log", &["--verify"]).ok();
}

fn pct(hex: &str) -> String {
    (0..hex.len())
        .step_by(2)
        .map(|i| format!("%{}", &hex[i..i + 2]))
        .collect()
}

#[test]
fn ca_rollover_log_refuses_a_checkpoint_signed_by_the_retired_key() {
    let bed = AuthorityBed::new(&[], "CN=Chained CA,O=Example");
    bed.authority("rollover", &["--ca"]).ok();
    bed.add_user("carol", &[]);
    bed.authority("log", &["--verify"]).ok();
    // The last checkpoint (made after the rollover) signed again, validly, by the OLD CA key
    // on the token: a key the chain retired at the rollover entry.
    let old = config(&bed)["previous_cas"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let db = bed.db().unwrap();
    let (seq, hash, root): (i64, String, String) = db
        .query_row(
            "SELECT seq, hash, root FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    drop(db);
    let bytes = bed.bed.file(
        "checkpoint.bin",
        format!("keyward-checkpoint-v1\n{seq}\n{hash}\n{root}\n").as_bytes(),
    );
    let sig = bed
        .bed
        .path("checkpoint.sig")
        .to_string_lossy()
        .into_owned();
    let key = format!(
        "pkcs11:token={AUTHORITY_TOKEN};id={};type=private;pin-value={AUTHORITY_PIN}",
        pct(&old)
    );
    let out = bed
        .bed
        .tool("openssl", "openssl")
        .args(["dgst", "-engine", "pkcs11", "-sha256", "-sign", &key])
        .args(["-keyform", "engine", "-out", &sig, &bytes])
        .env("PKCS11_MODULE_PATH", util::module())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sig = std::fs::read(&sig).unwrap();
    let hex: String = sig.iter().map(|b| format!("{b:02x}")).collect();
    bed.tamper_sql(&format!(
        "UPDATE audit SET signature = X'{hex}' WHERE seq = {seq}"
    ));
    let run = bed.authority("log", &["--verify"]);
    assert_eq!(run.code, 3, "{} {}", run.stdout, run.stderr);
    assert!(run.stderr.contains("CA key in force"), "{}", run.stderr);
}

/// Each fault point of `rollover --ca`, as an error and as a kill: the authority is either as
/// before or rolled over, its log verifies, and a rerun finishes with no key left over.
#[test]
fn ca_rollover_killed_at_each_point_is_all_or_nothing() {
    let bed = AuthorityBed::new(&["alice-card"], "CN=Crash CA,O=Example");
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", "Alice 1", "alice-card", &key, &[], &[])
        .ok();
    let saved = tempfile::tempdir().unwrap();
    util::beds::save_state(&bed.bed, saved.path());
    let before = ca_state(&bed);
    let keys_before = before.3 .1.len();
    let old_id = config(&bed)["ca_key_id"].as_str().unwrap().to_string();
    let points = [
        "rollover-ca-key",
        "rollover-ca-certs",
        "users-save",
        "db-commit",
        "head-promote",
    ];
    for point in points {
        for kill in [false, true] {
            util::beds::restore_state(&bed.bed, saved.path());
            let mut env = vec![("KEYWARD_FAULT", point)];
            if kill {
                env.push(("KEYWARD_FAULT_KILL", "1"));
            }
            let run = bed.authority_env("rollover", &["--ca"], &env);
            let what = format!("{point} ({})", if kill { "killed" } else { "error" });
            let rolled = config(&bed)["ca_key_id"].as_str().unwrap() != old_id;
            if rolled {
                // Committed: only the head's promotion was left, which the next command does.
                assert_eq!(point, "head-promote", "{what}");
                assert_eq!(config(&bed)["previous_cas"][0]["key_id"], old_id.as_str());
            } else {
                assert_ne!(run.code, 0, "{what}");
                let now = ca_state(&bed);
                assert_eq!(
                    (&now.0, &now.1, &now.2),
                    (&before.0, &before.1, &before.2),
                    "{what}"
                );
                // The new key is gone (an error cleans up) or left for the next run (a kill).
                let extra = now.3 .1.len() - keys_before;
                assert_eq!(extra, usize::from(kill), "{what}");
            }
            bed.authority("log", &["--verify"]).ok();
            if !rolled {
                let again = bed.authority("rollover", &["--ca"]).ok();
                assert!(
                    again.stdout.contains("CA generation 2"),
                    "{what}: {}",
                    again.stdout
                );
            } else {
                // A command after it promotes the head; the state is the rolled-over one.
                bed.add_user("after", &[]);
            }
            bed.authority("log", &["--verify"]).ok();
            assert_eq!(
                private_ids(&bed).len(),
                keys_before + 1,
                "{what}: exactly the new CA key was added"
            );
            assert_eq!(
                config(&bed)["previous_cas"].as_array().unwrap().len(),
                1,
                "{what}"
            );
        }
    }
}

#[test]
fn archive_rollover_killed_before_its_first_commit_leaves_no_key() {
    let bed = AuthorityBed::new(&["alice-card"], "CN=Archive Crash,O=Example");
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", "Alice 1", "alice-card", &key, &[], &[])
        .ok();
    let old_id = config(&bed)["archive_key_id"].as_str().unwrap().to_string();
    // Killed at the commit that records the rollover, then between that record and the new
    // key: the rollover is recorded before its key is made, so no run leaves a key that
    // nothing names.
    for point in ["db-commit", "rollover-archive-key"] {
        bed.authority_env(
            "rollover",
            &["--archive"],
            &[("KEYWARD_FAULT", point), ("KEYWARD_FAULT_KILL", "1")],
        )
        .fails(137, "");
        assert_eq!(config(&bed)["archive_key_id"], old_id.as_str(), "{point}");
        assert_eq!(
            secret_key_ids(&bed),
            vec![old_id.clone()],
            "{point}: a key nothing names was left on the token"
        );
        bed.authority("log", &["--verify"]).ok();
    }
    // The next run makes the recorded key and finishes with exactly one archive key.
    bed.authority("rollover", &["--archive"]).ok();
    let new_id = config(&bed)["archive_key_id"].as_str().unwrap().to_string();
    assert_ne!(new_id, old_id);
    assert_eq!(secret_key_ids(&bed), vec![new_id]);
}

/// A message Bob's token signs with OpenSSL (his certificate alone, no chain: what many
/// clients send) and encrypts to Alice.
fn openssl_message(bed: &AuthorityBed, from: &str, to: &str, name: &str) -> String {
    let k = bed.keyset_json(from);
    let key = format!(
        "{};pin-value={USER_PIN}",
        k["signing_key_uri"].as_str().unwrap()
    );
    let signer = signing_cert_file(bed, from, &format!("{name}.signer.pem"));
    let recipient = bed.bed.file(
        &format!("{name}.recip.pem"),
        bed.bed
            .run(&["keyset", "cert", to, "--encryption"])
            .ok()
            .stdout
            .as_bytes(),
    );
    let letter = bed
        .bed
        .file(&format!("{name}.txt"), b"signed by the new CA\n");
    let signed = bed
        .bed
        .path(&format!("{name}.signed"))
        .to_string_lossy()
        .into_owned();
    bed.bed
        .openssl_engine(&[
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-md",
            "sha256",
            "-in",
            &letter,
            "-signer",
            &signer,
            "-inkey",
            &key,
            "-keyform",
            "engine",
            "-outform",
            "DER",
            "-out",
            &signed,
        ])
        .ok();
    let msg = bed
        .bed
        .path(&format!("{name}.msg"))
        .to_string_lossy()
        .into_owned();
    bed.bed
        .run_tool(
            "openssl",
            "openssl",
            &[
                "cms", "-encrypt", "-binary", "-aes256", "-inform", "DER", "-in", &signed,
                "-outform", "DER", "-out", &msg, "-recip", &recipient,
            ],
        )
        .ok();
    msg
}

#[test]
fn keyset_trust_learns_the_new_ca_and_refuses_a_foreign_one() {
    let bed = AuthorityBed::new(&["alice-card", "bob-card"], "CN=Trust CA,O=Example");
    let key = bed.add_user("alice", &["--email", "alice@example.org"]);
    bed.enroll_local("alice", "Alice 1", "alice-card", &key, &[], &[])
        .ok();
    bed.authority("rollover", &["--ca"]).ok();
    let key = bed.add_user("bob", &["--email", "bob@example.org"]);
    bed.enroll_local("bob", "Bob 1", "bob-card", &key, &[], &[])
        .ok();

    // Bob's message carries his certificate alone: Alice's keyset, which trusts only the CA
    // it enrolled with, cannot check it.
    let msg = openssl_message(&bed, "Bob 1", "Alice 1", "b2a");
    let plain = bed.bed.path("plain.out").to_string_lossy().into_owned();
    let read = |out: &str| {
        bed.bed.run_env(
            &["read", "--keyset", "Alice 1", &msg, "-o", out],
            &[("KEYWARD_PIN", USER_PIN)],
        )
    };
    read(&plain).fails(3, "");

    // A foreign CA with the very same name (another key): refused, the registry unchanged;
    // the real bundle with the foreign CA added: refused whole.
    let foreign = bed.bed.path("foreign.pem").to_string_lossy().into_owned();
    let foreign_key = bed.bed.path("foreign.key").to_string_lossy().into_owned();
    bed.bed
        .run_tool(
            "openssl",
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/O=Example/CN=Trust CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-days",
                "30",
                "-keyout",
                &foreign_key,
                "-out",
                &foreign,
            ],
        )
        .ok();
    let all = bed
        .bed
        .run(&["authority", "cert", "--all", "--dir", &bed.dir])
        .ok()
        .stdout;
    let chain_file = bed.bed.file("chain.pem", all.as_bytes());
    let mixed = bed.bed.file(
        "mixed.pem",
        format!("{all}{}", std::fs::read_to_string(&foreign).unwrap()).as_bytes(),
    );
    let registry = bed.bed.registry_text();
    for bundle in [&foreign, &mixed] {
        let run = bed
            .bed
            .run(&["keyset", "trust", "Alice 1", "--chain", bundle])
            .fails(
                3,
                "does not chain by link certificates from the CA keyset \"Alice 1\" trusts",
            );
        assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
        assert_eq!(bed.bed.registry_text(), registry, "{bundle}");
    }
    let refused = bed
        .bed
        .run(&["--json", "keyset", "trust", "Alice 1", "--chain", &foreign]);
    assert_eq!(refused.code, 3);
    assert_eq!(bed.bed.registry_text(), registry);
    read(&plain).fails(3, "");

    // The authority's bundle: the new CA and both links are taken (the exchange certificate
    // is left out), and Alice's keyset checks Bob's message.
    let run = bed
        .bed
        .run(&[
            "--json",
            "keyset",
            "trust",
            "Alice 1",
            "--chain",
            &chain_file,
        ])
        .ok()
        .json();
    assert_eq!(run["added"].as_array().unwrap().len(), 3, "{run}");
    assert_eq!(run["already_trusted"], 1, "{run}");
    assert_eq!(run["skipped"], 1, "{run}");
    let roots = run["added"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["self_signed"] == true)
        .count();
    assert_eq!(roots, 1, "the new root and two links: {run}");
    let ok = read(&plain).ok();
    assert!(
        ok.stderr.contains("good signature from bob"),
        "{}",
        ok.stderr
    );
    assert_eq!(std::fs::read(&plain).unwrap(), b"signed by the new CA\n");

    // Idempotent: the second run finds nothing new and writes nothing.
    let registry = bed.bed.registry_text();
    let again = bed
        .bed
        .run(&[
            "--json",
            "keyset",
            "trust",
            "Alice 1",
            "--chain",
            &chain_file,
        ])
        .ok()
        .json();
    assert_eq!(again["added"].as_array().unwrap().len(), 0, "{again}");
    assert_eq!(again["already_trusted"], 4, "{again}");
    assert_eq!(bed.bed.registry_text(), registry);
    let text = bed
        .bed
        .run(&["keyset", "trust", "Alice 1", "--chain", &chain_file])
        .ok();
    assert!(
        format!("{}{}", text.stdout, text.stderr).contains("nothing was changed"),
        "{text:?}"
    );
    let errors = util::schema_errors(&[
        ("keyset trust".into(), run),
        ("keyset trust again".into(), again),
        (
            "keyset trust refused".into(),
            serde_json::from_str(refused.stderr.trim()).expect("a JSON error"),
        ),
    ]);
    assert!(errors.is_empty(), "{errors:?}");
    // A keyset not enrolled has no CA to extend.
    bed.bed
        .create_keyset("Local", "alice-card", USER_PIN, &[])
        .ok();
    bed.bed
        .run(&["keyset", "trust", "Local", "--chain", &chain_file])
        .fails(1, "not enrolled");
}

/// `authority SUB --dir DIR ARGS… --as OP` with the authority's PIN and OP's token PIN.
fn as_operator(bed: &AuthorityBed, op: (&str, &str), sub: &[&str], args: &[&str]) -> util::Run {
    let mut all: Vec<&str> = vec!["--json", "authority"];
    all.extend_from_slice(sub);
    all.extend_from_slice(&["--dir", &bed.dir]);
    all.extend_from_slice(args);
    all.extend_from_slice(&["--as", op.0]);
    bed.bed.run_env(
        &all,
        &[
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ("KEYWARD_OPERATOR_PIN", op.1),
        ],
    )
}

fn request_id(run: &util::Run) -> String {
    let v = run.json();
    assert_eq!(v["state"], "pending", "{v}");
    v["request"].as_str().unwrap().to_string()
}

#[test]
fn ca_rollover_under_operators_needs_their_approval_and_a_refusal_changes_nothing() {
    let bed = AuthorityBed::new(&["alice-card"], "CN=Approved CA,O=Example");
    let (opa, opb) = (("opa", "opa-pin-1"), ("opb", "opb-pin-1"));
    for (name, pin) in [opa, opb] {
        bed.bed.init_token(&format!("op-{name}"), pin);
    }
    let key = bed.add_user("alice", &[]);
    bed.enroll_local("alice", "Alice 1", "alice-card", &key, &[], &[])
        .ok();
    let add = |op: (&str, &str), by: Option<(&str, &str)>| {
        let token = format!("op-{}", op.0);
        let mut args = vec![
            "authority",
            "operator",
            "add",
            "--dir",
            &bed.dir,
            op.0,
            "--token",
            &token,
        ];
        let mut env = vec![
            ("KEYWARD_AUTHORITY_PIN", AUTHORITY_PIN),
            ("KEYWARD_PIN", op.1),
        ];
        if let Some(by) = by {
            args.extend_from_slice(&["--as", by.0]);
            env.push(("KEYWARD_OPERATOR_PIN", by.1));
        }
        bed.bed.run_env(&args, &env).ok();
    };
    add(opa, None);
    add(opb, Some(opa));
    // Two approvals for a CA rollover: opa asks to change the policy, opb approves.
    let run = as_operator(&bed, opa, &["policy", "set"], &["rollover-ca", "2"]).ok();
    let id = request_id(&run);
    as_operator(&bed, opb, &["approve"], &[&id]).ok();
    let policy = bed
        .bed
        .run(&["--json", "authority", "policy", "show", "--dir", &bed.dir])
        .ok()
        .json();
    let rollover = policy["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["action"] == "rollover-ca")
        .cloned()
        .expect("rollover-ca in the policy");
    assert_eq!(rollover["required"], 2, "{policy}");

    let old_key = config(&bed)["ca_key_id"].clone();
    let keys = private_ids(&bed);
    let unchanged = |what: &str| {
        assert_eq!(config(&bed)["ca_key_id"], old_key, "{what}");
        assert_eq!(
            config(&bed)["previous_cas"],
            serde_json::Value::Null,
            "{what}"
        );
        assert_eq!(private_ids(&bed), keys, "{what}: a key was made or removed");
        bed.authority("log", &["--verify"]).ok();
    };
    // The PIN holder alone: refused (and the refusal logged), nothing else changed.
    bed.authority("rollover", &["--ca"])
        .fails(1, "rollover-ca needs the approval of 2 of them");
    unchanged("without --as");
    // A dry run needs no approval and changes nothing.
    bed.authority("rollover", &["--ca", "--dry-run"]).ok();
    unchanged("dry run");
    // opa asks: a pending request; no key is made before the last approval.
    let id = request_id(&as_operator(&bed, opa, &["rollover"], &["--ca"]).ok());
    unchanged("pending");
    // opb rejects it: nothing changed.
    let rejected = as_operator(&bed, opb, &["reject"], &[&id]).ok().json();
    assert_eq!(rejected["state"], "rejected", "{rejected}");
    unchanged("rejected");
    // Asked again and approved: the rollover runs with the second approval.
    let id = request_id(&as_operator(&bed, opa, &["rollover"], &["--ca"]).ok());
    let done = as_operator(&bed, opb, &["approve"], &[&id]).ok().json();
    assert_eq!(done["generation"], 2, "{done}");
    assert_ne!(config(&bed)["ca_key_id"], old_key);
    assert_eq!(config(&bed)["previous_cas"][0]["key_id"], old_key);
    assert_eq!(private_ids(&bed).len(), keys.len() + 1);
    bed.authority("log", &["--verify"]).ok();
    let log = bed
        .bed
        .run(&["--json", "authority", "log", "--dir", &bed.dir])
        .ok()
        .json();
    let entries = log["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "execute"
                && e["detail"].as_str().unwrap().contains("rollover-ca")),
        "{log}"
    );
    // The approved request ran once: approving it again is refused.
    let again = as_operator(&bed, opa, &["approve"], &[&id]);
    assert!(
        again.code == 1 && again.stderr.contains("executed already"),
        "{}",
        again.stderr
    );
    assert_eq!(private_ids(&bed).len(), keys.len() + 1);
    let errors = util::schema_errors(&[("authority approve (rollover)".into(), done)]);
    assert!(errors.is_empty(), "{errors:?}");
}
