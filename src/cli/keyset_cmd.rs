//! `keyward keyset …`: a user's own keys.

use super::output::{note, out, outln, refuse_same_file, say};
use std::io::IsTerminal;

use secrecy::ExposeSecret;
use serde::Serialize;

use super::args::{
    AdoptArgs, CreateArgs, CsrArgs, KeysetCommand, RemoveArgs, SignArgs, VerifyArgs,
};
use super::output::print_json;
use super::Context;
use crate::error::Error;
use crate::keyset::ops::unhex_id;
use crate::keyset::registry::write_atomic;
use crate::keyset::{self, csr, KeysetName, KeysetRecord, KeysetSession, Registry};
use crate::pki::PublicKey;
use crate::token::{ObjectKind, Pkcs11Uri};

/// Runs one `keyset` subcommand.
pub fn run(ctx: &mut Context, cmd: KeysetCommand) -> Result<(), Error> {
    match cmd {
        KeysetCommand::Create(a) => create(ctx, a),
        KeysetCommand::Adopt(a) => adopt(ctx, a),
        KeysetCommand::List => list(ctx),
        KeysetCommand::Show(a) => show(ctx, &a.name),
        KeysetCommand::Pubkey(a) => pubkey(ctx, &a.name),
        KeysetCommand::Csr(a) => make_csr(ctx, a),
        KeysetCommand::Sign(a) => sign(ctx, a),
        KeysetCommand::Verify(a) => verify(ctx, a),
        KeysetCommand::Pin(a) => pin(ctx, &a.name, a.no_check),
        KeysetCommand::Cert(a) => cert(ctx, &a.name, a.encryption),
        KeysetCommand::Passwd(a) => passwd(ctx, &a.name),
        KeysetCommand::Remove(a) => remove(ctx, a),
        KeysetCommand::Trust(a) => super::trust_cmd::run(ctx, a),
    }
}

fn record(ctx: &Context, name: &str) -> Result<KeysetRecord, Error> {
    let registry = Registry::load(&ctx.home()?).map_err(keyset::KeysetError::from)?;
    Ok(registry
        .get(name)
        .map_err(keyset::KeysetError::from)?
        .clone())
}

fn create(ctx: &mut Context, a: CreateArgs) -> Result<(), Error> {
    let name = KeysetName::parse(&a.name).map_err(keyset::KeysetError::from)?;
    let home = ctx.home()?;
    Registry::load(&home)
        .and_then(|r| r.check_free(name.as_str(), &name.label()))
        .map_err(keyset::KeysetError::from)?;
    let pin = ctx.pin()?;
    let password = if a.harden {
        Some(ctx.new_password(name.as_str())?)
    } else {
        None
    };
    // Lock order, the same in every command: the module first (with SoftHSM that is also the
    // cross-process turn, see token/module.rs), then the registry, then an authority directory.
    // The registry lock is then held to the end, so concurrent creates take turns.
    let token = ctx.token(&a.token)?;
    let (lock, registry) = Registry::lock(&home).map_err(keyset::KeysetError::from)?;
    let policy = ctx.login_policy();
    let label_note = (name.label() != name.as_str()).then(|| name.label());
    let spinner = super::progress::Spinner::start(&format!(
        "generating the {} signing key on token {:?}",
        a.key_type,
        token.label()
    ));
    let record = keyset::create::create_locked(
        ctx.module()?,
        lock,
        registry,
        keyset::CreateRequest {
            name,
            token: &token,
            security: a.security,
            key_type: a.key_type,
            pin: &pin,
            harden_password: password.as_ref(),
            policy,
        },
    );
    spinner.finish();
    let record = record?;
    if report_made(ctx, "created", &record) {
        return Ok(());
    }
    if let Some(label) = label_note {
        say!("the name is longer than a 32-byte token label; its keys are labelled {label:?}");
    }
    if record.hardening.is_some() {
        say!("the token PIN is now derived from the keyset password (see `keyward keyset pin`)");
    }
    say!("signing key: {}", object_uri(&record, ObjectKind::Private));
    Ok(())
}

fn adopt(ctx: &mut Context, a: AdoptArgs) -> Result<(), Error> {
    let name = KeysetName::parse(&a.name).map_err(keyset::KeysetError::from)?;
    let parse_uri = |arg: &Option<String>| -> Result<Option<Pkcs11Uri>, Error> {
        Ok(match arg {
            Some(s) => Some(s.parse::<Pkcs11Uri>()?),
            None => None,
        })
    };
    let signing_key = parse_uri(&a.signing_key)?;
    let decryption_key = parse_uri(&a.decryption_key)?;
    let home = ctx.home()?;
    Registry::load(&home)
        .and_then(|r| r.check_free(name.as_str(), &name.label()))
        .map_err(keyset::KeysetError::from)?;
    let pin = ctx.pin()?;
    let token = ctx.token(&a.token)?;
    let policy = ctx.login_policy();
    let record = keyset::adopt(
        ctx.module()?,
        &home,
        keyset::AdoptRequest {
            name,
            token: &token,
            pin: &pin,
            signing_key,
            decryption_key,
            policy,
        },
    )?;
    if report_made(ctx, "adopted", &record) {
        return Ok(());
    }
    say!(
        "signing key:    {}",
        object_uri(&record, ObjectKind::Private)
    );
    if let Some(k) = record
        .adopted
        .as_ref()
        .and_then(|a| a.decryption_key.as_ref())
    {
        say!(
            "decryption key: {} (certificate {})",
            object_uri_for(&record, &k.id, ObjectKind::Private),
            k.cert_serial
        );
    } else {
        say!("decryption key: none on the token (the keyset can sign, not read mail)");
    }
    Ok(())
}

/// A keyset as `show`, `list`, `create` and `adopt` print it with `--json`: a view of the
/// registry record (never the record itself: no PEMs, no unknown fields, lower-case hex,
/// `null` for absent). docs/json.md, `keyset`.
#[derive(Serialize)]
struct Shown {
    name: String,
    label: String,
    state: String,
    security: String,
    key_type: String,
    token_label: String,
    token_serial: String,
    token_manufacturer: Option<String>,
    token_model: Option<String>,
    signing_id: String,
    signing_key_uri: String,
    public_key_uri: String,
    created: String,
    hardening: Option<HardeningView>,
    enrollment: Option<EnrollmentView>,
    adopted: Option<AdoptedView>,
    /// When the signing certificate expires (enrolled keysets).
    expires: Option<String>,
    /// Set in the last 20% of the certificate's life: renew.
    expiry_warning: Option<String>,
}

#[derive(Serialize)]
struct HardeningView {
    algorithm: String,
    salt: String,
    m_kib: u32,
    t: u32,
    p: u32,
    pin_len: usize,
}

#[derive(Serialize)]
struct EnrollmentView {
    user: String,
    authority: String,
    signing_certificate: bool,
    delivery: Option<String>,
    encryption_keys: Vec<KeyView>,
}

#[derive(Serialize)]
struct AdoptedView {
    adopted: String,
    signing_certificate: bool,
    decryption_key: Option<KeyView>,
}

#[derive(Serialize)]
struct KeyView {
    id: String,
    certificate_serial: String,
    current: bool,
    key_uri: String,
}

impl Shown {
    fn of(r: &KeysetRecord) -> Self {
        let now = std::time::SystemTime::now();
        let cert = signing_cert_of(r);
        let key = |k: &keyset::registry::EncryptionKey| KeyView {
            id: k.id.to_lowercase(),
            certificate_serial: k.cert_serial.to_lowercase(),
            current: k.current,
            key_uri: object_uri_for(r, &k.id, ObjectKind::Private),
        };
        Shown {
            name: r.name.clone(),
            label: r.label.clone(),
            state: state_text(r),
            security: r.security.to_string(),
            key_type: r.key_type.to_string(),
            token_label: r.token_label.clone(),
            token_serial: r.token_serial.clone(),
            token_manufacturer: r.token_manufacturer.clone(),
            token_model: r.token_model.clone(),
            signing_id: r.signing_id.to_lowercase(),
            signing_key_uri: object_uri(r, ObjectKind::Private),
            public_key_uri: object_uri(r, ObjectKind::Public),
            created: r.created.clone(),
            hardening: r.hardening.as_ref().map(|h| HardeningView {
                algorithm: h.algorithm.to_string(),
                salt: h.salt.to_lowercase(),
                m_kib: h.m_kib,
                t: h.t,
                p: h.p,
                pin_len: h.pin_len,
            }),
            enrollment: r.enrollment.as_ref().map(|e| EnrollmentView {
                user: e.user.clone(),
                authority: authority_name(&e.authority_ca),
                signing_certificate: e.signing_certificate.is_some(),
                delivery: e.delivery.clone(),
                encryption_keys: e.encryption_keys.iter().map(key).collect(),
            }),
            adopted: r.adopted.as_ref().map(|a| AdoptedView {
                adopted: a.adopted.clone(),
                signing_certificate: a.signing_certificate.is_some(),
                decryption_key: a.decryption_key.as_ref().map(key),
            }),
            expires: cert.and_then(|pem| {
                crate::enroll::renew::life_used(pem, now)
                    .map(|(_, end)| humantime::format_rfc3339_seconds(end).to_string())
            }),
            expiry_warning: cert
                .filter(|_| r.state == keyset::KeysetState::Active)
                .and_then(|pem| crate::enroll::renew::expiry_warning(pem, now))
                .map(|w| w.replace("NAME", &format!("{:?}", r.name))),
        }
    }
}

/// The keyset's current signing certificate, PEM, when enrolled.
fn signing_cert_of(r: &KeysetRecord) -> Option<&str> {
    r.enrollment
        .as_ref()
        .and_then(|e| e.signing_certificate.as_deref())
}

fn object_uri(r: &KeysetRecord, kind: ObjectKind) -> String {
    object_uri_for(r, &r.signing_id, kind)
}

fn authority_name(pem: &str) -> String {
    crate::pki::x509::certs_from_pem(pem)
        .ok()
        .and_then(|c| c.first().and_then(crate::pki::x509::common_name))
        .unwrap_or_else(|| "?".to_string())
}

fn object_uri_for(r: &KeysetRecord, id_hex: &str, kind: ObjectKind) -> String {
    Pkcs11Uri {
        id: unhex_id(id_hex).ok(),
        kind: Some(kind),
        ..r.token().uri()
    }
    .to_string()
}

fn list(ctx: &mut Context) -> Result<(), Error> {
    let home = ctx.home()?;
    // A change a killed command left half done is finished or dropped first (no login needed).
    if keyset::journal::pending(&home) {
        let module = ctx.module()?;
        if let Err(e) = keyset::journal::recover_if_pending(module, &home) {
            log::warn!("an interrupted change of the keyset registry is still open: {e}");
        }
    }
    let registry = Registry::load(&home).map_err(keyset::KeysetError::from)?;
    if ctx.json() {
        #[derive(Serialize)]
        struct List {
            keysets: Vec<Shown>,
        }
        print_json(&List {
            keysets: registry.keysets().iter().map(Shown::of).collect(),
        });
        return Ok(());
    }
    let shown = registry.keysets();
    if shown.is_empty() {
        outln!("No keysets. Create one with `keyward keyset create NAME --token URI`.");
    }
    for r in shown {
        let s = Shown::of(r);
        outln!(
            "{:<28} {:<8} {:<8} {:<8} token {:?} (serial {})",
            format!("{:?}", r.name),
            state_text(r),
            r.security.to_string(),
            r.key_type.to_string(),
            r.token_label,
            r.token_serial
        );
        if let Some(at) = &s.expires {
            outln!("{:<28} certificate expires {at}", "");
        }
        if let Some(w) = &s.expiry_warning {
            note!("warning: keyset {:?}: {w}", r.name);
        }
    }
    Ok(())
}

fn show(ctx: &mut Context, name: &str) -> Result<(), Error> {
    let record = record(ctx, name)?;
    let presence = match keyset::keyset_token(ctx.module()?, &record) {
        Ok(_) => "present".to_string(),
        Err(e) => format!("not usable: {e}"),
    };
    if ctx.json() {
        #[derive(Serialize)]
        struct WithToken {
            #[serde(flatten)]
            shown: Shown,
            token_status: String,
        }
        print_json(&WithToken {
            shown: Shown::of(&record),
            token_status: presence,
        });
        return Ok(());
    }
    outln!("Keyset {:?}", record.name);
    outln!("  state:       {}", state_text(&record));
    outln!("  security:    {}", record.security);
    outln!("  key type:    {}", record.key_type);
    outln!(
        "  token:       {:?} (serial {}), {presence}",
        record.token_label,
        record.token_serial
    );
    if record.adopted.is_none() {
        outln!("  key label:   {} signing key", record.label);
    }
    outln!(
        "  signing key: {}",
        object_uri(&record, ObjectKind::Private)
    );
    outln!("  public key:  {}", object_uri(&record, ObjectKind::Public));
    if let Some(h) = &record.hardening {
        outln!(
            "  hardened:    {} m={} KiB t={} p={}, {}-character PIN",
            h.algorithm,
            h.m_kib,
            h.t,
            h.p,
            h.pin_len
        );
    }
    if let Some(k) = record
        .adopted
        .as_ref()
        .and_then(|a| a.decryption_key.as_ref())
    {
        outln!(
            "  decryption:  certificate {} — {}",
            k.cert_serial,
            object_uri_for(&record, &k.id, ObjectKind::Private)
        );
    }
    if let Some(e) = &record.enrollment {
        outln!(
            "  enrolled as: {} (authority {})",
            e.user,
            authority_name(&e.authority_ca)
        );
        for k in &e.encryption_keys {
            outln!(
                "  encryption:  certificate {}{} — {}",
                k.cert_serial,
                if k.current {
                    " (current)"
                } else {
                    " (archived)"
                },
                object_uri_for(&record, &k.id, ObjectKind::Private)
            );
        }
    }
    let shown = Shown::of(&record);
    if let Some(at) = &shown.expires {
        outln!("  expires:     {at}");
    }
    if let Some(e) = &record.enrollment {
        for h in &e.history {
            outln!(
                "  renewed:     signing certificate {} superseded {}",
                crate::pki::x509::certs_from_pem(&h.certificate)
                    .ok()
                    .and_then(|c| c.first().map(crate::pki::x509::serial_hex))
                    .unwrap_or_default(),
                h.superseded
            );
        }
    }
    outln!("  created:     {}", record.created);
    if let Some(w) = &shown.expiry_warning {
        note!("warning: keyset {:?}: {w}", record.name);
    }
    Ok(())
}

/// The state as `list` and `show` print it: adopted keysets say so.
fn state_text(r: &KeysetRecord) -> String {
    match &r.adopted {
        Some(_) => "adopted".to_string(),
        None => r.state.to_string(),
    }
}

fn pubkey(ctx: &mut Context, name: &str) -> Result<(), Error> {
    let record = record(ctx, name)?;
    if ctx.json() {
        print_json(&Pem {
            keyset: &record.name,
            pem: &record.signing_public_key,
        });
        return Ok(());
    }
    out!("{}", record.signing_public_key);
    Ok(())
}

/// A PEM a command prints (`keyset pubkey`, `keyset cert`), as JSON.
#[derive(Serialize)]
struct Pem<'a> {
    keyset: &'a str,
    pem: &'a str,
}

fn make_csr(ctx: &mut Context, a: CsrArgs) -> Result<(), Error> {
    let record = record(ctx, &a.name)?;
    let subject = csr::parse_subject(&a.subject).map_err(keyset::KeysetError::from)?;
    let key = PublicKey::from_pem(&record.signing_public_key).map_err(keyset::KeysetError::from)?;
    let (info, tbs) = csr::request_info(&subject, &key).map_err(keyset::KeysetError::from)?;
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let module = ctx.module()?;
    let mut session = KeysetSession::open(module, &record, &password, policy, false)?;
    let signature = session.sign_bytes(module, &record, &tbs)?;
    let pem = csr::finish(info, &key, &signature).map_err(keyset::KeysetError::from)?;
    if ctx.json() {
        if let Some(p) = a.output.as_deref() {
            write_atomic(p, pem.as_bytes()).map_err(|e| io("write", p, e))?;
        }
        #[derive(Serialize)]
        struct Csr<'a> {
            keyset: &'a str,
            subject: &'a str,
            output: Option<String>,
            pem: Option<&'a str>,
        }
        print_json(&Csr {
            keyset: &record.name,
            subject: &a.subject,
            output: a.output.as_ref().map(|p| p.display().to_string()),
            pem: a.output.is_none().then_some(pem.as_str()),
        });
        return Ok(());
    }
    write_or_print(a.output.as_deref(), pem.as_bytes())?;
    if let Some(p) = &a.output {
        say!(
            "wrote a certificate request for keyset {:?} to {}",
            record.name,
            p.display()
        );
    }
    Ok(())
}

fn sign(ctx: &mut Context, a: SignArgs) -> Result<(), Error> {
    let record = record(ctx, &a.name)?;
    refuse_same_file(&a.file, &a.output)?;
    let mut file = std::fs::File::open(&a.file).map_err(|e| io("read", &a.file, e))?;
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let signature = keyset::sign(ctx.module()?, &record, &password, policy, &mut file)?;
    crate::keyset::registry::write_replace(&a.output, &signature)
        .map_err(|e| io("write", &a.output, e))?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Signed<'a> {
            keyset: &'a str,
            file: String,
            signature: String,
            signature_bytes: usize,
        }
        print_json(&Signed {
            keyset: &record.name,
            file: a.file.display().to_string(),
            signature: a.output.display().to_string(),
            signature_bytes: signature.len(),
        });
        return Ok(());
    }
    say!(
        "signed {} with keyset {:?} → {}",
        a.file.display(),
        record.name,
        a.output.display()
    );
    Ok(())
}

fn verify(ctx: &mut Context, a: VerifyArgs) -> Result<(), Error> {
    let record = record(ctx, &a.name)?;
    let data = std::fs::read(&a.file).map_err(|e| io("read", &a.file, e))?;
    let sig = std::fs::read(&a.signature).map_err(|e| io("read", &a.signature, e))?;
    let key = PublicKey::from_pem(&record.signing_public_key).map_err(keyset::KeysetError::from)?;
    key.verify(&data, &sig).map_err(keyset::KeysetError::from)?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Verified<'a> {
            keyset: &'a str,
            file: String,
            signature: String,
            valid: bool,
        }
        print_json(&Verified {
            keyset: &record.name,
            file: a.file.display().to_string(),
            signature: a.signature.display().to_string(),
            valid: true,
        });
        return Ok(());
    }
    say!(
        "signature OK: {} was signed by keyset {:?}",
        a.file.display(),
        record.name
    );
    Ok(())
}

fn cert(ctx: &mut Context, name: &str, encryption: bool) -> Result<(), Error> {
    let record = record(ctx, name)?;
    let not_enrolled = || {
        Error::from(keyset::KeysetError::Unsupported(format!(
            "keyset {name:?} has no certificates; enroll it with `keyward enroll` first"
        )))
    };
    if let Some(a) = &record.adopted {
        let pem = if encryption {
            a.decryption_key.as_ref().map(|k| k.certificate.clone())
        } else {
            a.signing_certificate.clone()
        };
        let pem = pem.ok_or_else(|| {
            Error::from(keyset::KeysetError::Unsupported(format!(
                "keyset {name:?} was adopted from a token that had no such certificate; load it with the card's tools, remove the keyset and adopt it again"
            )))
        })?;
        return print_pem(ctx, &record.name, &pem);
    }
    let e = record.enrollment.as_ref().ok_or_else(not_enrolled)?;
    let pem = if encryption {
        e.encryption_keys
            .iter()
            .rev()
            .find(|k| k.current)
            .map(|k| k.certificate.clone())
            .ok_or_else(not_enrolled)?
    } else {
        e.signing_certificate.clone().ok_or_else(not_enrolled)?
    };
    print_pem(ctx, &record.name, &pem)
}

fn print_pem(ctx: &Context, keyset: &str, pem: &str) -> Result<(), Error> {
    if ctx.json() {
        print_json(&Pem { keyset, pem });
    } else {
        out!("{pem}");
    }
    Ok(())
}

fn pin(ctx: &mut Context, name: &str, no_check: bool) -> Result<(), Error> {
    let record = record(ctx, name)?;
    if record.hardening.is_none() {
        return Err(Error::Usage(format!(
            "keyset {name:?} is not hardened: its password is the token PIN itself"
        )));
    }
    let password = ctx.password(&record.name)?;
    let pin = if no_check {
        keyset::token_pin(&record, &password)?
    } else {
        // A mistyped password derives a PIN that looks as good as the right one: log in with
        // it once (the same login every other command makes) so a wrong one is said as such.
        let policy = ctx.login_policy();
        let session = KeysetSession::open(ctx.module()?, &record, &password, policy, false)?;
        session.token_pin().clone()
    };
    if ctx.json() {
        #[derive(Serialize)]
        struct Pin<'a> {
            keyset: &'a str,
            pin: &'a str,
            checked: bool,
        }
        print_json(&Pin {
            keyset: &record.name,
            pin: pin.expose_secret(),
            checked: !no_check,
        });
        return Ok(());
    }
    outln!("{}", pin.expose_secret());
    Ok(())
}

fn passwd(ctx: &mut Context, name: &str) -> Result<(), Error> {
    let home = ctx.home()?;
    let record = record(ctx, name)?;
    let old = ctx.password(&record.name)?;
    let new = ctx.new_password(&record.name)?;
    let policy = ctx.login_policy();
    let sharing = keyset::change_password(ctx.module()?, &home, name, &old, &new, policy)?;
    if ctx.json() {
        #[derive(Serialize)]
        struct Changed<'a> {
            keyset: &'a str,
            also_changed: &'a [String],
        }
        print_json(&Changed {
            keyset: name,
            also_changed: &sharing,
        });
        return Ok(());
    }
    say!("changed the password of keyset {name:?}");
    if !sharing.is_empty() {
        say!(
            "the token PIN is shared: this also changed the password of {}",
            sharing
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn remove(ctx: &mut Context, a: RemoveArgs) -> Result<(), Error> {
    let home = ctx.home()?;
    let record = record(ctx, &a.name)?;
    if !a.destroy_keys {
        let what = if record.enrollment.is_some() {
            "forgets keyset {name} and its certificates (no command brings the entry back; the keys stay on the token)"
        } else {
            "forgets keyset {name} (no command brings the entry back; the keys stay on the token)"
        };
        confirm(&a, what)?;
        keyset::remove(None, &home, &a.name, None)?;
        if ctx.json() {
            print_json(&Removed {
                keyset: &record.name,
                token_label: &record.token_label,
                destroyed_objects: 0,
            });
            return Ok(());
        }
        say!(
            "removed keyset {:?} from the registry; its keys stay on token {:?}",
            record.name,
            record.token_label
        );
        return Ok(());
    }
    confirm(&a, "destroys the keys of keyset {name} for good")?;
    let password = ctx.password(&record.name)?;
    let policy = ctx.login_policy();
    let n = keyset::remove(
        Some(ctx.module()?),
        &home,
        &a.name,
        Some((&password, policy)),
    )?;
    if ctx.json() {
        print_json(&Removed {
            keyset: &record.name,
            token_label: &record.token_label,
            destroyed_objects: n,
        });
        return Ok(());
    }
    say!(
        "removed keyset {:?} and destroyed {n} objects on token {:?}",
        record.name,
        record.token_label
    );
    Ok(())
}

/// `keyset remove --json`.
#[derive(Serialize)]
struct Removed<'a> {
    keyset: &'a str,
    token_label: &'a str,
    destroyed_objects: usize,
}

/// Asks to type the keyset's name unless `--yes`; `what` says what removing does (`{name}`
/// stands for the quoted name).
fn confirm(a: &RemoveArgs, what: &str) -> Result<(), Error> {
    if a.yes {
        return Ok(());
    }
    let what = what.replace("{name}", &format!("{:?}", a.name));
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(format!(
            "this {what}: pass --yes to confirm (there is no terminal to ask on); nothing was changed"
        )));
    }
    eprint!("This {what}. Type the keyset's name to confirm: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::Usage(format!("cannot read the confirmation: {e}")))?;
    if line.trim_end_matches(['\r', '\n']) != a.name {
        return Err(Error::Usage("not confirmed; nothing was changed".into()));
    }
    Ok(())
}

fn write_or_print(path: Option<&std::path::Path>, bytes: &[u8]) -> Result<(), Error> {
    match path {
        Some(p) => write_atomic(p, bytes).map_err(|e| io("write", p, e)),
        None => {
            out!("{}", String::from_utf8_lossy(bytes));
            Ok(())
        }
    }
}

fn io(action: &'static str, path: &std::path::Path, e: std::io::Error) -> Error {
    Error::File(crate::error::IoError::new(action, path, e))
}

/// Prints the keyset a command made: JSON (then true: nothing more to say) or its first line.
fn report_made(ctx: &Context, verb: &str, record: &KeysetRecord) -> bool {
    if ctx.json() {
        print_json(&Shown::of(record));
        return true;
    }
    say!(
        "{verb} keyset {:?} on token {:?} (serial {}): {} signing key, security {}",
        record.name,
        record.token_label,
        record.token_serial,
        record.key_type,
        record.security
    );
    false
}
