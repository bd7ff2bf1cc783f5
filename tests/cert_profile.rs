//! The certificates and CRLs an authority issues, checked by a real linter: DigiCert's
//! pkilint (installed into `testbeds/venv` by `testbeds/setup.sh`). User certificates against
//! the CA/B Forum S/MIME Baseline Requirements, mailbox-validated strict generation
//! (`lint_cabf_smime_cert`); the CA and the exchange certificate against RFC 5280
//! (`lint_pkix_cert`); the CRL against RFC 5280 and the CA/B BR (`lint_crl -p PKIX`, `-p BR`). Every finding of
//! NOTICE or worse fails the test unless it is in [`ACCEPTED`] with its reason.
//! Also: CDP and AIA are in every issued certificate once configured, and in none without.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use keyward::pki::x509;
use util::{pem_blocks, AuthorityBed, TestBed, AUTHORITY_PIN, AUTHORITY_TOKEN, USER_PIN};

const CA_NAME: &str = "CN=Example Mail CA,O=Example Org,C=DE";
const POLICY: &str = "1.3.6.1.4.1.99999.1.2";
const CRL_URL: &str = "http://pki.example.org/mail-ca.crl";
const AIA_URL: &str = "http://pki.example.org/mail-ca.crt";

/// Findings pkilint reports that a private CA keeps, each with the reason; matched on the
/// finding code.
const ACCEPTED: &[(&str, &str)] = &[];

/// The pkilint command `name` from the test venv, or a panic saying how to install it.
fn pkilint(name: &str) -> PathBuf {
    let venv = std::env::var_os("KEYWARD_PKILINT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("testbeds/venv"));
    let p = venv.join("bin").join(name);
    assert!(
        p.is_file(),
        "pkilint is not installed in {}: run `bash testbeds/setup.sh` (it makes the venv and pip-installs pkilint)",
        venv.display()
    );
    p
}

/// Runs a pkilint linter on `file` at severity NOTICE and up; returns the findings that are
/// not [`ACCEPTED`] (one line each).
fn lint(linter: &str, args: &[&str], file: &str) -> Vec<String> {
    let out = Command::new(pkilint(linter))
        .arg("lint")
        .args(args)
        .args(["-s", "NOTICE", "-f", "TEXT", file])
        .output()
        .expect("run pkilint");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // pkilint exits non-zero when it reports findings; a crash has no findings and a traceback.
    assert!(
        !stderr.contains("Traceback"),
        "{linter} failed on {file}:\n{stderr}"
    );
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !ACCEPTED.iter().any(|(code, _)| l.contains(code)))
        .map(str::to_owned)
        .collect()
}

/// An authority made with `init_extra`, with alice enrolled (alice@example.org).
fn authority(init_extra: &[&str]) -> AuthorityBed {
    let bed = TestBed::new();
    bed.init_token(AUTHORITY_TOKEN, AUTHORITY_PIN);
    bed.init_token("alice-card", USER_PIN);
    let dir = bed.path("auth").to_string_lossy().into_owned();
    let mut args = vec![
        "authority",
        "init",
        "--dir",
        &dir,
        "--token",
        AUTHORITY_TOKEN,
        "--name",
        CA_NAME,
    ];
    args.extend_from_slice(init_extra);
    bed.run_env(&args, &[("KEYWARD_PIN", AUTHORITY_PIN)]).ok();
    let cert = bed.run(&["authority", "cert", "--dir", &dir]).ok();
    let bundle = bed.file("authority-cert.pem", cert.stdout.as_bytes());
    let ca = bed.file("ca-only.pem", pem_blocks(&cert.stdout)[0].as_bytes());
    let a = AuthorityBed {
        bed,
        dir,
        bundle,
        ca,
    };
    let key = a.add_user("alice", &["--email", "alice@example.org"]);
    a.enroll_local("alice", "Alice", "alice-card", &key, &[], &[])
        .ok();
    a
}

/// The four certificate kinds, PEM: CA, exchange, signing, encryption.
fn certs(a: &AuthorityBed) -> [(String, String); 4] {
    let bundle = pem_blocks(&std::fs::read_to_string(&a.bundle).unwrap());
    let sig = a.run(&["keyset", "cert", "Alice"]).ok().stdout;
    let enc = a
        .run(&["keyset", "cert", "Alice", "--encryption"])
        .ok()
        .stdout;
    [
        ("ca".into(), bundle[0].clone()),
        ("exchange".into(), bundle[1].clone()),
        ("signing".into(), sig),
        ("encryption".into(), enc),
    ]
}

fn parse(pem: &str) -> x509_cert::Certificate {
    x509::certs_from_pem(pem).unwrap().remove(0)
}

#[test]
fn every_certificate_kind_and_the_crl_lint_clean_with_pkilint() {
    let a = authority(&[
        "--policy-oid",
        POLICY,
        "--crl-url",
        CRL_URL,
        "--aia-url",
        AIA_URL,
    ]);
    let mut findings = Vec::new();
    for (kind, pem) in certs(&a) {
        let file = a.file(&format!("{kind}.pem"), pem.as_bytes());
        let found = match kind.as_str() {
            "signing" | "encryption" => {
                // -d: the type must be detected from the reserved policy OID itself.
                let detected = Command::new(pkilint("lint_cabf_smime_cert"))
                    .args(["lint", "-d", "-o", "-s", "FATAL", &file])
                    .output()
                    .unwrap();
                let said = String::from_utf8_lossy(&detected.stderr);
                assert!(
                    said.contains("MAILBOX-STRICT"),
                    "pkilint did not detect a mailbox-strict certificate in the {kind} certificate: {said}"
                );
                lint("lint_cabf_smime_cert", &["-t", "MAILBOX-STRICT"], &file)
            }
            _ => lint("lint_pkix_cert", &[], &file),
        };
        findings.extend(found.into_iter().map(|f| format!("{kind}: {f}")));
    }
    // A CRL that lists a revoked certificate (with a reason code).
    a.authority("revoke", &["alice", "--reason", "keyCompromise"])
        .ok();
    let crl = a.path("ca.crl").to_string_lossy().into_owned();
    a.authority("crl", &["-o", &crl]).ok();
    for f in lint("lint_crl", &["-t", "CRL", "-p", "PKIX"], &crl)
        .into_iter()
        .chain(lint("lint_crl", &["-t", "CRL", "-p", "BR"], &crl))
    {
        findings.push(format!("crl: {f}"));
    }
    assert!(
        findings.is_empty(),
        "pkilint findings:\n{}",
        findings.join("\n")
    );
}

#[test]
fn user_certificates_follow_the_mailbox_strict_profile_and_name_the_cdp_and_aia() {
    let a = authority(&[
        "--policy-oid",
        POLICY,
        "--crl-url",
        CRL_URL,
        "--aia-url",
        AIA_URL,
    ]);
    let [ca, exchange, signing, encryption] = certs(&a);
    for (kind, pem) in [&exchange, &signing, &encryption] {
        let text = a
            .run_tool(
                "openssl",
                "openssl",
                &[
                    "x509",
                    "-noout",
                    "-text",
                    "-in",
                    &a.file(&format!("{kind}.pem"), pem.as_bytes()),
                ],
            )
            .ok()
            .stdout;
        assert!(text.contains(CRL_URL), "{kind}: no CDP\n{text}");
        assert!(
            text.contains(&format!("CA Issuers - URI:{AIA_URL}")),
            "{kind}: no AIA\n{text}"
        );
        assert!(
            text.contains(POLICY),
            "{kind}: no organisation policy\n{text}"
        );
        assert!(
            !text.contains("TLS Web Client Authentication"),
            "{kind}\n{text}"
        );
        assert!(!text.contains("Data Encipherment"), "{kind}\n{text}");
        assert_eq!(x509::crl_urls_of(&parse(pem)), vec![CRL_URL.to_string()]);
    }
    for (kind, pem) in [&signing, &encryption] {
        let c = parse(pem);
        assert_eq!(
            x509::common_name(&c).as_deref(),
            Some("alice@example.org"),
            "{kind}"
        );
        assert_eq!(
            x509::email_of(&c).as_deref(),
            Some("alice@example.org"),
            "{kind}"
        );
        let v = &c.tbs_certificate.validity;
        let days =
            (v.not_after.to_unix_duration() - v.not_before.to_unix_duration()).as_secs() / 86_400;
        assert!(
            days <= 825,
            "{kind} is valid {days} days, more than the BR's 825"
        );
    }
    // The CA certificate is self-signed: no CDP, no AIA, no policies.
    let ca_text = a
        .run_tool(
            "openssl",
            "openssl",
            &[
                "x509",
                "-noout",
                "-text",
                "-in",
                &a.file("ca.pem", ca.1.as_bytes()),
            ],
        )
        .ok()
        .stdout;
    assert!(!ca_text.contains("CRL Distribution"), "{ca_text}");
    assert!(
        !ca_text.contains("Authority Information Access"),
        "{ca_text}"
    );
}

#[test]
fn without_urls_no_cdp_nor_aia_and_bad_options_are_refused_before_anything_is_made() {
    let a = authority(&[]);
    let [_, exchange, signing, encryption] = certs(&a);
    for (kind, pem) in [&exchange, &signing, &encryption] {
        let c = parse(pem);
        assert!(x509::crl_urls_of(&c).is_empty(), "{kind}");
    }
    // The BR's reserved OID is there without --policy-oid.
    let sig = a.file("sig.pem", signing.1.as_bytes());
    let text = a
        .run_tool(
            "openssl",
            "openssl",
            &["x509", "-noout", "-text", "-in", &sig],
        )
        .ok()
        .stdout;
    assert!(text.contains("2.23.140.1.5.1.3"), "{text}");
    // Without URLs the user certificates miss only what was not configured: the BR wants a
    // CDP and AIA (an authority made before --crl-url/--aia-url keeps issuing without them).
    for (kind, pem) in [&signing, &encryption] {
        let file = a.file(&format!("plain-{kind}.pem"), pem.as_bytes());
        let mut found = lint("lint_cabf_smime_cert", &["-t", "MAILBOX-STRICT"], &file);
        found.retain(|l| l.contains('('));
        let codes: Vec<&str> = found
            .iter()
            .map(|l| l.trim().split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(
            codes,
            [
                "cabf.aia_extension_missing",
                "cabf.smime.crldp_extension_missing"
            ],
            "{kind}: {found:?}"
        );
    }

    for (flag, value, needle) in [
        ("--policy-oid", "not-an-oid", "not an object identifier"),
        ("--policy-oid", "2.23.140.1.5.1.3", "reserved OID"),
        ("--crl-url", "ldap://x/y", "not an http:// or file:/ URL"),
        ("--aia-url", "http://a b/c", "not an http:// or file:/ URL"),
    ] {
        let dir = a.path("auth2").to_string_lossy().into_owned();
        let before = a.token_snapshot();
        a.run_env(
            &[
                "authority",
                "init",
                "--dir",
                &dir,
                "--token",
                AUTHORITY_TOKEN,
                flag,
                value,
            ],
            &[("KEYWARD_PIN", AUTHORITY_PIN)],
        )
        .fails(1, needle);
        assert!(!Path::new(&dir).exists(), "{dir} made despite the refusal");
        assert!(
            a.token_snapshot() == before,
            "the token changed despite the refusal"
        );
    }
}

/// A user without an e-mail address: the S/MIME BR cover only certificates that name a
/// mailbox (SMBR 1.1), and allow no user name as commonName (7.1.4.2.2), so keyward's
/// certificate for such a user names the user (commonName = the user name, no
/// subjectAltName), does not claim the BR's reserved policy (pkilint cannot then take it for
/// an S/MIME certificate) and lints clean as an RFC 5280 end-entity certificate.
#[test]
fn a_user_without_an_address_gets_a_plain_certificate_that_claims_no_smime_profile() {
    let a = authority(&["--policy-oid", POLICY, "--crl-url", CRL_URL]);
    a.bed.init_token("bob-card", USER_PIN);
    let key = a.add_user("bob", &[]);
    a.enroll_local("bob", "Bob", "bob-card", &key, &[], &[])
        .ok();
    let sig = a.run(&["keyset", "cert", "Bob"]).ok().stdout;
    let enc = a
        .run(&["keyset", "cert", "Bob", "--encryption"])
        .ok()
        .stdout;
    let mut findings = Vec::new();
    for (kind, pem) in [("signing", &sig), ("encryption", &enc)] {
        let c = parse(pem);
        assert_eq!(x509::common_name(&c).as_deref(), Some("bob"), "{kind}");
        assert_eq!(x509::email_of(&c), None, "{kind}");
        let file = a.file(&format!("bob-{kind}.pem"), pem.as_bytes());
        let text = a
            .run_tool(
                "openssl",
                "openssl",
                &["x509", "-noout", "-text", "-in", &file],
            )
            .ok()
            .stdout;
        assert!(
            !text.contains("2.23.140.1.5"),
            "{kind}: claims the BR\n{text}"
        );
        assert!(
            text.contains(POLICY),
            "{kind}: no organisation policy\n{text}"
        );
        assert!(text.contains(CRL_URL), "{kind}: no CDP\n{text}");
        assert!(text.contains("E-mail Protection"), "{kind}\n{text}");
        let detected = Command::new(pkilint("lint_cabf_smime_cert"))
            .args(["lint", "-d", "-o", "-s", "FATAL", &file])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&detected.stderr);
        assert!(
            said.contains("Could not determine validation level"),
            "pkilint took the {kind} certificate of a user without an address for an S/MIME one: {said}"
        );
        findings.extend(
            lint("lint_pkix_cert", &[], &file)
                .into_iter()
                .map(|f| format!("{kind}: {f}")),
        );
    }
    assert!(
        findings.is_empty(),
        "pkilint findings:\n{}",
        findings.join("\n")
    );
    // Alice, with an address, keeps the mailbox-strict profile in the same authority.
    let alice = parse(&a.run(&["keyset", "cert", "Alice"]).ok().stdout);
    assert_eq!(x509::email_of(&alice).as_deref(), Some("alice@example.org"));
}
