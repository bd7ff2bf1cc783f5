//! Bulk commands: `authority add-users` (and `token provision`), with a progress bar on a
//! terminal.

use std::io::IsTerminal;

use super::args::AddUsersArgs;
use super::authority_cmd::{lifetime, with_change};
use super::output::{outln, print_json};
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
    outln!(
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
        outln!(
            "dropped {} rows of an interrupted earlier run (those users were never recorded and got new keys now)",
            r.stale_rows_dropped
        );
    }
    Ok(())
}
