//! Bulk commands: `authority add-users` (and `token provision`), with a progress bar on a
//! terminal.

use std::io::IsTerminal;

use super::args::AddUsersArgs;
use super::authority_cmd::{lifetime, with_change};
use super::output::{note, outln, print_json, say};
use super::Context;
use crate::authority::bulk::{self, BulkOptions, BulkReport};
use crate::error::Error;

/// A progress bar on standard error when it is a terminal (and not `--json`), hidden otherwise.
pub fn progress_bar(ctx: &Context, len: usize, what: &str) -> indicatif::ProgressBar {
    if ctx.json() || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} ({per_sec}, {eta} left)",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar
}

/// Runs `authority add-users`.
pub fn add_users(ctx: &mut Context, a: AddUsersArgs) -> Result<(), Error> {
    crate::authority::state::check_is_authority(&a.dir)?;
    let life = lifetime(&a.expires)?;
    let users = bulk::read_users(&a.from)?;
    let opts = BulkOptions {
        out: &a.out,
        format: a.format,
        lifetime: life,
    };
    if a.dry_run {
        let report = bulk::dry_run(&a.dir, &users, &opts)?;
        return show(ctx, &report);
    }
    let bar = progress_bar(ctx, users.len(), "adding users");
    let report = with_change(ctx, &a.dir, |ch| {
        bulk::add_users(ch, &a.dir, &users, &opts, &mut |n| {
            bar.set_position(n as u64)
        })
    });
    bar.finish_and_clear();
    show(ctx, &report?)
}

fn show(ctx: &Context, r: &BulkReport) -> Result<(), Error> {
    if ctx.json() {
        print_json(r);
        return Ok(());
    }
    let verb = if r.dry_run { "would add" } else { "added" };
    say!(
        "{verb} {} users; {} skipped (they exist already: their keys were given out before; `keyward authority recover` issues a new one){}",
        r.added,
        r.skipped,
        if r.dry_run {
            "; nothing was changed (--dry-run)".to_string()
        } else {
            format!("; temporary keys in {} (mode 0600)", r.output.display())
        }
    );
    if r.stale_rows_dropped > 0 {
        say!(
            "dropped {} rows of an interrupted earlier run (those users were never recorded and got new keys now)",
            r.stale_rows_dropped
        );
    }
    Ok(())
}

/// Runs `token provision --manifest FILE`.
pub fn provision(ctx: &mut Context, a: super::args::ProvisionArgs) -> Result<(), Error> {
    use crate::token::provision::{self, Manifest, PinOut};
    let m = Manifest::load(&a.manifest).map_err(provision_error)?;
    if a.dry_run {
        let plan = provision::plan(ctx.module()?, &m)?;
        return show_provisioned(ctx, &plan, false);
    }
    let plan = provision::plan(ctx.module()?, &m)?;
    let so_pin = match m.so_pin_path(&a.manifest) {
        Some(path) => {
            crate::secrets::SecretSource::new("SO PIN", "so_pin_file", Some(path), "").read()?
        }
        None => ctx.so_pin(!plan.initialised.is_empty())?,
    };
    let pin_dir = m.pin_dir(&a.manifest);
    let bar = progress_bar(ctx, m.tokens.len(), "provisioning tokens");
    let json = ctx.json();
    // With --json the PINs go into the one document, printed at the end.
    let mut pins: Vec<(String, secrecy::SecretString)> = Vec::new();
    let mut print = |label: &str, pin: &secrecy::SecretString| {
        use secrecy::ExposeSecret;
        if json {
            pins.push((label.to_string(), pin.clone()));
        } else {
            bar.suspend(|| outln!("{label} {}", pin.expose_secret()));
        }
    };
    let out = match &pin_dir {
        Some(dir) => PinOut::Dir(dir),
        None => PinOut::Print(&mut print),
    };
    let done = provision::provision(ctx.module()?, &m, &so_pin, out, &mut |n| {
        bar.set_position(n as u64)
    });
    bar.finish_and_clear();
    let done = done.map_err(provision_error)?;
    if json {
        use secrecy::ExposeSecret;
        #[derive(serde::Serialize)]
        struct Pin<'a> {
            label: &'a str,
            user_pin: &'a str,
        }
        let user_pins: Vec<Pin<'_>> = pins
            .iter()
            .map(|(label, pin)| Pin {
                label,
                user_pin: pin.expose_secret(),
            })
            .collect();
        print_json(&serde_json::json!({
            "initialised": done.initialised,
            "skipped": done.skipped,
            "dry_run": false,
            "pin_dir": pin_dir.as_ref().map(|d| d.display().to_string()),
            "user_pins": user_pins,
        }));
        return Ok(());
    }
    if pin_dir.is_none() {
        note!("(each user PIN above is shown once; give it to the token's holder)");
    }
    if let Some(dir) = &pin_dir {
        if !done.initialised.is_empty() {
            note!(
                "user PINs written to {}/LABEL.pin (mode 0600)",
                dir.display()
            );
        }
    }
    show_provisioned(ctx, &done, pin_dir.is_none())
}

/// The summary: a result line on standard output, or a note on standard error when the PINs
/// (the data) are on standard output.
fn show_provisioned(
    ctx: &Context,
    p: &crate::token::provision::Provisioned,
    pins_on_stdout: bool,
) -> Result<(), Error> {
    if ctx.json() {
        print_json(&serde_json::json!({
            "initialised": p.initialised,
            "skipped": p.skipped,
            "dry_run": p.dry_run,
            "pin_dir": null,
            "user_pins": [],
        }));
        return Ok(());
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(", ")
        }
    };
    let verb = if p.dry_run {
        "would initialise"
    } else {
        "initialised"
    };
    let line = format!(
        "{verb} {} tokens ({}); {} skipped, their labels exist already ({}){}",
        p.initialised.len(),
        list(&p.initialised),
        p.skipped.len(),
        list(&p.skipped),
        if p.dry_run {
            "; nothing was changed (--dry-run)"
        } else {
            ""
        }
    );
    if pins_on_stdout && !p.dry_run {
        note!("{line}");
    } else {
        say!("{line}");
    }
    Ok(())
}

fn provision_error(e: crate::token::provision::ProvisionError) -> Error {
    use crate::token::provision::ProvisionError as P;
    match e {
        P::Manifest { path, why } => Error::Io {
            action: "use the manifest",
            path,
            reason: format!("{why}; nothing was changed"),
        },
        P::Token(t) => Error::Token(t),
        P::Io { path, source } => Error::File(crate::error::IoError::new("write", &path, source)),
        P::Unsafe(u) => Error::Io {
            action: "use",
            path: u.path,
            reason: u.reason,
        },
    }
}

/// Runs `authority rollover --archive`.
pub fn rollover(ctx: &mut Context, a: super::args::RolloverArgs) -> Result<(), Error> {
    if a.ca {
        return rollover_ca(ctx, &a);
    }
    let bar = progress_bar(ctx, 0, "re-wrapping archived keys");
    let done = with_change(ctx, &a.dir, |ch| {
        crate::authority::rollover::archive(ch, &a.dir, &mut |n, total| {
            bar.set_length(total as u64);
            bar.set_position(n as u64);
        })
    });
    bar.finish_and_clear();
    let done = done?;
    if ctx.json() {
        print_json(&done);
        return Ok(());
    }
    say!(
        "{} the archive key rollover: {} archived keys re-wrapped under the new archive key {}",
        if done.resumed { "finished" } else { "did" },
        done.rewrapped,
        done.new_key_id
    );
    if let Some(why) = &done.old_key_left {
        note!("warning: the old archive key is still on the token ({why}); it wraps nothing now — remove it with pkcs11-tool");
    }
    Ok(())
}

/// Runs `authority rollover --ca [--dry-run]`: a dry run at once; the rollover itself like
/// every gated action (at once with no operators, else a request their approvals run).
fn rollover_ca(ctx: &mut Context, a: &super::args::RolloverArgs) -> Result<(), Error> {
    if a.dry_run {
        let done = with_change(ctx, &a.dir, |ch| {
            crate::authority::rollover_ca::ca(ch, &a.dir, true)
        })?;
        print_ca_rollover(ctx, &a.dir, &done);
        return Ok(());
    }
    // The request names the CA key it replaces, so an approved one runs once.
    let current = crate::authority::AuthorityDir::open_read(&a.dir)?
        .config
        .ca_key_id
        .clone();
    let mut args = std::collections::BTreeMap::new();
    args.insert("ca-key-id".to_string(), current);
    let outcome = super::operator_cmd::gated(
        ctx,
        &a.dir,
        crate::authority::policy::Action::RolloverCa,
        args,
        &a.acting,
    )?;
    super::operator_cmd::report(ctx, &a.dir, outcome)
}

/// Prints what a CA rollover did (or would do), and, when it was done, refreshes the
/// directory's `ca.pem` copy.
pub(super) fn print_ca_rollover(
    ctx: &Context,
    dir: &std::path::Path,
    done: &crate::authority::rollover_ca::CaRolledOver,
) {
    if !done.dry_run {
        crate::authority::rollover_ca::write_copy(dir, done);
    }
    if ctx.json() {
        print_json(done);
        return;
    }
    if done.leftover_removed > 0 {
        note!(
            "{} {} objects of an interrupted CA rollover from the authority's token",
            if done.dry_run {
                "would remove"
            } else {
                "removed"
            },
            done.leftover_removed
        );
    }
    if done.dry_run {
        say!(
            "would roll the CA key over: CA generation {} with a new RSA 3072 key (id {}) on the authority's token, certified by the current CA key {} and certifying it; nothing was changed",
            done.generation,
            done.new_key_id,
            done.old_key_id
        );
        return;
    }
    say!(
        "rolled the CA key over: CA generation {} (key id {}, sha256:{}, valid until {}); the old CA key {} stays on the token for CRLs of what it issued",
        done.generation,
        done.new_key_id,
        done.new_key_sha256.as_deref().unwrap_or(""),
        done.not_after.as_deref().unwrap_or(""),
        done.old_key_id
    );
    if let Some(url) = &done.crl_url {
        note!("certificates issued from now on name the CRL at {url}");
    }
    note!(
        "give relying parties the new CA and its link certificates: keyward authority cert --all --dir {}; keysets enrolled before trust it with `keyward keyset trust NAME --chain FILE`",
        dir.display()
    );
}
