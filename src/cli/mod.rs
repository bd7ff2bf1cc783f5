//! The `keyward` command line: parse, build the real objects, run, print.

pub mod args;
mod authority_cmd;
mod bulk_cmd;
mod context;
mod crl_cmd;
mod enroll_cmd;
mod est_enroll_cmd;
mod keyset_cmd;
mod message_cmd;
pub mod operator_args;
mod operator_cmd;
mod output;
pub mod progress;
mod renew_cmd;
mod serve_cmd;
mod token_cmd;
mod trust_cmd;

use std::process::ExitCode;

use clap::FromArgMatches;

use crate::error::Error;
use args::{Cli, Command};
pub use context::Context;

/// Runs keyward with the process's arguments and returns its exit status.
pub fn main() -> ExitCode {
    let wants_json = std::env::args_os().any(|a| a == "--json");
    let mut command = args::command();
    if let Some(dir) = configured_authority_dir() {
        command = args::with_default_authority_dir(command, &dir);
    }
    let parsed = command.try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        args::take_secret_files(&m, &mut cli.global);
        Ok((command_path(&m), cli))
    });
    let (path, cli) = match parsed {
        Ok(p) => p,
        Err(e) => {
            use clap::error::ErrorKind;
            let help = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            let line = one_line_usage_error(&e.render().to_string());
            if help {
                let _ = e.print();
            } else if wants_json {
                output::print_usage_error_json(&line);
            } else {
                eprintln!("keyward: error: {line}");
            }
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.global.verbose);
    // Secrets (PINs, temporary keys, keys passing through) may be in memory from here on.
    crate::fsguard::harden_process();
    let verbose = cli.global.verbose;
    output::configure(cli.global.quiet, cli.global.json, path);
    let mut ctx = Context::new(cli.global);
    let result = run(&mut ctx, cli.command);
    ctx.finish();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e, verbose);
            ExitCode::from(e.exit_code())
        }
    }
}

/// `authority_dir` from config.toml, in the home `--home` (seen before parsing) or the
/// environment names. A config.toml that does not parse is reported by the command that needs
/// it, not here.
fn configured_authority_dir() -> Option<std::path::PathBuf> {
    let mut home = None;
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        let text = a.to_string_lossy();
        if text == "--home" {
            home = args.next().map(std::path::PathBuf::from);
        } else if let Some(h) = text.strip_prefix("--home=") {
            home = Some(std::path::PathBuf::from(h));
        }
    }
    let home = crate::home::resolve_home(home.as_deref()).ok()?;
    crate::home::Config::load(&home).ok()?.authority_dir
}

/// The subcommand's names, as JSON documents carry them: `keyset list`, `authority log`.
fn command_path(m: &clap::ArgMatches) -> String {
    let mut names = Vec::new();
    let mut cur = m;
    while let Some((name, sub)) = cur.subcommand() {
        names.push(name.to_string());
        cur = sub;
    }
    names.join(" ")
}

/// clap's usage error (`error: …`, indented details, `Usage: …`, a `--help` hint) as the one
/// line every keyward error is: the message and its details, then the usage.
fn one_line_usage_error(rendered: &str) -> String {
    let mut message = Vec::new();
    let mut usage = None;
    for line in rendered.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(u) = line.strip_prefix("Usage: ") {
            usage = Some(u.to_string());
        } else if !line.starts_with("For more information") {
            message.push(line.strip_prefix("error: ").unwrap_or(line));
        }
    }
    let mut out = message.join(" ");
    if let Some(u) = usage {
        out.push_str(&format!(" (usage: {u}; see --help)"));
    }
    out
}

fn run(ctx: &mut Context, command: Command) -> Result<(), Error> {
    match command {
        Command::Token(cmd) => token_cmd::run(ctx, cmd),
        Command::Keyset(cmd) => keyset_cmd::run(ctx, cmd),
        Command::Authority(cmd) => authority_cmd::run(ctx, cmd),
        Command::Enroll(args) => enroll_cmd::run(ctx, args),
        Command::Send(args) => message_cmd::send(ctx, args),
        Command::Read(args) => message_cmd::read(ctx, args),
        Command::Crl(cmd) => crl_cmd::run(ctx, cmd),
        Command::Completions(args) => {
            completions(args.shell);
            Ok(())
        }
        Command::Man => man(),
    }
}

/// `keyward completions SHELL`: the completion script on standard output.
fn completions(shell: clap_complete::Shell) {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut args::command(), "keyward", &mut buf);
    output::out!("{}", String::from_utf8_lossy(&buf));
}

/// `keyward man`: the manual page (roff) on standard output: the command, every subcommand's
/// options, and the exit statuses.
fn man() -> Result<(), Error> {
    let cmd = args::command();
    let mut buf = Vec::new();
    let page = clap_mangen::Man::new(cmd.clone());
    let write = |r: std::io::Result<()>| {
        r.map_err(|e| {
            Error::from(crate::error::IoError::new(
                "render",
                std::path::Path::new("the manual page"),
                e,
            ))
        })
    };
    write(page.render_title(&mut buf))?;
    write(page.render_name_section(&mut buf))?;
    write(page.render_synopsis_section(&mut buf))?;
    write(page.render_description_section(&mut buf))?;
    write(page.render_options_section(&mut buf))?;
    write(page.render_subcommands_section(&mut buf))?;
    buf.extend_from_slice(b".SH \"EXIT STATUS\"\n");
    for (code, what) in [
        ("0", "Success."),
        ("1", "An error: the message on standard error says what and what to do."),
        ("2", "A usage error: the command line asks for something impossible."),
        ("3", "Checked and found bad: a signature that does not verify (a message, an enrollment request or reply, a certificate or CRL altered after signing), a reply from another authority, a revoked or untrusted signer, a tampered authority state or audit log."),
    ] {
        buf.extend_from_slice(format!(".TP\n{code}\n{what}\n").as_bytes());
    }
    buf.extend_from_slice(
        b".SH OUTPUT\nData and result lines go to standard output; prompts, progress, notes and errors to standard error. With \\fB--json\\fR, standard output carries one JSON document (schema in docs/json.md) and errors are JSON on standard error. \\fB--quiet\\fR prints nothing but data and errors.\n",
    );
    write(page.render_version_section(&mut buf))?;
    output::out!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

fn report(err: &Error, verbose: u8) {
    if output::json() {
        output::print_error_json(err);
        return;
    }
    eprintln!("keyward: error: {err}");
    if verbose > 0 {
        if let Some(call) = err.call() {
            eprintln!("keyward: detail: {call}");
        }
        for cause in crate::error::chain(err).skip(1) {
            log::debug!("caused by: {cause}");
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp(None)
        .target(env_logger::Target::Stderr)
        .try_init();
}
