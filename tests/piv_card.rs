//! A PIV smart card through a real driver stack: OpenSC's `opensc-pkcs11.so` → pcscd →
//! vsmartcard's vpcd → the virtual card of `testbeds/vcard/`, provisioned by
//! `testbeds/piv.sh up` with the card's own commands (keys in 9A 9C 9D 9E, a certificate each).
//! The card's keys cannot be generated, imported or unwrapped through PKCS#11: keyward adopts
//! them, signs with the 9C always-authenticate key, reads mail encrypted to 9D, changes the PIN,
//! and meets the card's real PIN counters.
//!
//! pcscd's socket is machine-wide, so one card and one test: the story runs as named steps in
//! order (the lockout last: it locks the card). The card is stopped whatever happens.

mod util;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

/// The card's PIN and the one the PIN-change step sets.
const PIN: &str = "123456";
const NEW_PIN: &str = "24682468";

/// The virtual card, up while this lives: `testbeds/piv.sh up DIR` on creation, `down` on drop.
struct Card {
    dir: PathBuf,
    vars: HashMap<String, String>,
}

impl Card {
    fn up(dir: &Path) -> Card {
        for (tool, package) in [
            ("pcscd", "pcscd"),
            ("opensc-tool", "opensc"),
            ("piv-tool", "opensc"),
            ("pkcs11-tool", "opensc"),
            ("openssl", "openssl"),
        ] {
            require_tool(tool, package);
        }
        assert!(
            Path::new("/etc/reader.conf.d/vpcd").exists(),
            "vsmartcard's vpcd is not installed: apt-get install vsmartcard-vpcd"
        );
        // Made before `up`, so that a half-started card is stopped too.
        let mut card = Card {
            dir: dir.to_path_buf(),
            vars: HashMap::new(),
        };
        let out = Command::new("bash")
            .arg(script())
            .arg("up")
            .arg(dir)
            .output()
            .expect("run testbeds/piv.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "testbeds/piv.sh up failed (install: apt-get install pcscd vsmartcard-vpcd opensc):\n{stderr}"
        );
        card.vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        card
    }

    fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("piv.sh printed no {name}: {:?}", self.vars))
    }

    fn module(&self) -> &str {
        self.var("KEYWARD_PIV_MODULE")
    }

    fn token(&self) -> &str {
        self.var("KEYWARD_PIV_TOKEN")
    }

    /// A file piv.sh left in its directory (certificates, public keys, the test CA).
    fn file(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// `testbeds/piv.sh pull|insert DIR [N]` (asserts success).
    fn piv_sh(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(script())
            .arg(args[0])
            .arg(&self.dir)
            .args(&args[1..])
            .output()
            .expect("run testbeds/piv.sh");
        assert!(
            out.status.success(),
            "testbeds/piv.sh {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Pulls the card out of the reader as the `apdus`th APDU from now arrives.
    fn pull_after(&self, apdus: u64) {
        self.piv_sh(&["pull", &apdus.to_string()]);
    }

    /// Puts the card back and waits until the reader shows it.
    fn insert(&self) {
        self.piv_sh(&["insert"]);
    }

    /// How many APDUs `f` sends to the card (the card counts an `after N` pull down; the count
    /// is large enough never to be reached).
    fn apdus_of(&self, f: impl FnOnce()) -> u64 {
        const START: u64 = 1_000_000;
        self.pull_after(START);
        f();
        let left = std::fs::read_to_string(self.dir.join("pulled")).expect("the pull file");
        let left: u64 = left
            .trim()
            .strip_prefix("after ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("the pull file says {left:?}"));
        self.insert();
        START - left
    }
}

impl Drop for Card {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("down")
            .arg(&self.dir)
            .status();
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testbeds/piv.sh")
}

/// keyward on the card's module, with piv.sh's OpenSC configuration (and more environment).
fn on_card(bed: &TestBed, card: &Card, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut all = vec!["--module", card.module()];
    all.extend_from_slice(args);
    let mut env = env.to_vec();
    env.push(("OPENSC_CONF", card.var("OPENSC_CONF")));
    bed.run_env_timeout(&all, &env, 120)
}

fn sign(bed: &TestBed, card: &Card, pin: &str, flags: &[&str]) -> Run {
    let data = bed.file("data.txt", b"signed on a PIV card\n");
    let sig = bed.path("data.sig").to_string_lossy().into_owned();
    let _ = std::fs::remove_file(&sig);
    let mut args = flags.to_vec();
    args.extend(["keyset", "sign", "Card", &data, "-o", &sig]);
    on_card(bed, card, &args, &[("KEYWARD_PIN", pin)])
}

/// The card's user-PIN flags as `token list --json` shows them: (final_try, locked).
fn pin_flags(bed: &TestBed, card: &Card) -> (bool, bool) {
    let list = on_card(bed, card, &["--json", "token", "list"], &[])
        .ok()
        .json();
    let label = card.var("KEYWARD_PIV_LABEL");
    let token = list["slots"]
        .as_array()
        .expect("slots")
        .iter()
        .map(|s| &s["token"])
        .find(|t| t["label"] == label)
        .unwrap_or_else(|| panic!("the card is not listed: {list}"))
        .clone();
    let flag = |f: &str| token["user_pin"][f].as_bool().expect("PIN flag");
    (flag("final_try"), flag("locked"))
}

/// The card's objects, as pkcs11-tool lists them after a login (without the session's object
/// handles it prints for data objects).
fn card_objects(bed: &TestBed, card: &Card, pin: &str) -> String {
    let run = bed
        .run_tool(
            "pkcs11-tool",
            "opensc",
            &["--module", card.module(), "--login", "--pin", pin, "-O"],
        )
        .ok();
    run.stdout
        .lines()
        .map(|l| match l.split_once(" object ") {
            Some((kind, _)) if !l.starts_with(' ') => kind,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_piv_card_through_opensc_pcscd_and_vpcd() {
    let authority = AuthorityBed::new(&[], "CN=PIV Test Authority");
    let bed: &TestBed = &authority;
    let card = Card::up(&bed.path("card"));

    adopt_needs_a_choice_among_several_keys(bed, &card);
    adopt_the_signature_and_key_management_keys(bed, &card);
    sign_and_verify_with_the_always_authenticate_key(bed, &card);
    read_mail_encrypted_to_the_key_management_certificate(bed, &card);
    an_ec_signing_key_and_an_always_authenticate_decryption_key(bed, &card);
    enrollment_and_key_generation_are_refused_up_front(&authority, &card);
    the_card_pulled_out_in_the_middle_of_a_command(bed, &card);
    change_the_pin(bed, &card);
    lockout_on_the_cards_own_counter(bed, &card);
    unblock_with_the_puk(bed, &card);
}

fn adopt_needs_a_choice_among_several_keys(bed: &TestBed, card: &Card) {
    let run = on_card(
        bed,
        card,
        &["keyset", "adopt", "Card", "--token", card.token()],
        &[("KEYWARD_PIN", PIN)],
    )
    .fails(1, "ambiguous: 3 private keys");
    // The three keys that can sign (9A, 9C, 9E), each with its URI.
    for id in ["id=%01", "id=%02", "id=%04"] {
        assert!(run.stderr.contains(id), "{id} not listed:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("--signing-key"), "{}", run.stderr);
    // Naming a key that cannot sign.
    adopt(bed, card, "Card", "pkcs11:id=%03;type=private", None).fails(1, "is not a signing key");
    assert!(bed.registry_text().is_none_or(|t| !t.contains("Card")));
}

fn adopt_the_signature_and_key_management_keys(bed: &TestBed, card: &Card) {
    let run = adopt(
        bed,
        card,
        "Card",
        "pkcs11:id=%02;type=private",
        Some("pkcs11:id=%03"),
    )
    .ok();
    assert!(
        run.stdout.contains("security high"),
        "9C is always-authenticate: {}",
        run.stdout
    );
    let shown = bed.keyset_json("Card");
    assert_eq!(shown["security"], "high", "{shown}");
    assert_eq!(shown["key_type"], "rsa2048", "{shown}");
    assert_eq!(shown["signing_id"], "02", "{shown}");
    assert_eq!(shown["adopted"]["decryption_key"]["id"], "03", "{shown}");
    let public = std::fs::read_to_string(card.file("9C.pub")).unwrap();
    assert_eq!(
        on_card(bed, card, &["keyset", "pubkey", "Card"], &[])
            .ok()
            .stdout
            .trim(),
        public.trim(),
        "the adopted key is 9C's"
    );
    // The certificates are the card's.
    let cert = on_card(bed, card, &["keyset", "cert", "Card", "--encryption"], &[]).ok();
    let card_cert = std::fs::read_to_string(card.file("9D.pem")).unwrap();
    assert_eq!(cert.stdout.trim(), card_cert.trim());

    // 9A is not always-authenticate: adopted as security standard.
    let run = adopt(bed, card, "Auth", "pkcs11:id=%01", Some("pkcs11:id=%03")).ok();
    assert!(run.stdout.contains("security standard"), "{}", run.stdout);
    let list = on_card(bed, card, &["keyset", "list"], &[]).ok();
    assert!(list.stdout.contains("adopted"), "{}", list.stdout);
}

fn sign_and_verify_with_the_always_authenticate_key(bed: &TestBed, card: &Card) {
    // Each signature is a login plus the card's own demand for the PIN at the signature (the
    // context-specific login): twice in a row, twice the PIN.
    for _ in 0..2 {
        sign(bed, card, PIN, &[]).ok();
        let data = bed.path("data.txt").to_string_lossy().into_owned();
        let sig = bed.path("data.sig").to_string_lossy().into_owned();
        on_card(bed, card, &["keyset", "verify", "Card", &data, &sig], &[]).ok();
        // OpenSSL agrees, with the public key the card gave at generation.
        bed.run_tool(
            "openssl",
            "openssl",
            &[
                "dgst",
                "-sha256",
                "-verify",
                &card.file("9C.pub"),
                "-signature",
                &sig,
                &data,
            ],
        )
        .ok();
    }
}

fn read_mail_encrypted_to_the_key_management_certificate(bed: &TestBed, card: &Card) {
    let openssl = |args: &[&str]| bed.run_tool("openssl", "openssl", args).ok();
    // A sender whose certificate the test CA (piv.sh's) issued.
    let (key, csr, cert) = (
        bed.path("sender.key"),
        bed.path("sender.csr"),
        bed.path("sender.pem"),
    );
    let (key, csr, cert) = (
        key.to_string_lossy(),
        csr.to_string_lossy(),
        cert.to_string_lossy(),
    );
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &key,
        "-subj",
        "/CN=Sender",
        "-out",
        &csr,
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &card.file("ca.pem"),
        "-CAkey",
        &card.file("ca.key"),
        "-set_serial",
        "77",
        "-days",
        "30",
        "-out",
        &cert,
    ]);
    let content = b"for the card holder only\n";
    let note = bed.file("note.txt", content);
    let signed = bed.path("note.signed").to_string_lossy().into_owned();
    openssl(&[
        "cms",
        "-sign",
        "-signer",
        &cert,
        "-inkey",
        &key,
        "-md",
        "sha256",
        "-nodetach",
        "-binary",
        "-in",
        &note,
        "-outform",
        "DER",
        "-out",
        &signed,
    ]);
    for (name, extra) in [
        ("pkcs1.p7m", vec![]),
        ("oaep.p7m", vec!["-keyopt", "rsa_padding_mode:oaep"]),
    ] {
        let msg = bed.path(name).to_string_lossy().into_owned();
        let mut args = vec![
            "cms", "-encrypt", "-binary", "-aes256", "-in", &signed, "-inform", "DER", "-outform",
            "DER", "-out", &msg,
        ];
        let recipient = card.file("9D.pem");
        args.extend(["-recip", &recipient]);
        // -keyopt applies to the -recip before it.
        args.extend(extra);
        openssl(&args);
        let out = bed.path("note.out").to_string_lossy().into_owned();
        let _ = std::fs::remove_file(&out);
        let run = on_card(
            bed,
            card,
            &[
                "read",
                "--keyset",
                "Card",
                "--ca",
                &card.file("ca.pem"),
                &msg,
                "-o",
                &out,
            ],
            &[("KEYWARD_PIN", PIN)],
        )
        .ok();
        assert!(
            run.stderr.contains("good signature from Sender"),
            "{name}: {}",
            run.stderr
        );
        assert_eq!(std::fs::read(&out).unwrap(), content, "{name}");
    }
    // keyward sends from the card (signed with 9C, encrypted to the sender and to the card's
    // own 9D certificate) and reads its own copy back on the card.
    let from_card = bed.path("from-card.p7m").to_string_lossy().into_owned();
    on_card(
        bed,
        card,
        &[
            "send", "--keyset", "Card", "--to", &cert, &note, "-o", &from_card,
        ],
        &[("KEYWARD_PIN", PIN)],
    )
    .ok();
    let out = bed.path("from-card.txt").to_string_lossy().into_owned();
    let run = on_card(
        bed,
        card,
        &[
            "read",
            "--keyset",
            "Card",
            "--ca",
            &card.file("ca.pem"),
            &from_card,
            "-o",
            &out,
        ],
        &[("KEYWARD_PIN", PIN)],
    )
    .ok();
    assert!(
        run.stderr
            .contains("good signature from keyward PIV signature"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&out).unwrap(), content);
    // The sender opens it with OpenSSL and checks the card's signature against the test CA.
    let decrypted = bed.path("from-card.signed").to_string_lossy().into_owned();
    openssl(&[
        "cms", "-decrypt", "-in", &from_card, "-inform", "DER", "-recip", &cert, "-inkey", &key,
        "-out", &decrypted,
    ]);
    openssl(&[
        "cms",
        "-verify",
        "-in",
        &decrypted,
        "-CAfile",
        &card.file("ca.pem"),
        "-out",
        "/dev/null",
    ]);

    // An adopted keyset has no authority: the CA must be named.
    let msg = bed.path("pkcs1.p7m").to_string_lossy().into_owned();
    on_card(
        bed,
        card,
        &["read", "--keyset", "Card", &msg],
        &[("KEYWARD_PIN", PIN)],
    )
    .fails(1, "pass --ca FILE");
}

/// 9E (P-256, no PIN at all on a PIV card) signs; 9C decrypts — an always-authenticate key, so
/// the card demands the PIN at the decryption itself, and the keyset is security high.
fn an_ec_signing_key_and_an_always_authenticate_decryption_key(bed: &TestBed, card: &Card) {
    let run = adopt(bed, card, "EC", "pkcs11:id=%04", Some("pkcs11:id=%02")).ok();
    assert!(
        run.stdout.contains("p256 signing key, security high"),
        "{}",
        run.stdout
    );
    let data = bed.file("ec.txt", b"signed by 9E\n");
    let sig = bed.path("ec.sig").to_string_lossy().into_owned();
    on_card(
        bed,
        card,
        &["keyset", "sign", "EC", &data, "-o", &sig],
        &[("KEYWARD_PIN", PIN)],
    )
    .ok();
    on_card(bed, card, &["keyset", "verify", "EC", &data, &sig], &[]).ok();
    bed.run_tool(
        "openssl",
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            &card.file("9E.pub"),
            "-signature",
            &sig,
            &data,
        ],
    )
    .ok();
    // Mail to 9C's certificate (the signed note of the read step).
    let signed = bed.path("note.signed").to_string_lossy().into_owned();
    let msg = bed.path("to-9c.p7m").to_string_lossy().into_owned();
    bed.run_tool(
        "openssl",
        "openssl",
        &[
            "cms",
            "-encrypt",
            "-binary",
            "-aes256",
            "-in",
            &signed,
            "-inform",
            "DER",
            "-outform",
            "DER",
            "-out",
            &msg,
            "-recip",
            &card.file("9C.pem"),
        ],
    )
    .ok();
    let out = bed.path("to-9c.txt").to_string_lossy().into_owned();
    on_card(
        bed,
        card,
        &[
            "read",
            "--keyset",
            "EC",
            "--ca",
            &card.file("ca.pem"),
            &msg,
            "-o",
            &out,
        ],
        &[("KEYWARD_PIN", PIN)],
    )
    .ok();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"for the card holder only\n",
        "decrypted with 9C"
    );
}

fn enrollment_and_key_generation_are_refused_up_front(authority: &AuthorityBed, card: &Card) {
    let bed: &TestBed = authority;
    let before = card_objects(bed, card, PIN);
    let registry = bed.registry_text();
    let out = bed.path("card-request.toml").to_string_lossy().into_owned();
    let run = on_card(
        bed,
        card,
        &[
            "enroll",
            "--user",
            "alice",
            "--keyset",
            "Mail",
            "--token",
            card.token(),
            "--authority-cert",
            &authority.bundle,
            "-o",
            &out,
        ],
        &[("KEYWARD_PIN", PIN), ("KEYWARD_TEMP_KEY", "not-needed")],
    )
    .fails(1, "cannot be enrolled with an escrowed key");
    assert!(
        run.stderr.contains("CKF_GENERATE_KEY_PAIR") && run.stderr.contains("CKF_UNWRAP"),
        "the refusal says what the card lacks: {}",
        run.stderr
    );
    assert!(run.stderr.contains("keyset adopt"), "{}", run.stderr);
    assert!(!Path::new(&out).exists());
    on_card(
        bed,
        card,
        &["keyset", "create", "Gen", "--token", card.token()],
        &[("KEYWARD_PIN", PIN)],
    )
    .fails(1, "cannot generate a key pair through PKCS#11");
    assert_eq!(card_objects(bed, card, PIN), before, "the card changed");
    assert_eq!(bed.registry_text(), registry, "the registry changed");
}

/// The card leaves the reader in the middle of a signature (a login, the context-specific
/// login, the signature) and of `keyset adopt` (which reads the card, then writes the
/// registry), at points spread over each command's APDUs: one sentence saying the token was
/// removed and what to do, exit 1, no signature file, the registry unchanged; put back, the
/// same command works.
fn the_card_pulled_out_in_the_middle_of_a_command(bed: &TestBed, card: &Card) {
    let sig = bed.path("data.sig");
    let signing = card.apdus_of(|| {
        sign(bed, card, PIN, &[]).ok();
    });
    let adopting = card.apdus_of(|| {
        adopt_counted(bed, card, "Counted").ok();
    });
    assert!(signing > 10 && adopting > 10, "{signing} {adopting}");
    let registry = bed.registry_text();
    for (what, total) in [("keyset sign", signing), ("keyset adopt", adopting)] {
        for at in [total / 4, total / 2, total * 3 / 4] {
            card.pull_after(at);
            let run = if what == "keyset sign" {
                sign(bed, card, PIN, &[])
            } else {
                adopt_counted(bed, card, "Pulled")
            };
            let run = run.fails(1, "insert it and run the command again");
            assert!(
                run.stderr.contains("removed"),
                "{what}, card pulled at APDU {at} of {total}: {}",
                run.stderr
            );
            assert!(
                !sig.exists(),
                "{what} at APDU {at}: a signature was written"
            );
            assert_eq!(
                bed.registry_text(),
                registry,
                "{what} at APDU {at}: registry"
            );
            card.insert();
        }
    }
    // Back in the reader: both work.
    sign(bed, card, PIN, &[]).ok();
    adopt_counted(bed, card, "Pulled").ok();
}

/// `keyset adopt NAME` of 9C and 9D.
fn adopt_counted(bed: &TestBed, card: &Card, name: &str) -> Run {
    adopt(
        bed,
        card,
        name,
        "pkcs11:id=%02;type=private",
        Some("pkcs11:id=%03"),
    )
}

/// `keyset adopt NAME --token CARD --signing-key SIGNING [--decryption-key DECRYPTION]`.
fn adopt(bed: &TestBed, card: &Card, name: &str, signing: &str, decryption: Option<&str>) -> Run {
    let mut args = vec![
        "keyset",
        "adopt",
        name,
        "--token",
        card.token(),
        "--signing-key",
        signing,
    ];
    if let Some(d) = decryption {
        args.extend(["--decryption-key", d]);
    }
    on_card(bed, card, &args, &[("KEYWARD_PIN", PIN)])
}

fn change_the_pin(bed: &TestBed, card: &Card) {
    // A wrong old PIN is said as such (it costs a try; the next good PIN gives it back).
    on_card(
        bed,
        card,
        &["keyset", "passwd", "Card"],
        &[("KEYWARD_PIN", "99999999"), ("KEYWARD_NEW_PIN", NEW_PIN)],
    )
    .fails(1, "wrong user PIN");
    sign(bed, card, PIN, &[]).ok();
    on_card(
        bed,
        card,
        &["keyset", "passwd", "Card"],
        &[("KEYWARD_PIN", PIN), ("KEYWARD_NEW_PIN", NEW_PIN)],
    )
    .ok();
    sign(bed, card, NEW_PIN, &[]).ok();
    // The old PIN is wrong now (one try spent; the next good PIN gives it back).
    sign(bed, card, PIN, &[]).fails(1, "wrong user PIN");
    sign(bed, card, NEW_PIN, &[]).ok();
    assert_eq!(pin_flags(bed, card), (false, false));
}

fn lockout_on_the_cards_own_counter(bed: &TestBed, card: &Card) {
    // The card allows 3 tries. First wrong PIN.
    sign(bed, card, "11111111", &[]).fails(1, "wrong user PIN for token");
    assert_eq!(pin_flags(bed, card), (false, false));
    // Second: one try left, and the error says so and what to do.
    let run = sign(bed, card, "22222222", &[]).fails(1, "1 try left before the user PIN locks");
    assert!(run.stderr.contains("--final-try"), "{}", run.stderr);
    assert_eq!(pin_flags(bed, card), (true, false));
    // The final try is refused without --final-try, even with the right PIN; no try spent.
    sign(bed, card, NEW_PIN, &[]).fails(1, "keyward will not log in without --final-try");
    assert_eq!(pin_flags(bed, card), (true, false));
    // With --final-try and a wrong PIN: locked, by the card.
    sign(bed, card, "33333333", &["--final-try"]).fails(1, "locked");
    assert_eq!(pin_flags(bed, card), (false, true));
    // Locked: the right PIN does not help.
    sign(bed, card, NEW_PIN, &["--final-try"]).fails(1, "is locked");
    let p11 = bed.run_tool(
        "pkcs11-tool",
        "opensc",
        &["--module", card.module(), "--login", "--pin", NEW_PIN, "-O"],
    );
    assert!(
        p11.stderr.contains("CKR_PIN_LOCKED"),
        "pkcs11-tool agrees: {}",
        p11.stderr
    );
}

/// Locked (the step before): `keyward token unblock` with the PUK as the SO PIN. A PIV card
/// cannot VERIFY its PUK, so the SO login fails; keyward then gives the PUK as the old PIN of
/// `C_SetPIN` without a login, which OpenSC turns into RESET RETRY COUNTER when configured to
/// (`user_pin_unblock_style = set_pin_in_unlogged_session`, piv.sh's opensc.conf). Without that
/// setting the refusal says what to set; the card stays locked and no PUK try is spent.
fn unblock_with_the_puk(bed: &TestBed, card: &Card) {
    let unblock = |conf: &str, new: &str| {
        bed.run_env_timeout(
            &[
                "--module",
                card.module(),
                "token",
                "unblock",
                "--token",
                card.token(),
            ],
            &[
                ("OPENSC_CONF", conf),
                ("KEYWARD_SO_PIN", card.var("KEYWARD_PIV_PUK")),
                ("KEYWARD_NEW_PIN", new),
            ],
            120,
        )
    };
    let plain = bed.file("opensc-default.conf", b"app default {\n}\n");
    let run = unblock(&plain, PIN).fails(1, "offers no PIN unblocking through PKCS#11");
    assert!(
        run.stderr
            .contains("user_pin_unblock_style = set_pin_in_unlogged_session"),
        "the refusal says what will work: {}",
        run.stderr
    );
    assert_eq!(pin_flags(bed, card), (false, true), "still locked");
    unblock(card.var("OPENSC_CONF"), PIN).ok();
    assert_eq!(pin_flags(bed, card), (false, false), "unlocked");
    sign(bed, card, PIN, &[]).ok();
}
