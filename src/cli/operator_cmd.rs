//! `keyward authority operator|policy|request|approve|reject`, and the approval path every
//! gated command (recover, revoke) takes once the authority has operators.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::operator_args::{
    ActingArgs, DecideArgs, OperatorCommand, PolicyCommand, RequestCommand,
};
use super::output::{outln, print_json, say};
use super::Context;
use crate::authority::approvals::{self, Acting, Decision, Executed, Outcome};
use crate::authority::init::Change;
use crate::authority::policy::{self, Action};
use crate::authority::{operators, AuthorityDir};
use crate::error::Error;

/// Runs `authority operator …`.
pub fn operator(ctx: &mut Context, cmd: OperatorCommand) -> Result<(), Error> {
    match cmd {
        OperatorCommand::Add(a) => {
            let expires = request_expires(&a.acting)?;
            crate::authority::state::check_is_authority(&a.dir)?;
            // Three secrets may be in play: the authority's PIN (strictly its own source, as
            // the new operator's PIN comes from --pin-file / KEYWARD_PIN), the new operator's,
            // and the approving operator's.
            let pin = ctx.authority_pin()?;
            let new_pin = ctx.pin()?;
            let op_pin = acting_pin(ctx, &a.acting)?;
            let op_token = acting_token(ctx, &a.acting)?;
            let token = ctx.token(&a.token)?;
            let policy = ctx.login_policy();
            let ch = Change {
                module: ctx.module()?,
                pin: &pin,
                policy,
            };
            let acting = acting_of(&a.acting, op_token, op_pin.as_ref());
            let outcome = approvals::add_operator(
                &ch,
                &a.dir,
                &a.name,
                &token,
                &new_pin,
                acting.as_ref(),
                expires,
            )?;
            report(ctx, &a.dir, outcome)
        }
        OperatorCommand::List(a) => list_operators(ctx, &a.dir, a.all),
        OperatorCommand::Remove(a) => {
            let mut args = BTreeMap::new();
            args.insert("name".to_string(), a.name.clone());
            let outcome = gated(ctx, &a.dir, Action::RemoveOperator, args, &a.acting)?;
            report(ctx, &a.dir, outcome)
        }
    }
}

/// Runs `authority policy …`.
pub fn policy(ctx: &mut Context, cmd: PolicyCommand) -> Result<(), Error> {
    match cmd {
        PolicyCommand::Set(a) => {
            let action: Action = a.action.parse().map_err(Error::Usage)?;
            let mut args = BTreeMap::new();
            args.insert("action".to_string(), action.name().to_string());
            args.insert("required".to_string(), a.required.to_string());
            let outcome = gated(ctx, &a.dir, Action::ChangePolicy, args, &a.acting)?;
            report(ctx, &a.dir, outcome)
        }
        PolicyCommand::Show(a) => {
            let mut dir = AuthorityDir::open_read(&a.dir)?;
            let p = policy::load(&mut dir)?;
            let n = operators::active(&mut dir)?.len();
            #[derive(Serialize)]
            struct Line {
                action: &'static str,
                required: u32,
                explicit: bool,
            }
            let lines: Vec<Line> = Action::ALL
                .into_iter()
                .map(|act| Line {
                    action: act.name(),
                    required: p.required(act, n),
                    explicit: p.is_explicit(act),
                })
                .collect();
            if ctx.json() {
                print_json(&serde_json::json!({ "operators": n, "actions": lines }));
                return Ok(());
            }
            if n == 0 {
                outln!("no operators yet: the authority token's PIN holder acts alone; once operators exist:");
            }
            for l in &lines {
                outln!(
                    "{:<16} {} approval{}{}",
                    l.action,
                    l.required.max(1),
                    if l.required.max(1) == 1 { "" } else { "s" },
                    if l.explicit { "" } else { " (default)" }
                );
            }
            Ok(())
        }
    }
}

/// Runs `authority request …`.
pub fn request(ctx: &mut Context, cmd: RequestCommand) -> Result<(), Error> {
    let RequestCommand::List(a) = cmd;
    let mut dir = AuthorityDir::open_read(&a.dir)?;
    let ops = operators::all(&mut dir)?;
    let active: Vec<_> = ops.iter().filter(|o| o.active()).cloned().collect();
    let p = policy::load(&mut dir)?;
    let mut reqs = approvals::all(&mut dir)?;
    reqs.sort_by(|x, y| x.created.cmp(&y.created).then(x.id.cmp(&y.id)));
    for r in &reqs {
        approvals::verify_request(dir.config.authority_id(), r, &ops)?;
    }
    #[derive(Serialize)]
    struct Out<'a> {
        id: &'a str,
        action: Action,
        args: &'a BTreeMap<String, String>,
        state: approvals::RequestState,
        requested_by: &'a str,
        created: &'a str,
        expires: &'a str,
        approvals: usize,
        required: u32,
        decisions: Vec<DecisionOut<'a>>,
    }
    #[derive(Serialize)]
    struct DecisionOut<'a> {
        operator: &'a str,
        decision: Decision,
    }
    let out: Vec<Out<'_>> = reqs
        .iter()
        .map(|r| Out {
            id: &r.id,
            action: r.action,
            args: &r.args,
            state: r.state_now(),
            requested_by: &r.requested_by,
            created: &r.created,
            expires: &r.expires,
            approvals: r.approvals_counted(&active),
            // A decided request: what it needed then; a pending one: what it needs now.
            required: if r.state == approvals::RequestState::Pending {
                p.required(r.action, active.len())
            } else {
                r.required
            },
            decisions: r
                .approvals
                .iter()
                .map(|x| DecisionOut {
                    operator: x.operator.as_str(),
                    decision: x.decision,
                })
                .collect(),
        })
        .collect();
    if ctx.json() {
        print_json(&serde_json::json!({ "requests": out }));
        return Ok(());
    }
    if out.is_empty() {
        outln!("No approval requests.");
    }
    for r in &out {
        let args: Vec<String> = r
            .args
            .iter()
            .filter(|(k, _)| k.as_str() != "spki")
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        outln!(
            "{}  {:<9} {:<15} {}  approvals {}/{}  by {}  expires {}",
            r.id,
            format!("{:?}", r.state).to_lowercase(),
            r.action.name(),
            args.join(" "),
            r.approvals,
            r.required,
            r.decisions
                .iter()
                .map(|d| format!(
                    "{}({})",
                    d.operator,
                    if d.decision == Decision::Approve {
                        "+"
                    } else {
                        "-"
                    }
                ))
                .collect::<Vec<_>>()
                .join(" "),
            r.expires
        );
    }
    Ok(())
}

/// Runs `authority approve` / `authority reject`.
pub fn decide(ctx: &mut Context, a: DecideArgs, decision: Decision) -> Result<(), Error> {
    crate::authority::state::check_is_authority(&a.dir)?;
    let pin = ctx.authority_command_pin()?;
    let op_pin = ctx.operator_pin(&a.as_operator)?;
    let token = match &a.operator_token {
        Some(t) => Some(ctx.token(t)?),
        None => None,
    };
    let policy = ctx.login_policy();
    let ch = Change {
        module: ctx.module()?,
        pin: &pin,
        policy,
    };
    let acting = Acting {
        name: &a.as_operator,
        token,
        pin: &op_pin,
    };
    let outcome = approvals::decide(&ch, &a.dir, &a.id, &acting, decision)?;
    report(ctx, &a.dir, outcome)
}

/// A gated action: at once with no operators, else a request with the acting operator's
/// approval.
pub fn gated(
    ctx: &mut Context,
    dir: &Path,
    action: Action,
    args: BTreeMap<String, String>,
    acting: &ActingArgs,
) -> Result<Outcome, Error> {
    let expires = request_expires(acting)?;
    crate::authority::state::check_is_authority(dir)?;
    let pin = ctx.authority_command_pin()?;
    let op_pin = acting_pin(ctx, acting)?;
    let op_token = acting_token(ctx, acting)?;
    let policy = ctx.login_policy();
    let ch = Change {
        module: ctx.module()?,
        pin: &pin,
        policy,
    };
    let acting = acting_of(acting, op_token, op_pin.as_ref());
    Ok(approvals::submit(
        &ch,
        dir,
        action,
        args,
        acting.as_ref(),
        expires,
    )?)
}

fn request_expires(acting: &ActingArgs) -> Result<Duration, Error> {
    humantime::parse_duration(&acting.request_expires).map_err(|_| {
        Error::Usage(format!(
            "--request-expires {:?} is not a duration; write e.g. 24h or 3d",
            acting.request_expires
        ))
    })
}

fn acting_pin(ctx: &Context, acting: &ActingArgs) -> Result<Option<secrecy::SecretString>, Error> {
    acting
        .as_operator
        .as_deref()
        .map(|n| ctx.operator_pin(n))
        .transpose()
}

fn acting_token(
    ctx: &mut Context,
    acting: &ActingArgs,
) -> Result<Option<crate::token::Token>, Error> {
    match &acting.operator_token {
        Some(t) => Ok(Some(ctx.token(t)?)),
        None => Ok(None),
    }
}

fn acting_of<'a>(
    acting: &'a ActingArgs,
    token: Option<crate::token::Token>,
    pin: Option<&'a secrecy::SecretString>,
) -> Option<Acting<'a>> {
    match (acting.as_operator.as_deref(), pin) {
        (Some(name), Some(pin)) => Some(Acting { name, token, pin }),
        _ => None,
    }
}

/// Prints what a gated command or a decision did.
pub fn report(ctx: &Context, dir: &Path, outcome: Outcome) -> Result<(), Error> {
    match outcome {
        Outcome::Pending { id, have, need } => {
            if ctx.json() {
                print_json(&serde_json::json!({
                    "request": id, "state": "pending", "approvals": have, "required": need
                }));
            } else {
                say!("request {id}: approved by {have} of the {need} operators it needs; the others approve it with `keyward authority approve --dir {} {id} --as NAME` (or reject it)", dir.display());
            }
        }
        Outcome::Rejected { id } => {
            if ctx.json() {
                print_json(&serde_json::json!({
                    "request": id, "state": "rejected", "approvals": null, "required": null
                }));
            } else {
                say!("rejected request {id}; nothing was done");
            }
        }
        Outcome::Executed(done) => executed(ctx, dir, done),
    }
    Ok(())
}

fn executed(ctx: &Context, dir: &Path, done: Executed) {
    match done {
        Executed::CaRolledOver(done) => super::bulk_cmd::print_ca_rollover(ctx, dir, &done),
        Executed::Recovered { user, done } => {
            super::authority_cmd::print_recovered(ctx, &user, &done)
        }
        Executed::Revoked { user, count } => {
            if ctx.json() {
                print_json(&serde_json::json!({"user": user, "revoked_certificates": count}));
            } else {
                say!("revoked user {user:?} and {count} certificates; publish a new CRL with `keyward authority crl`");
            }
        }
        Executed::OperatorAdded { name } => {
            if ctx.json() {
                print_json(&serde_json::json!({"operator": name, "change": "added"}));
            } else {
                say!("added operator {name:?}: their key on their token is certified by the authority; from now on recover, revoke, CA rollovers and operator changes need operators' approvals (see `keyward authority policy show`)");
            }
        }
        Executed::OperatorRemoved { name } => {
            if ctx.json() {
                print_json(&serde_json::json!({"operator": name, "change": "removed"}));
            } else {
                say!("removed operator {name:?}; their approvals of pending requests no longer count");
            }
        }
        Executed::PolicySet { action, required } => {
            if ctx.json() {
                print_json(&serde_json::json!({"action": action, "required": required}));
            } else {
                say!(
                    "{action} now needs {required} approval{}",
                    if required == 1 { "" } else { "s" }
                );
            }
        }
    }
}

fn list_operators(ctx: &Context, dir: &Path, all: bool) -> Result<(), Error> {
    let mut a = AuthorityDir::open_read(dir)?;
    let ops: Vec<_> = operators::all(&mut a)?
        .into_iter()
        .filter(|o| all || o.active())
        .collect();
    if ctx.json() {
        #[derive(Serialize)]
        struct Out<'a> {
            name: &'a str,
            token_label: &'a str,
            token_serial: &'a str,
            key_id: &'a str,
            added: &'a str,
            removed: Option<&'a str>,
            certificate: &'a str,
        }
        let out: Vec<Out<'_>> = ops
            .iter()
            .map(|o| Out {
                name: &o.name,
                token_label: &o.token_label,
                token_serial: &o.token_serial,
                key_id: &o.key_id,
                added: &o.added,
                removed: o.removed.as_deref(),
                certificate: &o.cert_pem,
            })
            .collect();
        print_json(&serde_json::json!({ "operators": out }));
        return Ok(());
    }
    if ops.is_empty() {
        outln!("No operators: the authority token's PIN holder acts alone. Add one with `keyward authority operator add --dir DIR NAME --token URI`.");
    }
    for o in &ops {
        outln!(
            "{:<16} token {:?} (serial {})  key {}  added {}{}",
            o.name,
            o.token_label,
            o.token_serial,
            o.key_id,
            o.added,
            o.removed
                .as_deref()
                .map(|r| format!("  removed {r}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}
