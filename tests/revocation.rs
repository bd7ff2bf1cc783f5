//! Revocation seen by default, end to end on SoftHSM2 with the real binary: `authority crl`
//! writes to its `file:` distribution point, `keyward crl fetch` / `crl import` keep the newest
//! CRL per authority under KEYWARD_HOME, `read` refuses a revoked signer and `send` a revoked
//! or expired recipient without `--crl`; a missing or stale CRL is a one-line warning; an
//! older, forged or foreign CRL is refused and changes nothing.

mod util;

use std::path::Path;

use keyward::pki::x509;
use keyward::revocation::parse_crl;
use util::{pem_blocks, AuthorityBed, Run, TestBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

const CA_NAME: &str = "CN=Revocation Authority,O=Example";

fn p(bed: &TestBed, name: &str) -> String {
    bed.path(name).to_string_lossy().into_owned()
}

fn openssl(bed: &TestBed, args: &[&str]) -> Run {
    bed.run_tool("openssl", "openssl", args)
}

/// `openssl ARGS -engine pkcs11` against the bed's SoftHSM.
fn openssl_engine(bed: &TestBed, args: &[&str]) -> Run {
    bed.openssl_engine(args)
}

/// An authority (CRL distribution point `file://BED/pub/ca.crl`) with `users` (user, keyset,
/// card) enrolled locally, each with the address `user@example.org`.
fn authority(users: &[(&str, &str, &str)]) -> AuthorityBed {
    authority_at(users, None)
}

/// [`authority`] with the CRL distribution point `cdp` (default: the file: one).
fn authority_at(users: &[(&str, &str, &str)], cdp: Option<(TestBed, String)>) -> AuthorityBed {
    let (bed, cdp) = match cdp {
        Some((bed, url)) => (bed, Some(url)),
        None => (TestBed::new(), None),
    };
    bed.init_token(AUTHORITY_TOKEN, AUTHORITY_PIN);
    for (_, _, card) in users {
        bed.init_token(card, USER_PIN);
    }
    std::fs::create_dir_all(bed.path("pub")).unwrap();
    let cdp = cdp.unwrap_or_else(|| format!("file://{}", p(&bed, "pub/ca.crl")));
    let dir = p(&bed, "auth");
    bed.run_env(
        &[
            "authority",
            "init",
            "--dir",
            &dir,
            "--token",
            AUTHORITY_TOKEN,
            "--name",
            CA_NAME,
            "--crl-url",
            &cdp,
        ],
        &[("KEYWARD_PIN", AUTHORITY_PIN)],
    )
    .ok();
    let cert = bed.run(&["authority", "cert", "--dir", &dir]).ok();
    let bundle = bed.file("authority-cert.pem", cert.stdout.as_bytes());
    let ca = bed.file("ca-only.pem", pem_blocks(&cert.stdout)[0].as_bytes());
    let a = AuthorityBed {
        bed,
        dir,
        bundle,
        ca,
    };
    for (user, keyset, card) in users {
        let key = a.add_user(user, &["--email", &format!("{user}@example.org")]);
        a.enroll_local(user, keyset, card, &key, &[], &[]).ok();
    }
    a
}

fn kw(bed: &TestBed, args: &[&str]) -> Run {
    bed.run_env(args, &[("KEYWARD_PIN", USER_PIN)])
}

/// Every file of the CRL store with its bytes.
fn store(bed: &TestBed) -> Vec<(String, Vec<u8>)> {
    let dir = bed.home.join("crls");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        std::fs::read(e.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// A refusal with exit `code`, one error line naming `needle`, and nothing at `out`.
#[track_caller]
fn refused(run: Run, code: i32, needle: &str, out: &str) {
    assert_eq!(run.code, code, "expected exit {code}\n{}", run.stderr);
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one line:\n{}", run.stderr);
    assert!(lines[0].starts_with("keyward: error: "), "{}", run.stderr);
    assert!(lines[0].contains(needle), "lacks {needle:?}: {}", lines[0]);
    assert!(
        !Path::new(out).exists(),
        "{out} written despite the refusal"
    );
}

/// The one warning line of a successful run, if any.
fn warnings(run: &Run) -> Vec<String> {
    run.stderr
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_owned)
        .collect()
}

/// `openssl ca` with the authority's CA key on its token (through the PKCS#11 engine).
struct OurCa {
    config: String,
    cert: String,
    key_uri: String,
}

impl OurCa {
    fn new(a: &AuthorityBed) -> OurCa {
        let state: serde_json::Value =
            serde_json::from_slice(&a.state_file("authority.toml")).unwrap();
        let hex = state["ca_key_id"].as_str().unwrap();
        let id: String = (0..hex.len())
            .step_by(2)
            .map(|i| format!("%{}", &hex[i..i + 2]))
            .collect();
        let d = p(a, "ossl");
        std::fs::create_dir_all(&d).unwrap();
        a.file("ossl/index.txt", b"");
        a.file("ossl/serial", b"5EED01\n");
        a.file("ossl/crlnumber", b"00\n");
        let text = format!(
            "[ca]\ndefault_ca = this\n[this]\ndatabase = {d}/index.txt\nnew_certs_dir = {d}\n\
             serial = {d}/serial\ncrlnumber = {d}/crlnumber\ndefault_md = sha256\n\
             default_crl_days = 7\npolicy = any\nunique_subject = no\ncopy_extensions = copy\n\
             x509_extensions = user\n[any]\ncommonName = supplied\n\
             [user]\nbasicConstraints = critical,CA:FALSE\n\
             keyUsage = critical,keyEncipherment\nextendedKeyUsage = emailProtection\n"
        );
        OurCa {
            config: a.file("ossl/ca.cnf", text.as_bytes()),
            cert: a.ca.clone(),
            key_uri: format!(
                "pkcs11:token={AUTHORITY_TOKEN};id={id};type=private;pin-value={AUTHORITY_PIN}"
            ),
        }
    }

    fn run(&self, bed: &TestBed, args: &[&str]) -> Run {
        let mut all = vec![
            "ca",
            "-batch",
            "-config",
            &self.config,
            "-cert",
            &self.cert,
            "-keyform",
            "engine",
            "-keyfile",
            &self.key_uri,
        ];
        all.extend_from_slice(args);
        openssl_engine(bed, &all)
    }
}

#[test]
fn revocation_is_seen_by_default_once_a_crl_is_kept() {
    let a = authority(&[("alice", "Alice", "alice-card"), ("bob", "Bob", "bob-card")]);
    let content = a.file("letter.txt", b"Bob, meet me at noon.\n");
    let msg = p(&a, "letter.p7m");
    let out = p(&a, "letter.out");

    // No CRL known: send and read work, each with a one-line warning.
    let run = kw(
        &a,
        &[
            "send", "--keyset", "Alice", "--to", "Bob", &content, "-o", &msg,
        ],
    )
    .ok();
    let w = warnings(&run);
    assert!(w.len() == 1 && w[0].contains("no CRL of"), "{}", run.stderr);
    let run = kw(&a, &["read", "--keyset", "Bob", &msg, "-o", &out]).ok();
    let w = warnings(&run);
    assert!(w.len() == 1 && w[0].contains("no CRL of"), "{}", run.stderr);
    std::fs::remove_file(&out).unwrap();

    // A stale CRL (next update due in 2020), signed by our CA key: kept, and read warns.
    let ours = OurCa::new(&a);
    let stale = p(&a, "stale.crl");
    ours.run(
        &a,
        &[
            "-gencrl",
            "-crl_lastupdate",
            "20200101000000Z",
            "-crl_nextupdate",
            "20200108000000Z",
            "-out",
            &stale,
        ],
    )
    .ok();
    kw(&a, &["crl", "import", &stale]).ok();
    let run = kw(&a, &["read", "--keyset", "Bob", &msg, "-o", &out]).ok();
    let w = warnings(&run);
    assert!(w.len() == 1 && w[0].contains("stale"), "{}", run.stderr);
    std::fs::remove_file(&out).unwrap();

    // `authority crl` without -o writes to the file: distribution point; `crl fetch` keeps
    // it from there (the certificates name it); read is then checked and silent.
    let cdp = p(&a, "pub/ca.crl");
    let run = a.authority("crl", &[]).ok();
    assert!(run.stdout.contains(&cdp), "{}", run.stdout);
    let crl1 = std::fs::read(&cdp).expect("the CRL at the distribution point");
    let run = kw(&a, &["crl", "fetch", "--keyset", "Bob"]).ok();
    assert!(run.stdout.contains("kept the CRL"), "{}", run.stdout);
    let run = kw(&a, &["read", "--keyset", "Bob", &msg, "-o", &out]).ok();
    assert!(warnings(&run).is_empty(), "{}", run.stderr);
    std::fs::remove_file(&out).unwrap();

    // Alice is revoked; the next CRL goes to -o and to the distribution point alike.
    a.authority("revoke", &["alice", "--reason", "keyCompromise"])
        .ok();
    let extra = p(&a, "extra.crl");
    a.authority("crl", &["-o", &extra]).ok();
    // The same CRL: PEM at -o, DER at the distribution point (RFC 5280 4.2.1.13).
    let der = std::fs::read(&cdp).unwrap();
    assert_eq!(der[0], 0x30, "the distribution point's CRL is not DER");
    let from_pem = parse_crl(&std::fs::read(&extra).unwrap()).unwrap();
    assert_eq!(x509::crl_to_der(&from_pem).unwrap(), der);
    kw(&a, &["crl", "import", &cdp]).ok();

    // read refuses the revoked signer (exit 3, nothing written), even given an older --crl…
    let crl1_file = a.file("crl1.pem", &crl1);
    for extra in [&[][..], &["--crl", crl1_file.as_str()][..]] {
        let mut args = vec!["read", "--keyset", "Bob", msg.as_str(), "-o", out.as_str()];
        args.extend_from_slice(extra);
        refused(kw(&a, &args), 3, "REVOKED", &out);
    }
    // …and send refuses her as a recipient (exit 3, nothing written).
    let reply = p(&a, "reply.p7m");
    refused(
        kw(
            &a,
            &[
                "send", "--keyset", "Bob", "--to", "Alice", &content, "-o", &reply,
            ],
        ),
        3,
        "REVOKED",
        &reply,
    );

    // An older CRL is refused and changes nothing; the same one again is no change.
    let before = store(&a);
    kw(&a, &["crl", "import", &crl1_file]).fails(1, "is not newer than the one kept");
    assert!(store(&a) == before, "the store changed despite the refusal");
    let run = kw(&a, &["crl", "import", &cdp]).ok();
    assert!(
        run.stdout.contains("is the one kept already"),
        "{}",
        run.stdout
    );
    assert!(store(&a) == before);

    // An expired recipient is refused whatever the CRL says.
    let (key, csr, cert) = (p(&a, "eve.key"), p(&a, "eve.csr"), p(&a, "eve.pem"));
    openssl(
        &a,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            "/CN=eve@example.org",
            "-addext",
            "subjectAltName=email:eve@example.org",
            "-out",
            &csr,
        ],
    )
    .ok();
    ours.run(
        &a,
        &[
            "-in",
            &csr,
            "-out",
            &cert,
            "-notext",
            "-startdate",
            "20200101000000Z",
            "-enddate",
            "20210101000000Z",
        ],
    )
    .ok();
    refused(
        kw(
            &a,
            &[
                "send", "--keyset", "Bob", "--to", &cert, &content, "-o", &reply,
            ],
        ),
        1,
        "expired",
        &reply,
    );
}

#[test]
fn forged_foreign_and_garbled_crls_are_refused_and_change_nothing() {
    let a = authority(&[("bob", "Bob", "bob-card")]);
    let crl = p(&a, "crl.pem");
    a.authority("crl", &["-o", &crl]).ok();
    let der = p(&a, "crl.der");
    openssl(&a, &["crl", "-in", &crl, "-outform", "DER", "-out", &der]).ok();

    // A changed signature: checked and found bad (exit 3).
    let mut bytes = std::fs::read(&der).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let forged = a.file("forged.crl", &bytes);
    kw(&a, &["crl", "import", &forged]).fails(3, "forged");
    // A changed entry (the CRL number's byte) under the original signature: the same.
    let mut bytes = std::fs::read(&der).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    let altered = a.file("altered.crl", &bytes);
    let run = kw(&a, &["crl", "import", &altered]);
    assert_ne!(run.code, 0, "an altered CRL was kept: {}", run.stdout);
    assert!(store(&a).is_empty(), "a refused CRL left files behind");

    // A CRL from an authority no keyset here is enrolled with: refused, or kept with --ca.
    let (key, ca) = (p(&a, "other.key"), p(&a, "other.pem"));
    openssl(
        &a,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &key,
            "-subj",
            "/CN=Other Authority",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            &ca,
        ],
    )
    .ok();
    let d = p(&a, "other");
    std::fs::create_dir_all(&d).unwrap();
    a.file("other/index.txt", b"");
    a.file("other/crlnumber", b"01\n");
    let cnf = a.file(
        "other/ca.cnf",
        format!(
            "[ca]\ndefault_ca = this\n[this]\ndatabase = {d}/index.txt\ncrlnumber = {d}/crlnumber\n\
             default_md = sha256\ndefault_crl_days = 7\n"
        )
        .as_bytes(),
    );
    let other_crl = p(&a, "other.crl");
    openssl(
        &a,
        &[
            "ca", "-batch", "-config", &cnf, "-cert", &ca, "-keyfile", &key, "-gencrl", "-out",
            &other_crl,
        ],
    )
    .ok();
    kw(&a, &["crl", "import", &other_crl]).fails(1, "none of your keysets is enrolled with");
    assert!(store(&a).is_empty());
    // Our CA named for another authority's CRL: its name does not match.
    kw(&a, &["crl", "import", "--ca", &a.ca, &other_crl]).fails(1, "none of your keysets");
    let run = kw(&a, &["crl", "import", "--ca", &ca, &other_crl]).ok();
    assert!(run.stdout.contains("kept the CRL"), "{}", run.stdout);
    assert_eq!(store(&a).len(), 2, "the CRL and its CA certificate");

    // Not a CRL at all.
    let junk = a.file("junk.crl", b"not a CRL\n");
    kw(&a, &["crl", "import", &junk]).fails(1, "could not parse the CRL");
    // A certificate with no distribution point: fetch says what to do instead.
    kw(&a, &["crl", "fetch", &ca]).fails(2, "names a CRL distribution point");
}

/// A real HTTP server (Python's http.server) serving `dir` on a free port; killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn serve(dir: &str) -> HttpServer {
        use std::io::BufRead;
        util::require_tool("python3", "python3");
        let mut child = std::process::Command::new("python3")
            .args([
                "-u",
                "-m",
                "http.server",
                "0",
                "--bind",
                "127.0.0.1",
                "--directory",
                dir,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start python3 -m http.server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        let port = line
            .split_whitespace()
            .skip_while(|w| *w != "port")
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn crl_fetch_keeps_the_crl_from_an_http_distribution_point() {
    let bed = TestBed::new();
    std::fs::create_dir_all(bed.path("pub")).unwrap();
    let server = HttpServer::serve(&p(&bed, "pub"));
    let url = format!("http://127.0.0.1:{}/ca.crl", server.port);
    let a = authority_at(&[("bob", "Bob", "bob-card")], Some((bed, url.clone())));
    // Nothing published yet: the server answers 404, nothing is kept.
    kw(&a, &["crl", "fetch", "--keyset", "Bob"]).fails(1, "404");
    assert!(store(&a).is_empty());
    // Published (an http: CDP is not written by `authority crl`: -o is needed), in DER.
    a.authority("crl", &[]).fails(2, "give -o FILE");
    let served = p(&a, "pub/ca.crl");
    a.authority("crl", &["-o", &served, "--der"]).ok();
    let run = kw(&a, &["crl", "fetch", "--keyset", "Bob"]).ok();
    assert!(
        run.stdout.contains(&url) && run.stdout.contains("kept the CRL"),
        "{}",
        run.stdout
    );
    assert_eq!(store(&a).len(), 2);

    // Others see it too: OpenSSL downloads the CRL from the certificate's distribution point.
    let cert = a.file(
        "bob.pem",
        kw(&a, &["keyset", "cert", "Bob"]).ok().stdout.as_bytes(),
    );
    let verify = || {
        openssl(
            &a,
            &[
                "verify",
                "-CAfile",
                &a.ca,
                "-crl_check",
                "-crl_download",
                "-purpose",
                "smimesign",
                &cert,
            ],
        )
    };
    let run = verify();
    assert_eq!(
        run.code, 0,
        "before revocation: {}{}",
        run.stdout, run.stderr
    );
    a.authority("revoke", &["bob"]).ok();
    a.authority("crl", &["-o", &served, "--der"]).ok();
    let run = verify();
    assert!(
        run.code != 0 && format!("{}{}", run.stdout, run.stderr).contains("certificate revoked"),
        "OpenSSL did not see the revocation: {}{}",
        run.stdout,
        run.stderr
    );
}

/// Alice's message to Bob as `keyward send` writes it, opened by OpenSSL with Bob's token
/// key (through the PKCS#11 engine), down to the SignedData (DER) the other clients verify.
fn signed_by_alice(a: &AuthorityBed, name: &str) -> String {
    use base64ct::{Base64, Encoding};
    let content = a.file(
        &format!("{name}.txt"),
        b"Bob, the keys are under the mat.\n",
    );
    let msg = p(a, &format!("{name}.p7m"));
    kw(
        a,
        &[
            "send", "--keyset", "Alice", "--to", "Bob", &content, "-o", &msg,
        ],
    )
    .ok();
    let bob = a.keyset_json("Bob");
    let key = bob["enrollment"]["encryption_keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["current"] == true))
        .and_then(|k| k["key_uri"].as_str())
        .expect("Bob's current encryption key");
    let key = format!("{key};pin-value={USER_PIN}");
    let enc = a.file(
        "bob-enc.pem",
        kw(a, &["keyset", "cert", "--encryption", "Bob"])
            .ok()
            .stdout
            .as_bytes(),
    );
    let inner = p(a, &format!("{name}.inner"));
    openssl_engine(
        a,
        &[
            "cms", "-decrypt", "-binary", "-inform", "DER", "-in", &msg, "-recip", &enc, "-inkey",
            &key, "-keyform", "engine", "-out", &inner,
        ],
    )
    .ok();
    // The S/MIME entity of the SignedData: headers, an empty line, base64.
    let inner = std::fs::read_to_string(&inner).unwrap();
    let (_, b64) = inner.split_once("\r\n\r\n").expect("a MIME entity");
    let b64: String = b64.split_whitespace().collect();
    a.file(
        &format!("{name}.signed.der"),
        &Base64::decode_vec(&b64).expect("base64 SignedData"),
    )
}

/// An NSS database (`certutil`) that trusts the authority's CA for e-mail.
fn nss_db(a: &AuthorityBed, name: &str) -> String {
    let db = format!("sql:{}", p(a, name));
    std::fs::create_dir_all(a.path(name)).unwrap();
    a.run_tool(
        "certutil",
        "libnss3-tools",
        &["-N", "-d", &db, "--empty-password"],
    )
    .ok();
    a.run_tool(
        "certutil",
        "libnss3-tools",
        &["-A", "-d", &db, "-n", "ca", "-t", "C,C,C", "-i", &a.ca],
    )
    .ok();
    db
}

/// A GnuPG home where `gpgsm` trusts the authority's CA, with CRL checks on (the default):
/// its dirmngr fetches the CRL from the certificate's distribution point.
struct GpgsmHome(std::path::PathBuf);

impl GpgsmHome {
    fn new(a: &AuthorityBed) -> GpgsmHome {
        util::require_tool("dirmngr", "dirmngr");
        util::require_tool("gpg-agent", "gpg-agent");
        // A short path: the agents' sockets must fit in a sockaddr_un.
        let home = tempfile::Builder::new()
            .prefix("kwr")
            .tempdir_in("/tmp")
            .expect("a GnuPG home")
            .keep();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).unwrap();
        let home = GpgsmHome(home);
        home.run(a, &["--import", &a.ca]).ok();
        let listed = home.run(a, &["--with-colons", "--list-keys"]).ok().stdout;
        let fpr = listed
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("the CA's fingerprint");
        std::fs::write(home.0.join("trustlist.txt"), format!("{fpr} S relax\n")).unwrap();
        home
    }

    fn run(&self, a: &AuthorityBed, args: &[&str]) -> Run {
        let out = a
            .tool("gpgsm", "gpgsm")
            .env("GNUPGHOME", &self.0)
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

    /// dirmngr's cached CRLs (it keeps one until its next update, 7 days here).
    fn cached_crls(&self) -> usize {
        std::fs::read_dir(self.0.join("crls.d"))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".db"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Stops dirmngr and drops its CRL cache: what happens for a client when the cached
    /// CRL's next update passes.
    fn forget_crls(&self) {
        std::process::Command::new("gpgconf")
            .env("GNUPGHOME", &self.0)
            .args(["--kill", "dirmngr"])
            .status()
            .expect("gpgconf --kill dirmngr");
        let _ = std::fs::remove_dir_all(self.0.join("crls.d"));
    }
}

impl Drop for GpgsmHome {
    fn drop(&mut self) {
        let _ = std::process::Command::new("gpgconf")
            .env("GNUPGHOME", &self.0)
            .args(["--kill", "all"])
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Others see a revocation too, from the authority's CRL distribution point on a real HTTP
/// server: NSS's path validator (`vfychain`, libpkix, which fetches the CRL from the CDP),
/// NSS's CMS decoder (`cmsutil -D`, which fetches nothing: it uses the CRLs in its database,
/// imported with `crlutil -I` the way an NSS application is given one) and `gpgsm --verify`
/// (its dirmngr fetches the CRL from the CDP; CRL checks on, as by default) accept Alice's
/// signature before `authority revoke` + `authority crl` and refuse it after.
#[test]
fn nss_and_gpgsm_see_a_revocation_at_the_http_distribution_point() {
    let bed = TestBed::new();
    std::fs::create_dir_all(bed.path("pub")).unwrap();
    let server = HttpServer::serve(&p(&bed, "pub"));
    let url = format!("http://127.0.0.1:{}/ca.crl", server.port);
    let a = authority_at(
        &[("alice", "Alice", "alice-card"), ("bob", "Bob", "bob-card")],
        Some((bed, url)),
    );
    let served = p(&a, "pub/ca.crl");
    a.authority("crl", &["-o", &served, "--der"]).ok();
    let alice = a.file(
        "alice.pem",
        kw(&a, &["keyset", "cert", "Alice"]).ok().stdout.as_bytes(),
    );
    let before = signed_by_alice(&a, "before");

    // NSS, libpkix: the e-mail signer usage, CRLs required and fetched from the CDP.
    let db = nss_db(&a, "nssdb");
    let vfychain = || {
        a.run_tool(
            "vfychain",
            "libnss3-tools",
            &[
                "-d",
                &db,
                "-pp",
                "-u",
                "4",
                "-g",
                "leaf",
                "-m",
                "crl",
                "-s",
                "requireInfo",
                "-a",
                &alice,
            ],
        )
    };
    let run = vfychain();
    assert!(
        run.code == 0 && run.stderr.contains("Chain is good"),
        "NSS refused Alice before her revocation (exit {}): {}{}",
        run.code,
        run.stdout,
        run.stderr
    );
    // NSS's CMS decoder: a good signature.
    let cmsutil = |db: &str, msg: &str| {
        a.run_tool(
            "cmsutil",
            "libnss3-tools",
            &["-D", "-d", db, "-i", msg, "-h", "0", "-n"],
        )
    };
    let run = cmsutil(&db, &before);
    assert!(
        run.stdout.contains("signer0.status=GoodSignature"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    // gpgsm: a good signature, the CRL fetched from the CDP by dirmngr.
    let home = GpgsmHome::new(&a);
    let run = home.run(&a, &["--output", "/dev/null", "--verify", &before]);
    assert!(
        run.code == 0 && run.stderr.contains("Good signature"),
        "gpgsm refused Alice before her revocation: {}",
        run.stderr
    );
    assert_eq!(home.cached_crls(), 1, "dirmngr fetched no CRL");

    // The revocation a second after the "before" message at least (NSS compares the signing
    // time with the revocation time, both in whole seconds).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    a.authority("revoke", &["alice", "--reason", "keyCompromise"])
        .ok();
    a.authority("crl", &["-o", &served, "--der"]).ok();
    // A message signed after the revocation (NSS checks the signer at the signing time,
    // which is seconds: one second later is surely after).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let after = signed_by_alice(&a, "after");

    let run = vfychain();
    assert!(
        run.code != 0 && run.stderr.contains("has been revoked"),
        "NSS did not see the revocation at the CDP: {}{}",
        run.stdout,
        run.stderr
    );
    // cmsutil fetches nothing: without the CRL the message still verifies…
    let run = cmsutil(&db, &after);
    assert!(
        run.stdout.contains("signer0.status=GoodSignature"),
        "{}{}",
        run.stdout,
        run.stderr
    );
    // …with the CRL imported it is refused; the message signed before the revocation stays
    // good (NSS judges the signer at the signing time).
    let crl = p(&a, "fetched.crl");
    std::fs::copy(&served, &crl).unwrap();
    a.run_tool(
        "crlutil",
        "libnss3-tools",
        &["-I", "-d", &db, "-i", &crl, "-t", "1"],
    )
    .ok();
    let run = cmsutil(&db, &after);
    assert!(
        run.stdout.contains("signer0.status=SigningCertNotTrusted"),
        "NSS accepted a signature made after the revocation: {}{}",
        run.stdout,
        run.stderr
    );
    let run = a.run_tool(
        "cmsutil",
        "libnss3-tools",
        &["-D", "-d", &db, "-i", &after, "-o", "/dev/null"],
    );
    assert!(
        run.code != 0 && run.stderr.contains("SEC_ERROR_REVOKED_CERTIFICATE"),
        "{}",
        run.stderr
    );
    let run = cmsutil(&db, &before);
    assert!(
        run.stdout.contains("signer0.status=GoodSignature"),
        "{}{}",
        run.stdout,
        run.stderr
    );

    // gpgsm: dirmngr keeps the first CRL until its next update; once it is due (here:
    // forgotten), the new one is fetched and both signatures are refused (gpgsm judges the
    // signer now).
    home.forget_crls();
    for msg in [&before, &after] {
        let run = home.run(&a, &["--output", "/dev/null", "--verify", msg]);
        assert!(
            run.code != 0 && run.stderr.contains("certificate has been revoked"),
            "gpgsm did not see the revocation at the CDP: {}",
            run.stderr
        );
    }
    assert_eq!(home.cached_crls(), 1, "dirmngr fetched no CRL");
    drop(server);
}
