//! Issue 2, item 8: RSA-2048 `CKM_SHA256_RSA_PKCS` signing through keyward's PKCS#11 adapter
//! against raw `cryptoki` on the same key and token, one and two threads, plus the cost of
//! opening a session and logging in. Run with `cargo bench --bench sign`.
//!
//! No harness: a plain `main` with `std::time`. Every measured thing is a set of variants run
//! in the same round, in an order that rotates from round to round, so slow drift (thermal,
//! other load) hits every variant alike; each round's overhead is taken against the raw
//! variant of the same round, and the table shows the median over rounds.
//!
//! Knobs (environment): `KEYWARD_BENCH_ROUNDS` (default 25), `KEYWARD_BENCH_ROUND_MS` (target
//! length of one variant's run in a round, default 400), `KEYWARD_MODULE` (module path).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use secrecy::SecretString;

use keyward::token::{
    free_token, init_token, InitSecrets, KeyRef, KeySpec, KeyTemplate, LoginPolicy, Module,
    PinRole, Token, TokenSession,
};

const LABEL: &str = "keyward-bench";
const KEY_ID: &[u8] = &[0xbe, 0x9c, 0x00, 0x01];
const MESSAGE: &[u8; 32] = b"keyward sign benchmark 32 bytes!";
const WARMUP_ROUNDS: usize = 2;

type Fail = Box<dyn std::error::Error>;

fn main() -> Result<(), Fail> {
    let rounds: usize = env_num("KEYWARD_BENCH_ROUNDS", 25);
    let round_time = Duration::from_millis(env_num("KEYWARD_BENCH_ROUND_MS", 150));

    // A throw-away token directory, picked up by SoftHSM at C_Initialize.
    let dir = tempfile::Builder::new()
        .prefix("keyward-bench.")
        .tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testbeds/softhsm2.conf.in"),
    )?;
    let conf = dir.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        template.replace("@TOKENDIR@", &tokens.to_string_lossy()),
    )?;
    std::env::set_var("SOFTHSM2_CONF", &conf);

    let explicit = std::env::var_os("KEYWARD_MODULE").map(PathBuf::from);
    let path = Module::locate(explicit.as_deref())?;
    let module = Module::load(&path)?;

    let so_pin = SecretString::from("87654321".to_string());
    let pin = SecretString::from("12345678".to_string());
    let token = free_token(&module)?;
    let token = init_token(
        &module,
        &token,
        LABEL,
        InitSecrets {
            so_pin: &so_pin,
            user_pin: &pin,
        },
        false,
    )?;
    {
        let mut s = token.open_rw(&module)?;
        s.login(&module, PinRole::User, &pin, LoginPolicy::default())?;
        s.generate_signing_pair(&KeyTemplate {
            id: KEY_ID,
            private_label: "bench signing key",
            public_label: "bench signing key (public)",
            spec: KeySpec::Rsa(2048),
            always_authenticate: false,
        })?;
    }
    let slot = Slot::try_from(token.summary().slot_id)?;

    println!(
        "keyward sign benchmark: RSA-2048 PKCS#1 v1.5 SHA-256 signatures of a {}-byte message",
        MESSAGE.len()
    );
    println!(
        "module {}, {} logical CPU(s), {rounds} rounds (+{WARMUP_ROUNDS} warm-up) of ~{} ms per variant, median",
        path.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        round_time.as_millis()
    );

    let mut rows: Vec<Row> = Vec::new();
    {
        // Sessions for the signing runs: the first login logs the whole token in, the
        // others find it logged in (CKR_USER_ALREADY_LOGGED_IN, taken as success by both).
        let mut ad: Vec<(TokenSession, KeyRef)> = (0..2)
            .map(|_| adapter_session(&module, &token, &pin))
            .collect::<Result<_, _>>()?;
        let mut raw: Vec<(Session, ObjectHandle)> = (0..2)
            .map(|_| raw_session(&module, slot, &pin))
            .collect::<Result<_, _>>()?;

        // Same key, same signatures (PKCS#1 v1.5 is deterministic): a sanity check that the
        // two paths do the same work.
        let a = adapter_sign(&module, &mut ad[0], &pin);
        assert_eq!(
            a,
            raw_sign(&raw[0]),
            "adapter and raw cryptoki signatures differ"
        );
        assert_eq!(
            a,
            raw_sign_token_hash(&raw[0]),
            "host and token hashing differ"
        );

        // (a) one thread: adapter, raw cryptoki with the same calls, and raw cryptoki letting
        // the token hash (CKM_SHA256_RSA_PKCS) to compare the two mechanisms.
        let (ad0, ad1) = ad.split_at_mut(1);
        let results = run(
            rounds,
            round_time,
            vec![
                Variant::new("adapter", |n| {
                    on_cpu(|| {
                        for _ in 0..n {
                            black_box(adapter_sign(&module, &mut ad0[0], &pin));
                        }
                        n
                    })
                }),
                Variant::new("raw", |n| {
                    on_cpu(|| {
                        for _ in 0..n {
                            black_box(raw_sign(&raw[0]));
                        }
                        n
                    })
                }),
                Variant::new("raw token hash", |n| {
                    on_cpu(|| {
                        for _ in 0..n {
                            black_box(raw_sign_token_hash(&raw[0]));
                        }
                        n
                    })
                }),
            ],
        );
        rows.push(Row::pair("sign, 1 thread", &results, "adapter", "raw"));
        rows.push(Row::pair(
            "  raw CKM_SHA256_RSA_PKCS vs raw host hash + CKM_RSA_PKCS",
            &results,
            "raw token hash",
            "raw",
        ));

        // (a) two threads, one session each; ops/s is the total of both.
        let results = run(
            rounds,
            round_time,
            vec![
                Variant::new("adapter", |n| {
                    std::thread::scope(|sc| {
                        let threads: Vec<_> = [&mut ad0[0], &mut ad1[0]]
                            .into_iter()
                            .map(|s| {
                                let (module, pin) = (&module, &pin);
                                sc.spawn(move || {
                                    on_cpu(|| {
                                        for _ in 0..n {
                                            black_box(adapter_sign(module, s, pin));
                                        }
                                        n
                                    })
                                })
                            })
                            .collect();
                        sum(threads.into_iter().map(|t| t.join().expect("thread")))
                    })
                }),
                Variant::new("raw", |n| {
                    std::thread::scope(|sc| {
                        let threads: Vec<_> = raw
                            .iter_mut()
                            .map(|s| {
                                sc.spawn(move || {
                                    let s = &*s;
                                    on_cpu(|| {
                                        for _ in 0..n {
                                            black_box(raw_sign(s));
                                        }
                                        n
                                    })
                                })
                            })
                            .collect();
                        sum(threads.into_iter().map(|t| t.join().expect("thread")))
                    })
                }),
            ],
        );
        rows.push(Row::pair(
            "sign, 2 threads (1 session each, total)",
            &results,
            "adapter",
            "raw",
        ));
    } // every session closed: the token is logged out again

    // (b) open a session and log in (then close it; the last close logs the token out, so
    // every login is a real one that checks the PIN).
    let results = run(
        rounds,
        round_time,
        vec![
            Variant::new("adapter", |n| {
                on_cpu(|| {
                    for _ in 0..n {
                        let mut s = token.open_ro(&module).expect("C_OpenSession");
                        s.login(&module, PinRole::User, &pin, LoginPolicy::default())
                            .expect("C_Login");
                        black_box(&s);
                    }
                    n
                })
            }),
            Variant::new("raw", |n| {
                on_cpu(|| {
                    for _ in 0..n {
                        let s = module.raw().open_ro_session(slot).expect("C_OpenSession");
                        s.login(UserType::User, Some(&pin)).expect("C_Login");
                        black_box(&s);
                    }
                    n
                })
            }),
            Variant::new("raw+info", |n| {
                on_cpu(|| {
                    for _ in 0..n {
                        let s = module.raw().open_ro_session(slot).expect("C_OpenSession");
                        black_box(module.raw().get_token_info(slot).expect("C_GetTokenInfo"));
                        black_box(module.raw().get_slot_info(slot).expect("C_GetSlotInfo"));
                        s.login(UserType::User, Some(&pin)).expect("C_Login");
                        black_box(&s);
                    }
                    n
                })
            }),
        ],
    );
    rows.push(Row::pair(
        "session open + login + close",
        &results,
        "adapter",
        "raw",
    ));
    rows.push(Row::pair(
        "  of which: raw + C_GetTokenInfo/C_GetSlotInfo vs raw",
        &results,
        "raw+info",
        "raw",
    ));
    rows.push(Row::pair(
        "  of which: adapter vs raw + C_GetTokenInfo/C_GetSlotInfo",
        &results,
        "adapter",
        "raw+info",
    ));

    print_table(&rows);
    println!(
        "ops/s: median over rounds of wall-clock throughput (2 threads: both together). overhead: time per op of \
         the first over the second in the same round (order rotated), median [min..max] over rounds; CPU time is \
         the calling threads' time on a CPU (steadier on a shared machine); best rounds: the fastest \
         round of each, compared (other load only ever adds time)"
    );
    println!(
        "note: the adapter hashes on the host and signs the DigestInfo with one C_Sign \
         (CKM_RSA_PKCS), as `raw` does"
    );

    module.finalize();
    Ok(())
}

fn adapter_session(
    module: &Module,
    token: &Token,
    pin: &SecretString,
) -> Result<(TokenSession, KeyRef), Fail> {
    let mut s = token.open_ro(module)?;
    s.login(module, PinRole::User, pin, LoginPolicy::default())?;
    let key = s
        .find_private_key(KEY_ID)?
        .ok_or("the bench key is missing")?;
    Ok((s, key))
}

fn raw_session(
    module: &Module,
    slot: Slot,
    pin: &SecretString,
) -> Result<(Session, ObjectHandle), Fail> {
    let s = module.raw().open_ro_session(slot)?;
    match s.login(UserType::User, Some(pin)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
        }
        Err(e) => return Err(e.into()),
    }
    let found = s.find_objects(&[
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Id(KEY_ID.to_vec()),
    ])?;
    let key = *found.first().ok_or("the bench key is missing")?;
    Ok((s, key))
}

fn adapter_sign(module: &Module, s: &mut (TokenSession, KeyRef), pin: &SecretString) -> Vec<u8> {
    let mut reader: &[u8] = MESSAGE;
    let (session, key) = s;
    session
        .sign(module, key, &mut reader, pin)
        .expect("adapter sign")
}

/// The adapter's call shape with cryptoki alone: SHA-256 on the host, then one `C_Sign` with
/// `CKM_RSA_PKCS` over the DigestInfo.
fn raw_sign((s, key): &(Session, ObjectHandle)) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut info = SHA256_DIGEST_INFO_PREFIX.to_vec();
    info.extend_from_slice(&Sha256::digest(MESSAGE));
    s.sign(&Mechanism::RsaPkcs, *key, &info).expect("raw sign")
}

/// The same signature hashed on the token: one `C_Sign` with `CKM_SHA256_RSA_PKCS`.
fn raw_sign_token_hash((s, key): &(Session, ObjectHandle)) -> Vec<u8> {
    s.sign(&Mechanism::Sha256RsaPkcs, *key, MESSAGE)
        .expect("raw sign, token hash")
}

/// DER prefix of a SHA-256 DigestInfo (RFC 8017 §9.2 note 1).
const SHA256_DIGEST_INFO_PREFIX: [u8; 19] = [
    0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00, 0x04, 0x20,
];

/// What one run of a variant did: how many operations, and the CPU time of the threads that
/// did them.
#[derive(Clone, Copy, Default)]
struct Work {
    ops: u64,
    cpu: Duration,
}

fn sum(it: impl Iterator<Item = Work>) -> Work {
    it.fold(Work::default(), |a, b| Work {
        ops: a.ops + b.ops,
        cpu: a.cpu + b.cpu,
    })
}

/// Runs `f` and measures this thread's CPU time. On a shared machine the CPU time is immune to
/// other processes taking the core, so it gives the steadier overhead figure; wall time gives
/// the throughput.
fn on_cpu(f: impl FnOnce() -> u64) -> Work {
    let t0 = thread_cpu();
    let ops = f();
    Work {
        ops,
        cpu: thread_cpu().saturating_sub(t0),
    }
}

/// This thread's time on a CPU so far (`/proc/thread-self/schedstat`, nanoseconds).
fn thread_cpu() -> Duration {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let ns = s
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

/// One thing to time: `op(n)` does `n` iterations (per thread) and says what that was.
struct Variant<'a> {
    name: &'static str,
    op: Box<dyn FnMut(u64) -> Work + 'a>,
}

impl<'a> Variant<'a> {
    fn new(name: &'static str, op: impl FnMut(u64) -> Work + 'a) -> Self {
        Variant {
            name,
            op: Box::new(op),
        }
    }
}

/// Seconds per operation of each variant, per measured round: wall and CPU.
struct Results {
    names: Vec<&'static str>,
    wall: Vec<Vec<f64>>, // [variant][round]
    cpu: Vec<Vec<f64>>,  // [variant][round]
}

fn run(rounds: usize, round_time: Duration, mut variants: Vec<Variant<'_>>) -> Results {
    let k = variants.len();
    // Calibrate: how many iterations make one round of `round_time` for each variant.
    let mut iters: Vec<u64> = variants
        .iter_mut()
        .map(|v| {
            let t = Instant::now();
            let mut n = 0u64;
            while t.elapsed() < round_time / 8 {
                (v.op)(1);
                n += 1;
            }
            let per_iter = t.elapsed().as_secs_f64() / n as f64;
            ((round_time.as_secs_f64() / per_iter) as u64).max(1)
        })
        .collect();
    let mut wall = vec![Vec::with_capacity(rounds); k];
    let mut cpu = vec![Vec::with_capacity(rounds); k];
    for round in 0..WARMUP_ROUNDS + rounds {
        for j in 0..k {
            let i = (round + j) % k; // rotate the order
            let t = Instant::now();
            let w = (variants[i].op)(iters[i]);
            let secs = t.elapsed().as_secs_f64();
            if round >= WARMUP_ROUNDS {
                wall[i].push(secs / w.ops as f64);
                cpu[i].push(w.cpu.as_secs_f64() / w.ops as f64);
            } else {
                // re-aim at the target length from what warm-up measured
                iters[i] = ((round_time.as_secs_f64() / secs * iters[i] as f64) as u64).max(1);
            }
        }
    }
    Results {
        names: variants.iter().map(|v| v.name).collect(),
        wall,
        cpu,
    }
}

struct Row {
    what: &'static str,
    a: (&'static str, f64),
    b: (&'static str, f64),
    wall: (f64, f64, f64), // overhead in percent: median, min, max over rounds
    cpu: (f64, f64, f64),
    best: f64, // overhead in percent of the fastest round over the fastest round
}

impl Row {
    fn pair(what: &'static str, r: &Results, a: &'static str, b: &'static str) -> Row {
        let idx = |n| r.names.iter().position(|x| *x == n).expect("variant");
        let (ia, ib) = (idx(a), idx(b));
        let overhead = |v: &Vec<Vec<f64>>| {
            let mut pct: Vec<f64> = v[ia]
                .iter()
                .zip(&v[ib])
                .map(|(x, y)| (x / y - 1.0) * 100.0)
                .collect();
            let min = pct.iter().copied().fold(f64::INFINITY, f64::min);
            let max = pct.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            (median(&mut pct), min, max)
        };
        let ops = |i: usize| 1.0 / median(&mut r.wall[i].clone());
        Row {
            what,
            a: (a, ops(ia)),
            b: (b, ops(ib)),
            wall: overhead(&r.wall),
            cpu: overhead(&r.cpu),
            best: (fastest(&r.wall[ia]) / fastest(&r.wall[ib]) - 1.0) * 100.0,
        }
    }
}

fn print_table(rows: &[Row]) {
    let pct = |(m, lo, hi): (f64, f64, f64)| format!("{m:+.2}% [{lo:+.1}..{hi:+.1}]");
    println!();
    println!(
        "{:<58} {:>20} {:>20} {:>24} {:>24} {:>12}",
        "",
        "first ops/s",
        "second ops/s",
        "overhead, wall time",
        "overhead, CPU time",
        "best rounds"
    );
    for r in rows {
        println!(
            "{:<58} {:>20} {:>20} {:>24} {:>24} {:>12}",
            r.what,
            format!("{} {:.1}", r.a.0, r.a.1),
            format!("{} {:.1}", r.b.0, r.b.1),
            pct(r.wall),
            pct(r.cpu),
            format!("{:+.2}%", r.best),
        );
    }
    println!();
}

fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
