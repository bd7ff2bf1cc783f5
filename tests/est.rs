//! EST (RFC 7030) against `keyward authority serve` on SoftHSM2, with curl and openssl as the
//! client: cacerts, csrattrs, simpleenroll with an openssl P-256 request, serverkeygen whose
//! key openssl decrypts, the temporary-key-once rule in any order, and the refusals — bad
//! base64, CSR and content type (400), a wrong temporary key (401, counted, locked after 5),
//! an oversized body (413), a slow client (timed out: silent, or stalling its body), a node
//! killed mid-request (nothing lost, the retry succeeds once); serverkeygen's SignedData and
//! the AsymmetricDecryptKeyIdentifier; keyward's client enrolling and renewing online; the
//! archived keys of a recovered user (`keyward-archive`, bound to serverkeygen's transport
//! key and the temporary key's lifetime); simplereenroll with curl's client certificate (the
//! emailProtection-only signing certificate) and its refusals; weak keys refused; unknown and
//! malformed users kept out of the audit log; malformed keyward-enroll bodies; a node out of
//! file descriptors backing off. Each node listens on 127.0.0.1:0 and announces its port
//! in a ready file, so the tests run in parallel.

mod util;

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use util::{AuthorityBed, AUTHORITY_PIN};

/// A running `authority serve`, killed on drop.
struct Node {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Node {
    fn url(&self, endpoint: &str) -> String {
        format!("https://{}/.well-known/est/{endpoint}", self.addr)
    }

    /// Waits for the node to exit (a kill point) and returns its status code.
    fn wait_exit(&mut self) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

fn start(ab: &AuthorityBed, tag: &str, env: &[(&str, &str)]) -> Node {
    let ready = ab.path(&format!("ready-{tag}"));
    let log = ab.path(&format!("serve-{tag}.log"));
    let _ = std::fs::remove_file(&ready);
    let mut cmd = ab.keyward();
    cmd.args([
        "--json",
        "authority",
        "serve",
        "--dir",
        &ab.dir,
        "--listen",
        "127.0.0.1:0",
        "--request-timeout",
        "3s",
        "--ready-file",
        &ready.to_string_lossy(),
    ])
    .env("KEYWARD_PIN", AUTHORITY_PIN)
    .stdout(std::fs::File::create(ab.path(&format!("serve-{tag}.out"))).expect("stdout file"))
    .stderr(std::fs::File::create(&log).expect("log file"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start keyward authority serve");
    let addr = util::wait_until_serving(&mut child, &ready, &log);
    Node { child, addr, log }
}

/// One HTTP answer.
struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// curl against the node, trusting only the authority's CA; `user` goes in a config file
/// (never in argv).
fn curl(ab: &AuthorityBed, url: &str, user: Option<(&str, &str)>, args: &[&str]) -> Answer {
    let n = std::sync::atomic::AtomicUsize::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let stamp = format!("{:?}", Instant::now()).replace(['.', ' ', '{', '}', ':', ','], "");
    let body = ab.path(&format!("curl-body-{id}-{stamp}"));
    let headers = ab.path(&format!("curl-headers-{id}-{stamp}"));
    let mut cmd = ab.tool("curl", "curl");
    cmd.args([
        "-sS",
        "--max-time",
        "60",
        "--cacert",
        &ab.ca,
        "-o",
        &body.to_string_lossy(),
        "-D",
        &headers.to_string_lossy(),
        "-w",
        "%{http_code}",
    ]);
    if let Some((u, k)) = user {
        let cfg = ab.path(&format!("curl-cfg-{id}-{stamp}"));
        std::fs::write(&cfg, format!("user = \"{u}:{k}\"\n")).expect("curl config");
        cmd.arg("-K").arg(&cfg);
    }
    cmd.args(args).arg(url);
    let out = cmd.output().expect("run curl");
    let status: u16 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "curl gave no status: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let head = std::fs::read_to_string(&headers).unwrap_or_default();
    let content_type = head
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("content-type"))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default();
    Answer {
        status,
        content_type,
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

fn openssl(ab: &AuthorityBed, args: &[&str]) -> util::Run {
    ab.run_tool("openssl", "openssl", args)
}

fn p(ab: &AuthorityBed, name: &str) -> String {
    ab.path(name).to_string_lossy().into_owned()
}

/// An openssl key (`ec` P-256 or `rsa` 2048) and a PKCS#10 request with CN `cn`, as the base64
/// body EST sends; returns (key file, body file).
fn openssl_csr(ab: &AuthorityBed, name: &str, kind: &str, cn: &str) -> (String, String) {
    let key = p(ab, &format!("{name}.key"));
    let der = p(ab, &format!("{name}.csr.der"));
    let b64 = p(ab, &format!("{name}.csr.b64"));
    let newkey = if kind == "ec" {
        vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    } else {
        vec!["-newkey", "rsa:2048"]
    };
    let mut args = vec!["req", "-new", "-nodes"];
    args.extend(newkey);
    args.extend(["-keyout", &key, "-subj"]);
    let subj = format!("/CN={cn}");
    args.extend([subj.as_str(), "-outform", "DER", "-out", &der]);
    openssl(ab, &args).ok();
    openssl(ab, &["base64", "-in", &der, "-out", &b64]).ok();
    (key, b64)
}

fn post(
    ab: &AuthorityBed,
    node: &Node,
    endpoint: &str,
    user: Option<(&str, &str)>,
    body: &str,
) -> Answer {
    let data = format!("@{body}");
    curl(
        ab,
        &node.url(endpoint),
        user,
        &[
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &data,
        ],
    )
}

/// The certificates of a base64 certs-only answer, PEM (openssl pkcs7 -print_certs).
fn certs_pem(ab: &AuthorityBed, name: &str, b64: &[u8]) -> String {
    let f = ab.file(&format!("{name}.p7.b64"), b64);
    let der = p(ab, &format!("{name}.p7.der"));
    openssl(ab, &["base64", "-d", "-in", &f, "-out", &der]).ok();
    openssl(
        ab,
        &["pkcs7", "-inform", "DER", "-in", &der, "-print_certs"],
    )
    .ok()
    .stdout
}

/// The (EnvelopedData, certs-only) base64 parts of a serverkeygen answer.
fn parts(answer: &Answer) -> Vec<String> {
    let text = answer.text();
    let boundary = answer
        .content_type
        .split("boundary=")
        .nth(1)
        .expect("a multipart boundary")
        .trim()
        .to_string();
    text.split(&format!("--{boundary}"))
        .skip(1)
        .filter(|p| !p.starts_with("--"))
        .map(|p| {
            p.split_once("\r\n\r\n")
                .expect("part headers")
                .1
                .to_string()
        })
        .collect()
}

fn audit_len(ab: &AuthorityBed) -> usize {
    ab.run(&["--json", "authority", "log", "--dir", &ab.dir, "--verify"])
        .ok()
        .json()["entry_count"]
        .as_u64()
        .unwrap_or(0) as usize
}

#[test]
fn cacerts_and_csrattrs_answer_as_rfc7030_says() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let node = start(&ab, "a", &[]);
    let a = curl(&ab, &node.url("cacerts"), None, &[]);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.content_type,
        "application/pkcs7-mime; smime-type=certs-only"
    );
    let pem = certs_pem(&ab, "cacerts", &a.body);
    let want = std::fs::read_to_string(&ab.ca).unwrap();
    assert!(
        pem.contains(want.trim()),
        "cacerts is not the CA:\n{pem}\nwant:\n{want}"
    );
    // --json: one document once the node listens (docs/json.md).
    let ready = std::fs::read_to_string(ab.path("serve-a.out")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&ready).expect("one JSON document");
    assert_eq!(doc["command"], "authority serve");
    assert_eq!(doc["listening"], node.addr.as_str());
    assert_eq!(
        doc["server_names"],
        serde_json::json!(["localhost", "127.0.0.1"])
    );
    let attrs = curl(&ab, &node.url("csrattrs"), None, &[]);
    assert_eq!(attrs.status, 200);
    assert_eq!(attrs.content_type, "application/csrattrs");
    let f = ab.file("attrs.b64", &attrs.body);
    let der = p(&ab, "attrs.der");
    openssl(&ab, &["base64", "-d", "-in", &f, "-out", &der]).ok();
    let parsed = openssl(&ab, &["asn1parse", "-inform", "DER", "-in", &der]).ok();
    assert!(
        parsed.stdout.contains("ecdsa-with-SHA256"),
        "{}",
        parsed.stdout
    );
}

#[test]
fn openssl_enrolls_and_decrypts_its_server_generated_key() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("alice", &["--email", "alice@example.org"]);
    let node = start(&ab, "a", &[]);
    let (_sig_key, sig_csr) = openssl_csr(&ab, "sig", "ec", "laptop");
    let (tkey, t_csr) = openssl_csr(&ab, "transport", "rsa", "laptop");

    // serverkeygen first: refused, nothing spent.
    let early = post(&ab, &node, "serverkeygen", Some(("alice", &key)), &t_csr);
    assert_eq!(early.status, 409, "{}", early.text());
    assert!(
        early.text().contains("simpleenroll first"),
        "{}",
        early.text()
    );

    let a = post(&ab, &node, "simpleenroll", Some(("alice", &key)), &sig_csr);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.content_type,
        "application/pkcs7-mime; smime-type=certs-only"
    );
    let sig_pem = certs_pem(&ab, "sig", &a.body);
    let sig_file = ab.file("sig.pem", sig_pem.as_bytes());
    openssl(
        &ab,
        &[
            "verify",
            "-CAfile",
            &ab.ca,
            "-purpose",
            "smimesign",
            &sig_file,
        ],
    )
    .ok();
    // The same request again: the same certificate, nothing new.
    let again = post(&ab, &node, "simpleenroll", Some(("alice", &key)), &sig_csr);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(certs_pem(&ab, "sig2", &again.body), sig_pem);
    // Another key within the same enrollment: refused.
    let (_k3, other) = openssl_csr(&ab, "other", "ec", "laptop");
    let refused = post(&ab, &node, "simpleenroll", Some(("alice", &key)), &other);
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(ab.user("alice")["state"], "pending");

    let g = post(&ab, &node, "serverkeygen", Some(("alice", &key)), &t_csr);
    assert_eq!(g.status, 200, "{}", g.text());
    assert!(
        g.content_type.starts_with("multipart/mixed"),
        "{}",
        g.content_type
    );
    let parts = parts(&g);
    assert_eq!(parts.len(), 2);
    // RFC 7030 §4.4.2: the key's EnvelopedData inside a SignedData of the authority.
    let signed_b64 = ab.file("key.signed.b64", parts[0].as_bytes());
    let signed_der = p(&ab, "key.signed.der");
    openssl(
        &ab,
        &["base64", "-d", "-in", &signed_b64, "-out", &signed_der],
    )
    .ok();
    let env_der = p(&ab, "key.env.der");
    openssl(
        &ab,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            &signed_der,
            "-CAfile",
            &ab.ca,
            "-purpose",
            "any",
            "-out",
            &env_der,
        ],
    )
    .ok();
    let pkcs8 = p(&ab, "key.p8.der");
    openssl(
        &ab,
        &[
            "cms", "-decrypt", "-inform", "DER", "-in", &env_der, "-inkey", &tkey, "-out", &pkcs8,
        ],
    )
    .ok();
    let key_mod = openssl(
        &ab,
        &["rsa", "-inform", "DER", "-in", &pkcs8, "-noout", "-modulus"],
    )
    .ok()
    .stdout;
    let enc_pem = certs_pem(&ab, "enc", parts[1].as_bytes());
    let enc_file = ab.file("enc.pem", enc_pem.as_bytes());
    let cert_mod = openssl(&ab, &["x509", "-in", &enc_file, "-noout", "-modulus"])
        .ok()
        .stdout;
    assert_eq!(key_mod, cert_mod, "the decrypted key is the certificate's");
    openssl(
        &ab,
        &[
            "verify",
            "-CAfile",
            &ab.ca,
            "-purpose",
            "smimeencrypt",
            &enc_file,
        ],
    )
    .ok();

    let user = ab.user("alice");
    assert_eq!(user["state"], "active", "{user}");
    // A retry (a lost answer) gets the same answer; nothing is issued twice.
    let retry = post(&ab, &node, "serverkeygen", Some(("alice", &key)), &t_csr);
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.body, g.body);
    assert_eq!(
        ab.user("alice")["certificates"].as_array().map(Vec::len),
        Some(2)
    );
    // After that the key is spent for everything else.
    let (_k4, t2) = openssl_csr(&ab, "transport2", "rsa", "laptop");
    let spent = post(&ab, &node, "serverkeygen", Some(("alice", &key)), &t2);
    assert_eq!(spent.status, 401, "{}", spent.text());
    assert!(spent.text().contains("already used"), "{}", spent.text());
    let late = post(&ab, &node, "simpleenroll", Some(("alice", &key)), &sig_csr);
    assert_eq!(late.status, 401, "{}", late.text());
    assert!(late.text().contains("already used"), "{}", late.text());
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();
}

#[test]
fn wrong_temporary_keys_are_counted_and_lock_after_five() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("bob", &[]);
    // A well-formed key (its check character right), but another user's. (Added before the
    // node starts: a node on SoftHSM holds keyward's SoftHSM process lock while it runs.)
    let wrong = ab.add_user("eve", &[]);
    let node = start(&ab, "a", &[]);
    let (_k, csr) = openssl_csr(&ab, "sig", "ec", "laptop");
    for i in 1..=5 {
        let a = post(&ab, &node, "simpleenroll", Some(("bob", &wrong)), &csr);
        assert_eq!(a.status, 401, "try {i}: {}", a.text());
        assert_eq!(
            ab.user("bob")["temporary_key"]["attempts"].as_u64(),
            Some(i),
            "{}",
            ab.user("bob")
        );
    }
    let right = post(&ab, &node, "simpleenroll", Some(("bob", &key)), &csr);
    assert_eq!(right.status, 401, "{}", right.text());
    assert!(right.text().contains("locked"), "{}", right.text());
    assert_eq!(ab.user("bob")["state"], "pending");
}

#[test]
fn bad_requests_are_refused_with_a_reason_and_change_nothing() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("carol", &[]);
    let node = start(&ab, "a", &[]);
    let before = (ab.user("carol"), audit_len(&ab));
    let (_k, csr) = openssl_csr(&ab, "sig", "ec", "laptop");
    let cred = Some(("carol", key.as_str()));

    let junk = ab.file("junk.b64", b"this is %% not base64");
    let a = post(&ab, &node, "simpleenroll", cred, &junk);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("not base64"), "{}", a.text());

    let not_csr = ab.file("notcsr.b64", b"aGVsbG8gd29ybGQ=\n");
    let a = post(&ab, &node, "simpleenroll", cred, &not_csr);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("PKCS#10"), "{}", a.text());

    let data = format!("@{csr}");
    let a = curl(
        &ab,
        &node.url("simpleenroll"),
        cred,
        &["-H", "Content-Type: text/plain", "--data-binary", &data],
    );
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("application/pkcs10"), "{}", a.text());

    let big = ab.file("big.b64", &vec![b'A'; 64 * 1024]);
    let a = post(&ab, &node, "simpleenroll", cred, &big);
    assert_eq!(a.status, 413, "{}", a.text());

    let a = post(&ab, &node, "simpleenroll", None, &csr);
    assert_eq!(a.status, 401, "{}", a.text());

    // A transport key that is not RSA.
    let a = post(&ab, &node, "serverkeygen", cred, &csr);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("RSA"), "{}", a.text());

    assert_eq!((ab.user("carol"), audit_len(&ab)), before);
}

#[test]
fn a_slow_client_is_timed_out() {
    use std::io::Read;
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let node = start(&ab, "a", &[]);
    let mut tcp = std::net::TcpStream::connect(&node.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    // Sends nothing: the node closes the connection after --request-timeout (3 s).
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the node answered a silent client");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "closed after {waited:?}"
    );
    // The node still serves.
    assert_eq!(curl(&ab, &node.url("cacerts"), None, &[]).status, 200);
}

#[test]
fn a_client_that_stalls_its_body_is_cut_off_and_the_node_serves_others() {
    use std::io::{Read, Write};
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("hank", &[]);
    let node = start(&ab, "a", &[]);
    let before = (ab.user("hank"), audit_len(&ab));
    // Over TLS (openssl s_client): the headers of a simpleenroll with a 2000-byte body, then 10
    // bytes of it, then nothing while the connection stays open.
    let mut client = ab
        .tool("openssl", "openssl")
        .args([
            "s_client", "-quiet", "-connect", &node.addr, "-CAfile", &ab.ca,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    let mut stdin = client.stdin.take().expect("stdin");
    let auth =
        <base64ct::Base64 as base64ct::Encoding>::encode_string(format!("hank:{key}").as_bytes());
    write!(
        stdin,
        "POST /.well-known/est/simpleenroll HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nContent-Type: application/pkcs10\r\nContent-Length: 2000\r\n\r\nMIIBIjANBg",
        node.addr
    )
    .expect("send the headers");
    stdin.flush().expect("flush");
    let started = Instant::now();
    let mut stdout = client.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut answer = Vec::new();
        let _ = stdout.read_to_end(&mut answer);
        (answer, started.elapsed())
    });
    // Meanwhile the node serves another client.
    std::thread::sleep(Duration::from_millis(500));
    let other = curl(&ab, &node.url("cacerts"), None, &[]);
    assert_eq!(other.status, 200, "{}", other.text());
    let (answer, waited) = reader.join().expect("the reader");
    drop(stdin);
    let _ = client.kill();
    let _ = client.wait();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    // --request-timeout is 3 s: the node answers 408 (or closes) then, not after the client.
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "cut off after {waited:?}: {answer}"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(
        (ab.user("hank"), audit_len(&ab)),
        before,
        "a stalled request changed the state"
    );
    assert_eq!(curl(&ab, &node.url("cacerts"), None, &[]).status, 200);
}

#[test]
fn a_node_killed_mid_request_loses_nothing_and_the_retry_succeeds_once() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("dave", &[]);
    let (_k, sig) = openssl_csr(&ab, "sig", "ec", "laptop");
    let (_t, transport) = openssl_csr(&ab, "transport", "rsa", "laptop");
    {
        let node = start(&ab, "a", &[]);
        assert_eq!(
            post(&ab, &node, "simpleenroll", Some(("dave", &key)), &sig).status,
            200
        );
    }
    for (tag, point) in [
        ("b", "est-kill-before-commit"),
        ("c", "est-kill-after-commit"),
    ] {
        let mut node = start(&ab, tag, &[("KEYWARD_FAULT", point)]);
        let a = curl(
            &ab,
            &node.url("serverkeygen"),
            Some(("dave", &key)),
            &[
                "-H",
                "Content-Type: application/pkcs10",
                "--data-binary",
                &format!("@{transport}"),
            ],
        );
        assert_ne!(a.status, 200, "{point}: the node answered");
        assert!(node.wait_exit().is_some(), "{point}: the node did not stop");
        let log = std::fs::read_to_string(&node.log).unwrap_or_default();
        let state = ab.user("dave")["state"].clone();
        let want = if point.ends_with("before-commit") {
            "pending"
        } else {
            "active"
        };
        assert_eq!(state, want, "{point}: {log}");
    }
    let node = start(&ab, "d", &[]);
    let a = post(&ab, &node, "serverkeygen", Some(("dave", &key)), &transport);
    assert_eq!(a.status, 200, "the retry: {}", a.text());
    let user = ab.user("dave");
    assert_eq!(
        user["certificates"].as_array().map(Vec::len),
        Some(2),
        "{user}"
    );
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();
}

/// A SoftHSM configuration of the user's own (its own token directory and so its own keyward
/// process lock: the node holds the authority's while it runs, as on two hosts).
fn user_softhsm(ab: &AuthorityBed, card: &str) -> String {
    let tokens = ab.path("user-tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = ab.path("user-softhsm2.conf");
    let template = include_str!("../testbeds/softhsm2.conf.in");
    std::fs::write(
        &conf,
        template.replace("@TOKENDIR@", &tokens.to_string_lossy()),
    )
    .unwrap();
    let conf = conf.to_string_lossy().into_owned();
    ab.run_env(
        &["token", "init", "--free", "--label", card],
        &[
            ("SOFTHSM2_CONF", &conf),
            ("KEYWARD_SO_PIN", util::SO_PIN),
            ("KEYWARD_NEW_PIN", util::USER_PIN),
        ],
    )
    .ok();
    conf
}

#[test]
fn keyward_enrolls_online_and_its_keyset_signs_and_reads_mail() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("frank", &["--email", "frank@example.org"]);
    let conf = user_softhsm(&ab, "frank-card");
    let node = start(&ab, "a", &[]);
    let url = format!("https://{}", node.addr);
    let env = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("KEYWARD_PIN", util::USER_PIN),
        ("KEYWARD_TEMP_KEY", key.as_str()),
    ];
    let enroll = |keyset: &str| {
        ab.run_env(
            &[
                "--json",
                "enroll",
                "--user",
                "frank",
                "--keyset",
                keyset,
                "--token",
                "frank-card",
                "--authority-cert",
                &ab.bundle,
                "--server",
                &url,
            ],
            &env,
        )
    };
    let done = enroll("laptop").ok();
    assert_eq!(done.json()["keyset"], "laptop", "{}", done.stdout);
    assert_eq!(ab.user("frank")["state"], "active");
    // The key is spent: a second enrollment is refused, and its pending keyset removed.
    let again = enroll("phone");
    assert_eq!(again.code, 1, "{}", again.stdout);
    assert!(
        again.stderr.contains("already enrolled"),
        "{}",
        again.stderr
    );
    let list = ab.run_env(&["--json", "keyset", "list"], &env).ok();
    assert!(!list.stdout.contains("phone"), "{}", list.stdout);
    // The keyset signs and reads mail like a file-enrolled one.
    let msg = ab.file("msg.txt", b"hello over EST\n");
    let sent = p(&ab, "msg.p7m");
    ab.run_env(
        &[
            "send", "--keyset", "laptop", "--to", "laptop", &msg, "-o", &sent,
        ],
        &env,
    )
    .ok();
    let back = p(&ab, "msg.out");
    ab.run_env(&["read", "--keyset", "laptop", &sent, "-o", &back], &env)
        .ok();
    assert_eq!(std::fs::read(&back).unwrap(), b"hello over EST\n");
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();
}

#[test]
fn keyward_refuses_a_node_whose_certificate_another_ca_issued() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let other = AuthorityBed::new(&[], "CN=Other CA,O=Example");
    let key = ab.add_user("gina", &[]);
    let conf = user_softhsm(&ab, "gina-card");
    let node = start(&other, "a", &[]);
    let url = format!("https://{}", node.addr);
    ab.run_env(
        &[
            "enroll",
            "--user",
            "gina",
            "--keyset",
            "laptop",
            "--token",
            "gina-card",
            "--authority-cert",
            &ab.bundle,
            "--server",
            &url,
        ],
        &[
            ("SOFTHSM2_CONF", conf.as_str()),
            ("KEYWARD_PIN", util::USER_PIN),
            ("KEYWARD_TEMP_KEY", key.as_str()),
        ],
    )
    .fails(1, "cannot reach the EST node");
    assert_eq!(ab.user("gina")["state"], "pending");
}

/// A P-256 PKCS#10 request with CN `cn` carrying an AsymmetricDecryptKeyIdentifier attribute
/// (RFC 7030 §4.4.1.2) of `key_id`, base64 as EST sends it (openssl cannot put an OCTET
/// STRING attribute into a request, so it is built here and signed with a fresh key).
fn csr_with_decrypt_key_id(ab: &AuthorityBed, name: &str, cn: &str, key_id: &[u8]) -> String {
    use der::asn1::{Any, BitString, ObjectIdentifier, OctetString, SetOfVec};
    use der::{Decode, Encode};
    use p256::ecdsa::signature::Signer;
    use p256::pkcs8::EncodePublicKey;
    use x509_cert::attr::Attribute;
    use x509_cert::request::{CertReq, CertReqInfo, Version};
    let key = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
    let spki_der = key.verifying_key().to_public_key_der().unwrap();
    let attr = Attribute {
        oid: ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.16.2.54"),
        values: SetOfVec::try_from(vec![
            Any::encode_from(&OctetString::new(key_id).unwrap()).unwrap()
        ])
        .unwrap(),
    };
    let info = CertReqInfo {
        version: Version::V1,
        subject: format!("CN={cn}").parse().unwrap(),
        public_key: spki::SubjectPublicKeyInfoOwned::from_der(spki_der.as_bytes()).unwrap(),
        attributes: SetOfVec::try_from(vec![attr]).unwrap(),
    };
    let sig: p256::ecdsa::DerSignature = key.sign(&info.to_der().unwrap());
    let req = CertReq {
        info,
        algorithm: spki::AlgorithmIdentifierOwned {
            oid: der::oid::db::rfc5912::ECDSA_WITH_SHA_256,
            parameters: None,
        },
        signature: BitString::from_bytes(sig.as_bytes()).unwrap(),
    };
    let der_file = ab.file(&format!("{name}.csr.der"), &req.to_der().unwrap());
    let b64 = p(ab, &format!("{name}.csr.b64"));
    openssl(ab, &["base64", "-in", &der_file, "-out", &b64]).ok();
    b64
}

/// The subject key identifier of a PEM certificate (openssl's reading), bytes.
fn ski_of(ab: &AuthorityBed, cert_pem: &str) -> Vec<u8> {
    let out = openssl(
        ab,
        &[
            "x509",
            "-in",
            cert_pem,
            "-noout",
            "-ext",
            "subjectKeyIdentifier",
        ],
    )
    .ok()
    .stdout;
    let hex = out
        .lines()
        .nth(1)
        .expect("a key identifier")
        .trim()
        .replace(':', "");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn serverkeygen_envelopes_to_the_key_the_request_names() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("ivy", &["--email", "ivy@example.org"]);
    let node = start(&ab, "a", &[]);
    let cred = Some(("ivy", key.as_str()));
    // An RSA signing key: the encryption key is to go to it, named by its certificate's key
    // identifier; the serverkeygen request's own key (P-256) cannot take it.
    let (sig_key, sig_csr) = openssl_csr(&ab, "sig", "rsa", "laptop");
    let a = post(&ab, &node, "simpleenroll", cred, &sig_csr);
    assert_eq!(a.status, 200, "{}", a.text());
    let sig_pem = ab.file("sig.pem", certs_pem(&ab, "sig", &a.body).as_bytes());
    let ski = ski_of(&ab, &sig_pem);

    // A key identifier the authority never issued: 400, nothing changed.
    let before = (ab.user("ivy"), audit_len(&ab));
    let unknown = csr_with_decrypt_key_id(&ab, "unknown", "laptop", &[0x42; 20]);
    let r = post(&ab, &node, "serverkeygen", cred, &unknown);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        r.text().contains("AsymmetricDecryptKeyIdentifier"),
        "{}",
        r.text()
    );
    assert_eq!((ab.user("ivy"), audit_len(&ab)), before);

    let named = csr_with_decrypt_key_id(&ab, "named", "laptop", &ski);
    let g = post(&ab, &node, "serverkeygen", cred, &named);
    assert_eq!(g.status, 200, "{}", g.text());
    let parts = parts(&g);
    let signed_b64 = ab.file("named.signed.b64", parts[0].as_bytes());
    let signed_der = p(&ab, "named.signed.der");
    openssl(
        &ab,
        &["base64", "-d", "-in", &signed_b64, "-out", &signed_der],
    )
    .ok();
    let env_der = p(&ab, "named.env.der");
    openssl(
        &ab,
        &[
            "cms",
            "-verify",
            "-inform",
            "DER",
            "-in",
            &signed_der,
            "-CAfile",
            &ab.ca,
            "-purpose",
            "any",
            "-out",
            &env_der,
        ],
    )
    .ok();
    // Named by the identifier the request gave.
    {
        use cms::content_info::ContentInfo;
        use cms::enveloped_data::{EnvelopedData, RecipientIdentifier, RecipientInfo};
        use der::Decode;
        let info = ContentInfo::from_der(&std::fs::read(&env_der).unwrap()).unwrap();
        let env: EnvelopedData = info.content.decode_as().unwrap();
        let rids: Vec<_> = env
            .recip_infos
            .0
            .iter()
            .filter_map(|r| match r {
                RecipientInfo::Ktri(k) => Some(k.rid.clone()),
                _ => None,
            })
            .collect();
        assert!(
            matches!(rids.as_slice(), [RecipientIdentifier::SubjectKeyIdentifier(s)] if s.0.as_bytes() == ski.as_slice()),
            "{rids:?}"
        );
    }
    // The signing key opens it; the key is the encryption certificate's.
    let pkcs8 = p(&ab, "named.p8.der");
    openssl(
        &ab,
        &[
            "cms", "-decrypt", "-inform", "DER", "-in", &env_der, "-inkey", &sig_key, "-out",
            &pkcs8,
        ],
    )
    .ok();
    let key_mod = openssl(
        &ab,
        &["rsa", "-inform", "DER", "-in", &pkcs8, "-noout", "-modulus"],
    )
    .ok()
    .stdout;
    let enc_file = ab.file(
        "named.enc.pem",
        certs_pem(&ab, "named.enc", parts[1].as_bytes()).as_bytes(),
    );
    let cert_mod = openssl(&ab, &["x509", "-in", &enc_file, "-noout", "-modulus"])
        .ok()
        .stdout;
    assert_eq!(key_mod, cert_mod);
    assert_eq!(ab.user("ivy")["state"], "active");
}

#[test]
fn keyward_renews_online_and_a_revoked_certificate_is_refused() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("jack", &["--email", "jack@example.org"]);
    let conf = user_softhsm(&ab, "jack-card");
    let node = start(&ab, "a", &[]);
    let url = format!("https://{}", node.addr);
    let env = [
        ("SOFTHSM2_CONF", conf.as_str()),
        ("KEYWARD_PIN", util::USER_PIN),
        ("KEYWARD_TEMP_KEY", key.as_str()),
    ];
    ab.run_env(
        &[
            "enroll",
            "--user",
            "jack",
            "--keyset",
            "laptop",
            "--token",
            "jack-card",
            "--authority-cert",
            &ab.bundle,
            "--server",
            &url,
        ],
        &env,
    )
    .ok();
    let renew = |url: &str| {
        ab.run_env(
            &[
                "--json",
                "enroll",
                "--renew",
                "laptop",
                "--server",
                url,
                "--authority-cert",
                &ab.bundle,
            ],
            &env,
        )
    };
    let before = ab.user("jack")["certificates"].as_array().map(Vec::len);
    let done = renew(&url).ok();
    assert_eq!(done.json()["keyset"], "laptop", "{}", done.stdout);
    let user = ab.user("jack");
    let certs = user["certificates"].as_array().expect("certificates");
    assert!(certs.len() > before.unwrap_or(0), "{user}");
    // The renewed keyset signs and reads mail.
    let msg = ab.file("renewed.txt", b"renewed over EST\n");
    let sent = p(&ab, "renewed.p7m");
    ab.run_env(
        &[
            "send", "--keyset", "laptop", "--to", "laptop", &msg, "-o", &sent,
        ],
        &env,
    )
    .ok();
    let back = p(&ab, "renewed.out");
    ab.run_env(&["read", "--keyset", "laptop", &sent, "-o", &back], &env)
        .ok();
    assert_eq!(std::fs::read(&back).unwrap(), b"renewed over EST\n");
    // Revoked (the node stops: it holds the authority's SoftHSM lock while it serves): the
    // renewal is refused, the authority's record and the client's keyset stay as they were.
    drop(node);
    ab.authority("revoke", &["jack"]).ok();
    let node = start(&ab, "b", &[]);
    let url = format!("https://{}", node.addr);
    let (user_before, keysets_before) = (
        ab.user("jack"),
        ab.run_env(&["--json", "keyset", "list"], &env).ok().stdout,
    );
    let refused = renew(&url);
    assert_eq!(refused.code, 1, "{}", refused.stdout);
    assert!(refused.stderr.contains("refused"), "{}", refused.stderr);
    assert_eq!(ab.user("jack"), user_before);
    assert_eq!(
        ab.run_env(&["--json", "keyset", "list"], &env).ok().stdout,
        keysets_before
    );
}

/// Opens one SignedData(EnvelopedData) part of an answer with openssl (verify against the CA,
/// then decrypt with `key`) and returns the key's RSA modulus line; and the modulus of the
/// certificate part after it.
fn open_key_part(
    ab: &AuthorityBed,
    name: &str,
    key_b64: &str,
    cert_b64: &str,
    key: &str,
) -> (String, String) {
    let signed_b64 = ab.file(&format!("{name}.signed.b64"), key_b64.as_bytes());
    let signed = p(ab, &format!("{name}.signed.der"));
    openssl(ab, &["base64", "-d", "-in", &signed_b64, "-out", &signed]).ok();
    let env = p(ab, &format!("{name}.env.der"));
    openssl(
        ab,
        &[
            "cms", "-verify", "-inform", "DER", "-in", &signed, "-CAfile", &ab.ca, "-purpose",
            "any", "-out", &env,
        ],
    )
    .ok();
    let pkcs8 = p(ab, &format!("{name}.p8.der"));
    openssl(
        ab,
        &[
            "cms", "-decrypt", "-inform", "DER", "-in", &env, "-inkey", key, "-out", &pkcs8,
        ],
    )
    .ok();
    let key_mod = openssl(
        ab,
        &["rsa", "-inform", "DER", "-in", &pkcs8, "-noout", "-modulus"],
    )
    .ok()
    .stdout;
    let cert = ab.file(
        &format!("{name}.cert.pem"),
        certs_pem(ab, &format!("{name}.cert"), cert_b64.as_bytes()).as_bytes(),
    );
    let cert_mod = openssl(ab, &["x509", "-in", &cert, "-noout", "-modulus"])
        .ok()
        .stdout;
    (key_mod, cert_mod)
}

#[test]
fn a_recovered_user_gets_the_archived_keys_with_curl_and_openssl() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let first_key = ab.add_user("kate", &["--email", "kate@example.org"]);
    let (_s1, sig1) = openssl_csr(&ab, "sig1", "ec", "laptop");
    let (t1, tr1) = openssl_csr(&ab, "t1", "rsa", "laptop");
    let first_enc = {
        let node = start(&ab, "a", &[]);
        let cred = Some(("kate", first_key.as_str()));
        assert_eq!(post(&ab, &node, "simpleenroll", cred, &sig1).status, 200);
        let g = post(&ab, &node, "serverkeygen", cred, &tr1);
        assert_eq!(g.status, 200, "{}", g.text());
        let parts = parts(&g);
        open_key_part(&ab, "first", &parts[0], &parts[1], &t1).1
    };
    // Recovered (the node stopped: it holds the authority's SoftHSM lock while it serves).
    let key = ab
        .authority("recover", &["kate"])
        .ok()
        .stdout
        .trim()
        .to_string();
    let node = start(&ab, "b", &[]);
    let cred = Some(("kate", key.as_str()));
    let (t2, tr2) = openssl_csr(&ab, "t2", "rsa", "laptop2");
    // Before the new enrollment is finished: refused, nothing given.
    let early = post(&ab, &node, "keyward-archive", cred, &tr2);
    assert_eq!(early.status, 409, "{}", early.text());
    let (_s2, sig2) = openssl_csr(&ab, "sig2", "ec", "laptop2");
    assert_eq!(post(&ab, &node, "simpleenroll", cred, &sig2).status, 200);
    let g = post(&ab, &node, "serverkeygen", cred, &tr2);
    assert_eq!(g.status, 200, "{}", g.text());
    let new_enc = {
        let parts = parts(&g);
        open_key_part(&ab, "second", &parts[0], &parts[1], &t2).1
    };
    // A wrong key: 401, counted.
    let wrong = post(
        &ab,
        &node,
        "keyward-archive",
        Some(("kate", &first_key)),
        &tr2,
    );
    assert_eq!(wrong.status, 401, "{}", wrong.text());
    assert_eq!(
        ab.user("kate")["temporary_key"]["attempts"].as_u64(),
        Some(1)
    );
    // The history: both archived keys, oldest first, each opened by the transport key.
    let h = post(&ab, &node, "keyward-archive", cred, &tr2);
    assert_eq!(h.status, 200, "{}", h.text());
    assert!(
        h.content_type.starts_with("multipart/mixed"),
        "{}",
        h.content_type
    );
    let parts = parts(&h);
    assert_eq!(parts.len(), 4, "two keys, each with its certificate");
    let (k1, c1) = open_key_part(&ab, "h1", &parts[0], &parts[1], &t2);
    let (k2, c2) = open_key_part(&ab, "h2", &parts[2], &parts[3], &t2);
    assert_eq!((k1.as_str(), k2.as_str()), (c1.as_str(), c2.as_str()));
    assert_eq!((c1, c2), (first_enc, new_enc));
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();
}

/// A user enrolled by simpleenroll + serverkeygen with openssl keys; returns (temporary key,
/// signing key file, signing certificate PEM file).
fn enroll_with_openssl(ab: &AuthorityBed, node: &Node, user: &str, key: &str) -> (String, String) {
    let (sig_key, sig_csr) = openssl_csr(ab, &format!("{user}-sig"), "ec", "laptop");
    let (_t, t_csr) = openssl_csr(ab, &format!("{user}-transport"), "rsa", "laptop");
    let a = post(ab, node, "simpleenroll", Some((user, key)), &sig_csr);
    assert_eq!(a.status, 200, "{}", a.text());
    let pem = certs_pem(ab, &format!("{user}-sig"), &a.body);
    let g = post(ab, node, "serverkeygen", Some((user, key)), &t_csr);
    assert_eq!(g.status, 200, "{}", g.text());
    assert_eq!(ab.user(user)["state"], "active");
    (sig_key, ab.file(&format!("{user}-sig.pem"), pem.as_bytes()))
}

/// simplereenroll with curl's client certificate (`--cert`/`--key`) and a new request.
fn reenroll(ab: &AuthorityBed, node: &Node, client: Option<(&str, &str)>, csr: &str) -> Answer {
    let data = format!("@{csr}");
    let mut args = vec![
        "-H",
        "Content-Type: application/pkcs10",
        "--data-binary",
        &data,
    ];
    if let Some((cert, key)) = client {
        args.extend(["--cert", cert, "--key", key]);
    }
    curl(ab, &node.url("simplereenroll"), None, &args)
}

fn serial_of(ab: &AuthorityBed, cert_pem_file: &str) -> String {
    openssl(ab, &["x509", "-in", cert_pem_file, "-noout", "-serial"])
        .ok()
        .stdout
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

fn cert_record(ab: &AuthorityBed, user: &str, serial: &str) -> serde_json::Value {
    ab.user(user)["certificates"]
        .as_array()
        .expect("certificates")
        .iter()
        .find(|c| c["serial"].as_str().map(str::to_lowercase).as_deref() == Some(serial))
        .cloned()
        .unwrap_or_else(|| panic!("no certificate {serial} in {}", ab.user(user)))
}

/// A user's signing certificate carries only emailProtection (no clientAuth), and it is what
/// simplereenroll authenticates with: curl presents it, the node renews, the old certificate
/// is superseded and cannot renew again.
#[test]
fn simplereenroll_renews_with_the_signing_certificate_as_curl_client_certificate() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("kate", &["--email", "kate@example.org"]);
    let node = start(&ab, "a", &[]);
    let (sig_key, sig_pem) = enroll_with_openssl(&ab, &node, "kate", &key);
    let old_serial = serial_of(&ab, &sig_pem);
    let (new_key, new_csr) = openssl_csr(&ab, "renewed", "ec", "laptop");
    let audit_before = audit_len(&ab);

    // No client certificate: 401 with a reason, nothing changed.
    let user_before = ab.user("kate");
    let a = reenroll(&ab, &node, None, &new_csr);
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("client certificate"), "{}", a.text());
    assert_eq!(
        (ab.user("kate"), audit_len(&ab)),
        (user_before, audit_before)
    );

    // The current signing certificate: a new certificate for the new key.
    let a = reenroll(&ab, &node, Some((&sig_pem, &sig_key)), &new_csr);
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        a.content_type,
        "application/pkcs7-mime; smime-type=certs-only"
    );
    let new_pem = ab.file("renewed.pem", certs_pem(&ab, "renewed", &a.body).as_bytes());
    openssl(
        &ab,
        &[
            "verify",
            "-CAfile",
            &ab.ca,
            "-purpose",
            "smimesign",
            &new_pem,
        ],
    )
    .ok();
    let cert_key = openssl(&ab, &["x509", "-in", &new_pem, "-noout", "-pubkey"])
        .ok()
        .stdout;
    let csr_key = openssl(&ab, &["pkey", "-in", &new_key, "-pubout"])
        .ok()
        .stdout;
    assert_eq!(
        cert_key, csr_key,
        "the new certificate is for the request's key"
    );
    assert!(
        !cert_record(&ab, "kate", &old_serial)["superseded"].is_null(),
        "{}",
        ab.user("kate")
    );
    assert_eq!(audit_len(&ab), audit_before + 1);
    let log = ab.run(&["authority", "log", "--dir", &ab.dir]).ok().stdout;
    assert!(log.contains("simplereenroll"), "{log}");
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();

    // The same request again (a lost answer): the same certificate, nothing new.
    let certs_before = ab.user("kate")["certificates"].clone();
    let again = reenroll(&ab, &node, Some((&sig_pem, &sig_key)), &new_csr);
    assert_eq!(again.status, 200, "{}", again.text());
    let again_pem = certs_pem(&ab, "renewed-again", &again.body);
    assert_eq!(again_pem, std::fs::read_to_string(&new_pem).unwrap());
    assert_eq!(ab.user("kate")["certificates"], certs_before);

    // The superseded certificate with another key: 403 with a reason, nothing issued.
    let (_k, other_csr) = openssl_csr(&ab, "again", "ec", "laptop");
    let certs_before = ab.user("kate")["certificates"].clone();
    let a = reenroll(&ab, &node, Some((&sig_pem, &sig_key)), &other_csr);
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("renewed already"), "{}", a.text());
    assert_eq!(ab.user("kate")["certificates"], certs_before);

    // The new certificate renews in turn.
    let a = reenroll(&ab, &node, Some((&new_pem, &new_key)), &other_csr);
    assert_eq!(a.status, 200, "{}", a.text());
    let newest = ab.file("newest.pem", certs_pem(&ab, "newest", &a.body).as_bytes());

    // Revoked (the node stops: it holds the authority's SoftHSM lock while it serves).
    drop(node);
    ab.authority("revoke", &["kate"]).ok();
    let node = start(&ab, "b", &[]);
    let newest_key = p(&ab, "again.key");
    let (_k, last_csr) = openssl_csr(&ab, "last", "ec", "laptop");
    let certs_before = ab.user("kate")["certificates"].clone();
    let a = reenroll(&ab, &node, Some((&newest, &newest_key)), &last_csr);
    assert_eq!(a.status, 403, "{}", a.text());
    assert!(a.text().contains("revoked"), "{}", a.text());
    assert_eq!(ab.user("kate")["certificates"], certs_before);
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();
}

/// A client certificate of another CA — even one with the same name as the authority's —
/// is refused in the handshake; nothing is issued or logged.
#[test]
fn simplereenroll_refuses_a_client_certificate_of_another_ca() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("liam", &["--email", "liam@example.org"]);
    let node = start(&ab, "a", &[]);
    enroll_with_openssl(&ab, &node, "liam", &key);
    let (ca_key, ca_pem) = (p(&ab, "other-ca.key"), p(&ab, "other-ca.pem"));
    openssl(
        &ab,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &ca_key,
            "-subj",
            "/O=Example/CN=EST CA",
            "-days",
            "30",
            "-out",
            &ca_pem,
        ],
    )
    .ok();
    let (forged_key, forged_csr_b64) = openssl_csr(&ab, "forged", "ec", "liam");
    let forged_csr = p(&ab, "forged.csr.der");
    let forged = p(&ab, "forged.pem");
    openssl(
        &ab,
        &[
            "x509",
            "-req",
            "-inform",
            "DER",
            "-in",
            &forged_csr,
            "-CA",
            &ca_pem,
            "-CAkey",
            &ca_key,
            "-days",
            "30",
            "-out",
            &forged,
        ],
    )
    .ok();
    let before = (ab.user("liam"), audit_len(&ab));
    let a = reenroll(&ab, &node, Some((&forged, &forged_key)), &forged_csr_b64);
    assert_ne!(a.status, 200, "{}", a.text());
    assert!(
        a.status == 0 || a.status == 401 || a.status == 403,
        "{}",
        a.status
    );
    assert_eq!((ab.user("liam"), audit_len(&ab)), before);
}

/// keyward-archive gives the archived keys only to the transport key serverkeygen enveloped
/// the new key to, and only while the temporary key is valid: an attacker holding the spent
/// key and sending their own RSA transport key gets nothing, before or after its expiry.
#[test]
fn keyward_archive_is_bound_to_serverkeygens_transport_key_and_the_keys_lifetime() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("mia", &["--email", "mia@example.org", "--expires", "10s"]);
    let node = start(&ab, "a", &[]);
    let cred = Some(("mia", key.as_str()));
    let (_s, sig) = openssl_csr(&ab, "sig", "ec", "laptop");
    let (t, tr) = openssl_csr(&ab, "t", "rsa", "laptop");
    assert_eq!(post(&ab, &node, "simpleenroll", cred, &sig).status, 200);
    let g = post(&ab, &node, "serverkeygen", cred, &tr);
    assert_eq!(g.status, 200, "{}", g.text());
    let issued = Instant::now();

    // The attacker's own RSA transport key: refused with a reason, nothing given out.
    let (_a, attacker) = openssl_csr(&ab, "attacker", "rsa", "whatever");
    let log_before = ab.run(&["authority", "log", "--dir", &ab.dir]).ok().stdout;
    let a = post(&ab, &node, "keyward-archive", cred, &attacker);
    assert_eq!(a.status, 409, "{}", a.text());
    assert!(a.text().contains("transport key"), "{}", a.text());
    assert!(
        !a.text().contains("BEGIN") && !a.text().contains("--keyward"),
        "{}",
        a.text()
    );
    let log = ab.run(&["authority", "log", "--dir", &ab.dir]).ok().stdout;
    assert!(
        !log[log_before.len()..].contains("enveloped to"),
        "nothing given out: {log}"
    );

    // The legitimate transport key: the archived key, again for a lost answer.
    for _ in 0..2 {
        let h = post(&ab, &node, "keyward-archive", cred, &tr);
        assert_eq!(h.status, 200, "{}", h.text());
        let parts = parts(&h);
        assert_eq!(parts.len(), 2);
        let (k, c) = open_key_part(&ab, "h", &parts[0], &parts[1], &t);
        assert_eq!(k, c);
    }
    assert!(
        issued.elapsed() < Duration::from_secs(9),
        "too slow for the 10 s key"
    );

    // After the temporary key expired: refused, with either transport key.
    std::thread::sleep(Duration::from_secs(11).saturating_sub(issued.elapsed()));
    for csr in [&tr, &attacker] {
        let late = post(&ab, &node, "keyward-archive", cred, csr);
        assert_eq!(late.status, 401, "{}", late.text());
        assert!(late.text().contains("expired"), "{}", late.text());
    }
    ab.run(&["authority", "log", "--dir", &ab.dir, "--verify"])
        .ok();
}

/// simpleenroll certifies no weak key: an RSA-1024 request is refused with its size named,
/// an EC key on another curve than P-256 too; nothing is issued or recorded.
#[test]
fn simpleenroll_refuses_weak_keys_with_the_size_named() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("noah", &[]);
    let node = start(&ab, "a", &[]);
    let before = (ab.user("noah"), audit_len(&ab));
    let cred = Some(("noah", key.as_str()));
    // (file stem, openssl's key options, what the refusal must name)
    let weak: [(&str, &[&str], &[&str]); 3] = [
        ("rsa1024", &["-newkey", "rsa:1024"], &["1024 bits", "2048"]),
        ("rsa512", &["-newkey", "rsa:512"], &["512 bits", "2048"]),
        (
            "p384",
            &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
            &["P-256"],
        ),
    ];
    for (name, newkey, named) in weak {
        let (der, b64) = (
            p(&ab, &format!("{name}.der")),
            p(&ab, &format!("{name}.b64")),
        );
        let keyfile = p(&ab, &format!("{name}.key"));
        let mut args = vec!["req", "-new", "-nodes"];
        args.extend_from_slice(newkey);
        args.extend_from_slice(&[
            "-keyout",
            &keyfile,
            "-subj",
            "/CN=laptop",
            "-outform",
            "DER",
            "-out",
            &der,
        ]);
        openssl(&ab, &args).ok();
        openssl(&ab, &["base64", "-in", &der, "-out", &b64]).ok();
        let a = post(&ab, &node, "simpleenroll", cred, &b64);
        assert_eq!(a.status, 400, "{}", a.text());
        for needle in named {
            assert!(a.text().contains(needle), "{name}: {}", a.text());
        }
    }
    assert_eq!((ab.user("noah"), audit_len(&ab)), before);
}

/// Anyone can send a user name: names no user can have are refused at the door, unknown users
/// are refused without a word in the audit log (the node's own log says it), and a wrong key
/// of an existing user stays counted and audited.
#[test]
fn unauthenticated_clients_do_not_write_the_audit_log() {
    use base64ct::Encoding;
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let key = ab.add_user("olga", &[]);
    let wrong = ab.add_user("pete", &[]);
    let node = start(&ab, "a", &[("RUST_LOG", "info")]);
    let (_k, csr) = openssl_csr(&ab, "sig", "ec", "laptop");
    let (_t, tr) = openssl_csr(&ab, "t", "rsa", "laptop");
    let before = audit_len(&ab);
    for i in 0..50 {
        let user = format!("nobody{i}");
        let (endpoint, body) = match i % 3 {
            0 => ("simpleenroll", &csr),
            1 => ("serverkeygen", &tr),
            _ => ("keyward-archive", &tr),
        };
        let a = post(&ab, &node, endpoint, Some((&user, &key)), body);
        assert_eq!(a.status, 401, "{endpoint}: {}", a.text());
    }
    assert_eq!(
        audit_len(&ab),
        before,
        "unknown users leave no audit entries"
    );
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(log.contains("nobody49"), "the node's log says it: {log}");

    // A name with a newline and ESC: refused, in neither log.
    let cred = base64ct::Base64::encode_string(b"olga\n\x1b[2Jforged entry:x");
    let header = format!("Authorization: Basic {cred}");
    let data = format!("@{csr}");
    let a = curl(
        &ab,
        &node.url("simpleenroll"),
        None,
        &[
            "-H",
            &header,
            "-H",
            "Content-Type: application/pkcs10",
            "--data-binary",
            &data,
        ],
    );
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("no user name"), "{}", a.text());
    assert!(!a.text().contains('\x1b'), "{}", a.text());
    let log = std::fs::read_to_string(&node.log).unwrap();
    assert!(!log.contains('\x1b') && !log.contains("forged"), "{log}");
    let audit = ab.run(&["authority", "log", "--dir", &ab.dir]).ok().stdout;
    assert!(!audit.contains("forged"), "{audit}");
    assert_eq!(audit_len(&ab), before);

    // A wrong key of an existing user: counted and audited.
    let a = post(&ab, &node, "simpleenroll", Some(("olga", &wrong)), &csr);
    assert_eq!(a.status, 401, "{}", a.text());
    assert_eq!(audit_len(&ab), before + 1);
    assert_eq!(
        ab.user("olga")["temporary_key"]["attempts"].as_u64(),
        Some(1)
    );
}

/// A malformed or tampered keyward-enroll body is a 400 whose reason names no path of the
/// node's; the Content-Type must be the request's media type exactly (parameters allowed).
#[test]
fn keyward_enroll_refuses_malformed_requests_with_400_and_an_exact_media_type() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    ab.add_user("quin", &[]);
    let node = start(&ab, "a", &[]);
    let before = audit_len(&ab);
    let send = |content_type: &str, body: &[u8]| {
        let f = ab.file("enroll-body", body);
        let data = format!("@{f}");
        let header = format!("Content-Type: {content_type}");
        curl(
            &ab,
            &node.url("keyward-enroll"),
            None,
            &["-H", &header, "--data-binary", &data],
        )
    };
    let tampered = b"format = \"keyward-request\"\nversion = 1\nuser = \"quin\"\n\n[signature]\nvalue = \"AAAA\"\n";
    for body in [&b"hello"[..], &b"\xff\xfe\x00junk"[..], &tampered[..]] {
        for ct in [
            "application/vnd.keyward.request",
            "application/vnd.keyward.request; charset=utf-8",
        ] {
            let a = send(ct, body);
            assert_eq!(a.status, 400, "{ct}: {}", a.text());
            assert!(
                !a.text().contains("/tmp") && !a.text().contains("keyward-est"),
                "a server path: {}",
                a.text()
            );
            assert!(!a.text().contains("Content-Type"), "{}", a.text());
        }
    }
    let a = send("application/vnd.keyward.requestX", tampered);
    assert_eq!(a.status, 400, "{}", a.text());
    assert!(a.text().contains("Content-Type"), "{}", a.text());
    assert_eq!(audit_len(&ab), before, "bad bodies are not audited");
}

/// A node out of file descriptors (`ulimit -n 64`, 150 idle connections) neither spins nor
/// floods its log: it backs off, and answers again once the idle connections are gone.
#[test]
fn a_node_out_of_file_descriptors_backs_off_and_recovers() {
    let ab = AuthorityBed::new(&[], "CN=EST CA,O=Example");
    let ready = ab.path("ready-fd");
    let log = ab.path("serve-fd.log");
    let inner = ab.keyward();
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg("ulimit -n 64 && exec \"$0\" \"$@\"")
        .arg(inner.get_program())
        .args(inner.get_args())
        .args([
            "authority",
            "serve",
            "--dir",
            &ab.dir,
            "--listen",
            "127.0.0.1:0",
            "--request-timeout",
            "2s",
            "--ready-file",
            &ready.to_string_lossy(),
        ]);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.env("KEYWARD_PIN", AUTHORITY_PIN)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"));
    let child = cmd.spawn().expect("start keyward authority serve");
    let mut node = Node {
        addr: String::new(),
        log: log.clone(),
        child,
    };
    node.addr = util::wait_until_serving(&mut node.child, &ready, &log);
    let idle: Vec<_> = (0..150)
        .filter_map(|_| std::net::TcpStream::connect(&node.addr).ok())
        .collect();
    std::thread::sleep(Duration::from_secs(3));
    drop(idle);
    let started = Instant::now();
    let answered = loop {
        let a = curl(&ab, &node.url("cacerts"), None, &["--max-time", "5"]);
        if a.status == 200 || started.elapsed() > Duration::from_secs(20) {
            break a;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(answered.status, 200, "{}", answered.text());
    let size = std::fs::metadata(&log).unwrap().len();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("accepting a connection failed"),
        "the node never ran out of file descriptors: {text}"
    );
    assert!(
        size < 8 * 1024,
        "{size} bytes of log:\n{}",
        &text[..text.len().min(2000)]
    );
}
