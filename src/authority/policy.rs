//! The approval policy: how many distinct operators must approve each gated action.
//!
//! Defaults: every action needs 1 approval, except `change-policy`, which needs one more than
//! the highest of the others and at least 2 — but never more than there are operators (a lone
//! operator can still change it; nobody else exists to ask). So changing the rules always needs
//! more people than any action under them, as in the seed's Key Management Server, and
//! raising `recover` to 3 raises `change-policy` to 4 unless it was set explicitly.
//! With no operators at all, the holder of the authority token's PIN acts alone (bootstrap).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::state::{kind, tampered, AuthorityDir};
use super::AuthorityError;

/// An action that needs operators' approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// `authority recover`: revoke and issue a new temporary key (releases the archive).
    Recover,
    /// `authority revoke`.
    Revoke,
    /// `authority operator add`.
    AddOperator,
    /// `authority operator remove`.
    RemoveOperator,
    /// `authority policy set`.
    ChangePolicy,
    /// `authority rollover --ca`: a new CA key (what it signs from then on is trusted by
    /// every relying party of the authority).
    RolloverCa,
}

impl Action {
    /// Every gated action.
    pub const ALL: [Action; 6] = [
        Action::Recover,
        Action::Revoke,
        Action::AddOperator,
        Action::RemoveOperator,
        Action::ChangePolicy,
        Action::RolloverCa,
    ];

    /// Its name on the command line and in the log.
    pub fn name(self) -> &'static str {
        match self {
            Action::Recover => "recover",
            Action::Revoke => "revoke",
            Action::AddOperator => "add-operator",
            Action::RemoveOperator => "remove-operator",
            Action::ChangePolicy => "change-policy",
            Action::RolloverCa => "rollover-ca",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Action {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Action::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a policy action; one of: {}",
                    Action::ALL.map(Action::name).join(", ")
                )
            })
    }
}

/// The explicit settings (actions not set use the defaults).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Policy {
    /// Approvals needed, by action.
    #[serde(default)]
    pub required: BTreeMap<Action, u32>,
}

impl Policy {
    /// Approvals `action` needs with `operators` active operators (0: the authority alone).
    pub fn required(&self, action: Action, operators: usize) -> u32 {
        if operators == 0 {
            return 0;
        }
        if let Some(n) = self.required.get(&action) {
            return *n;
        }
        if action != Action::ChangePolicy {
            return 1;
        }
        let highest = Action::ALL
            .into_iter()
            .filter(|a| *a != Action::ChangePolicy)
            .map(|a| self.required(a, operators))
            .max()
            .unwrap_or(1);
        let cap = u32::try_from(operators).unwrap_or(u32::MAX);
        (highest + 1).max(2).min(cap)
    }

    /// Whether `action`'s requirement was set explicitly.
    pub fn is_explicit(&self, action: Action) -> bool {
        self.required.contains_key(&action)
    }
}

/// The policy, checked (the defaults when never set).
pub fn load(a: &mut AuthorityDir) -> Result<Policy, AuthorityError> {
    match a
        .authority_records(kind::POLICY)?
        .into_iter()
        .find(|r| r.key == "policy")
    {
        Some(r) => serde_json::from_slice(&r.body)
            .map_err(|e| tampered(&format!("the policy record does not parse: {e}"))),
        None => Ok(Policy::default()),
    }
}

/// Writes the policy.
pub fn store(a: &mut AuthorityDir, p: &Policy) -> Result<(), AuthorityError> {
    let body = serde_json::to_vec(p).map_err(|e| AuthorityError::serialize("policy", e))?;
    a.put(kind::POLICY, "policy", "", body)
}

/// Refuses a policy under which some action needs more approvals than `operators` can give.
pub fn check_reachable(p: &Policy, operators: usize, what: &str) -> Result<(), AuthorityError> {
    if operators == 0 {
        return Ok(());
    }
    for action in Action::ALL {
        let n = p.required(action, operators);
        if n as usize > operators {
            return Err(AuthorityError::BadRequest(format!(
                "{what} would leave {action} needing {n} approvals from {operators} operators, so it could never run; lower it first with `keyward authority policy set {action} N`"
            )));
        }
    }
    Ok(())
}
