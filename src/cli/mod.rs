//! The `keyward` command line: parse, build the real objects, run, print.

pub mod args;
mod authority_cmd;
mod bulk_cmd;
mod context;
mod enroll_cmd;
mod keyset_cmd;
mod message_cmd;
mod output;
mod renew_cmd;
mod token_cmd;

use std::process::ExitCode;

use clap::Parser;

use crate::error::Error;
use args::{Cli, Command};
pub use context::Context;

/// Runs keyward with the process's arguments and returns its exit status.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            let help = matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if help {
                let _ = e.print();
            } else {
                eprintln!(
                    "keyward: error: {}",
                    one_line_usage_error(&e.render().to_string())
                );
            }
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    init_logging(cli.global.verbose);
    let verbose = cli.global.verbose;
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
    }
}

fn report(err: &Error, verbose: u8) {
    eprintln!("keyward: error: {err}");
    if verbose > 0 {
        if let Some(call) = err.call() {
            eprintln!("keyward: detail: {call}");
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
