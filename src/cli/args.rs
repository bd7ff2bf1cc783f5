//! The command line, parsed by clap: no I/O here.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand};

/// keyward: keysets on PKCS#11 tokens — provision, enroll, use, recover, re-enroll.
#[derive(Debug, Parser)]
#[command(
    name = "keyward",
    version,
    about,
    propagate_version = true,
    after_help = EXIT_STATUS
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The exit statuses, as `--help` and the man page state them.
pub const EXIT_STATUS: &str = "Exit status: 0 success; 1 error; 2 usage error (the command line asks for something impossible); 3 checked and found bad (a signature that does not verify: a message, an enrollment request or reply, a certificate or CRL altered after signing; a revoked or untrusted signer; a tampered authority state or log).";

/// Options every command takes, before or after the subcommand.
#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// PKCS#11 module to load (else KEYWARD_MODULE, config.toml, the usual SoftHSM2 paths, p11-kit's modules)
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "KEYWARD_MODULE",
        help_heading = "Module"
    )]
    pub module: Option<PathBuf>,
    /// The module's C_Initialize argument string (pReserved), e.g. NSS softokn's "configdir='sql:DIR' …"
    #[arg(
        long,
        global = true,
        value_name = "STRING",
        env = "KEYWARD_MODULE_ARGS",
        help_heading = "Module"
    )]
    pub module_args: Option<String>,
    /// keyward's state directory (else $XDG_CONFIG_HOME/keyward)
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        env = "KEYWARD_HOME",
        help_heading = "Output and state"
    )]
    pub home: Option<PathBuf>,
    /// Machine-readable output: one JSON document on standard output (docs/json.md); errors as JSON on standard error
    #[arg(long, global = true, help_heading = "Output and state")]
    pub json: bool,
    /// Print nothing but errors (and the data a command exists to print)
    #[arg(short, long, global = true, help_heading = "Output and state")]
    pub quiet: bool,
    /// More detail: -v shows the failing PKCS#11 call, -vv debug logs, -vvv trace
    #[arg(
        short,
        long,
        global = true,
        action = clap::ArgAction::Count,
        help_heading = "Output and state"
    )]
    pub verbose: u8,
    /// Log in even when the token says the next wrong PIN locks it
    #[arg(long, global = true, help_heading = "Secrets")]
    pub final_try: bool,
    /// Read the (current) user PIN from FILE (else KEYWARD_PIN, else a prompt)
    #[arg(long, value_name = "FILE", help_heading = "Secrets")]
    pub pin_file: Option<PathBuf>,
    /// Read the new PIN from FILE (else KEYWARD_NEW_PIN, else a prompt)
    #[arg(long, value_name = "FILE", help_heading = "Secrets")]
    pub new_pin_file: Option<PathBuf>,
    /// Read the SO PIN from FILE (else KEYWARD_SO_PIN, else a prompt)
    #[arg(long, value_name = "FILE", help_heading = "Secrets")]
    pub so_pin_file: Option<PathBuf>,
    /// Read the temporary key from FILE (else KEYWARD_TEMP_KEY, else a prompt)
    #[arg(long, value_name = "FILE", help_heading = "Secrets")]
    pub temp_key_file: Option<PathBuf>,
    /// Read the authority token's PIN from FILE (else KEYWARD_AUTHORITY_PIN, else a prompt)
    #[arg(long, value_name = "FILE", help_heading = "Secrets")]
    pub authority_pin_file: Option<PathBuf>,
    /// Read the acting operator's token PIN from FILE (else KEYWARD_OPERATOR_PIN, else a prompt)
    #[arg(long, value_name = "FILE", help_heading = "Secrets")]
    pub operator_pin_file: Option<PathBuf>,
}

/// The secret-source flags: clap id, flag, help. Each is on the commands that read that
/// secret (after the subcommand) and, for every command, before the subcommand.
const SECRET_FLAGS: [(&str, &str, &str); 6] = [
    ("pin_file", "pin-file", "Read the (current) user PIN or keyset password from FILE (else KEYWARD_PIN, else a prompt)"),
    ("new_pin_file", "new-pin-file", "Read the new PIN or password from FILE (else KEYWARD_NEW_PIN, else a prompt)"),
    ("so_pin_file", "so-pin-file", "Read the SO PIN from FILE (else KEYWARD_SO_PIN, else a prompt)"),
    ("temp_key_file", "temp-key-file", "Read the temporary key from FILE (else KEYWARD_TEMP_KEY, else a prompt)"),
    ("authority_pin_file", "authority-pin-file", "Read the authority token's PIN from FILE (else KEYWARD_AUTHORITY_PIN, else a prompt)"),
    ("operator_pin_file", "operator-pin-file", "Read the acting operator's token PIN from FILE (else KEYWARD_OPERATOR_PIN, else a prompt)"),
];

const PIN: &str = "pin_file";
const NEW: &str = "new_pin_file";
const SO: &str = "so_pin_file";
const TEMP: &str = "temp_key_file";
const AUTH: &str = "authority_pin_file";
const OP: &str = "operator_pin_file";

/// Which secrets each command reads. A command not listed gets every secret flag (a new
/// command: add its line here).
const SECRETS_READ: &[(&str, &[&str])] = &[
    ("token list", &[]),
    ("token info", &[PIN]),
    ("token init", &[SO, NEW]),
    ("token change-pin", &[PIN, NEW]),
    ("token unblock", &[SO, NEW]),
    ("keyset create", &[PIN, NEW]),
    ("keyset adopt", &[PIN]),
    ("keyset list", &[]),
    ("keyset show", &[]),
    ("keyset pubkey", &[]),
    ("keyset csr", &[PIN]),
    ("keyset sign", &[PIN]),
    ("keyset verify", &[]),
    ("keyset pin", &[PIN]),
    ("keyset cert", &[]),
    ("keyset passwd", &[PIN, NEW]),
    ("keyset remove", &[PIN]),
    ("authority init", &[PIN, AUTH]),
    ("authority cert", &[]),
    ("authority add-user", &[PIN, AUTH]),
    ("authority process", &[PIN, AUTH]),
    ("authority recover", &[PIN, AUTH, OP]),
    ("authority revoke", &[PIN, AUTH, OP]),
    ("authority crl", &[PIN, AUTH]),
    ("authority users", &[]),
    ("authority log", &[]),
    ("authority migrate", &[PIN, AUTH]),
    ("authority reply", &[]),
    ("authority operator add", &[PIN, AUTH, OP]),
    ("authority operator list", &[]),
    ("authority operator remove", &[PIN, AUTH, OP]),
    ("authority policy set", &[PIN, AUTH, OP]),
    ("authority policy show", &[]),
    ("authority request list", &[]),
    ("authority approve", &[PIN, AUTH, OP]),
    ("authority reject", &[PIN, AUTH, OP]),
    ("authority add-users", &[PIN, AUTH]),
    ("authority rollover", &[PIN, AUTH]),
    ("authority serve", &[PIN, AUTH]),
    ("authority token", &[PIN, AUTH]),
    ("authority join", &[PIN, AUTH]),
    ("token provision", &[SO]),
    ("crl import", &[]),
    ("crl fetch", &[]),
    ("enroll", &[PIN, NEW, TEMP, AUTH]),
    ("send", &[PIN]),
    ("read", &[PIN]),
    ("completions", &[]),
    ("man", &[]),
];

/// The whole command line: the derived one, with each command's secret-source flags.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    with_secret_flags(Cli::command(), "")
}

fn with_secret_flags(mut cmd: clap::Command, path: &str) -> clap::Command {
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    if subs.is_empty() {
        let reads = SECRETS_READ
            .iter()
            .find(|(p, _)| *p == path)
            .map_or(&[PIN, NEW, SO, TEMP, AUTH, OP][..], |(_, r)| *r);
        for (id, long, help) in SECRET_FLAGS {
            if reads.contains(&id) {
                cmd = cmd.arg(
                    clap::Arg::new(id)
                        .long(long)
                        .value_name("FILE")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help(help)
                        .help_heading("Secrets"),
                );
            }
        }
        return cmd;
    }
    for name in subs {
        let sub_path = if path.is_empty() {
            name.clone()
        } else {
            format!("{path} {name}")
        };
        cmd = cmd.mut_subcommand(&name, |s| with_secret_flags(s, &sub_path));
    }
    cmd
}

/// `dir` as the default `--dir` of every `authority` command (from config.toml: the flag and
/// `KEYWARD_AUTHORITY_DIR` still win).
pub fn with_default_authority_dir(cmd: clap::Command, dir: &std::path::Path) -> clap::Command {
    // clap keeps defaults as `'static` (or its own `Str` with the "string" feature): one
    // small leak per process.
    let dir: &'static std::ffi::OsStr =
        Box::leak(dir.as_os_str().to_os_string().into_boxed_os_str());
    cmd.mut_subcommand("authority", |authority| {
        let names: Vec<String> = authority
            .get_subcommands()
            .filter(|s| s.get_arguments().any(|a| a.get_id() == "dir"))
            .map(|s| s.get_name().to_string())
            .collect();
        names.into_iter().fold(authority, |authority, name| {
            authority.mut_subcommand(name, |sub| {
                sub.mut_arg("dir", |a| a.default_value(dir).required(false))
            })
        })
    })
}

/// The secret files given after the subcommand, into `global` (they win over the ones
/// given before it).
pub fn take_secret_files(matches: &clap::ArgMatches, global: &mut GlobalArgs) {
    let mut leaf = matches;
    while let Some((_, sub)) = leaf.subcommand() {
        leaf = sub;
    }
    let get = |id: &str| leaf.try_get_one::<PathBuf>(id).ok().flatten().cloned();
    let slots = [
        (PIN, &mut global.pin_file),
        (NEW, &mut global.new_pin_file),
        (SO, &mut global.so_pin_file),
        (TEMP, &mut global.temp_key_file),
        (AUTH, &mut global.authority_pin_file),
        (OP, &mut global.operator_pin_file),
    ];
    for (id, slot) in slots {
        if let Some(p) = get(id) {
            *slot = Some(p);
        }
    }
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Slots and tokens: list, inspect, initialise, change and unblock PINs
    #[command(subcommand)]
    Token(TokenCommand),
    /// Keysets: named keys on a token — create, list, show, sign, verify, passwd, remove
    #[command(subcommand)]
    Keyset(KeysetCommand),
    /// The enrollment authority: users, temporary keys, requests, recovery, revocation, CRL, log
    #[command(subcommand)]
    Authority(AuthorityCommand),
    /// Enroll a keyset with an authority (or complete an enrollment with its reply)
    Enroll(EnrollArgs),
    /// Sign with your keyset and encrypt to recipients (and yourself): a CMS / S/MIME message
    Send(SendArgs),
    /// Decrypt a message with your keyset's current or archived keys and verify its signer
    Read(ReadArgs),
    /// CRLs kept here (newest per authority) that send and read check certificates against
    #[command(subcommand)]
    Crl(CrlCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions(CompletionsArgs),
    /// Print the manual page (roff; view with `keyward man | man -l -`)
    Man,
}

/// `keyward crl …`
#[derive(Debug, Subcommand)]
pub enum CrlCommand {
    /// Keep a CRL (PEM or DER) when its authority signed it and it is newer than the one kept
    Import(CrlImportArgs),
    /// Fetch and keep the CRL at the distribution point (file: or http://) of a keyset's
    /// certificates or of certificate files
    Fetch(CrlFetchArgs),
}

/// `keyward crl import`
#[derive(Debug, Args)]
pub struct CrlImportArgs {
    /// The CRL file (PEM or DER)
    pub file: PathBuf,
    /// The CA certificate that issued it (default: the authorities your keysets are enrolled with)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// `keyward crl fetch`
#[derive(Debug, Args)]
pub struct CrlFetchArgs {
    /// Fetch for this keyset's certificates
    #[arg(long, value_name = "KEYSET")]
    pub keyset: Option<String>,
    /// Certificate files (PEM or DER) whose distribution points to fetch
    pub certs: Vec<PathBuf>,
    /// The CA certificate that issued the CRLs (default: the authorities your keysets are enrolled with)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
}

/// `keyward completions`
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `keyward send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Your keyset (enrolled)
    #[arg(long)]
    pub keyset: String,
    /// A recipient: a certificate file (PEM or DER) or the name of a keyset known here; repeat for more
    #[arg(long, required = true, value_name = "CERT|KEYSET")]
    pub to: Vec<String>,
    /// The content to send (default: standard input)
    pub input: Option<PathBuf>,
    /// Where to write the message (default: standard output)
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: Option<PathBuf>,
    /// Write an S/MIME entity (application/pkcs7-mime) instead of DER
    #[arg(long)]
    pub smime: bool,
    /// Wrap the message key with RSA-OAEP (SHA-1, RFC 3560 defaults) instead of PKCS#1 v1.5
    #[arg(long)]
    pub oaep: bool,
    /// The content's MIME type (default: text/plain; charset=utf-8 for UTF-8 text, else application/octet-stream)
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,
}

/// `keyward read`
#[derive(Debug, Args)]
pub struct ReadArgs {
    /// Your keyset (enrolled)
    #[arg(long)]
    pub keyset: String,
    /// The message: DER, PEM or S/MIME (default: standard input)
    pub input: Option<PathBuf>,
    /// Where to write the content (default: standard output)
    #[arg(short, long, value_name = "OUTPUT")]
    pub output: Option<PathBuf>,
    /// The CA the signer must chain to (default: your keyset's authority)
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A CRL (PEM or DER) to check the signer against
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,
    /// Write the whole signed MIME entity (headers and body) instead of its body
    #[arg(long)]
    pub mime: bool,
}

/// `keyward authority …`
#[derive(Debug, Subcommand)]
pub enum AuthorityCommand {
    /// Create an authority: CA, exchange and archive keys on its token, state in DIR (asks for the PIN)
    Init(AuthorityInitArgs),
    /// Print the authority's certificates (CA and exchange), PEM: what users enroll against
    /// (--all: with every earlier CA generation and the link certificates between them)
    Cert(AuthorityCertArgs),
    /// Add a user and print their one-time temporary key (asks for the PIN)
    AddUser(AddUserArgs),
    /// Process an enrollment request into a reply (asks for the PIN)
    Process(ProcessArgs),
    /// A user forgot their password: revoke their certificates and print a new temporary key (asks for the PIN)
    Recover(RecoverArgs),
    /// Revoke a user and all their certificates (asks for the PIN)
    Revoke(RevokeArgs),
    /// Write a CRL signed on the authority's token (asks for the PIN)
    Crl(CrlArgs),
    /// List users with their state, keysets and certificates (--expiring 30d: who needs to renew)
    Users(UsersArgs),
    /// Show the audit log, checking its hash chain and signed checkpoints (exit 3 when they do not verify; --verify: check, and the state too, instead of printing)
    Log(LogArgs),
    /// Convert an authority directory of the TOML format into the store, once (asks for the PIN)
    Migrate(DirArg),
    /// Write a committed enrollment's reply again (when the first could not be written)
    Reply(ReplyArgs),
    /// Operators: named administrators, each signing on their own token
    #[command(subcommand)]
    Operator(super::operator_args::OperatorCommand),
    /// How many operators must approve each action
    #[command(subcommand)]
    Policy(super::operator_args::PolicyCommand),
    /// Approval requests waiting for operators
    #[command(subcommand)]
    Request(super::operator_args::RequestCommand),
    /// Approve a request with your operator token (runs it when it is the last approval needed)
    Approve(super::operator_args::DecideArgs),
    /// Reject a request with your operator token (one rejection rejects it)
    Reject(super::operator_args::DecideArgs),
    /// Add many users from a CSV (user,email): temporary keys to one 0600 file per user or a CSV for a mail merge (asks for the PIN)
    AddUsers(AddUsersArgs),
    /// Roll over the archive key (--archive: every archived key re-wrapped under a new one, resumable) or the CA key (--ca: a new CA with link certificates) (asks for the PIN)
    Rollover(RolloverArgs),
    /// A user's token state: show it, or set lost (certificates on hold, a temporary token
    /// allowed), found (off hold, the temporary token retired), damaged or terminated (revoked)
    /// (asks for the PIN to change it)
    Token(TokenStateArgs),
    /// Add a node to an authority kept in PostgreSQL: a new directory using the same database,
    /// with this host's copy of the authority token (checked against the signed state; asks
    /// for the PIN)
    Join(AuthorityJoinArgs),
    /// Serve EST (RFC 7030) over HTTPS: enrollment, server key generation and renewal online
    /// (asks for the PIN once; runs until stopped)
    Serve(ServeArgs),
}

/// `authority serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// Where to listen, e.g. 0.0.0.0:8443 (port 0: any free port, printed on the first line)
    #[arg(long, value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// A name for the TLS certificate (DNS name or IP address; repeat for more). Default:
    /// localhost and the listen address
    #[arg(long = "server-name", value_name = "NAME")]
    pub server_names: Vec<String>,
    /// Write the bound address to FILE once the node accepts connections
    #[arg(long, value_name = "FILE")]
    pub ready_file: Option<PathBuf>,
    /// How long a client has to send a request (headers, body, TLS handshake)
    #[arg(long, value_name = "DURATION", value_parser = any_duration, default_value = "30s")]
    pub request_timeout: std::time::Duration,
}

/// `--db URL` and `--db-password-file FILE`: the PostgreSQL database of an authority.
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Keep the state in this PostgreSQL database (postgres://user@host/db, or
    /// postgresql:///db?host=/socket/dir), without a password in it
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Read the database password from FILE (its first line; the directory records the
    /// file's path, never the password)
    #[arg(long, value_name = "FILE", requires = "db", help_heading = "Secrets")]
    pub db_password_file: Option<PathBuf>,
}

/// `authority join`
#[derive(Debug, Args)]
pub struct AuthorityJoinArgs {
    /// The new node's state directory (created)
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// This node's copy of the authority's token: a PKCS#11 URI or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// The PostgreSQL database
    #[command(flatten)]
    pub db: DbArgs,
}

/// `authority add-users`
#[derive(Debug, Args)]
pub struct AddUsersArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The users: one `user,email` per line (a `user,email` header is allowed; email may be empty)
    #[arg(long, value_name = "CSV")]
    pub from: PathBuf,
    /// Where the temporary keys go (created, mode 0700)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// files: OUT/USER.tempkey (0600) each; csv: OUT/temporary-keys.csv (0600) for a mail merge
    #[arg(long, value_enum, default_value = "files")]
    pub format: crate::authority::bulk::KeyOutput,
    /// How long the temporary keys work (e.g. 72h, 14d)
    #[arg(long, default_value = "72h")]
    pub expires: String,
    /// Check the file and say what would be done; change nothing (no PIN)
    #[arg(long)]
    pub dry_run: bool,
}

/// `authority cert`
#[derive(Debug, Args)]
pub struct AuthorityCertArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// After the current CA and exchange certificates, every earlier CA certificate and the
    /// link certificates of each CA rollover (new key certified by the old, old by the new)
    #[arg(long)]
    pub all: bool,
}

/// `authority rollover`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["archive", "ca"])))]
pub struct RolloverArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// Roll over the archive key (run again to finish one that was stopped)
    #[arg(long)]
    pub archive: bool,
    /// Roll over the CA key: a new CA key and certificate, with link certificates between
    /// the old and the new; the old CA still verifies and revokes what it issued
    #[arg(long)]
    pub ca: bool,
    /// With --ca: check the token and say what would be done; change nothing
    #[arg(long, requires = "ca")]
    pub dry_run: bool,
    /// Who asks for (and approves) the CA rollover, once the authority has operators
    #[command(flatten)]
    pub acting: super::operator_args::ActingArgs,
}

/// `authority token`
#[derive(Debug, Args)]
pub struct TokenStateArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The user
    pub user: String,
    /// The new state (without it: show the current one). Allowed: active/found → lost,
    /// damaged, terminated; lost → found, damaged, terminated; damaged → terminated
    #[arg(long, value_enum)]
    pub state: Option<crate::authority::tokenstate::TokenState>,
    /// How long the temporary key (lost, damaged) works
    #[arg(long, default_value = "72h")]
    pub expires: String,
}

/// `authority reply`
#[derive(Debug, Args)]
pub struct ReplyArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The user whose last enrollment reply to write
    pub user: String,
    /// Where to write the reply
    #[arg(short, long, value_name = "REPLY")]
    pub output: PathBuf,
}

/// `authority users`
#[derive(Debug, Args)]
pub struct UsersArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// Only users with a current certificate that expires within DURATION (e.g. 30d): who needs to renew
    #[arg(long, value_name = "DURATION", value_parser = any_duration)]
    pub expiring: Option<std::time::Duration>,
}

/// A humantime duration (`30d`, `12h`).
fn any_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 30d or 12h"))
}

/// `--dir DIR`
#[derive(Debug, Args)]
pub struct DirArg {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
}

/// `authority init`
#[derive(Debug, Args)]
pub struct AuthorityInitArgs {
    /// The authority's state directory (created)
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The authority's token: a PKCS#11 URI or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// The CA's name
    #[arg(long, default_value = "CN=keyward authority")]
    pub name: String,
    /// Allow key delivery by import (`C_CreateObject`) to user tokens that cannot unwrap: the
    /// user's encryption key then passes through the user's keyward in the clear, for one call
    #[arg(long)]
    pub allow_import: bool,
    /// Your organisation's certificate policy OID (dotted), put in every certificate issued,
    /// next to the CA/B Forum S/MIME mailbox-strict OID
    #[arg(long, value_name = "OID")]
    pub policy_oid: Option<String>,
    /// Where the CRL will be published (http:// or file:/ URL): the CRL distribution point of
    /// every certificate issued; `authority crl` writes there itself when it is a file: URL
    #[arg(long, value_name = "URL")]
    pub crl_url: Option<String>,
    /// Where the CA certificate is published (http:// or file:/ URL): the AIA caIssuers of
    /// every certificate issued
    #[arg(long, value_name = "URL")]
    pub aia_url: Option<String>,
    /// Create the authority even on a token that already holds one
    #[arg(long)]
    pub force: bool,
    /// The PostgreSQL database
    #[command(flatten)]
    pub db: DbArgs,
}

/// `authority add-user`
#[derive(Debug, Args)]
pub struct AddUserArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The user name
    pub user: String,
    /// E-mail address for the certificates
    #[arg(long, value_name = "ADDR")]
    pub email: Option<String>,
    /// How long the temporary key works (e.g. 72h, 7d)
    #[arg(long, default_value = "72h")]
    pub expires: String,
}

/// `authority process`
#[derive(Debug, Args)]
pub struct ProcessArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The request file from `keyward enroll … -o REQUEST`
    pub request: PathBuf,
    /// Where to write the reply
    #[arg(short, long, value_name = "REPLY")]
    pub output: PathBuf,
    /// How long the user certificates are valid (default two years), e.g. 365d
    #[arg(long, value_name = "DURATION", value_parser = any_duration)]
    pub cert_lifetime: Option<std::time::Duration>,
}

/// `authority recover`
#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The user
    pub user: String,
    /// Revocation reason for the old certificates
    #[arg(long, default_value = "superseded")]
    pub reason: String,
    /// How long the new temporary key works
    #[arg(long, default_value = "72h")]
    pub expires: String,
    /// Who approves, once the authority has operators
    #[command(flatten)]
    pub acting: super::operator_args::ActingArgs,
}

/// `authority revoke`
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// The user
    pub user: String,
    /// Revocation reason (keyCompromise, affiliationChanged, superseded, cessationOfOperation, unspecified)
    #[arg(long, default_value = "unspecified")]
    pub reason: String,
    /// Who approves, once the authority has operators
    #[command(flatten)]
    pub acting: super::operator_args::ActingArgs,
}

/// `authority crl`
#[derive(Debug, Args)]
pub struct CrlArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// Where to write the CRL (PEM); it is also written to the distribution point when that
    /// is a file: URL (authority init --crl-url), which makes -o optional
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Write -o in DER (what an http:// distribution point serves) instead of PEM
    #[arg(long)]
    pub der: bool,
    /// How long the CRL is current (its nextUpdate), e.g. 7d, 36h; 1h to 366d
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = crl_lifetime)]
    pub valid_for: std::time::Duration,
}

/// `--valid-for`: a humantime duration between an hour and a year and a day.
fn crl_lifetime(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("{s:?} is not a duration; write e.g. 7d or 36h"))?;
    let (min, max) = (3600, 366 * 24 * 3600);
    if !(min..=max).contains(&d.as_secs()) {
        return Err(format!(
            "{s} is out of range: a CRL is current for 1h to 366d"
        ));
    }
    Ok(d)
}

/// `authority log`
#[derive(Debug, Args)]
pub struct LogArgs {
    /// The authority's state directory
    #[arg(long, value_name = "DIR", env = "KEYWARD_AUTHORITY_DIR")]
    pub dir: PathBuf,
    /// Check the hash chain, every checkpoint's signature and the state against the last
    /// checkpoint instead of printing (printing checks the chain and signatures too)
    #[arg(long)]
    pub verify: bool,
    /// With --verify: the CA certificate (PEM) to check the signatures with, instead of the one
    /// the directory holds (an auditor checking a copy)
    #[arg(long, value_name = "FILE", requires = "verify")]
    pub ca: Option<PathBuf>,
}

/// `keyward enroll`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["complete", "user", "renew"])))]
pub struct EnrollArgs {
    /// Complete an enrollment (or a renewal) with the authority's reply
    #[arg(long, value_name = "REPLY", conflicts_with_all = ["keyset", "token", "authority", "authority_cert", "output"])]
    pub complete: Option<PathBuf>,
    /// Renew keyset NAME: new certificates and keys on the same token, asked for with its
    /// password and signed by its current signing key (local --authority DIR, or -o REQUEST)
    #[arg(long, value_name = "NAME", conflicts_with_all = ["complete", "user", "keyset", "token"])]
    pub renew: Option<String>,
    /// With --renew: revoke the superseded certificates (reason superseded) instead of only
    /// marking them superseded
    #[arg(long, requires = "renew")]
    pub revoke_old: bool,
    /// Your user name at the authority
    #[arg(long, requires_all = ["keyset", "token"])]
    pub user: Option<String>,
    /// The new keyset's name
    #[arg(long)]
    pub keyset: Option<String>,
    /// Your token: a PKCS#11 URI or a bare label
    #[arg(long, value_name = "URI")]
    pub token: Option<String>,
    /// standard: the password once per command; high: for every signature and decryption
    #[arg(long, value_enum, default_value = "standard")]
    pub security: crate::keyset::Security,
    /// Signing key algorithm
    #[arg(long, value_enum, default_value = "rsa2048")]
    pub key_type: crate::keyset::KeyAlgorithm,
    /// A local authority directory: request, process and complete in one command
    #[arg(long, value_name = "DIR", conflicts_with_all = ["authority_cert", "output"])]
    pub authority: Option<PathBuf>,
    /// The authority's certificates (from `keyward authority cert`), to write a request file
    /// (-o) or to enroll online (--server)
    #[arg(long, value_name = "FILE")]
    pub authority_cert: Option<PathBuf>,
    /// Enroll online with an EST node (`keyward authority serve`), e.g.
    /// https://est.example.org:8443; trusts only the CA in --authority-cert
    #[arg(long, value_name = "URL", requires = "authority_cert", conflicts_with_all = ["authority", "output", "complete"])]
    pub server: Option<String>,
    /// Where to write the request
    #[arg(short, long, value_name = "REQUEST")]
    pub output: Option<PathBuf>,
}

/// `keyward keyset …`
#[derive(Debug, Subcommand)]
pub enum KeysetCommand {
    /// Create a keyset: a signing key pair generated on the token (asks for the PIN)
    Create(CreateArgs),
    /// Adopt keys and certificates already on a token (a smart card provisioned by its own tools) as a keyset (asks for the PIN)
    Adopt(AdoptArgs),
    /// List keysets
    List,
    /// Show one keyset, its token and its keys' pkcs11: URIs
    Show(NameArg),
    /// Print the signing public key (PEM)
    Pubkey(NameArg),
    /// Write a PKCS#10 request signed on the token (PEM)
    Csr(CsrArgs),
    /// Sign FILE with the keyset's signing key (detached signature)
    Sign(SignArgs),
    /// Verify a detached signature made by `keyset sign`
    Verify(VerifyArgs),
    /// Print the token PIN derived from the password (hardened keysets), checked on the token
    Pin(PinArgs),
    /// Print the keyset's signing certificate (or, with --encryption, its current encryption certificate), PEM
    Cert(CertArgs),
    /// Change the keyset password (the token PIN)
    Passwd(NameArg),
    /// Remove a keyset from the registry (and with --destroy-keys, its keys from the token)
    Remove(RemoveArgs),
    /// Trust the new CA of your authority after its CA key rollover: the CA and link
    /// certificates of the bundle `authority cert --all` prints that chain from the CA the
    /// keyset trusts
    Trust(TrustArgs),
}

/// `keyset trust`
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// The keyset's name
    pub name: String,
    /// The authority's CA bundle (PEM), as `keyward authority cert --all` prints it
    #[arg(long, value_name = "FILE")]
    pub chain: PathBuf,
}

/// A keyset name.
#[derive(Debug, Args)]
pub struct NameArg {
    /// The keyset's name
    pub name: String,
}

/// `keyset pin`
#[derive(Debug, Args)]
pub struct PinArgs {
    /// The keyset's name
    pub name: String,
    /// Print the derived PIN without logging in to check it (the token may be absent; a
    /// mistyped password then gives a wrong PIN)
    #[arg(long)]
    pub no_check: bool,
}

/// `keyset create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The keyset's name (any text; quoted if it has spaces)
    pub name: String,
    /// The token: a PKCS#11 URI or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// standard: the password once per command; high: for every signature and decryption
    #[arg(long, value_enum, default_value = "standard")]
    pub security: crate::keyset::Security,
    /// Signing key algorithm
    #[arg(long, value_enum, default_value = "rsa2048")]
    pub key_type: crate::keyset::KeyAlgorithm,
    /// Derive the token PIN from the keyset password with Argon2id (software tokens)
    #[arg(long)]
    pub harden: bool,
}

/// `keyset adopt`
#[derive(Debug, Args)]
pub struct AdoptArgs {
    /// The keyset's name
    pub name: String,
    /// The token holding the keys: a PKCS#11 URI or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// The signing key, when several keys can sign: a PKCS#11 object URI, e.g. "pkcs11:id=%02;type=private"
    #[arg(long, value_name = "URI")]
    pub signing_key: Option<String>,
    /// The decryption key, when several keys can decrypt: a PKCS#11 object URI
    #[arg(long, value_name = "URI")]
    pub decryption_key: Option<String>,
}

/// `keyset cert`
#[derive(Debug, Args)]
pub struct CertArgs {
    /// The keyset's name
    pub name: String,
    /// The current encryption certificate instead of the signing one
    #[arg(long)]
    pub encryption: bool,
}

/// `keyset csr`
#[derive(Debug, Args)]
pub struct CsrArgs {
    /// The keyset's name
    pub name: String,
    /// Subject distinguished name, e.g. "CN=Alice Smith,O=Example"
    #[arg(long)]
    pub subject: String,
    /// Write here instead of standard output
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `keyset sign`
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The keyset's name
    pub name: String,
    /// The file to sign
    pub file: PathBuf,
    /// Where to write the signature
    #[arg(short, long, value_name = "SIG")]
    pub output: PathBuf,
}

/// `keyset verify`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The keyset's name
    pub name: String,
    /// The signed file
    pub file: PathBuf,
    /// The signature
    pub signature: PathBuf,
}

/// `keyset remove`
#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The keyset's name
    pub name: String,
    /// Also destroy its keys on the token (asks for the password)
    #[arg(long)]
    pub destroy_keys: bool,
    /// Do not ask for confirmation (needed without a terminal)
    #[arg(long)]
    pub yes: bool,
}

/// `keyward token …`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// List slots and tokens with their flags and PIN state
    List,
    /// Show one token and what it can do (its probed capabilities)
    Info(InfoArgs),
    /// Initialise a token: label, SO PIN and first user PIN
    Init(InitArgs),
    /// Change the user PIN (asks for the PIN and the new PIN)
    ChangePin(TokenArg),
    /// Set a new user PIN with the SO PIN (unlocks a locked PIN)
    Unblock(TokenArg),
    /// Initialise many tokens from a manifest: labels, the SO PIN, a user PIN generated for each and handed out once
    Provision(ProvisionArgs),
}

/// `token provision`
#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// The manifest (TOML: so_pin_file, pin_out, pin_length, [[token]] label = …)
    #[arg(long, value_name = "FILE")]
    pub manifest: PathBuf,
    /// Check the manifest and say what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

/// `--token URI`
#[derive(Debug, Args)]
pub struct TokenArg {
    /// The token: a PKCS#11 URI (pkcs11:token=alice-card) or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
}

/// `token info`
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The token: a PKCS#11 URI (pkcs11:token=alice-card) or a bare label
    #[arg(long, value_name = "URI")]
    pub token: String,
    /// Log in (user PIN) to probe what needs a login too: unwrapping and importing private
    /// keys, and the context-specific login
    #[arg(long)]
    pub login: bool,
}

/// `token init`
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["slot", "free", "token"])))]
pub struct InitArgs {
    /// Initialise the token in this slot
    #[arg(long, value_name = "ID")]
    pub slot: Option<u64>,
    /// Initialise the first uninitialised token
    #[arg(long)]
    pub free: bool,
    /// Re-initialise this token (needs --force)
    #[arg(long, value_name = "URI")]
    pub token: Option<String>,
    /// The new token label (at most 32 bytes)
    #[arg(long)]
    pub label: String,
    /// Wipe an already initialised token and all its keys
    #[arg(long)]
    pub force: bool,
}
