//! Approval requests: an action gated by the policy becomes a request that operators approve
//! or reject, each with a signature made on their own token over the request's canonical
//! bytes ([`signed_bytes`]). States: pending → executed (the last approval runs it) or
//! rejected (one rejection); a pending request past its expiry is expired and takes no more
//! decisions. No operator decides twice; approvals of an operator removed since no longer
//! count. Every step, and every refusal, is an entry in the signed audit log naming the
//! operator.
//!
//! Recording an approval changes the authority's state, so it needs the authority's token and
//! PIN like every change: `authority approve` runs on the authority host, with the operator's
//! token (and PIN) present there too.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use super::init::{open_vouched, Change};
use super::operators::{self, OperatorRecord};
use super::policy::{self, Action, Policy};
use super::state::{kind, now_rfc3339, tampered, AuthorityDir};
use super::users::Recovered;
use super::AuthorityError;
use crate::pki::x509::CrlReason;
use crate::token::keys::hex;
use crate::token::{Token, TokenSession};

/// Where a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Approved by enough operators and run.
    Executed,
    /// Rejected by an operator.
    Rejected,
    /// Past its expiry while pending (shown; the record keeps `pending`).
    Expired,
}

/// An operator's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// Approve.
    Approve,
    /// Reject.
    Reject,
}

impl Decision {
    fn name(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

/// One operator's signed decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Approval {
    /// The operator.
    pub operator: String,
    /// Approve or reject.
    pub decision: Decision,
    /// When, RFC 3339.
    pub at: String,
    /// The signature over [`signed_bytes`], hex.
    pub signature: String,
}

/// An approval request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// Its id.
    pub id: String,
    /// What it asks for.
    pub action: Action,
    /// The action's arguments.
    pub args: BTreeMap<String, String>,
    /// The operator who asked (their approval is the first).
    pub requested_by: String,
    /// Created at, RFC 3339.
    pub created: String,
    /// Expires at, RFC 3339.
    pub expires: String,
    /// The state.
    pub state: RequestState,
    /// Decisions, in order.
    pub approvals: Vec<Approval>,
    /// What running it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub result: String,
    /// Approvals it needed when last decided on (the policy may change later).
    #[serde(default)]
    pub required: u32,
}

impl Request {
    /// The state as of now (a pending request past its expiry is expired).
    pub fn state_now(&self) -> RequestState {
        if self.state == RequestState::Pending && self.expired() {
            RequestState::Expired
        } else {
            self.state
        }
    }

    fn expired(&self) -> bool {
        humantime::parse_rfc3339(&self.expires).map_or(true, |t| SystemTime::now() > t)
    }

    /// Approvals that count: by operators still active, each once.
    pub fn approvals_counted(&self, active: &[OperatorRecord]) -> usize {
        self.approvals
            .iter()
            .filter(|a| a.decision == Decision::Approve)
            .filter(|a| active.iter().any(|o| o.name == a.operator))
            .count()
    }

    fn summary(&self) -> String {
        let args: Vec<String> = self.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{} {}", self.action, args.join(" "))
    }
}

/// The bytes an operator signs: the decision, the authority (its CA key id), and the
/// request's id, action, arguments and expiry, one per line (arguments as canonical JSON,
/// keys sorted).
pub fn signed_bytes(authority: &str, req: &Request, decision: Decision) -> Vec<u8> {
    let args = serde_json::to_string(&req.args).unwrap_or_default();
    format!(
        "keyward-approval-v1\ndecision: {}\nauthority: {authority}\nid: {}\naction: {}\nargs: {args}\nexpires: {}\n",
        decision.name(),
        req.id,
        req.action,
        req.expires
    )
    .into_bytes()
}

/// The operator acting in this command: their name, their token (`--operator-token`, else
/// the one their record names) and their token's PIN.
pub struct Acting<'a> {
    /// The operator's name (`--as`).
    pub name: &'a str,
    /// A token given on the command line.
    pub token: Option<Token>,
    /// The operator token's PIN.
    pub pin: &'a SecretString,
}

/// What a gated command did.
pub enum Outcome {
    /// The action ran.
    Executed(Executed),
    /// A request waits for more approvals.
    Pending {
        /// The request.
        id: String,
        /// Approvals it has.
        have: usize,
        /// Approvals it needs.
        need: u32,
    },
    /// An operator rejected the request.
    Rejected {
        /// The request.
        id: String,
    },
}

/// What an action did when it ran.
pub enum Executed {
    /// A recovery: the new temporary key.
    Recovered {
        /// The user.
        user: String,
        /// What recover did.
        done: Recovered,
    },
    /// A revocation: certificates revoked.
    Revoked {
        /// The user.
        user: String,
        /// How many certificates.
        count: usize,
    },
    /// An operator was added.
    OperatorAdded {
        /// The name.
        name: String,
    },
    /// An operator was removed.
    OperatorRemoved {
        /// The name.
        name: String,
    },
    /// The policy was changed.
    PolicySet {
        /// The action.
        action: Action,
        /// Approvals it now needs.
        required: u32,
    },
    /// The CA key was rolled over.
    CaRolledOver(super::rollover_ca::CaRolledOver),
}

/// Refuses a direct change when the authority has operators (the library's own guard: the
/// command line goes through [`submit`]).
pub fn require_no_operators(a: &mut AuthorityDir, what: &str) -> Result<(), AuthorityError> {
    if operators::active(a)?.is_empty() {
        return Ok(());
    }
    Err(AuthorityError::BadRequest(format!(
        "this authority has operators: {what} needs their approval; run it with --as NAME (your operator token and its PIN)"
    )))
}

/// Asks for `action`: with no operators the holder of the authority's PIN runs it at once
/// (`operator:authority` in the log); otherwise it becomes a request carrying the acting
/// operator's approval, and runs when the policy's count of approvals is reached.
pub fn submit(
    ch: &Change<'_>,
    dir: &Path,
    action: Action,
    args: BTreeMap<String, String>,
    acting: Option<&Acting<'_>>,
    expires: Duration,
) -> Result<Outcome, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    submit_in(ch, &mut a, &mut session, action, args, acting, expires)
}

/// [`submit`] on an open, vouched state (it commits).
pub fn submit_in(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    action: Action,
    args: BTreeMap<String, String>,
    acting: Option<&Acting<'_>>,
    expires: Duration,
) -> Result<Outcome, AuthorityError> {
    let active = operators::active(a)?;
    if active.is_empty() {
        if acting.is_some() {
            return Err(AuthorityError::BadRequest(
                "this authority has no operators yet, so there is nobody to act --as: the authority token's PIN holder acts alone until the first `keyward authority operator add`; run it without --as".into(),
            ));
        }
        check(a, action, &args)?;
        let undo = super::rollover_ca::Uncommitted::before(a);
        let done = execute(ch, a, session, action, &args).and_then(|d| {
            a.commit(ch.module, session, ch.pin)?;
            Ok(d)
        });
        if done.is_err() && action == Action::RolloverCa {
            undo.discard(ch, a, session);
        }
        return Ok(Outcome::Executed(done?));
    }
    let Some(acting) = acting else {
        // The authority's PIN holder alone: refused, and recorded as theirs.
        let need = policy::load(a)?.required(action, active.len());
        let e = AuthorityError::BadRequest(format!(
            "this authority has operators: {action} needs the approval of {need} of them ({}); name yourself with --as NAME (your operator token and its PIN)",
            active.iter().map(|o| o.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        return finish(ch, a, session, action.name(), "-", Err(e));
    };
    a.set_actor(Some(format!("operator:{}", acting.name)));
    let result = (|| {
        let op = operators::find_active(a, acting.name)?;
        check(a, action, &args)?;
        let id = hex(&session.random(4)?);
        let now = SystemTime::now();
        let mut req = Request {
            id: id.clone(),
            action,
            args,
            requested_by: op.name.clone(),
            created: now_rfc3339(),
            expires: humantime::format_rfc3339_seconds(now + expires).to_string(),
            state: RequestState::Pending,
            approvals: Vec::new(),
            result: String::new(),
            required: 0,
        };
        let approval = sign(ch, a, &op, acting, &req, Decision::Approve)?;
        req.approvals.push(approval);
        a.audit(
            "operator",
            "request",
            &id,
            "ok",
            &format!(
                "{}; expires {}; approved by {}",
                req.summary(),
                req.expires,
                op.name
            ),
        );
        advance(ch, a, session, req, &active)
    })();
    finish(ch, a, session, "request", "-", result)
}

/// Approves or rejects request `id` as `acting`.
pub fn decide(
    ch: &Change<'_>,
    dir: &Path,
    id: &str,
    acting: &Acting<'_>,
    decision: Decision,
) -> Result<Outcome, AuthorityError> {
    let (mut a, mut session) = open_vouched(ch, dir)?;
    a.set_actor(Some(format!("operator:{}", acting.name)));
    let a = &mut a;
    let session = &mut session;
    let result = (|| {
        let active = operators::active(a)?;
        let op = operators::find_active(a, acting.name)?;
        let mut req = load(a, id)?;
        match req.state_now() {
            RequestState::Pending => {}
            RequestState::Expired => {
                return Err(AuthorityError::BadRequest(format!(
                    "request {id} expired at {}; nothing was done — ask again with a new request",
                    req.expires
                )))
            }
            other => {
                return Err(AuthorityError::BadRequest(format!(
                    "request {id} is {} already; nothing was done",
                    format!("{other:?}").to_lowercase()
                )))
            }
        }
        if let Some(prev) = req.approvals.iter().find(|p| p.operator == op.name) {
            return Err(AuthorityError::BadRequest(format!(
                "operator {:?} decided on request {id} already ({} at {}); each operator decides once — another operator must approve",
                op.name,
                prev.decision.name(),
                prev.at
            )));
        }
        let approval = sign(ch, a, &op, acting, &req, decision)?;
        req.approvals.push(approval);
        if decision == Decision::Reject {
            req.state = RequestState::Rejected;
            a.audit("operator", "reject", id, "ok", &req.summary());
            put(a, &req)?;
            a.commit(ch.module, session, ch.pin)?;
            return Ok(Outcome::Rejected { id: id.to_string() });
        }
        a.audit("operator", "approve", id, "ok", &req.summary());
        advance(ch, a, session, req, &active)
    })();
    finish(ch, a, session, decision.name(), id, result)
}

/// Stores the request, running it first when it has enough approvals; commits.
fn advance(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    mut req: Request,
    active: &[OperatorRecord],
) -> Result<Outcome, AuthorityError> {
    let need = policy::load(a)?.required(req.action, active.len());
    let have = req.approvals_counted(active);
    req.required = need;
    if have < need as usize {
        put(a, &req)?;
        a.commit(ch.module, session, ch.pin)?;
        return Ok(Outcome::Pending {
            id: req.id,
            have,
            need,
        });
    }
    let approvers: Vec<&str> = req
        .approvals
        .iter()
        .filter(|p| p.decision == Decision::Approve)
        .map(|p| p.operator.as_str())
        .collect();
    let detail = format!(
        "{}; approved by {} ({have} of {need})",
        req.summary(),
        approvers.join(", ")
    );
    a.audit("operator", "execute", &req.id, "ok", &detail);
    let undo = super::rollover_ca::Uncommitted::before(a);
    let done = execute(ch, a, session, req.action, &req.args).and_then(|done| {
        req.state = RequestState::Executed;
        req.result = detail;
        put(a, &req)?;
        a.commit(ch.module, session, ch.pin)?;
        Ok(done)
    });
    if done.is_err() && req.action == Action::RolloverCa {
        undo.discard(ch, a, session);
    }
    Ok(Outcome::Executed(done?))
}

/// A refusal changes nothing but is recorded (except a state that fails its checks, which
/// cannot be written to).
fn finish<T>(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    what: &str,
    subject: &str,
    result: Result<T, AuthorityError>,
) -> Result<T, AuthorityError> {
    result.map_err(|e| record_refusal(ch, a, session, what, subject, e))
}

/// Drops the command's changes and records refusal `e` in the audit log; returns `e`.
fn record_refusal(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    what: &str,
    subject: &str,
    e: AuthorityError,
) -> AuthorityError {
    if matches!(e, AuthorityError::Tampered { .. }) || a.discard_changes().is_err() {
        return e;
    }
    a.audit("operator", what, subject, "refused", &e.to_string());
    if let Err(log_err) = a.commit(ch.module, session, ch.pin) {
        log::error!("could not record the refused {what} in the audit log: {log_err}");
    }
    e
}

fn sign(
    ch: &Change<'_>,
    a: &AuthorityDir,
    op: &OperatorRecord,
    acting: &Acting<'_>,
    req: &Request,
    decision: Decision,
) -> Result<Approval, AuthorityError> {
    let token = operators::token_of(ch.module, op, acting.token.as_ref())?;
    let bytes = signed_bytes(a.config.authority_id(), req, decision);
    let sig = operators::sign_as(ch.module, op, &token, acting.pin, ch.policy, &bytes)?;
    Ok(Approval {
        operator: op.name.clone(),
        decision,
        at: now_rfc3339(),
        signature: hex(&sig),
    })
}

/// Every request, checked.
pub fn all(a: &mut AuthorityDir) -> Result<Vec<Request>, AuthorityError> {
    a.authority_records(kind::REQUEST)?
        .iter()
        .map(|r| {
            serde_json::from_slice(&r.body).map_err(|e| {
                tampered(&format!(
                    "the record of request {:?} does not parse: {e}",
                    r.key
                ))
            })
        })
        .collect()
}

fn load(a: &mut AuthorityDir, id: &str) -> Result<Request, AuthorityError> {
    all(a)?.into_iter().find(|r| r.id == id).ok_or_else(|| {
        AuthorityError::BadRequest(format!(
            "no request {id:?} at this authority; list them with `keyward authority request list --dir DIR`"
        ))
    })
}

fn put(a: &mut AuthorityDir, req: &Request) -> Result<(), AuthorityError> {
    let body =
        serde_json::to_vec(req).map_err(|e| AuthorityError::serialize("approval request", e))?;
    a.put(kind::REQUEST, &req.id, "", body)
}

/// Every approval signature of `req` verifies with the certificate of the operator who made
/// it (for audits: `request list` and `log --verify` check them all).
pub fn verify_request(
    authority: &str,
    req: &Request,
    ops: &[OperatorRecord],
) -> Result<(), AuthorityError> {
    for p in &req.approvals {
        let op = ops.iter().find(|o| o.name == p.operator).ok_or_else(|| {
            tampered(&format!(
                "request {} carries a decision of {:?}, who was never an operator",
                req.id, p.operator
            ))
        })?;
        let sig = crate::keyset::ops::unhex_id(&p.signature)
            .map_err(|_| tampered(&format!("request {}: a signature is not hex", req.id)))?;
        op.public_key()?
            .verify(&signed_bytes(authority, req, p.decision), &sig)
            .map_err(|_| {
                tampered(&format!(
                    "request {}: the {} of {:?} does not verify with their certificate",
                    req.id,
                    p.decision.name(),
                    p.operator
                ))
            })?;
    }
    Ok(())
}

fn arg<'a>(args: &'a BTreeMap<String, String>, key: &str) -> Result<&'a str, AuthorityError> {
    args.get(key)
        .map(String::as_str)
        .ok_or_else(|| tampered(&format!("a request lacks its {key:?} argument")))
}

/// Checks an action can run now (before a request is made, so a request that could never run
/// is refused at once).
fn check(
    a: &mut AuthorityDir,
    action: Action,
    args: &BTreeMap<String, String>,
) -> Result<(), AuthorityError> {
    match action {
        Action::Recover | Action::Revoke => {
            let user = a.user(arg(args, "user")?)?;
            if user.state == super::UserState::Revoked {
                // The same words as the action's own refusal.
                let hint = if action == Action::Recover {
                    "a revoked user cannot be recovered; add a new user instead"
                } else {
                    "already revoked"
                };
                return Err(super::users::state_error(user, hint));
            }
        }
        Action::AddOperator => {
            let name = arg(args, "name")?;
            if operators::all(a)?
                .iter()
                .any(|o| o.name.eq_ignore_ascii_case(name))
            {
                return Err(AuthorityError::BadRequest(format!(
                    "there is an operator {name:?} already (names are never reused, also after removal); choose another name"
                )));
            }
        }
        Action::RemoveOperator => {
            let name = arg(args, "name")?;
            operators::find_active(a, name)?;
            let left = operators::active(a)?.len() - 1;
            policy::check_reachable(
                &policy::load(a)?,
                left,
                &format!("removing operator {name:?}"),
            )?;
        }
        Action::ChangePolicy => {
            let target: Action = arg(args, "action")?
                .parse()
                .map_err(AuthorityError::BadRequest)?;
            let n: u32 = arg(args, "required")?.parse().map_err(|_| {
                AuthorityError::BadRequest("the number of approvals must be a whole number".into())
            })?;
            if n == 0 {
                return Err(AuthorityError::BadRequest(
                    "an action needs at least 1 approval".into(),
                ));
            }
            let mut p = policy::load(a)?;
            p.required.insert(target, n);
            let ops = operators::active(a)?.len();
            policy::check_reachable(&p, ops, &format!("setting {target} to {n}"))?;
        }
        Action::RolloverCa => {
            // Bound to the CA key it replaces: an approved request runs once.
            let key = arg(args, "ca-key-id")?;
            if key != a.config.ca_key_id {
                return Err(AuthorityError::BadRequest(format!(
                    "this CA rollover was asked for CA key {key}, but the CA key is {} now (rolled over since); nothing was done — ask again for a new rollover",
                    a.config.ca_key_id
                )));
            }
            super::rollover::check_no_archive_rollover(a)?;
        }
    }
    Ok(())
}

/// Runs an approved action on the open state (no commit).
fn execute(
    ch: &Change<'_>,
    a: &mut AuthorityDir,
    session: &mut TokenSession,
    action: Action,
    args: &BTreeMap<String, String>,
) -> Result<Executed, AuthorityError> {
    check(a, action, args)?;
    Ok(match action {
        Action::Recover => {
            let user = arg(args, "user")?.to_string();
            let reason: CrlReason = arg(args, "reason")?.parse().map_err(AuthorityError::X509)?;
            let secs: u64 = arg(args, "expires-seconds")?
                .parse()
                .map_err(|_| tampered("a request's temporary-key lifetime is not a number"))?;
            let done = super::users::recover_in(a, &user, reason, Duration::from_secs(secs))?;
            Executed::Recovered { user, done }
        }
        Action::Revoke => {
            let user = arg(args, "user")?.to_string();
            let reason: CrlReason = arg(args, "reason")?.parse().map_err(AuthorityError::X509)?;
            let count = super::users::revoke_in(a, &user, reason)?;
            Executed::Revoked { user, count }
        }
        Action::AddOperator => {
            let name = arg(args, "name")?.to_string();
            let cert_pem =
                operators::certify(ch.module, session, ch.pin, a, &name, arg(args, "spki")?)?;
            operators::put(
                a,
                &operators::OperatorRecord {
                    name: name.clone(),
                    token_label: arg(args, "token-label")?.to_string(),
                    token_serial: arg(args, "token-serial")?.to_string(),
                    key_id: arg(args, "key-id")?.to_string(),
                    cert_pem,
                    added: now_rfc3339(),
                    removed: None,
                },
            )?;
            a.audit(
                "operator",
                "operator-add",
                &name,
                "ok",
                &format!(
                    "key {} on token {:?} (serial {}) certified",
                    arg(args, "key-id")?,
                    arg(args, "token-label")?,
                    arg(args, "token-serial")?
                ),
            );
            Executed::OperatorAdded { name }
        }
        Action::RemoveOperator => {
            let name = arg(args, "name")?.to_string();
            let mut op = operators::find_active(a, &name)?;
            op.removed = Some(now_rfc3339());
            operators::put(a, &op)?;
            a.audit("operator", "operator-remove", &name, "ok", "removed");
            Executed::OperatorRemoved { name }
        }
        Action::ChangePolicy => {
            let target: Action = arg(args, "action")?
                .parse()
                .map_err(AuthorityError::BadRequest)?;
            let n: u32 = arg(args, "required")?
                .parse()
                .map_err(|_| tampered("a request's approval count is not a number"))?;
            let mut p: Policy = policy::load(a)?;
            p.required.insert(target, n);
            policy::store(a, &p)?;
            a.audit(
                "operator",
                "policy-set",
                target.name(),
                "ok",
                &format!("{target} now needs {n} approvals"),
            );
            Executed::PolicySet {
                action: target,
                required: n,
            }
        }
        Action::RolloverCa => Executed::CaRolledOver(super::rollover_ca::ca_in(ch, a, session)?),
    })
}

/// `operator add`: checks the name, makes the new operator's key on their token (logged in
/// with `new_pin`), then submits the addition (certified when it runs). A key made for an
/// addition that is refused is removed again.
#[allow(clippy::too_many_arguments)]
pub fn add_operator(
    ch: &Change<'_>,
    dir: &Path,
    name: &str,
    token: &Token,
    new_pin: &SecretString,
    acting: Option<&Acting<'_>>,
    expires: Duration,
) -> Result<Outcome, AuthorityError> {
    super::users::check_user_name(name)?;
    let (mut a, mut session) = open_vouched(ch, dir)?;
    let mut probe = BTreeMap::new();
    probe.insert("name".to_string(), name.to_string());
    let checked = (|| {
        check(&mut a, Action::AddOperator, &probe)?;
        if operators::all(&mut a)?.iter().any(|o| {
            o.token_serial == token.serial() && o.token_label == token.label() && o.active()
        }) {
            return Err(AuthorityError::BadRequest(format!(
                "token {:?} (serial {}) already holds another operator's key; each operator needs their own token",
                token.label(),
                token.serial()
            )));
        }
        Ok(())
    })();
    if let Err(e) = checked {
        if operators::active(&mut a)?.is_empty() {
            return Err(e);
        }
        // A refusal once operators exist is recorded, under the name given.
        a.set_actor(acting.map(|x| format!("operator:{}", x.name)));
        return Err(record_refusal(
            ch,
            &mut a,
            &mut session,
            Action::AddOperator.name(),
            name,
            e,
        ));
    }
    let key = operators::make_key(ch.module, token, new_pin, ch.policy, name)?;
    let mut args = probe;
    args.insert("token-label".into(), key.token_label.clone());
    args.insert("token-serial".into(), key.token_serial.clone());
    args.insert("key-id".into(), key.key_id.clone());
    args.insert("spki".into(), key.spki.clone());
    let result = submit_in(
        ch,
        &mut a,
        &mut session,
        Action::AddOperator,
        args,
        acting,
        expires,
    );
    if result.is_err() {
        operators::destroy_key(ch.module, token, new_pin, &key);
    }
    result
}
