//! `keyward send` and `keyward read` end to end on SoftHSM2, with the real binary and the real
//! OpenSSL (through its PKCS#11 engine for the token keys): round trips in every form,
//! interop both ways, security level high, reading old mail after recovery, and every bad
//! input refused with one error line and no output written.
//! RSA key generation is the slow part: each test enrolls its users once and shares them.

mod util;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;

use util::{AuthorityBed, Run, TestBed, AUTHORITY_PIN, AUTHORITY_TOKEN, SO_PIN, USER_PIN};

const ALICE: &str = "Alice 2026";
const BOB: &str = "Bob 2026";
const CAROL: &str = "Carol 2026";
const ALICE_CARD: &str = "alice-card";
const BOB_CARD: &str = "bob-card";
const CAROL_CARD: &str = "carol-card";
const ALICE_WHO: &str = "alice@example.org";
const WRONG_PIN: &str = "not-the-password";
/// What keyward says about a wrong password.
const WRONG: &[&str] = &["wrong user PIN"];

/// DER of the rsaesOaep OID (1.2.840.113549.1.1.7).
const OAEP_OID: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07,
];

/// Content that a text-mode mangling (CRLF, NUL, high bytes) would change.
fn letter() -> Vec<u8> {
    let mut c = "Bob, the launch code is in the safe. — Alice\r\nline two\n"
        .as_bytes()
        .to_vec();
    c.extend_from_slice(&[0, 1, 2, 0xfe, 0xff, b'\n']);
    c.extend((0..=255u8).cycle().take(3000));
    c
}

/// An authority with `users` (user, keyset, card, extra `enroll` flags) enrolled locally with
/// [`USER_PIN`], each with the e-mail address `user@example.org`.
fn enrolled(users: &[(&str, &str, &str, &[&str])]) -> AuthorityBed {
    let cards: Vec<&str> = users.iter().map(|u| u.2).collect();
    let bed = AuthorityBed::new(&cards, "CN=Message Authority,O=Example");
    assert!(
        !bed.dir.contains(char::is_whitespace),
        "the OpenSSL command lines here are split on whitespace: use a TMPDIR without spaces"
    );
    for (user, keyset, card, extra) in users {
        let key = bed.add_user(user, &["--email", &format!("{user}@example.org")]);
        bed.enroll_local(user, keyset, card, &key, extra, &[]).ok();
    }
    bed
}

/// A path in the bed's directory, as a string.
fn p(bed: &TestBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

/// keyward with `args` and `pin` as the keyset password.
fn kw(bed: &TestBed, args: &[&str], pin: &str) -> Run {
    bed.run_env(args, &[("KEYWARD_PIN", pin)])
}

/// `send --keyset FROM --to T… INPUT -o OUT EXTRA…` with [`USER_PIN`] (asserts success).
fn send(bed: &TestBed, from: &str, to: &[&str], input: &str, out: &str, extra: &[&str]) -> Run {
    let mut args = vec!["send", "--keyset", from];
    for t in to {
        args.extend_from_slice(&["--to", t]);
    }
    args.extend_from_slice(&[input, "-o", out]);
    args.extend_from_slice(extra);
    kw(bed, &args, USER_PIN).ok()
}

/// `read --keyset KEYSET INPUT -o OUT EXTRA…` with `pin`.
fn read(bed: &TestBed, keyset: &str, input: &str, out: &str, extra: &[&str], pin: &str) -> Run {
    let mut args = vec!["read", "--keyset", keyset, input, "-o", out];
    args.extend_from_slice(extra);
    kw(bed, &args, pin)
}

/// Reads with [`USER_PIN`] and `extra`, asserts success and `content`, and returns stderr.
#[track_caller]
fn reads_back(bed: &TestBed, keyset: &str, input: &str, extra: &[&str], content: &[u8]) -> String {
    let out = p(bed, "read-back.out");
    let _ = std::fs::remove_file(&out);
    let run = read(bed, keyset, input, &out, extra, USER_PIN).ok();
    assert!(
        std::fs::read(&out).unwrap() == content,
        "{keyset} read other content from {input}"
    );
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    std::fs::remove_file(&out).unwrap();
    run.stderr
}

/// keyward with [`USER_PIN`], `input` on standard input, and raw standard output.
fn piped(bed: &TestBed, args: &[&str], input: &[u8]) -> (i32, Vec<u8>, String) {
    let mut child = bed
        .keyward()
        .args(args)
        .env("KEYWARD_PIN", USER_PIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keyward");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().expect("keyward output");
    writer.join().unwrap().expect("write standard input");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), out.stdout, stderr)
}

/// Makes a FIFO at `path`, runs `write` (a keyward command with `-o path`) while `cat` drains
/// it, and returns what came through; asserts the FIFO is still a FIFO afterwards.
#[track_caller]
fn through_fifo(path: &str, write: impl FnOnce()) -> Vec<u8> {
    use std::os::unix::fs::FileTypeExt;
    let made = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo {path}");
    let reader = std::process::Command::new("timeout")
        .args(["120", "cat", path])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn cat");
    write();
    let out = reader.wait_with_output().expect("cat");
    assert!(out.status.success(), "cat {path} ended with {}", out.status);
    let kind = std::fs::symlink_metadata(path).unwrap().file_type();
    assert!(kind.is_fifo(), "{path} was replaced by a file");
    std::fs::remove_file(path).unwrap();
    out.stdout
}

/// Asserts a clean refusal: exit 1, nothing on stdout, exactly one stderr line, a
/// `keyward: error:` containing one of `needles`, and no file at `out`.
#[track_caller]
fn refused(run: Run, needles: &[&str], out: &str) {
    // 3 when the message was checked and found bad (a signature that does not verify, an
    // untrusted signer), else 1 (it could not be read or checked).
    let found_bad = run.stderr.contains("signature does not verify")
        || (run.stderr.contains("the message's signer")
            && !run.stderr.contains("cannot be checked"));
    assert_eq!(
        run.code,
        if found_bad { 3 } else { 1 },
        "exit status\nstdout:\n{}\nstderr:\n{}",
        run.stdout,
        run.stderr
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one error line:\n{}", run.stderr);
    assert!(lines[0].starts_with("keyward: error: "), "{}", run.stderr);
    assert!(
        needles.iter().any(|n| lines[0].contains(n)),
        "error lacks any of {needles:?}: {}",
        lines[0]
    );
    assert!(run.stdout.is_empty(), "stdout: {}", run.stdout);
    assert!(
        !Path::new(out).exists(),
        "{out} was written despite the error"
    );
}

/// `%xx` for every byte of a hex string (a pkcs11: URI's id).
fn pct(hex: &str) -> String {
    (0..hex.len())
        .step_by(2)
        .map(|i| format!("%{}", &hex[i..i + 2]))
        .collect()
}

fn unhex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A keyset's `keyset show --json`, and its current encryption certificate (PEM).
struct Keyset(serde_json::Value, String, String);

impl Keyset {
    fn of(bed: &TestBed, name: &str) -> Keyset {
        let pem = bed
            .run(&["keyset", "cert", name, "--encryption"])
            .stdout
            .clone();
        let signing = bed.run(&["keyset", "cert", name]).stdout.clone();
        Keyset(bed.keyset_json(name), pem, signing)
    }

    /// The current encryption key's entry.
    fn enc(&self) -> &serde_json::Value {
        self.0["enrollment"]["encryption_keys"]
            .as_array()
            .expect("encryption keys")
            .iter()
            .find(|k| k["current"] == true)
            .expect("a current encryption key")
    }

    fn enc_pem(&self) -> String {
        self.1.clone()
    }

    fn enc_serial(&self) -> String {
        // upper-case, as messages print serials (JSON has them lower-case)
        self.enc()["certificate_serial"]
            .as_str()
            .unwrap()
            .to_uppercase()
    }

    /// The encryption private key for OpenSSL's engine (with the PIN in the URI).
    fn enc_key_uri(&self, pin: &str) -> String {
        let id = pct(self.enc()["id"].as_str().unwrap());
        let token = self.0["token_label"].as_str().unwrap();
        format!("pkcs11:token={token};id={id};type=private;pin-value={pin}")
    }

    /// The signing private key for OpenSSL's engine (with the PIN in the URI).
    fn signing_key_uri(&self, pin: &str) -> String {
        let uri = self.0["signing_key_uri"].as_str().unwrap();
        assert!(uri.contains("type=private"), "{uri}");
        format!("{uri};pin-value={pin}")
    }

    fn signing_pem(&self) -> String {
        self.2.clone()
    }
}

/// `openssl CMD`, the command line split on whitespace (the beds' paths have none).
fn openssl(bed: &TestBed, cmd: &str) -> Run {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    bed.run_tool("openssl", "openssl", &args)
}

/// `openssl CMD -engine pkcs11` against the bed's SoftHSM.
fn openssl_engine(bed: &TestBed, cmd: &str) -> Run {
    bed.openssl_engine(&cmd.split_whitespace().collect::<Vec<_>>())
}

#[test]
fn alice_sends_bob_reads_in_every_form_and_alice_reads_her_own_copy() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &[]),
        ("bob", BOB, BOB_CARD, &[]),
    ]);
    let content = letter();
    let input = bed.file("letter.bin", &content);
    let bob = Keyset::of(&bed, BOB);
    let alice = Keyset::of(&bed, ALICE);

    // By keyset name: DER, PKCS#1 v1.5, AES-256, to Bob and to Alice, the content hidden.
    let by_name = p(&bed, "by-name.p7m");
    let run = send(&bed, ALICE, &[BOB], &input, &by_name, &[]);
    assert!(
        run.stderr
            .contains("encrypted to 1 recipient(s) and yourself"),
        "{}",
        run.stderr
    );
    let der = std::fs::read(&by_name).unwrap();
    assert_eq!(der[0], 0x30, "not DER");

    // `-o` naming a pipe (as `-o /dev/null` names a device): written in place, never replaced
    // by a file through a rename; `read` writes it only after the signature checks.
    let fifo = p(&bed, "out.fifo");
    let via_pipe = through_fifo(&fifo, || {
        send(&bed, ALICE, &[BOB], &input, &fifo, &[]);
    });
    assert_eq!(via_pipe[0], 0x30, "send wrote no DER message into the pipe");
    let fifo2 = p(&bed, "read.fifo");
    let read_pipe = through_fifo(&fifo2, || {
        read(&bed, BOB, &by_name, &fifo2, &[], USER_PIN).ok();
    });
    assert!(
        read_pipe == content,
        "read wrote other content into the pipe"
    );
    assert!(find(&der, b"launch code").is_none(), "content in the clear");
    assert!(find(&der, OAEP_OID).is_none(), "OAEP without --oaep");
    let dump = openssl(
        &bed,
        &format!("cms -cmsout -print -inform DER -in {by_name}"),
    )
    .ok()
    .stdout;
    assert!(dump.contains("pkcs7-envelopedData"), "{dump}");
    assert!(dump.contains("aes-256-cbc"), "{dump}");
    assert_eq!(
        dump.matches("rsaEncryption").count(),
        2,
        "two slots:\n{dump}"
    );

    // Bob reads: the content, who signed it, and which of his keys opened it.
    let err = reads_back(&bed, BOB, &by_name, &[], &content);
    assert!(
        err.contains(&format!("good signature from {ALICE_WHO}")),
        "{err}"
    );
    let bob_current = format!("current encryption key {}", bob.enc_serial());
    assert!(err.contains(&bob_current), "{err}");
    // Alice reads her own copy with her own key.
    let err = reads_back(&bed, ALICE, &by_name, &[], &content);
    assert!(err.contains(&alice.enc_serial()), "{err}");
    assert!(err.contains(ALICE_WHO), "{err}");

    // By certificate file, PEM and DER.
    let pem = bed.file("bob-enc.pem", bob.enc_pem().as_bytes());
    let der_cert = p(&bed, "bob-enc.der");
    openssl(
        &bed,
        &format!("x509 -in {pem} -outform DER -out {der_cert}"),
    )
    .ok();
    for (i, cert) in [&pem, &der_cert].into_iter().enumerate() {
        let msg = p(&bed, &format!("by-file-{i}.p7m"));
        send(&bed, ALICE, &[cert], &input, &msg, &[]);
        let err = reads_back(&bed, BOB, &msg, &[], &content);
        assert!(
            err.contains(ALICE_WHO) && err.contains(&bob_current),
            "{err}"
        );
    }

    // S/MIME with OAEP: the headers, text, and it reads back for both.
    let eml = p(&bed, "letter.eml");
    send(&bed, ALICE, &[BOB], &input, &eml, &["--smime", "--oaep"]);
    let text = String::from_utf8(std::fs::read(&eml).unwrap()).expect("S/MIME is text");
    for header in [
        "MIME-Version: 1.0",
        "Content-Type: application/pkcs7-mime; smime-type=enveloped-data",
        "Content-Transfer-Encoding: base64",
        "filename=\"smime.p7m\"",
    ] {
        assert!(text.contains(header), "no {header:?}:\n{text}");
    }
    reads_back(&bed, BOB, &eml, &[], &content);
    reads_back(&bed, ALICE, &eml, &[], &content);

    // OAEP in DER: the OID on both slots.
    let oaep = p(&bed, "oaep.p7m");
    send(&bed, ALICE, &[BOB], &input, &oaep, &["--oaep"]);
    let der = std::fs::read(&oaep).unwrap();
    let slots = der
        .windows(OAEP_OID.len())
        .filter(|w| *w == OAEP_OID)
        .count();
    assert_eq!(slots, 2);
    reads_back(&bed, BOB, &oaep, &[], &content);

    // Standard input to standard output, both ways, DER and S/MIME.
    let (code, msg, err) = piped(&bed, &["send", "--keyset", ALICE, "--to", BOB], &content);
    assert_eq!(code, 0, "{err}");
    assert_eq!(msg[0], 0x30, "{err}");
    let (code, out, err) = piped(&bed, &["read", "--keyset", BOB], &msg);
    assert_eq!(code, 0, "{err}");
    assert!(out == content, "stdin/stdout read other content");
    assert!(err.contains(ALICE_WHO), "{err}");
    let args = ["send", "--smime", "--keyset", ALICE, "--to", BOB];
    let (code, eml, err) = piped(&bed, &args, b"short\n");
    assert_eq!(code, 0, "{err}");
    assert!(eml.starts_with(b"MIME-Version: 1.0"), "{err}");
    let (code, out, err) = piped(&bed, &["read", "--keyset", BOB], &eml);
    assert_eq!((code, out.as_slice()), (0, &b"short\n"[..]), "{err}");

    // --json: the signer and the key that opened it; the content goes to -o.
    let out = p(&bed, "json.out");
    let args = ["--json", "read", "--keyset", BOB, &by_name, "-o", &out];
    let j = kw(&bed, &args, USER_PIN).ok().json();
    assert_eq!(j["signer"], ALICE_WHO, "{j}");
    assert_eq!(j["archived_key"], false, "{j}");
    assert_eq!(
        j["opened_with"],
        bob.enc_serial().to_lowercase().as_str(),
        "{j}"
    );
    assert_eq!(j["bytes"], content.len(), "{j}");
    assert_eq!(
        j["content_type"], "application/octet-stream; name=\"letter.bin\"",
        "{j}"
    );
    assert!(std::fs::read(&out).unwrap() == content);

    // RFC 8551 content: UTF-8 text is text/plain; charset=utf-8; `read --mime` keeps the
    // entity; --content-type chooses; a bad one is refused before anything is written.
    let text = bed.file("note.txt", "Grüße, Bob\n".as_bytes());
    let msg = p(&bed, "note.p7m");
    send(&bed, ALICE, &[BOB], &text, &msg, &[]);
    reads_back(&bed, BOB, &msg, &[], "Grüße, Bob\n".as_bytes());
    let entity = p(&bed, "note.entity");
    read(&bed, BOB, &msg, &entity, &["--mime"], USER_PIN).ok();
    let entity = std::fs::read_to_string(&entity).unwrap();
    assert!(
        entity.starts_with("Content-Type: text/plain; charset=utf-8\r\n")
            && entity.ends_with("\r\n\r\nGrüße, Bob\n"),
        "{entity}"
    );
    let pdf = p(&bed, "pdf.p7m");
    send(
        &bed,
        ALICE,
        &[BOB],
        &text,
        &pdf,
        &["--content-type", "application/pdf"],
    );
    let args = ["--json", "read", "--keyset", BOB, &pdf, "-o", &out];
    let j = kw(&bed, &args, USER_PIN).ok().json();
    assert_eq!(j["content_type"], "application/pdf", "{j}");
    let bad = p(&bed, "bad-type.p7m");
    let args = [
        "send",
        "--keyset",
        ALICE,
        "--to",
        BOB,
        "--content-type",
        "pdf",
        &text,
        "-o",
        &bad,
    ];
    refused(kw(&bed, &args, USER_PIN), &["is not a MIME type"], &bad);
}

#[test]
fn openssl_opens_and_verifies_keyward_messages_and_keyward_reads_openssl_messages() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &[]),
        ("bob", BOB, BOB_CARD, &[]),
    ]);
    let content = letter();
    let input = bed.file("letter.bin", &content);
    let bob = Keyset::of(&bed, BOB);
    let alice = Keyset::of(&bed, ALICE);
    let bob_enc = bed.file("bob-enc.pem", bob.enc_pem().as_bytes());
    let alice_sign = bed.file("alice-sign.pem", alice.signing_pem().as_bytes());
    let bob_key = bob.enc_key_uri(USER_PIN);
    let alice_key = alice.signing_key_uri(USER_PIN);
    let ca = &bed.ca;

    // keyward → OpenSSL: decrypt with Bob's token key through the engine, then verify the
    // signature and Alice's chain to the authority's CA. DER with PKCS#1 v1.5, and S/MIME
    // with OAEP.
    for (name, extra, inform) in [
        ("kw.p7m", &[][..], "-inform DER"),
        ("kw.eml", &["--smime", "--oaep"][..], ""),
    ] {
        let msg = p(&bed, name);
        send(&bed, ALICE, &[BOB], &input, &msg, extra);
        let inner = p(&bed, &format!("{name}.inner"));
        openssl_engine(
            &bed,
            &format!(
                "cms -decrypt {inform} -in {msg} -recip {bob_enc} -inkey {bob_key} \
                 -keyform engine -out {inner}"
            ),
        )
        .ok();
        let text = std::fs::read_to_string(&inner).unwrap();
        assert!(text.contains("smime-type=signed-data"), "{text}");
        let out = p(&bed, &format!("{name}.content"));
        let signer = p(&bed, &format!("{name}.signer"));
        let run = openssl(
            &bed,
            &format!("cms -verify -CAfile {ca} -in {inner} -binary -out {out} -signer {signer}"),
        )
        .ok();
        assert!(
            run.stderr.contains("Verification successful"),
            "{}",
            run.stderr
        );
        // The signed content is a MIME entity (RFC 8551): headers, then the file as it is.
        let got = std::fs::read(&out).unwrap();
        let head = b"Content-Type: application/octet-stream; name=\"letter.bin\"\r\n";
        assert!(got.starts_with(head), "{name}: no MIME header");
        let body = find(&got, b"\r\n\r\n").expect("the header block ends") + 4;
        assert!(got[body..] == content, "{name}: OpenSSL got other content");
        let text = String::from_utf8_lossy(&got[..body]);
        assert!(text.contains("Content-Transfer-Encoding: binary"), "{text}");
        assert_eq!(
            std::fs::read_to_string(&signer).unwrap().trim(),
            alice.signing_pem().trim(),
            "{name}: another signer"
        );
    }
    // The chain is really checked: against Alice's own certificate (no CA) it fails.
    let inner = p(&bed, "kw.p7m.inner");
    openssl(
        &bed,
        &format!("cms -verify -CAfile {alice_sign} -in {inner} -out /dev/null"),
    )
    .refused("Verification failure");

    // OpenSSL → keyward, the pipeline: sign with Alice's token key through the engine
    // (S/MIME, text mode: OpenSSL turns LF into CRLF), encrypt to Bob's certificate.
    let note = bed.file("note.txt", b"line one\nline two\n");
    let crlf: &[u8] = b"line one\r\nline two\r\n";
    let sign =
        format!("cms -sign -signer {alice_sign} -inkey {alice_key} -keyform engine -md sha256");
    let signed = p(&bed, "note.signed");
    openssl_engine(&bed, &format!("{sign} -nodetach -in {note} -out {signed}")).ok();
    let msg = p(&bed, "openssl.eml");
    openssl(
        &bed,
        &format!("cms -encrypt -aes256 -in {signed} -out {msg} {bob_enc}"),
    )
    .ok();
    let err = reads_back(&bed, BOB, &msg, &[], crlf);
    assert!(
        err.contains(&format!("good signature from {ALICE_WHO}")),
        "{err}"
    );
    assert!(err.contains(&bob.enc_serial()), "{err}");

    // Binary DER, AES-128, OAEP, Bob named by subject key identifier: the exact bytes.
    let signed = p(&bed, "letter.signed.der");
    openssl_engine(
        &bed,
        &format!("{sign} -nodetach -binary -in {input} -outform DER -out {signed}"),
    )
    .ok();
    let msg = p(&bed, "openssl.p7m");
    openssl(
        &bed,
        &format!(
            "cms -encrypt -binary -aes128 -keyid -in {signed} -outform DER -out {msg} \
             -recip {bob_enc} -keyopt rsa_padding_mode:oaep"
        ),
    )
    .ok();
    let err = reads_back(&bed, BOB, &msg, &[], &content);
    assert!(err.contains(ALICE_WHO), "{err}");

    // A clear-signed (multipart/signed, detached) entity inside the envelope.
    let signed = p(&bed, "note.detached");
    openssl_engine(&bed, &format!("{sign} -in {note} -out {signed}")).ok();
    assert!(std::fs::read_to_string(&signed)
        .unwrap()
        .contains("multipart/signed"));
    let msg = p(&bed, "detached.eml");
    openssl(
        &bed,
        &format!("cms -encrypt -aes256 -in {signed} -out {msg} {bob_enc}"),
    )
    .ok();
    reads_back(&bed, BOB, &msg, &[], crlf);
}

#[test]
fn at_security_high_send_and_read_work_only_with_the_password() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &["--security", "high"]),
        ("bob", BOB, BOB_CARD, &["--security", "high"]),
    ]);
    for name in [ALICE, BOB] {
        assert_eq!(Keyset::of(&bed, name).0["security"], "high");
    }
    let content = letter();
    let input = bed.file("letter.bin", &content);
    let msg = p(&bed, "high.p7m");

    // Without the password (no terminal, nothing given) and with a wrong one: refused at
    // once, nothing written.
    let send_args = ["send", "--keyset", ALICE, "--to", BOB, &input, "-o", &msg];
    let nothing = bed.run_env_timeout(&send_args, &[], 30);
    refused(nothing, &["no password"], &msg);
    refused(kw(&bed, &send_args, WRONG_PIN), WRONG, &msg);
    // The right password.
    send(&bed, ALICE, &[BOB], &input, &msg, &[]);

    let out = p(&bed, "high.out");
    let read_args = ["read", "--keyset", BOB, &msg, "-o", &out];
    let nothing = bed.run_env_timeout(&read_args, &[], 30);
    refused(nothing, &["no password"], &out);
    refused(kw(&bed, &read_args, WRONG_PIN), WRONG, &out);
    let err = reads_back(&bed, BOB, &msg, &[], &content);
    assert!(err.contains(ALICE_WHO), "{err}");
    // Alice's own copy, with her high-security encryption key.
    reads_back(&bed, ALICE, &msg, &[], &content);
}

#[test]
fn after_recovery_and_re_enrollment_the_old_message_opens_with_an_archived_key() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &[]),
        ("bob", BOB, BOB_CARD, &[]),
    ]);
    let content = letter();
    let input = bed.file("letter.bin", &content);
    let old_msg = p(&bed, "old.p7m");
    send(&bed, ALICE, &[BOB], &input, &old_msg, &[]);
    let old_serial = Keyset::of(&bed, BOB).enc_serial();
    reads_back(&bed, BOB, &old_msg, &[], &content);

    // Bob forgets his password: recovery, his card re-initialised, a new keyset name.
    let temp_key = bed.authority("recover", &["bob"]).ok().stdout;
    let new_pin = "bob-new-pin-2";
    let wiped = bed
        .run_env(
            &[
                "token", "init", "--token", BOB_CARD, "--label", BOB_CARD, "--force",
            ],
            &[("KEYWARD_SO_PIN", SO_PIN), ("KEYWARD_NEW_PIN", new_pin)],
        )
        .ok();
    // The admin is told which registered keysets lost their keys.
    assert!(
        wiped
            .stderr
            .contains(&format!("keyset(s) \"{BOB}\" were on this token")),
        "{}",
        wiped.stderr
    );
    let recovered = "Bob 2026 (recovered)";
    let new_pin_env = [("KEYWARD_PIN", new_pin)];
    bed.enroll_local(
        "bob",
        recovered,
        BOB_CARD,
        temp_key.trim(),
        &[],
        &new_pin_env,
    )
    .ok();
    let new_serial = Keyset::of(&bed, recovered).enc_serial();
    assert_ne!(new_serial, old_serial);

    // The old message: opened with the archived key, through the new keyset.
    let out = p(&bed, "old.out");
    let run = read(&bed, recovered, &old_msg, &out, &[], new_pin).ok();
    assert!(std::fs::read(&out).unwrap() == content);
    let archived = format!("ARCHIVED encryption key {old_serial}");
    assert!(run.stderr.contains(&archived), "{}", run.stderr);
    assert!(run.stderr.contains(ALICE_WHO), "{}", run.stderr);
    let out = p(&bed, "old.json.out");
    let args = [
        "--json", "read", "--keyset", recovered, &old_msg, "-o", &out,
    ];
    let j = kw(&bed, &args, new_pin).ok().json();
    assert_eq!(j["archived_key"], true, "{j}");
    assert_eq!(j["opened_with"], old_serial.to_lowercase().as_str(), "{j}");

    // The retired keyset still reads old mail (above), but gets no new mail and sends none;
    // the refusal names the keyset that replaced it.
    let nowhere = p(&bed, "to-retired.p7m");
    for args in [
        [
            "send", "--keyset", ALICE, "--to", BOB, &input, "-o", &nowhere,
        ],
        [
            "send", "--keyset", BOB, "--to", ALICE, &input, "-o", &nowhere,
        ],
    ] {
        let run = kw(&bed, &args, USER_PIN).fails(1, "is retired");
        assert!(run.stderr.contains(recovered), "{}", run.stderr);
        assert!(!Path::new(&nowhere).exists());
    }

    // A new message to the new keyset: the current key.
    let new_msg = p(&bed, "new.p7m");
    send(&bed, ALICE, &[recovered], &input, &new_msg, &[]);
    let out = p(&bed, "new.out");
    let run = read(&bed, recovered, &new_msg, &out, &[], new_pin).ok();
    assert!(std::fs::read(&out).unwrap() == content);
    let current = format!("current encryption key {new_serial}");
    assert!(run.stderr.contains(&current), "{}", run.stderr);
    // The old password opens nothing any more.
    let out = p(&bed, "old-pin.out");
    refused(
        read(&bed, recovered, &new_msg, &out, &[], USER_PIN),
        WRONG,
        &out,
    );
}

/// A CA for `openssl ca` in a directory of the bed: a software one, or ours through the engine.
struct OpensslCa {
    config: String,
    cert: String,
    /// `-keyfile FILE`, or `-keyform engine -keyfile URI`.
    key: String,
    engine: bool,
}

impl OpensslCa {
    fn new(bed: &TestBed, dir: &str, cert: String, key: String, engine: bool) -> OpensslCa {
        let d = p(bed, dir);
        std::fs::create_dir_all(&d).unwrap();
        bed.file(&format!("{dir}/index.txt"), b"");
        bed.file(&format!("{dir}/serial"), b"5EED01\n");
        bed.file(&format!("{dir}/crlnumber"), b"01\n");
        let text = format!(
            "[ca]\ndefault_ca = this\n[this]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n\
             serial = {d}/serial\ncrlnumber = {d}/crlnumber\ndefault_md = sha256\n\
             default_crl_days = 7\npolicy = any\nunique_subject = no\ncopy_extensions = copy\n\
             x509_extensions = signer\n[any]\ncommonName = supplied\n\
             [signer]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,digitalSignature,nonRepudiation\n\
             extendedKeyUsage = emailProtection\n"
        );
        let config = bed.file(&format!("{dir}/ca.cnf"), text.as_bytes());
        OpensslCa {
            config,
            cert,
            key,
            engine,
        }
    }

    /// A self-signed CA `subject` with its key in a file.
    fn software(bed: &TestBed, dir: &str, subject: &str) -> OpensslCa {
        std::fs::create_dir_all(bed.path(dir)).unwrap();
        let key = p(bed, &format!("{dir}/ca.key"));
        let cert = p(bed, &format!("{dir}/ca.pem"));
        openssl(
            bed,
            &format!(
                "req -x509 -newkey rsa:2048 -nodes -keyout {key} -subj {subject} -days 30 \
                 -addext basicConstraints=critical,CA:TRUE \
                 -addext keyUsage=critical,keyCertSign,cRLSign -out {cert}"
            ),
        )
        .ok();
        OpensslCa::new(bed, dir, cert, format!("-keyfile {key}"), false)
    }

    /// The authority of `bed`: its CA certificate, its CA key on the authority token.
    fn ours(bed: &AuthorityBed, dir: &str) -> OpensslCa {
        let state: serde_json::Value =
            serde_json::from_slice(&bed.state_file("authority.toml")).unwrap();
        let id = pct(state["ca_key_id"].as_str().unwrap());
        let uri = format!(
            "pkcs11:token={AUTHORITY_TOKEN};id={id};type=private;pin-value={AUTHORITY_PIN}"
        );
        let key = format!("-keyform engine -keyfile {uri}");
        OpensslCa::new(bed, dir, bed.ca.clone(), key, true)
    }

    fn run(&self, bed: &TestBed, args: &str) -> Run {
        let cmd = format!(
            "ca -batch -config {} -cert {} {} {args}",
            self.config, self.cert, self.key
        );
        if self.engine {
            openssl_engine(bed, &cmd)
        } else {
            openssl(bed, &cmd)
        }
    }

    /// A signer `cn` (e-mail `cn@example.org`) with a software key, valid per `dates`
    /// (`openssl ca` flags). Returns (certificate, key).
    fn signer(&self, bed: &TestBed, cn: &str, dates: &str) -> (String, String) {
        let (key, csr, cert) = (
            p(bed, &format!("{cn}.key")),
            p(bed, &format!("{cn}.csr")),
            p(bed, &format!("{cn}.pem")),
        );
        openssl(
            bed,
            &format!(
                "req -new -newkey rsa:2048 -nodes -keyout {key} -subj /CN={cn} \
                 -addext subjectAltName=email:{cn}@example.org -out {csr}"
            ),
        )
        .ok();
        self.run(bed, &format!("-in {csr} -out {cert} -notext {dates}"))
            .ok();
        (cert, key)
    }
}

/// `openssl cms -sign` with a software key, then `-encrypt` to `recipient`: S/MIME at `out`.
fn openssl_message(
    bed: &TestBed,
    signer: &(String, String),
    recipient: &str,
    text: &[u8],
    out: &str,
) {
    let input = bed.file("openssl-in.txt", text);
    let signed = p(bed, "openssl-signed.eml");
    let (cert, key) = signer;
    openssl(
        bed,
        &format!(
            "cms -sign -binary -nodetach -md sha256 -in {input} -signer {cert} -inkey {key} \
             -out {signed}"
        ),
    )
    .ok();
    openssl(
        bed,
        &format!("cms -encrypt -aes256 -in {signed} -out {out} {recipient}"),
    )
    .ok();
}

#[test]
fn bad_input_is_refused_with_one_error_line_and_nothing_written() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &[]),
        ("bob", BOB, BOB_CARD, &[]),
        ("carol", CAROL, CAROL_CARD, &[]),
    ]);
    let content = letter();
    let input = bed.file("letter.bin", &content);
    let good = p(&bed, "good.p7m");
    send(&bed, ALICE, &[BOB], &input, &good, &[]);
    let good_bytes = std::fs::read(&good).unwrap();
    let out = p(&bed, "never.out");
    let bob = Keyset::of(&bed, BOB);
    let alice = Keyset::of(&bed, ALICE);
    let bob_enc = bed.file("bob-enc.pem", bob.enc_pem().as_bytes());
    let alice_sign = bed.file("alice-sign.pem", alice.signing_pem().as_bytes());
    let bob_reads = |msg: &str, extra: &[&str]| read(&bed, BOB, msg, &out, extra, USER_PIN);

    // Truncated: DER cut in half, S/MIME cut in half, empty.
    let cut = bed.file("cut.p7m", &good_bytes[..good_bytes.len() / 2]);
    refused(bob_reads(&cut, &[]), &["truncated"], &out);
    let eml = p(&bed, "good.eml");
    send(&bed, ALICE, &[BOB], &input, &eml, &["--smime"]);
    let eml_bytes = std::fs::read(&eml).unwrap();
    let cut = bed.file("cut.eml", &eml_bytes[..eml_bytes.len() / 2]);
    refused(bob_reads(&cut, &[]), &["truncated", "damaged"], &out);
    let empty = bed.file("empty.p7m", b"");
    refused(bob_reads(&empty, &[]), &["empty"], &out);

    // Corrupted: a byte in the middle (the encrypted content), one near the end (the last
    // cipher block: the padding), one of Bob's encrypted message key.
    let flipped = |name: &str, at: usize| {
        let mut b = good_bytes.clone();
        b[at] ^= 0x01;
        bed.file(name, &b)
    };
    let damaged = &[
        "damaged",
        "corrupted",
        "altered",
        "does not verify",
        "not a CMS",
        "not signed",
    ];
    let middle = flipped("middle.p7m", good_bytes.len() / 2);
    refused(bob_reads(&middle, &[]), damaged, &out);
    // The message ends in ten end-of-contents octets (indefinite lengths); the last cipher
    // block (the padding) is before them and its 04-piece header.
    assert_eq!(
        good_bytes[good_bytes.len() - 10..],
        [0u8; 10],
        "streamed BER"
    );
    let end = flipped("end.p7m", good_bytes.len() - 10 - 3);
    refused(bob_reads(&end, &[]), damaged, &out);
    let eoc = flipped("eoc.p7m", good_bytes.len() - 3);
    refused(bob_reads(&eoc, &[]), &["corrupted"], &out);
    let slot = find(&good_bytes, &unhex(&bob.enc_serial())).expect("Bob's slot names his serial");
    let key_at = slot + find(&good_bytes[slot..], &[0x04, 0x82, 0x01, 0x00]).expect("his key");
    let key = flipped("key.p7m", key_at + 4 + 100);
    refused(
        bob_reads(&key, &[]),
        &["failed on token", "corrupted"],
        &out,
    );

    // A forged content under Alice's real signature (OpenSSL signs through the engine): the
    // genuine one reads, the forged one does not.
    let pay = bed.file("pay.txt", b"pay bob 100 dollars");
    let sig = p(&bed, "pay.der");
    let alice_key = alice.signing_key_uri(USER_PIN);
    openssl_engine(
        &bed,
        &format!(
            "cms -sign -binary -nodetach -md sha256 -in {pay} -signer {alice_sign} \
             -inkey {alice_key} -keyform engine -outform DER -out {sig}"
        ),
    )
    .ok();
    let mut forged = std::fs::read(&sig).unwrap();
    let at = find(&forged, b"100 dollars").expect("the content in the signed data");
    forged[at] = b'9';
    let forged = bed.file("forged.der", &forged);
    for (signed, name) in [(&sig, "genuine.p7m"), (&forged, "forged.p7m")] {
        let msg = p(&bed, name);
        openssl(
            &bed,
            &format!("cms -encrypt -binary -aes256 -in {signed} -outform DER -out {msg} {bob_enc}"),
        )
        .ok();
        if name == "genuine.p7m" {
            reads_back(&bed, BOB, &msg, &[], b"pay bob 100 dollars");
        } else {
            refused(bob_reads(&msg, &[]), &["signature does not verify"], &out);
        }
    }

    // For someone else: Alice's message to Carol.
    let for_carol = p(&bed, "for-carol.p7m");
    send(&bed, ALICE, &[CAROL], &input, &for_carol, &[]);
    refused(
        bob_reads(&for_carol, &[]),
        &["not encrypted to any of your keys"],
        &out,
    );
    reads_back(&bed, CAROL, &for_carol, &[], &content);

    // A wrong password.
    refused(read(&bed, BOB, &good, &out, &[], WRONG_PIN), WRONG, &out);

    // A keyset that is not enrolled (a plain keyset; P-256 is quick to make).
    bed.create_keyset("Plain", CAROL_CARD, USER_PIN, &["--key-type", "p256"])
        .ok();
    let plain = read(&bed, "Plain", &good, &out, &[], USER_PIN);
    refused(plain, &["not enrolled"], &out);
    let msg = p(&bed, "from-plain.p7m");
    let args = ["send", "--keyset", "Plain", "--to", BOB, &input, "-o", &msg];
    refused(kw(&bed, &args, USER_PIN), &["not enrolled"], &msg);

    // Recipient files that are not (encryption) certificates.
    let pubkey = bed.run(&["keyset", "pubkey", BOB]).ok().stdout;
    let pubkey = bed.file("bob-pub.pem", pubkey.as_bytes());
    for (file, needle) in [
        (&input, "could not parse the certificate"),
        (&pubkey, "no CERTIFICATE"),
        (&alice_sign, "not for encryption"),
    ] {
        let msg = p(&bed, "to-bad.p7m");
        let args = ["send", "--keyset", ALICE, "--to", file, &input, "-o", &msg];
        let run = kw(&bed, &args, USER_PIN);
        assert!(
            run.stderr.contains(&format!("recipient {file}")),
            "{}",
            run.stderr
        );
        refused(run, &[needle], &msg);
    }

    // An unknown CA: a signer from another authority, and --ca naming another authority…
    let other = OpensslCa::software(&bed, "other-ca", "/CN=Other-Authority");
    let mallory = other.signer(&bed, "mallory", "-days 30");
    let from_other = p(&bed, "mallory.eml");
    openssl_message(&bed, &mallory, &bob_enc, b"trust me", &from_other);
    refused(bob_reads(&from_other, &[]), &["is unknown"], &out);
    refused(
        bob_reads(&good, &["--ca", &other.cert]),
        &["is unknown"],
        &out,
    );
    // …which --ca does accept when asked to.
    let err = reads_back(&bed, BOB, &from_other, &["--ca", &other.cert], b"trust me");
    assert!(err.contains("mallory@example.org"), "{err}");

    // An expired signer: a certificate from our authority's CA (signed through the engine
    // with the CA key on the authority token) that expired in 2021, and a current one made
    // the same way, which reads.
    let ours = OpensslCa::ours(&bed, "our-ca");
    let eve = ours.signer(
        &bed,
        "eve",
        "-startdate 20200101000000Z -enddate 20210101000000Z",
    );
    let expired = p(&bed, "expired.eml");
    openssl_message(&bed, &eve, &bob_enc, b"old news", &expired);
    refused(bob_reads(&expired, &[]), &["expired"], &out);
    let eve_now = ours.signer(&bed, "eve-now", "-days 30");
    let current = p(&bed, "current.eml");
    openssl_message(&bed, &eve_now, &bob_enc, b"fresh news", &current);
    reads_back(&bed, BOB, &current, &[], b"fresh news");

    // A CRL from another CA vouches for no one.
    let other_crl = p(&bed, "other.crl");
    other.run(&bed, &format!("-gencrl -out {other_crl}")).ok();
    let run = bob_reads(&good, &["--crl", &other_crl]);
    refused(run, &["the CRL is not from the CA"], &out);

    // A revoked signer: readable against our CRL before, refused after (PEM and DER CRLs).
    let crl0 = p(&bed, "crl0.pem");
    bed.authority("crl", &["-o", &crl0]).ok();
    reads_back(&bed, BOB, &good, &["--crl", &crl0], &content);
    bed.authority("revoke", &["alice"]).ok();
    let crl = p(&bed, "crl.pem");
    bed.authority("crl", &["-o", &crl]).ok();
    let crl_der = p(&bed, "crl.der");
    openssl(&bed, &format!("crl -in {crl} -outform DER -out {crl_der}")).ok();
    for c in [&crl, &crl_der] {
        refused(bob_reads(&good, &["--crl", c]), &["REVOKED"], &out);
    }
    // Without a CRL keyward cannot know (as documented): the message still reads.
    reads_back(&bed, BOB, &good, &[], &content);
}

/// keyward `args` under GNU time: the run and its peak RSS in KiB.
fn kw_rss(bed: &TestBed, args: &[&str]) -> (Run, u64) {
    assert!(
        Path::new("/usr/bin/time").exists(),
        "GNU time is not installed: run `bash testbeds/setup.sh` (apt-get install time)"
    );
    let kw = bed.keyward();
    let rss_file = bed.path(&format!("rss-{}", args[0]));
    let mut cmd = std::process::Command::new("/usr/bin/time");
    cmd.arg("-f").arg("%M").arg("-o").arg(&rss_file);
    cmd.arg(kw.get_program()).args(args).stdin(Stdio::null());
    for (k, v) in kw.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("KEYWARD_PIN", USER_PIN);
    let out = cmd.output().expect("run keyward under time");
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    let rss = std::fs::read_to_string(&rss_file).expect("time's output");
    let rss = rss
        .lines()
        .last()
        .unwrap_or("")
        .trim()
        .parse()
        .expect("peak RSS");
    (run, rss)
}

#[test]
fn a_large_message_streams_in_bounded_memory() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &[]),
        ("bob", BOB, BOB_CARD, &[]),
    ]);
    // 40 MiB of xorshift bytes: more than standard output holds back (32 MiB).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let big: Vec<u8> = (0..40 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let input = bed.file("big.bin", &big);
    let msg = p(&bed, "big.p7m");
    let (run, send_rss) = kw_rss(
        &bed,
        &["send", "--keyset", ALICE, "--to", BOB, &input, "-o", &msg],
    );
    let run = run.ok();
    assert!(run.stderr.contains("yourself"), "{}", run.stderr);
    let out = p(&bed, "big.out");
    let (run, read_rss) = kw_rss(&bed, &["read", "--keyset", BOB, &msg, "-o", &out]);
    run.ok();
    assert!(std::fs::read(&out).unwrap() == big, "other content");
    for (what, rss) in [("send", send_rss), ("read", read_rss)] {
        assert!(rss < 64 * 1024, "{what} of 40 MiB peaked at {rss} KiB");
    }
    // To standard output the content waits until it is verified: too large, refused first.
    // A usage error (exit 2), before the token is asked for anything.
    let run = kw(&bed, &["read", "--keyset", BOB, &msg], WRONG_PIN);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert!(run.stderr.contains("pass -o FILE"), "{}", run.stderr);
}

/// An output that exists is replaced whole (the temporary file is exchanged with it, then the
/// old one removed): the new message is there, nothing is left beside it; a failed send
/// leaves the old one as it was.
#[test]
fn an_existing_output_is_replaced_whole_and_nothing_is_left_beside_it() {
    let bed = enrolled(&[
        ("alice", ALICE, ALICE_CARD, &[]),
        ("bob", BOB, BOB_CARD, &[]),
    ]);
    let dir = bed.path("out");
    std::fs::create_dir_all(&dir).unwrap();
    let input = bed.file("letter.txt", &letter());
    let out = p(&bed, "out/letter.p7m");
    std::fs::write(&out, b"an older message\n").unwrap();
    send(&bed, ALICE, &[BOB], &input, &out, &[]);
    let first = std::fs::read(&out).unwrap();
    assert!(first.len() > 1000 && first[0] == 0x30, "not a message");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["letter.p7m"], "left beside the output");
    let read = p(&bed, "out.txt");
    kw(
        &bed,
        &["read", "--keyset", BOB, &out, "-o", &read],
        USER_PIN,
    )
    .ok();
    assert!(std::fs::read(&read).unwrap() == letter());
    // A wrong password: refused, the message there untouched, nothing beside it.
    kw(
        &bed,
        &["send", "--keyset", ALICE, "--to", BOB, &input, "-o", &out],
        WRONG_PIN,
    )
    .refused("wrong user PIN");
    assert!(
        std::fs::read(&out).unwrap() == first,
        "the old output changed"
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}
