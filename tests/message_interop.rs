//! Messages between keyward and the other S/MIME implementations, both ways, with the real
//! tools and the keys on SoftHSM2: OpenSSL `cms` (through its PKCS#11 engine; PKCS#1 v1.5
//! and OAEP key transport, DER and S/MIME, streamed and not) and NSS `cmsutil` (the token
//! loaded into an NSS database with `modutil`, the library Thunderbird uses).
//! What each client cannot read is pinned here too: NSS 3.87 does not read RSA-OAEP
//! recipients, which is why `send --oaep` warns.

mod util;

use std::path::Path;

use base64ct::{Base64, Encoding};
use util::{AuthorityBed, Run, TestBed, USER_PIN};

const ALICE: &str = "alice";
const BOB: &str = "bob";

/// An authority with Alice and Bob enrolled on their own cards.
fn enrolled() -> AuthorityBed {
    let bed = AuthorityBed::new(
        &["alice-card", "bob-card"],
        "CN=Interop Authority,O=Example",
    );
    assert!(
        !bed.dir.contains(char::is_whitespace),
        "the command lines here are split on whitespace: use a TMPDIR without spaces"
    );
    for (user, card) in [(ALICE, "alice-card"), (BOB, "bob-card")] {
        let key = bed.add_user(user, &["--email", &format!("{user}@example.org")]);
        bed.enroll_local(user, user, card, &key, &[], &[]).ok();
    }
    bed
}

fn p(bed: &TestBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

fn kw(bed: &TestBed, args: &[&str]) -> Run {
    bed.run_env(args, &[("KEYWARD_PIN", USER_PIN)])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The body of a MIME entity (after the first empty line).
fn body(entity: &[u8]) -> &[u8] {
    let at = find(entity, b"\r\n\r\n").expect("a MIME header block") + 4;
    &entity[at..]
}

/// A keyset's `keyset show --json` and its certificates (`keyset cert`), with what the other
/// tools need.
struct Keyset {
    shown: serde_json::Value,
    signing_pem: String,
    enc_pem: String,
}

impl Keyset {
    fn of(bed: &TestBed, name: &str) -> Keyset {
        let cert = |extra: &[&str]| {
            let mut args = vec!["keyset", "cert", name];
            args.extend_from_slice(extra);
            bed.run(&args).ok().stdout
        };
        Keyset {
            shown: bed.keyset_json(name),
            signing_pem: cert(&[]),
            enc_pem: cert(&["--encryption"]),
        }
    }

    fn enc_pem(&self) -> String {
        self.enc_pem.clone()
    }

    fn enc_key_uri(&self) -> String {
        let key = self.shown["enrollment"]["encryption_keys"]
            .as_array()
            .expect("encryption keys")
            .iter()
            .find(|k| k["current"] == true)
            .expect("a current encryption key");
        let uri = key["key_uri"].as_str().unwrap();
        format!("{uri};pin-value={USER_PIN}")
    }

    fn signing_key_uri(&self) -> String {
        let uri = self.shown["signing_key_uri"].as_str().unwrap();
        format!("{uri};pin-value={USER_PIN}")
    }

    fn signing_pem(&self) -> String {
        self.signing_pem.clone()
    }
}

fn openssl(bed: &TestBed, cmd: &str) -> Run {
    let args: Vec<&str> = cmd.split_whitespace().collect();
    bed.run_tool("openssl", "openssl", &args)
}

fn openssl_engine(bed: &TestBed, cmd: &str) -> Run {
    bed.openssl_engine(&cmd.split_whitespace().collect::<Vec<_>>())
}

/// Content a text-mode mangling would change, larger than one streamed piece (64 KiB).
fn content() -> Vec<u8> {
    let mut c = b"Bob,\r\nthe report.\n\0".to_vec();
    c.extend((0..=255u8).cycle().take(200_000));
    c
}

#[test]
fn openssl_reads_keyward_messages_and_keyward_reads_openssl_messages_in_every_form() {
    let bed = enrolled();
    let content = content();
    let input = bed.file("report.bin", &content);
    let bob = Keyset::of(&bed, BOB);
    let alice = Keyset::of(&bed, ALICE);
    let bob_enc = bed.file("bob-enc.pem", bob.enc_pem().as_bytes());
    let alice_sign = bed.file("alice-sign.pem", alice.signing_pem().as_bytes());
    let (bob_key, alice_key) = (bob.enc_key_uri(), alice.signing_key_uri());
    let ca = &bed.ca;

    // keyward → OpenSSL: PKCS#1 v1.5 and OAEP, DER and S/MIME. keyward streams (BER,
    // indefinite lengths); OpenSSL decrypts with Bob's token key and verifies Alice's
    // signature and chain; the signed content is the file as a MIME entity.
    for (name, extra) in [
        ("kw.p7m", &[][..]),
        ("kw-oaep.p7m", &["--oaep"][..]),
        ("kw.eml", &["--smime"][..]),
        ("kw-oaep.eml", &["--smime", "--oaep"][..]),
    ] {
        let msg = p(&bed, name);
        let mut args = vec!["send", "--keyset", ALICE, "--to", BOB, &input, "-o", &msg];
        args.extend_from_slice(extra);
        let run = kw(&bed, &args).ok();
        let oaep = extra.contains(&"--oaep");
        assert_eq!(run.stderr.contains("NSS"), oaep, "{}", run.stderr);
        let bytes = std::fs::read(&msg).unwrap();
        let der = if extra.contains(&"--smime") {
            let text = String::from_utf8(body(&bytes).to_vec()).unwrap();
            Base64::decode_vec(&text.split_whitespace().collect::<String>()).unwrap()
        } else {
            bytes
        };
        assert_eq!(
            der[..2],
            [0x30, 0x80],
            "{name}: not streamed (indefinite length)"
        );
        let inform = if extra.contains(&"--smime") {
            "SMIME"
        } else {
            "DER"
        };
        let inner = p(&bed, &format!("{name}.inner"));
        openssl_engine(
            &bed,
            &format!(
                "cms -decrypt -inform {inform} -in {msg} -recip {bob_enc} -inkey {bob_key} \
                 -keyform engine -out {inner}"
            ),
        )
        .ok();
        let out = p(&bed, &format!("{name}.out"));
        let run = openssl(
            &bed,
            &format!("cms -verify -CAfile {ca} -in {inner} -binary -out {out}"),
        )
        .ok();
        assert!(
            run.stderr.contains("Verification successful"),
            "{}",
            run.stderr
        );
        let entity = std::fs::read(&out).unwrap();
        assert!(
            entity.starts_with(b"Content-Type: application/octet-stream; name=\"report.bin\"\r\n"),
            "{name}: {}",
            String::from_utf8_lossy(&entity[..80])
        );
        assert!(
            body(&entity) == content,
            "{name}: OpenSSL read other content"
        );
    }

    // OpenSSL → keyward: signed with Alice's token key, encrypted to Bob; both key
    // transports, DER and S/MIME, streamed (-stream: BER) and not (DER).
    for oaep in [false, true] {
        for smime in [false, true] {
            for streamed in [false, true] {
                let tag = format!("{oaep}-{smime}-{streamed}");
                let stream = if streamed { "-stream" } else { "" };
                let signed = p(&bed, &format!("ssl-{tag}.signed"));
                openssl_engine(
                    &bed,
                    &format!(
                        "cms -sign -binary -nodetach -md sha256 {stream} -in {input} \
                         -signer {alice_sign} -inkey {alice_key} -keyform engine -out {signed}"
                    ),
                )
                .ok();
                let msg = p(&bed, &format!("ssl-{tag}.msg"));
                let outform = if smime { "" } else { "-outform DER" };
                let keyopt = if oaep {
                    "-keyopt rsa_padding_mode:oaep"
                } else {
                    ""
                };
                openssl(
                    &bed,
                    &format!(
                        "cms -encrypt -binary -aes256 {stream} -in {signed} {outform} \
                         -out {msg} -recip {bob_enc} {keyopt}"
                    ),
                )
                .ok();
                let out = p(&bed, &format!("ssl-{tag}.out"));
                let run = kw(&bed, &["read", "--keyset", BOB, &msg, "-o", &out]);
                let run = run.ok();
                assert!(
                    run.stderr.contains("good signature from alice"),
                    "{tag}: {}",
                    run.stderr
                );
                assert!(
                    std::fs::read(&out).unwrap() == content,
                    "{tag}: other content"
                );
            }
        }
    }

    // An encrypted message that is not signed is reported as such.
    let unsigned = p(&bed, "unsigned.p7m");
    openssl(
        &bed,
        &format!("cms -encrypt -binary -aes256 -in {input} -outform DER -out {unsigned} {bob_enc}"),
    )
    .ok();
    let out = p(&bed, "unsigned.out");
    let run = kw(&bed, &["read", "--keyset", BOB, &unsigned, "-o", &out]);
    run.refused("not signed");
    assert!(
        !Path::new(&out).exists(),
        "output written for an unsigned message"
    );
}

/// An NSS database with the bed's SoftHSM added through `modutil` and the authority's CA
/// trusted for e-mail.
fn nss_db(bed: &AuthorityBed) -> (String, String) {
    let db = format!("sql:{}", p(bed, "nssdb"));
    std::fs::create_dir_all(bed.path("nssdb")).unwrap();
    let pin = bed.file("nss-pin.txt", format!("{USER_PIN}\n").as_bytes());
    bed.run_tool(
        "certutil",
        "libnss3-tools",
        &["-N", "-d", &db, "--empty-password"],
    )
    .ok();
    let module = util::module();
    let module = module.to_string_lossy();
    bed.run_tool(
        "modutil",
        "libnss3-tools",
        &[
            "-dbdir", &db, "-add", "softhsm", "-libfile", &module, "-force",
        ],
    )
    .ok();
    bed.run_tool(
        "certutil",
        "libnss3-tools",
        &[
            "-A",
            "-d",
            &db,
            "-n",
            "keyward-ca",
            "-t",
            "C,C,C",
            "-i",
            &bed.ca,
        ],
    )
    .ok();
    (db, pin)
}

fn cmsutil(bed: &TestBed, args: &[&str]) -> Run {
    bed.run_tool("cmsutil", "libnss3-tools", args)
}

#[test]
fn nss_reads_keyward_messages_and_keyward_reads_nss_messages() {
    let bed = enrolled();
    let content = content();
    let input = bed.file("report.bin", &content);
    let (db, pin) = nss_db(&bed);
    // The token's keys and certificates are visible to NSS (keyward stores the certificates
    // next to the keys).
    let listed = bed
        .run_tool(
            "certutil",
            "libnss3-tools",
            &["-L", "-d", &db, "-h", "all", "-f", &pin],
        )
        .ok()
        .stdout;
    assert!(listed.contains("bob-card:"), "{listed}");

    // keyward → NSS: cmsutil decrypts with Bob's token key, then decodes and verifies the
    // signed entity inside (default usage: e-mail signer, chain to the trusted CA).
    let msg = p(&bed, "kw.p7m");
    kw(
        &bed,
        &["send", "--keyset", ALICE, "--to", BOB, &input, "-o", &msg],
    )
    .ok();
    let inner = p(&bed, "kw.inner");
    cmsutil(
        &bed,
        &["-D", "-d", &db, "-f", &pin, "-i", &msg, "-o", &inner],
    )
    .ok();
    let inner = std::fs::read(&inner).unwrap();
    assert!(find(&inner, b"smime-type=signed-data").is_some());
    let signed_b64: String = String::from_utf8(body(&inner).to_vec())
        .unwrap()
        .split_whitespace()
        .collect();
    let signed = Base64::decode_vec(&signed_b64).unwrap();
    let signed_file = bed.file("kw.signed.der", &signed);
    let out = p(&bed, "kw.nss.out");
    let run = cmsutil(
        &bed,
        &["-D", "-d", &db, "-i", &signed_file, "-o", &out, "-v"],
    )
    .ok();
    assert!(
        !run.stderr.contains("status"),
        "a signer status was reported: {}",
        run.stderr
    );
    let entity = std::fs::read(&out).unwrap();
    assert!(body(&entity) == content, "NSS read other content");
    // …and the check is real: a changed byte of the content fails it.
    let mut forged = signed.clone();
    let at = find(&forged, &content[..64]).expect("the content in the signed data");
    forged[at + 10] ^= 1;
    let forged = bed.file("forged.der", &forged);
    let run = cmsutil(
        &bed,
        &["-D", "-d", &db, "-i", &forged, "-o", "/dev/null", "-v"],
    );
    assert!(
        run.code != 0 || run.stderr.contains("DigestMismatch"),
        "NSS accepted a forged content: {}",
        run.stderr
    );

    // OAEP: NSS cannot read it, which is what `send --oaep` warns about.
    let oaep = p(&bed, "kw-oaep.p7m");
    let run = kw(
        &bed,
        &[
            "send", "--keyset", ALICE, "--to", BOB, "--oaep", &input, "-o", &oaep,
        ],
    )
    .ok();
    assert!(run.stderr.contains("NSS"), "{}", run.stderr);
    cmsutil(
        &bed,
        &["-D", "-d", &db, "-f", &pin, "-i", &oaep, "-o", "/dev/null"],
    )
    .refused("SEC_ERROR_UNSUPPORTED_KEYALG");

    // NSS → keyward: cmsutil signs with Alice's token key (signing time, SHA-256) and
    // encrypts the signed DER to Bob's certificate on his token.
    let signed = p(&bed, "nss.signed");
    cmsutil(
        &bed,
        &[
            "-S",
            "-d",
            &db,
            "-f",
            &pin,
            "-N",
            "alice-card:alice signing certificate",
            "-G",
            "-H",
            "SHA256",
            "-i",
            &input,
            "-o",
            &signed,
        ],
    )
    .ok();
    // The sender has Bob's certificate, not his token: it goes into NSS's own database.
    let bob_enc = bed.file("bob-enc.pem", Keyset::of(&bed, BOB).enc_pem().as_bytes());
    bed.run_tool(
        "certutil",
        "libnss3-tools",
        &["-A", "-d", &db, "-n", "bob-enc", "-t", ",,", "-i", &bob_enc],
    )
    .ok();
    let nss_msg = p(&bed, "nss.p7m");
    cmsutil(
        &bed,
        &[
            "-E", "-d", &db, "-r", "bob-enc", "-i", &signed, "-o", &nss_msg,
        ],
    )
    .ok();
    let out = p(&bed, "nss.out");
    let run = kw(&bed, &["read", "--keyset", BOB, &nss_msg, "-o", &out]).ok();
    assert!(
        run.stderr.contains("good signature from alice"),
        "{}",
        run.stderr
    );
    assert!(
        std::fs::read(&out).unwrap() == content,
        "keyward read other content"
    );
}

/// A GnuPG home where `gpgsm` reaches the bed's SoftHSM through `gnupg-pkcs11-scd` (as its
/// scdaemon; the PIN comes from a pinentry that answers with it), trusts the authority's CA,
/// and has learnt the tokens' keys and certificates (`--learn-card`). CRL checks are off:
/// revocation is not what this test is about.
fn gpgsm_home(bed: &AuthorityBed) -> std::path::PathBuf {
    for (program, package) in [
        ("gpgsm", "gpgsm"),
        ("gnupg-pkcs11-scd", "gnupg-pkcs11-scd"),
        ("gpg-agent", "gpg-agent"),
    ] {
        util::require_tool(program, package);
    }
    // A short path: gpg-agent's socket must fit in a sockaddr_un.
    let home = tempfile::Builder::new()
        .prefix("kwg")
        .tempdir_in("/tmp")
        .expect("a GnuPG home")
        .keep();
    let pinentry = home.join("pinentry.sh");
    std::fs::write(
        &pinentry,
        format!(
            "#!/bin/sh\necho 'OK pleased'\nwhile read -r cmd rest; do\n  case \"$cmd\" in\n    GETPIN) echo 'D {USER_PIN}'; echo OK;;\n    BYE) echo OK; exit 0;;\n    *) echo OK;;\n  esac\ndone\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&pinentry, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let scd = which("gnupg-pkcs11-scd");
    std::fs::write(
        home.join("gpg-agent.conf"),
        format!(
            "scdaemon-program {scd}\npinentry-program {}\n",
            pinentry.display()
        ),
    )
    .unwrap();
    std::fs::write(
        home.join("gnupg-pkcs11-scd.conf"),
        format!(
            "providers p1\nprovider-p1-library {}\n",
            util::module().display()
        ),
    )
    .unwrap();
    std::fs::write(home.join("gpgsm.conf"), "disable-crl-checks\n").unwrap();
    gpgsm(bed, &home, &["--import", &bed.ca]).ok();
    let fpr = gpgsm(bed, &home, &["--with-colons", "--list-keys"])
        .ok()
        .stdout;
    let fpr = fpr
        .lines()
        .find(|l| l.starts_with("fpr:"))
        .and_then(|l| l.split(':').nth(9))
        .map(str::to_string)
        .expect("the CA's fingerprint");
    std::fs::write(home.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
    gpgsm(bed, &home, &["--learn-card"]).ok();
    home
}

fn which(program: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn gpgsm(bed: &TestBed, home: &Path, args: &[&str]) -> Run {
    let out = bed
        .tool("gpgsm", "gpgsm")
        .env("GNUPGHOME", home)
        .arg("--batch")
        .args(args)
        .output()
        .expect("run gpgsm");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Stops the GnuPG home's agent (and its scdaemon) and removes the home.
struct GnupgHome(std::path::PathBuf);

impl Drop for GnupgHome {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .env("GNUPGHOME", &self.0)
            .args(["--kill", "all"])
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn gpgsm_reads_keyward_messages_and_keyward_reads_gpgsm_messages() {
    let bed = enrolled();
    let content = content();
    let input = bed.file("report.bin", &content);
    let home = GnupgHome(gpgsm_home(&bed));
    let home = home.0.as_path();

    // keyward → gpgsm: decrypt with Bob's token key (through gnupg-pkcs11-scd), then verify
    // the signed entity's base64 body (gpgsm reads no MIME headers).
    let msg = p(&bed, "kw.p7m");
    kw(
        &bed,
        &["send", "--keyset", ALICE, "--to", BOB, &input, "-o", &msg],
    )
    .ok();
    let inner = p(&bed, "kw.inner");
    gpgsm(&bed, home, &["--output", &inner, "--decrypt", &msg]).ok();
    let inner = std::fs::read(&inner).unwrap();
    assert!(find(&inner, b"smime-type=signed-data").is_some());
    let signed = bed.file("kw.signed.b64", body(&inner));
    let out = p(&bed, "kw.gpgsm.out");
    let run = gpgsm(
        &bed,
        home,
        &["--assume-base64", "--output", &out, "--verify", &signed],
    )
    .ok();
    assert!(run.stderr.contains("Good signature"), "{}", run.stderr);
    assert!(
        body(&std::fs::read(&out).unwrap()) == content,
        "gpgsm read other content"
    );

    // OAEP: gpgsm 2.2 cannot read it, which is what `send --oaep` warns about.
    let oaep = p(&bed, "kw-oaep.p7m");
    kw(
        &bed,
        &[
            "send", "--keyset", ALICE, "--to", BOB, "--oaep", &input, "-o", &oaep,
        ],
    )
    .ok();
    gpgsm(&bed, home, &["--output", "/dev/null", "--decrypt", &oaep]).refused("decryption failed");

    // gpgsm → keyward: signed with Alice's token key, encrypted to Bob's certificate.
    let bob_enc = bed.file("bob-enc.pem", Keyset::of(&bed, BOB).enc_pem().as_bytes());
    gpgsm(&bed, home, &["--import", &bob_enc]).ok();
    let fpr = openssl(
        &bed,
        &format!("x509 -in {bob_enc} -noout -fingerprint -sha1"),
    )
    .ok()
    .stdout;
    let fpr: String = fpr
        .split('=')
        .nth(1)
        .expect("a fingerprint")
        .trim()
        .replace(':', "");
    // Alice's signing certificate by its fingerprint: her encryption certificate names the
    // same address, and which of the two `-u alice@example.org` picks is not fixed.
    let alice_sig = bed.file(
        "alice-sig.pem",
        Keyset::of(&bed, ALICE).signing_pem().as_bytes(),
    );
    let alice_fpr: String = openssl(
        &bed,
        &format!("x509 -in {alice_sig} -noout -fingerprint -sha1"),
    )
    .ok()
    .stdout
    .split('=')
    .nth(1)
    .expect("a fingerprint")
    .trim()
    .replace(':', "");
    let alice_fpr = format!("0x{alice_fpr}");
    let signed = p(&bed, "gpgsm.signed");
    gpgsm(
        &bed,
        home,
        &["-u", &alice_fpr, "--output", &signed, "--sign", &input],
    )
    .ok();
    let gmsg = p(&bed, "gpgsm.p7m");
    gpgsm(
        &bed,
        home,
        &[
            "-r",
            &format!("0x{fpr}"),
            "--output",
            &gmsg,
            "--encrypt",
            &signed,
        ],
    )
    .ok();
    let out = p(&bed, "gpgsm.out");
    let run = kw(&bed, &["read", "--keyset", BOB, &gmsg, "-o", &out]).ok();
    assert!(
        run.stderr.contains("good signature from alice"),
        "{}",
        run.stderr
    );
    assert!(
        std::fs::read(&out).unwrap() == content,
        "keyward read other content"
    );
}
