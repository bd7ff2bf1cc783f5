//! `keyward authority …`: the authority operator's commands.

use super::output::{note, out, outln, say};
use std::time::Duration;

use serde::Serialize;

use super::args::{
    AddUserArgs, AuthorityCommand, AuthorityInitArgs, CrlArgs, DirArg, LogArgs, ProcessArgs,
    RecoverArgs, ReplyArgs, RevokeArgs,
};
use super::output::print_json;
use super::Context;
use crate::authority::tempkey::{parse_lifetime, TempKey};
use crate::authority::{self, AuthorityDir, AuthorityError};
use crate::enroll::client::OAEP_MARKER;
use crate::error::Error;
use crate::pki::x509::CrlReason;
use crate::token::OaepHash;

/// Runs one `authority` subcommand.
pub fn run(ctx: &mut Context, cmd: AuthorityCommand) -> Result<(), Error> {
    match cmd {
        AuthorityCommand::Init(a) => init(ctx, a),
        AuthorityCommand::Cert(a) if a.all => cert_chain(ctx, &a.dir),
        AuthorityCommand::Cert(a) => cert(ctx, &a.dir),
        AuthorityCommand::AddUser(a) => add_user(ctx, a),
        AuthorityCommand::Process(a) => process(ctx, a),
        AuthorityCommand::Recover(a) => recover(ctx, a),
        AuthorityCommand::Revoke(a) => revoke(ctx, a),
        AuthorityCommand::Crl(a) => crl(ctx, a),
        AuthorityCommand::Users(a) => users(ctx, &a.dir, a.expiring),
        AuthorityCommand::Log(a) => log(ctx, a),
        AuthorityCommand::Migrate(a) => migrate(ctx, a),
        AuthorityCommand::Reply(a) => reply(ctx, a),
        AuthorityCommand::Operator(c) => super::operator_cmd::operator(ctx, c),
        AuthorityCommand::Policy(c) => super::operator_cmd::policy(ctx, c),
        AuthorityCommand::Request(c) => super::operator_cmd::request(ctx, c),
        AuthorityCommand::Approve(a) => {
            super::operator_cmd::decide(ctx, a, authority::approvals::Decision::Approve)
        }
        AuthorityCommand::Reject(a) => {
            super::operator_cmd::decide(ctx, a, authority::approvals::Decision::Reject)
        }
        AuthorityCommand::Token(a) => token_state(ctx, a),
        AuthorityCommand::AddUsers(a) => super::bulk_cmd::add_users(ctx, a),
        AuthorityCommand::Rollover(a) => super::bulk_cmd::rollover(ctx, a),
        AuthorityCommand::Join(a) => join(ctx, a),
        AuthorityCommand::Serve(a) => super::serve_cmd::serve(ctx, &a),
    }
}

fn token_state(ctx: &mut Context, a: super::args::TokenStateArgs) -> Result<(), Error> {
    use authority::tokenstate;
    let Some(to) = a.state else {
        let mut dir = AuthorityDir::open_read(&a.dir)?;
        let record = tokenstate::read(&mut dir, &a.user)?;
        if ctx.json() {
            print_json(&serde_json::json!({
                "user": a.user,
                "state": record.state,
                "since": record.since,
                "held": record.held.iter().map(|h| h.to_lowercase()).collect::<Vec<_>>(),
                "history": record.history,
            }));
        } else {
            outln!(
                "the token of user {:?} is {} since {}{}",
                a.user,
                record.state,
                record.since,
                if record.held.is_empty() {
                    String::new()
                } else {
                    format!("; on hold: {}", record.held.join(", "))
                }
            );
        }
        return Ok(());
    };
    let life = lifetime(&a.expires)?;
    let done = with_change(ctx, &a.dir, |ch| {
        tokenstate::change(ch, &a.dir, &a.user, to, life)
    })?;
    let what = format!(
        "the token of user {:?} is now {} (was {}): {} certificates {}",
        done.user,
        done.to,
        done.from,
        done.certificates.len(),
        done.what
    );
    if ctx.json() {
        print_json(&serde_json::json!({
            "user": done.user,
            "from": done.from,
            "to": done.to,
            "certificates": done
                .certificates
                .iter()
                .map(|c| c.to_lowercase())
                .collect::<Vec<_>>(),
            "what": done.what,
            "temporary_key": done.temp_key.as_ref().map(|k| k.display()),
            "expires_in": done
                .temp_key
                .as_ref()
                .map(|_| crate::authority::tempkey::format_lifetime(life).to_string()),
        }));
        return Ok(());
    }
    match &done.temp_key {
        Some(key) => print_temp_key(ctx, &done.user, key, life, &what),
        None => say!("{what}; publish a new CRL with `keyward authority crl`"),
    }
    Ok(())
}

/// Runs `f` with what a change needs: the module and the authority token's PIN (every command
/// that changes the authority logs in to its token first).
pub(super) fn with_change<T>(
    ctx: &mut Context,
    dir: &std::path::Path,
    f: impl FnOnce(&authority::init::Change<'_>) -> Result<T, AuthorityError>,
) -> Result<T, Error> {
    with_change_serve(ctx, dir, |ch| Ok(f(ch)?))
}

/// [`with_change`] for a command whose errors are not only the authority's (`serve`).
pub(super) fn with_change_serve<T>(
    ctx: &mut Context,
    dir: &std::path::Path,
    f: impl FnOnce(&authority::init::Change<'_>) -> Result<T, Error>,
) -> Result<T, Error> {
    authority::state::check_is_authority(dir)?;
    let pin = ctx.authority_command_pin()?;
    let policy = ctx.login_policy();
    let module = ctx.module()?;
    f(&authority::init::Change {
        module,
        pin: &pin,
        policy,
    })
}

/// [`with_change`] without the directory check (`migrate` reads the old format).
fn with_change_raw<T>(
    ctx: &mut Context,
    f: impl FnOnce(&authority::init::Change<'_>) -> Result<T, AuthorityError>,
) -> Result<T, Error> {
    let pin = ctx.authority_command_pin()?;
    let policy = ctx.login_policy();
    let module = ctx.module()?;
    Ok(f(&authority::init::Change {
        module,
        pin: &pin,
        policy,
    })?)
}

fn migrate(ctx: &mut Context, a: DirArg) -> Result<(), Error> {
    let done = with_change_raw(ctx, |ch| authority::migrate::migrate(ch, &a.dir))?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "dir": a.dir.display().to_string(),
            "users": done.users,
            "certificates": done.certificates,
            "archived_keys": done.archived_keys,
            "log_entries": done.log_entries,
        }));
    } else {
        say!(
            "migrated {}: {} users, {} certificates, {} archived keys, old audit log of {} entries kept; the old files are in {}",
            a.dir.display(),
            done.users,
            done.certificates,
            done.archived_keys,
            done.log_entries,
            a.dir.join("pre-migration").display()
        );
    }
    Ok(())
}

fn reply(ctx: &Context, a: ReplyArgs) -> Result<(), Error> {
    authority::process::reply_again(&a.dir, &a.user, &a.output)?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "user": a.user,
            "reply": a.output.display().to_string(),
        }));
        return Ok(());
    }
    say!(
        "wrote the reply of user {:?}'s last enrollment to {}; they complete it with `keyward enroll --complete {}`",
        a.user,
        a.output.display(),
        a.output.display()
    );
    Ok(())
}

fn init(ctx: &mut Context, a: AuthorityInitArgs) -> Result<(), Error> {
    let token = ctx.token(&a.token)?;
    let pin = ctx.authority_command_pin()?;
    let policy = ctx.login_policy();
    let spinner = super::progress::Spinner::start(&format!(
        "generating the CA, exchange and archive keys on token {:?}",
        token.label()
    ));
    let config = authority::init::init(
        ctx.module()?,
        authority::init::InitRequest {
            dir: &a.dir,
            token: &token,
            name: &a.name,
            pin: &pin,
            policy,
            allow_import: a.allow_import,
            issuing: authority::records::IssuingOptions {
                policy_oid: a.policy_oid.clone(),
                crl_url: a.crl_url.clone(),
                aia_url: a.aia_url.clone(),
            },
            force: a.force,
            db: db_location(&a.db)?,
        },
    );
    spinner.finish();
    let config = config?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "name": config.name,
            "dir": a.dir.display().to_string(),
            "token_label": config.token_label,
            "token_serial": config.token_serial,
            "allow_import": config.allow_import,
            "deliveries": crate::enroll::delivery::offered(config.allow_import, config.wraps_cbc_pad)
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>(),
        }));
    } else {
        say!(
            "created authority {:?} in {} on token {:?} (serial {}): CA key, exchange key and archive key generated on the token",
            config.name,
            a.dir.display(),
            config.token_label,
            config.token_serial
        );
        let made: Vec<&str> =
            crate::enroll::delivery::offered(config.allow_import, config.wraps_cbc_pad)
                .iter()
                .map(|d| d.name())
                .collect();
        say!(
            "key delivery: {}{}",
            made.join(", "),
            if config.allow_import {
                " (import with C_CreateObject to tokens that cannot unwrap is allowed: --allow-import)"
            } else {
                "; tokens that can only import keys are refused (create the authority with --allow-import to deliver by import)"
            }
        );
        note!(
            "give users its certificates: keyward authority cert --dir {}",
            a.dir.display()
        );
    }
    Ok(())
}

/// The PostgreSQL database `--db` names (the password file's path made absolute: the
/// directory records it for every command after).
fn db_location(
    a: &super::args::DbArgs,
) -> Result<Option<authority::store::postgres::PgLocation>, Error> {
    let Some(url) = &a.db else {
        return Ok(None);
    };
    let password_file = match &a.db_password_file {
        Some(p) => Some(std::path::absolute(p).map_err(|e| AuthorityError::Io {
            action: "use",
            path: p.clone(),
            source: e,
        })?),
        None => None,
    };
    let location = authority::store::postgres::PgLocation {
        url: url.clone(),
        password_file,
    };
    location.check().map_err(AuthorityError::from)?;
    Ok(Some(location))
}

fn join(ctx: &mut Context, a: super::args::AuthorityJoinArgs) -> Result<(), Error> {
    let Some(db) = db_location(&a.db)? else {
        return Err(AuthorityError::BadRequest(
            "authority join needs the database the other nodes use: --db URL".into(),
        )
        .into());
    };
    let token = ctx.token(&a.token)?;
    let pin = ctx.authority_command_pin()?;
    let policy = ctx.login_policy();
    let config = authority::init::join(
        ctx.module()?,
        authority::init::JoinRequest {
            dir: &a.dir,
            db: &db,
            token: &token,
            pin: &pin,
            policy,
        },
    )?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "name": config.name,
            "dir": a.dir.display().to_string(),
            "db": db.url,
            "token_label": config.token_label,
            "token_serial": config.token_serial,
        }));
    } else {
        say!(
            "{} is a node of authority {:?} (state in {}), with token {:?} (serial {}): its signed log and state check out",
            a.dir.display(),
            config.name,
            db.url,
            config.token_label,
            config.token_serial
        );
    }
    Ok(())
}

/// The certificate bundle users enroll against.
pub fn bundle(dir: &std::path::Path) -> Result<String, AuthorityError> {
    let a = AuthorityDir::open_read(dir)?;
    // The CA and exchange certificates, then the link certificates of any CA rollover.
    let pem = format!("{}{}", a.config.ca_pem, a.config.links_pem());
    let hash = match a.config.exchange_oaep {
        OaepHash::Sha1 => "sha1",
        OaepHash::Sha256 => "sha256",
    };
    Ok(format!(
        "{pem}{OAEP_MARKER} {hash}\n{}",
        crate::enroll::delivery::marker_line(a.config.allow_import, a.config.wraps_cbc_pad)
    ))
}

fn cert(ctx: &Context, dir: &std::path::Path) -> Result<(), Error> {
    let pem = bundle(dir)?;
    if ctx.json() {
        print_json(&serde_json::json!({ "dir": dir.display().to_string(), "pem": pem }));
        return Ok(());
    }
    out!("{pem}");
    Ok(())
}

pub(super) fn lifetime(s: &str) -> Result<Duration, Error> {
    parse_lifetime(s).map_err(|e| Error::Usage(e.to_string()))
}

fn reason(s: &str) -> Result<CrlReason, Error> {
    s.parse::<CrlReason>()
        .map_err(|e| Error::Usage(e.to_string()))
}

#[derive(Serialize)]
struct IssuedKey<'a> {
    user: &'a str,
    temporary_key: String,
    expires_in: String,
}

fn print_temp_key(ctx: &Context, user: &str, key: &TempKey, life: Duration, what: &str) {
    if ctx.json() {
        print_json(&IssuedKey {
            user,
            temporary_key: key.display(),
            expires_in: crate::authority::tempkey::format_lifetime(life).to_string(),
        });
    } else {
        note!(
            "{what}; give the user this temporary key (shown once, valid for {}):",
            crate::authority::tempkey::format_lifetime(life)
        );
        outln!("{}", key.display());
    }
}

fn add_user(ctx: &mut Context, a: AddUserArgs) -> Result<(), Error> {
    let life = lifetime(&a.expires)?;
    let key = with_change(ctx, &a.dir, |ch| {
        authority::users::add_user(ch, &a.dir, &a.user, a.email.as_deref(), life)
    })?;
    print_temp_key(
        ctx,
        &a.user,
        &key,
        life,
        &format!("added user {:?}", a.user),
    );
    Ok(())
}

fn process(ctx: &mut Context, a: ProcessArgs) -> Result<(), Error> {
    // The request must be there and readable before the PIN is asked for.
    std::fs::File::open(&a.request)
        .map_err(|e| crate::error::IoError::new("read", &a.request, e))?;
    let mut opts = authority::process::ProcessOptions::default();
    if let Some(life) = a.cert_lifetime {
        opts.cert_lifetime = life;
    }
    let done = with_change(ctx, &a.dir, |ch| {
        authority::process::process_with(ch, &a.dir, &a.request, &a.output, &opts)
    })?;
    if ctx.json() {
        print_json(&serde_json::json!({
            "user": done.user,
            "keyset": done.keyset,
            "signing_serial": done.signing_serial.to_lowercase(),
            "encryption_serial": done.encryption_serial.to_lowercase(),
            "history": done.history,
            "delivery": done.delivery,
            "reply": done.reply.display().to_string(),
        }));
    } else {
        say!(
            "enrolled user {:?}, keyset {:?}: signing certificate {}, encryption certificate {} (+{} archived keys), delivery {}; reply written to {}",
            done.user,
            done.keyset,
            done.signing_serial,
            done.encryption_serial,
            done.history,
            done.delivery,
            done.reply.display()
        );
    }
    Ok(())
}

fn recover(ctx: &mut Context, a: RecoverArgs) -> Result<(), Error> {
    let life = lifetime(&a.expires)?;
    let why = reason(&a.reason)?;
    let mut args = std::collections::BTreeMap::new();
    args.insert("user".to_string(), a.user.clone());
    args.insert("reason".to_string(), why.to_string());
    args.insert("expires-seconds".to_string(), life.as_secs().to_string());
    let outcome = super::operator_cmd::gated(
        ctx,
        &a.dir,
        authority::policy::Action::Recover,
        args,
        &a.acting,
    )?;
    super::operator_cmd::report(ctx, &a.dir, outcome)
}

/// Prints what a recovery made: the new temporary key (shown once).
pub(super) fn print_recovered(ctx: &Context, user: &str, done: &authority::users::Recovered) {
    let life = done.lifetime();
    let what = if done.pending {
        format!(
            "issued a new temporary key for user {user:?}, who has not enrolled yet (the old key no longer works)"
        )
    } else {
        format!(
            "recovered user {user:?}: old certificates revoked; they re-enroll under a NEW keyset name"
        )
    };
    print_temp_key(ctx, user, &done.key, life, &what);
    if let Some(issued) = &done.replaced {
        note!(
            "note: this replaces the unused temporary key issued {issued}; that one no longer works"
        );
    }
}

fn revoke(ctx: &mut Context, a: RevokeArgs) -> Result<(), Error> {
    let why = reason(&a.reason)?;
    let mut args = std::collections::BTreeMap::new();
    args.insert("user".to_string(), a.user.clone());
    args.insert("reason".to_string(), why.to_string());
    let outcome = super::operator_cmd::gated(
        ctx,
        &a.dir,
        authority::policy::Action::Revoke,
        args,
        &a.acting,
    )?;
    super::operator_cmd::report(ctx, &a.dir, outcome)
}

fn crl(ctx: &mut Context, a: CrlArgs) -> Result<(), Error> {
    let cdp = authority::crl::cdp_file(&AuthorityDir::open_read(&a.dir)?.config);
    if a.output.is_none() && cdp.is_none() {
        return Err(Error::Usage(
            "the authority publishes its CRL at no file: URL (authority init --crl-url); give -o FILE".into(),
        ));
    }
    let out = a.output.as_deref().map(|o| (o, a.der));
    let all = with_change(ctx, &a.dir, |ch| {
        authority::crl::publish_all(ch, &a.dir, out, a.valid_for)
    })?;
    let n = all.first().map_or(0, |p| p.revoked);
    if ctx.json() {
        let written = a.output.as_ref().or(cdp.as_ref());
        let mut v = serde_json::json!({
            "output": written.map(|o| o.display().to_string()).unwrap_or_default(),
            "revoked_certificates": n,
            "valid_for_seconds": a.valid_for.as_secs(),
        });
        if all.len() > 1 {
            v["crls"] = serde_json::to_value(&all).unwrap_or_default();
        }
        print_json(&v);
        return Ok(());
    }
    for p in all.iter().skip(1) {
        say!(
            "wrote CRL #{} of CA generation {} (key id {}), listing {} revoked certificates it issued, to {}",
            p.number,
            p.generation,
            p.issuer_key_id,
            p.revoked,
            p.files.join(" and ")
        );
    }
    let mut places: Vec<String> = a.output.iter().map(|o| o.display().to_string()).collect();
    if let Some(c) = cdp.filter(|c| a.output.as_ref() != Some(c)) {
        places.push(format!("its distribution point {} (DER)", c.display()));
    }
    say!(
        "wrote a CRL listing {n} revoked certificates to {}; publish the next one within {}",
        places.join(" and "),
        short_duration(a.valid_for)
    );
    Ok(())
}

fn users(
    ctx: &mut Context,
    dir: &std::path::Path,
    expiring: Option<Duration>,
) -> Result<(), Error> {
    let mut a = AuthorityDir::open_read(dir)?;
    let mut users = a.all_users()?;
    if let Some(within) = expiring {
        let before = std::time::SystemTime::now() + within;
        users.retain(|u| !authority::renew::expiring(u, before).is_empty());
        if !ctx.json() {
            for u in &users {
                for (serial, at) in authority::renew::expiring(u, before) {
                    outln!("{:<16} certificate {serial} expires {at}: renew with `keyward enroll --renew KEYSET`", u.name);
                }
            }
            if users.is_empty() {
                outln!(
                    "No current certificate expires within {}.",
                    short_duration(within)
                );
            }
            return Ok(());
        }
    }
    if ctx.json() {
        #[derive(Serialize)]
        struct UserOut<'a> {
            name: &'a str,
            email: Option<&'a str>,
            state: authority::UserState,
            created: &'a str,
            keysets: &'a [String],
            certificates: Vec<CertOut>,
            archived_keys: usize,
            temporary_key: Option<TempKeyOut>,
        }
        #[derive(Serialize)]
        struct CertOut {
            serial: String,
            kind: authority::records::CertKind,
            keyset: String,
            issued: String,
            not_after: String,
            revoked: Option<RevokedOut>,
            superseded: Option<String>,
        }
        #[derive(Serialize)]
        struct RevokedOut {
            at: String,
            reason: String,
        }
        let cert_out = |c: &authority::state::IssuedCert| CertOut {
            serial: c.serial.to_lowercase(),
            kind: c.kind,
            keyset: c.keyset.clone(),
            issued: c.issued.clone(),
            not_after: c.not_after.clone(),
            revoked: c.revoked.as_ref().map(|r| RevokedOut {
                at: r.at.clone(),
                reason: r.reason.clone(),
            }),
            superseded: c.superseded.clone(),
        };
        #[derive(Serialize)]
        struct TempKeyOut {
            expires: String,
            attempts: u32,
            spent: bool,
        }
        let out: Vec<UserOut<'_>> = users
            .iter()
            .map(|u| UserOut {
                name: &u.name,
                email: u.email.as_deref(),
                state: u.state,
                created: &u.created,
                keysets: &u.keysets,
                certificates: u.certs.iter().map(cert_out).collect(),
                archived_keys: u.archive.len(),
                temporary_key: u.temp_key.as_ref().map(|t| TempKeyOut {
                    expires: t.expires.clone(),
                    attempts: t.attempts,
                    spent: t.spent,
                }),
            })
            .collect();
        print_json(&serde_json::json!({ "users": out }));
        return Ok(());
    }
    if users.is_empty() {
        outln!("No users. Add one with `keyward authority add-user --dir DIR USER`.");
    }
    for u in &users {
        let valid = u.certs.iter().filter(|c| c.revoked.is_none()).count();
        outln!(
            "{:<16} {:<10} keysets: {}  certificates: {} valid, {} revoked  archived keys: {}",
            u.name,
            format!("{:?}", u.state).to_lowercase(),
            if u.keysets.is_empty() {
                "-".to_string()
            } else {
                u.keysets
                    .iter()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            valid,
            u.certs.len() - valid,
            u.archive.len()
        );
    }
    Ok(())
}

fn log(ctx: &mut Context, a: LogArgs) -> Result<(), Error> {
    if !a.verify {
        // Shown even when the state or the log fails its checks (to investigate), then the
        // tamper error and its exit status, as with --verify.
        let (dir, opened) = match AuthorityDir::open_read(&a.dir) {
            Ok(d) => (d, None),
            Err(e @ AuthorityError::Tampered { .. }) => {
                (AuthorityDir::open_unchecked(&a.dir)?, Some(e))
            }
            Err(e) => return Err(e.into()),
        };
        // The rows printed are the rows checked: the hash chain and every signed checkpoint
        // (no PIN needed; the head on the token, which catches a cut-off tail, is --verify's
        // and every changing command's).
        let rows = dir.audit_rows()?;
        let chain = verify_log_chain(&dir, &rows);
        print_log(ctx, rows);
        return match (chain, opened) {
            (Err(e), opened) => {
                if let Some(o) = opened {
                    note!("warning: {o}");
                }
                Err(e)
            }
            (Ok(_), Some(o)) => Err(o.into()),
            (Ok(_), None) => Ok(()),
        };
    }
    let mut dir = AuthorityDir::open_read(&a.dir)?;
    // The chain and its signatures, from the first CA key on, handing over at each CA
    // rollover to the key it names; opening checked the last checkpoint's root against the
    // bucket digests, and this checks every record against its bucket.
    let check = verify_log_chain(&dir, &dir.audit_rows()?)?;
    if let Some(f) = &a.ca {
        let pem = std::fs::read_to_string(f)
            .map_err(|e| Error::File(crate::error::IoError::new("read", f, e)))?;
        let given = authority::state::key_fingerprint(&authority::state::ca_key_of(&pem)?)?;
        if !check.keys.contains(&given) {
            return Err(authority::state::tampered(&format!(
                "the audit log does not verify with the CA key in {} (sha256:{given}): none of its checkpoints is signed by it, so the log and the state are not the ones that CA vouched for",
                f.display()
            ))
            .into());
        }
    }
    let n = check.entries;
    let records = dir.verify_all()?;
    // And every operator's approval against the certificate of the operator who signed it.
    let ops = authority::operators::all(&mut dir)?;
    for r in authority::approvals::all(&mut dir)? {
        authority::approvals::verify_request(dir.config.authority_id(), &r, &ops)?;
    }
    if ctx.json() {
        print_json(&serde_json::json!({
            "verified": true,
            "entry_count": n,
            "records": records,
            "ca": a.ca.as_ref().map(|p| p.display().to_string()),
        }));
        return Ok(());
    }
    let generations = if check.keys.len() > 1 {
        format!(
            " key in force (the first, then {} handed over at CA rollovers)",
            check.keys.len() - 1
        )
    } else {
        String::new()
    };
    say!(
        "audit log OK: {n} entries, hash chain intact, every checkpoint signed by the CA{generations}{}; state OK: {records} records match the last checkpoint",
        if a.ca.is_some() { ", whose chain includes the CA you gave" } else { "" }
    );
    Ok(())
}

/// The entries, as JSON or one line each (every text field escaped with
/// [`crate::cli::output::printable`]: a stored field can neither add a line nor drive the terminal).
fn print_log(ctx: &Context, rows: Vec<authority::store::AuditRow>) {
    use super::output::printable;
    let entries: Vec<_> = rows.into_iter().map(|r| r.entry).collect();
    if ctx.json() {
        print_json(&serde_json::json!({ "entries": entries }));
        return;
    }
    for e in entries {
        outln!(
            "{:>5} {} {:<10} {:<10} {:<16} {:<8} {}",
            e.seq,
            printable(&e.time),
            printable(&e.actor),
            printable(&e.action),
            printable(&e.subject),
            printable(&e.outcome),
            printable(&e.detail)
        );
    }
}

/// A whole number of days or hours (`7d`, `36h`), as `--valid-for` is written; else humantime.
fn short_duration(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match (s % 86_400, s % 3600) {
        (0, _) => format!("{}d", s / 86_400),
        (_, 0) => format!("{}h", s / 3600),
        _ => humantime::format_duration(d).to_string(),
    }
}

/// Verifies the audit chain of `dir` from its first CA key on, across every CA rollover.
fn verify_log_chain(
    dir: &AuthorityDir,
    rows: &[authority::store::AuditRow],
) -> Result<authority::state::ChainCheck, Error> {
    let mut known = Vec::new();
    for p in &dir.config.previous_cas {
        known.push(authority::state::ca_key_of(&p.cert_pem)?);
    }
    known.push(authority::state::ca_key_of(&dir.config.ca_pem)?);
    let first = known[0].clone();
    Ok(authority::state::verify_chain_across(rows, &first, &known)?)
}

/// One certificate of `authority cert --all`.
#[derive(Serialize)]
struct ChainCert {
    /// ca, exchange, previous-ca, link-new-with-old, link-old-with-new.
    role: &'static str,
    /// The CA generation it belongs to (a link: the generation it leads to).
    generation: usize,
    subject: String,
    issuer: String,
    serial: String,
    /// Subject key identifier, hex.
    key_id: String,
    not_before: String,
    not_after: String,
    pem: String,
}

/// `authority cert --all`: the current CA and exchange certificates, then, newest first,
/// each earlier CA with the links of the rollover that retired it.
fn cert_chain(ctx: &Context, dir: &std::path::Path) -> Result<(), Error> {
    let a = AuthorityDir::open_read(dir)?;
    let mut out = Vec::new();
    let current = a.config.ca_generation();
    let mut add = |role, generation, pem: &str| -> Result<(), Error> {
        for c in crate::pki::x509::certs_from_pem(pem).map_err(AuthorityError::from)? {
            let v = &c.tbs_certificate.validity;
            out.push(ChainCert {
                role,
                generation,
                subject: c.tbs_certificate.subject.to_string(),
                issuer: c.tbs_certificate.issuer.to_string(),
                serial: crate::pki::x509::serial_hex(&c),
                key_id: crate::token::keys::hex(&crate::pki::x509::key_id_of(&c)),
                not_before: v.not_before.to_string(),
                not_after: v.not_after.to_string(),
                pem: crate::pki::x509::cert_to_pem(&c).map_err(AuthorityError::from)?,
            });
        }
        Ok(())
    };
    let mut bundle = crate::pki::x509::certs_from_pem(&a.config.ca_pem)
        .map_err(AuthorityError::from)?
        .into_iter();
    if let Some(ca) = bundle.next() {
        add(
            "ca",
            current,
            &crate::pki::x509::cert_to_pem(&ca).map_err(AuthorityError::from)?,
        )?;
    }
    for ex in bundle {
        add(
            "exchange",
            current,
            &crate::pki::x509::cert_to_pem(&ex).map_err(AuthorityError::from)?,
        )?;
    }
    for (i, p) in a.config.previous_cas.iter().enumerate().rev() {
        add("previous-ca", i + 1, &p.cert_pem)?;
        let links = crate::pki::x509::certs_from_pem(&p.links_pem).map_err(AuthorityError::from)?;
        for (role, c) in ["link-new-with-old", "link-old-with-new"]
            .into_iter()
            .zip(&links)
        {
            add(
                role,
                i + 2,
                &crate::pki::x509::cert_to_pem(c).map_err(AuthorityError::from)?,
            )?;
        }
    }
    if ctx.json() {
        print_json(&serde_json::json!({
            "dir": dir.display().to_string(),
            "generation": current,
            "chain": out,
        }));
        return Ok(());
    }
    for c in &out {
        out!(
            "# {} (generation {}): {} serial {}\n{}",
            c.role,
            c.generation,
            c.subject,
            c.serial,
            c.pem
        );
    }
    Ok(())
}
