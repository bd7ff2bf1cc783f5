//! The fuzz targets' checks, replayed in the normal test suite without cargo-fuzz: every file of
//! `fuzz/corpus/<target>/` (the committed seeds, plus whatever a local fuzz run added) and a
//! fixed set of mutations of each (truncations, deleted lines, flipped and inserted bytes,
//! spliced seeds) go through the same `check` the fuzzer calls (`fuzz/checks/*.rs`), which
//! panics on a finding. Deterministic: the mutations come from a fixed-seed generator.
//! The seeds themselves must be accepted, so a parser that starts refusing everything fails
//! here too.

use std::path::{Path, PathBuf};
use std::time::Instant;

#[path = "../fuzz/checks/audit.rs"]
mod audit;
#[path = "../fuzz/checks/est.rs"]
mod est;
#[path = "../fuzz/checks/loaders.rs"]
mod loaders;
#[path = "../fuzz/checks/message.rs"]
mod message;
#[path = "../fuzz/checks/reply.rs"]
mod reply;
#[path = "../fuzz/checks/request.rs"]
mod request;
#[path = "../fuzz/checks/uri.rs"]
mod uri;

/// Mutations per seed file.
const MUTATIONS: usize = 400;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no seeds in {}", dir.display());
    files
}

/// xorshift64*: small, fixed-seed, good enough to pick positions.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the formats: TOML and PEM punctuation, digits, the log's separators.
const INTERESTING: &[u8] = b"\n\r\t \"'=[]{}.,:;#-+0129AZaz%/\\\x00\xff\xc3";

/// One mutation of `seed` (another seed is the splice partner).
fn mutate(rng: &mut Rng, seed: &[u8], other: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    match rng.below(7) {
        0 => out.truncate(rng.below(out.len() + 1)),
        1 => {
            // Delete one line.
            let lines: Vec<&[u8]> = seed.split(|b| *b == b'\n').collect();
            let skip = rng.below(lines.len());
            out = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>()
                .join(&b'\n');
        }
        2 => {
            for _ in 0..1 + rng.below(4) {
                if !out.is_empty() {
                    let i = rng.below(out.len());
                    out[i] ^= 1 << rng.below(8);
                }
            }
        }
        3 => {
            let i = rng.below(out.len() + 1);
            out.insert(i, INTERESTING[rng.below(INTERESTING.len())]);
        }
        4 => {
            if !out.is_empty() {
                let i = rng.below(out.len());
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
        }
        5 => {
            // Duplicate a slice (repeated tables, keys, lines).
            if !out.is_empty() {
                let a = rng.below(out.len());
                let b = (a + 1 + rng.below(64)).min(out.len());
                let piece = out[a..b].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
        }
        _ => {
            // Splice: the head of this seed, the tail of another.
            out.truncate(rng.below(out.len() + 1));
            out.extend_from_slice(&other[rng.below(other.len() + 1)..]);
        }
    }
    out
}

/// Runs `check` on every seed and `MUTATIONS` mutations of each; returns how many inputs.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let seeds = corpus(target);
    let mut rng = Rng(0x6b65_7977_6172_6421 ^ target.len() as u64);
    let started = Instant::now();
    let mut inputs = 0;
    for (i, (path, seed)) in seeds.iter().enumerate() {
        check(seed);
        inputs += 1;
        let other = &seeds[(i + 1) % seeds.len()].1;
        for n in 0..MUTATIONS {
            let input = mutate(&mut rng, seed, other);
            let caught = std::panic::catch_unwind(|| check(&input));
            if caught.is_err() {
                panic!(
                    "{target}: mutation {n} of {} panicked; input ({} bytes): {:?}",
                    path.display(),
                    input.len(),
                    String::from_utf8_lossy(&input)
                );
            }
            inputs += 1;
        }
    }
    eprintln!(
        "{target}: {inputs} inputs from {} seeds in {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
    inputs
}

fn text(data: &[u8]) -> &str {
    std::str::from_utf8(data).expect("the seeds are UTF-8")
}

#[test]
fn uri_corpus() {
    let n = replay("uri", uri::check);
    assert!(n > 17 * MUTATIONS);
    // The seeds (RFC 7512 examples and `--token` labels): all are taken, except the ones keyward refuses on purpose
    // (pin-value, which would put a PIN in argv, and vendor attributes it cannot honour).
    for (path, seed) in corpus("uri") {
        let s = text(&seed).trim();
        match keyward::Pkcs11Uri::from_token_arg(s) {
            Ok(_) => {}
            Err(e) => assert!(
                s.contains("pin-value") || s.contains("vendor"),
                "{}: {s:?} refused: {e}",
                path.display()
            ),
        }
    }
}

#[test]
fn request_corpus() {
    replay("request", request::check);
    let path = Path::new("request.toml");
    for (_, seed) in corpus("request") {
        keyward::authority::process::parse_request(path, text(&seed))
            .expect("the seed request is accepted");
    }
}

#[test]
fn reply_corpus() {
    replay("reply", reply::check);
    let (_, seed) = corpus("reply")
        .into_iter()
        .find(|(p, _)| p.ends_with("reply.toml"))
        .expect("reply.toml seed");
    keyward::enroll::wire::open::<keyward::enroll::wire::ReplyBody>(
        Path::new("reply.toml"),
        text(&seed),
        "reply",
    )
    .expect("the seed reply opens");
    let (_, bundle) = corpus("reply")
        .into_iter()
        .find(|(p, _)| p.ends_with("authority-cert.pem"))
        .expect("authority-cert.pem seed");
    keyward::enroll::client::AuthorityCerts::parse(text(&bundle))
        .expect("the seed authority bundle parses");
}

#[test]
fn loaders_corpus() {
    replay("loaders", loaders::check);
    for (path, seed) in corpus("loaders") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("keysets-") {
            let reg = keyward::keyset::Registry::parse(&path, text(&seed))
                .unwrap_or_else(|e| panic!("{name} is refused: {e}"));
            assert!(!reg.keysets().is_empty(), "{name} has no keysets");
        }
    }
}

#[test]
fn audit_corpus() {
    replay("audit", audit::check);
    for (path, seed) in corpus("audit") {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("audit.log");
        std::fs::write(&file, &seed).expect("write");
        let verified = keyward::authority::audit::AuditLog::open(&file).verify(None);
        match name.as_str() {
            "torn.log" => assert!(verified.is_err(), "a torn log verifies"),
            _ => assert!(verified.is_ok(), "{name}: {verified:?}"),
        }
    }
}

#[test]
fn message_corpus() {
    replay("message", message::check);
    // The seeds' signed layers (keyward's, OpenSSL's) verify through the streaming path.
    let signed = corpus("message")
        .into_iter()
        .filter(|(p, _)| p.to_string_lossy().contains("signed"))
        .map(|(_, d)| keyward::message::read::parse_unverified(&d).signed_verified)
        .collect::<Vec<_>>();
    assert!(
        !signed.is_empty() && signed.iter().all(|v| *v),
        "{signed:?}"
    );
}

#[test]
fn est_corpus() {
    replay("est", est::check);
    // The seeds are taken: a Basic header, P-256 and RSA requests (the RSA one is a transport
    // key), a Content-Type, a multipart answer and a certs-only PKCS#7.
    for (path, seed) in corpus("est") {
        let (which, rest) = seed.split_first().expect("a seed");
        let name = path.display();
        match which {
            b'b' => assert!(keyward::est::wire::parse_basic(rest).is_ok(), "{name}"),
            b'c' => {
                let der = keyward::est::wire::decode_body(rest).expect("seed base64");
                let csr = keyward::est::wire::check_csr(&der).expect("seed CSR");
                assert_eq!(
                    keyward::est::wire::keyset_of(&csr.csr).ok().as_deref(),
                    Some("laptop")
                );
                if name.to_string().ends_with("rsa") {
                    assert!(keyward::est::wire::transport_key(&csr).is_ok(), "{name}");
                }
            }
            b't' => assert!(keyward::est::wire::check_content_type(Some(rest)).is_ok()),
            b'm' => assert!(keyward::est::wire::split_serverkeygen(text(rest)).is_ok()),
            b'p' => {
                let der = keyward::est::wire::decode_body(rest).expect("seed base64");
                assert_eq!(
                    keyward::est::wire::certs_of(&der)
                        .expect("seed PKCS#7")
                        .len(),
                    1
                );
            }
            _ => panic!("{name}: unknown seed kind"),
        }
    }
}
