//! `keyward token …`: the admin's commands.

use super::args::{InitArgs, TokenCommand};
use super::output;
use super::Context;
use crate::error::Error;
use crate::token::{self, InitSecrets, Pkcs11Uri};

/// Runs one `token` subcommand.
pub fn run(ctx: &mut Context, cmd: TokenCommand) -> Result<(), Error> {
    match cmd {
        TokenCommand::List => list(ctx),
        TokenCommand::Info(a) => info(ctx, &a.token, a.login),
        TokenCommand::Init(a) => init(ctx, a),
        TokenCommand::ChangePin(a) => change_pin(ctx, &a.token),
        TokenCommand::Unblock(a) => unblock(ctx, &a.token),
        TokenCommand::Provision(a) => super::bulk_cmd::provision(ctx, a),
    }
}

fn list(ctx: &mut Context) -> Result<(), Error> {
    let json = ctx.json();
    let module = ctx.module()?;
    let slots = token::list_slots(module)?;
    output::slots(module.path(), module.library(), &slots, json);
    Ok(())
}

fn info(ctx: &mut Context, arg: &str, login: bool) -> Result<(), Error> {
    let token = ctx.token(arg)?;
    let pin = if login {
        token.check_pin_state(token::PinRole::User, ctx.login_policy())?;
        Some(ctx.pin()?)
    } else {
        None
    };
    let policy = ctx.login_policy();
    let module = ctx.module()?;
    // Probes make session objects only, which a read-only session may make too (for a
    // write-protected token).
    let mut session = match token.open_rw(module) {
        Ok(s) => s,
        Err(_) => token.open_ro(module)?,
    };
    if let Some(pin) = &pin {
        session.login(module, token::PinRole::User, pin, policy)?;
    }
    let caps = session.capabilities(module, pin.as_ref())?;
    drop(session);
    output::token_with_caps(token.summary(), &caps, ctx.json());
    Ok(())
}

fn init(ctx: &mut Context, args: InitArgs) -> Result<(), Error> {
    token::check_label(&args.label)?;
    let target = {
        let module = ctx.module()?;
        match (args.slot, args.free, &args.token) {
            (Some(slot), _, _) => token::token_in_slot(module, slot)?,
            (None, true, _) => token::free_token(module)?,
            (None, false, Some(uri)) => {
                token::find_token(module, &Pkcs11Uri::from_token_arg(uri)?)?
            }
            (None, false, None) => {
                return Err(Error::Usage("pass --slot ID, --free or --token URI".into()))
            }
        }
    };
    // Two tokens with one label make every `--token LABEL` ambiguous afterwards.
    if let Some(other) = token::list_tokens(ctx.module()?)?.into_iter().find(|t| {
        t.summary().initialized
            && t.label() == args.label
            && t.summary().slot_id != target.summary().slot_id
    }) {
        return Err(Error::Usage(format!(
            "token {:?} (serial {}) already has the label {:?}: choose another label, or every `--token {}` would be ambiguous; nothing was changed",
            other.label(),
            other.serial(),
            args.label,
            args.label
        )));
    }
    if target.summary().initialized && !args.force {
        return Err(token::TokenError::AlreadyInitialized {
            label: target.label().to_string(),
        }
        .into());
    }
    // Re-initialising checks the current SO PIN (C_InitToken keeps it);
    // only a fresh token takes a new one.
    let so_pin = ctx.so_pin(!target.summary().initialized)?;
    let user_pin = ctx.new_pin()?;
    let module = ctx.module()?;
    let fresh = token::init_token(
        module,
        &target,
        &args.label,
        InitSecrets {
            so_pin: &so_pin,
            user_pin: &user_pin,
        },
        args.force,
    )?;
    output::done(
        &format!(
            "initialised token {:?} (serial {}): {}",
            fresh.label(),
            fresh.serial(),
            fresh.summary().uri
        ),
        fresh.summary(),
        ctx.json(),
    );
    if target.summary().initialized {
        warn_about_wiped_keysets(ctx, &token::TokenIdentity::of(&target));
    }
    Ok(())
}

/// After a token was wiped: names the registered keysets whose keys were on it (their entries
/// stay, for the archive and to read old mail once re-enrolled; local ones are now useless).
fn warn_about_wiped_keysets(ctx: &Context, wiped_token: &token::TokenIdentity) {
    let Some(registry) = ctx
        .home()
        .ok()
        .and_then(|h| crate::keyset::Registry::load(&h).ok())
    else {
        return; // no readable registry here: nothing to say
    };
    let wiped: Vec<String> = registry
        .sharing_token(wiped_token, "")
        .iter()
        .map(|k| format!("{:?}", k.name))
        .collect();
    if !wiped.is_empty() {
        super::output::note!(
            "note: the keys of keyset(s) {} were on this token and are gone; re-enroll (after `keyward authority recover`), or `keyward keyset remove` the ones you no longer need",
            wiped.join(", ")
        );
    }
}

fn change_pin(ctx: &mut Context, arg: &str) -> Result<(), Error> {
    let token = ctx.token(arg)?;
    let policy = ctx.login_policy();
    token.check_pin_state(token::PinRole::User, policy)?;
    let old = ctx.pin()?;
    let new = ctx.new_pin()?;
    token::change_pin(ctx.module()?, &token, &old, &new, policy)?;
    output::done(
        &format!("changed the user PIN of token {:?}", token.label()),
        token.summary(),
        ctx.json(),
    );
    Ok(())
}

fn unblock(ctx: &mut Context, arg: &str) -> Result<(), Error> {
    let token = ctx.token(arg)?;
    let policy = ctx.login_policy();
    token.check_pin_state(token::PinRole::So, policy)?;
    let so_pin = ctx.so_pin(false)?;
    let new = ctx.new_pin()?;
    token::unblock(ctx.module()?, &token, &so_pin, &new, policy)?;
    output::done(
        &format!(
            "set a new user PIN on token {:?}; it is unlocked",
            token.label()
        ),
        token.summary(),
        ctx.json(),
    );
    Ok(())
}
