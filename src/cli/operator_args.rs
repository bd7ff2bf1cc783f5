//! The command line of operators, the approval policy and approval requests (parsed by clap;
//! no I/O here).

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Who acts, when the authority has operators: flattened into every gated command.
#[derive(Debug, Args, Clone, Default)]
pub struct ActingArgs {
    /// Act as this operator: sign with your key on your own token (its PIN from --operator-pin-file, KEYWARD_OPERATOR_PIN or a prompt); needed once the authority has operators
    #[arg(long = "as", value_name = "OPERATOR")]
    pub as_operator: Option<String>,
    /// The operator's token (a PKCS#11 URI or label), when not the one their record names
    #[arg(long, value_name = "URI", requires = "as_operator")]
    pub operator_token: Option<String>,
    /// How long a request this command makes waits for the other approvals (e.g. 24h, 3d)
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub request_expires: String,
}

/// `authority operator …`
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Add an operator: a signing key made on their own token (its PIN from --pin-file / KEYWARD_PIN), certified by the authority
    Add(OperatorAddArgs),
    /// List operators with their tokens and certificates
    List(OperatorListArgs),
    /// Remove an operator (needs the policy's approvals)
    Remove(OperatorRemoveArgs),
}

/// `authority operator add`
#[derive(Debug, Args)]
pub struct OperatorAddArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The new operator's name
    pub name: String,
    /// The new operator's own token: a PKCS#11 URI or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// Who approves the addition
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `authority operator list`
#[derive(Debug, Args)]
pub struct OperatorListArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// Also list removed operators
    #[arg(long)]
    pub all: bool,
}

/// `authority operator remove`
#[derive(Debug, Args)]
pub struct OperatorRemoveArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The operator to remove
    pub name: String,
    /// Who approves the removal
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `authority policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Set how many operators must approve ACTION (recover, revoke, add-operator, remove-operator, change-policy)
    Set(PolicySetArgs),
    /// Show how many approvals each action needs
    Show(PolicyShowArgs),
}

/// `authority policy set`
#[derive(Debug, Args)]
pub struct PolicySetArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The action
    pub action: String,
    /// The number of distinct operators whose approval it needs
    pub required: u32,
    /// Who approves the change
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `authority policy show`
#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
}

/// `authority request …`
#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// List approval requests with their state and approvals
    List(RequestListArgs),
}

/// `authority request list`
#[derive(Debug, Args)]
pub struct RequestListArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
}

/// `authority approve` / `authority reject`
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The request's id (from `authority request list`)
    pub id: String,
    /// The deciding operator (signs on their own token; its PIN from --operator-pin-file, KEYWARD_OPERATOR_PIN or a prompt)
    #[arg(long = "as", value_name = "OPERATOR")]
    pub as_operator: String,
    /// The operator's token (a PKCS#11 URI or label), when not the one their record names
    #[arg(long, value_name = "URI")]
    pub operator_token: Option<String>,
}
