//! `authority serve`: EST over HTTPS. tokio runs the listener and the HTTP/1.1 connections
//! (hyper through axum's router), rustls terminates TLS with a certificate the authority's CA
//! issues at start to a P-256 key made in memory, and asks for (does not require) a client
//! certificate, which only `simplereenroll` uses. It serves at most [`MAX_CONNECTIONS`]
//! connections at once (more wait in the kernel's backlog) and backs off when accepting fails
//! (out of file descriptors), logging that at most once a second. The token work is synchronous PKCS#11: it
//! runs on worker threads (`authority serve` starts one: the module is used from one thread at
//! a time) that hold the authority's [`Change`], each request opening the authority as every
//! command does, so the authority's own lock and transaction serialise its changes and
//! concurrent requests (on this node and others sharing its store) are safe.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use der::Encode;
use hyper_util::rt::{TokioIo, TokioTimer};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::node;
use super::wire::{self, Refusal};
use crate::authority::init::Change;
use crate::authority::AuthorityError;

/// The path prefix of every EST endpoint.
pub const PREFIX: &str = "/.well-known/est";
/// keyward's extension: a whole enrollment (or renewal) in one call — the body is a request
/// file (`keyward enroll -o`), the answer its reply file, both processed exactly as
/// `authority process` does (the temporary key inside the request, encrypted to the
/// authority's exchange key; a recovered user's archived keys in the reply).
pub const KEYWARD_ENROLL: &str = "keyward-enroll";
/// keyward's extension: a recovered user's archived encryption keys, after the EST enrollment
/// with the recovery's temporary key (HTTP Basic, as serverkeygen; the body a PKCS#10 naming
/// the transport key, as serverkeygen's); answered as serverkeygen answers, one key and
/// certificate pair per archived key.
pub const KEYWARD_ARCHIVE: &str = "keyward-archive";
/// The media type of a request file.
pub const KEYWARD_REQUEST: &str = "application/vnd.keyward.request";
/// The media type of a reply file.
pub const KEYWARD_REPLY: &str = "application/vnd.keyward.reply";

/// How `authority serve` runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen (port 0: any free port; the bound address is announced).
    pub listen: SocketAddr,
    /// The names in the TLS certificate (default: localhost and the listen address).
    pub server_names: Vec<String>,
    /// Where to write the bound address once ready.
    pub ready_file: Option<PathBuf>,
    /// How long a client has to send its request (headers and body).
    pub request_timeout: Duration,
    /// Worker threads for token work.
    pub workers: usize,
}

/// Errors of `authority serve` before it serves.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The authority refused.
    #[error("{0}")]
    Authority(#[from] AuthorityError),
    /// Listening or announcing failed.
    #[error("cannot {what}: {source}; choose another --listen address or check permissions")]
    Io {
        /// What was being done.
        what: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS: {0}")]
    Tls(String),
}

/// One piece of token work, run on a worker thread with the authority's [`Change`].
type Job = Box<dyn FnOnce(&Change<'_>, &Path) + Send>;

#[derive(Clone)]
struct AppState {
    jobs: mpsc::Sender<Job>,
    dir: Arc<PathBuf>,
    timeout: Duration,
}

/// The DER of the TLS client certificate, if the client sent one.
#[derive(Clone)]
struct Peer(Option<Arc<Vec<u8>>>);

/// What the caller says once the node accepts connections (the bound address, the TLS
/// certificate's names).
pub type OnReady<'a> = &'a (dyn Fn(SocketAddr, &[String]) -> std::io::Result<()> + Sync);

/// Serves EST until the process is stopped; `on_ready` announces the node once it listens.
pub fn serve(
    ch: &Change<'_>,
    dir: &Path,
    opts: &ServeOptions,
    on_ready: OnReady<'_>,
) -> Result<(), ServeError> {
    let listener = std::net::TcpListener::bind(opts.listen).map_err(|source| ServeError::Io {
        what: format!("listen on {}", opts.listen),
        source,
    })?;
    let bound = listener.local_addr().map_err(|source| ServeError::Io {
        what: "read the bound address".into(),
        source,
    })?;
    let names = server_names(opts, bound);
    let tls = tls_config(ch, dir, &names)?;
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    std::thread::scope(|scope| {
        for _ in 0..opts.workers.max(1) {
            let rx = Arc::clone(&rx);
            scope.spawn(move || worker(ch, dir, &rx));
        }
        let state = AppState {
            jobs: tx,
            dir: Arc::new(dir.to_path_buf()),
            timeout: opts.request_timeout,
        };
        let ready = || {
            write_ready_file(bound, opts.ready_file.as_deref())?;
            on_ready(bound, &names)
        };
        let result = run_listener(listener, tls, state, &ready);
        // Dropping the sender (inside `state`, moved into the runtime) ends the workers.
        result
    })
}

fn worker(ch: &Change<'_>, dir: &Path, rx: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(ch, dir),
            Err(_) => return,
        }
    }
}

fn server_names(opts: &ServeOptions, bound: SocketAddr) -> Vec<String> {
    if !opts.server_names.is_empty() {
        return opts.server_names.clone();
    }
    let mut names = vec!["localhost".to_string(), bound.ip().to_string()];
    if bound.ip().is_unspecified() {
        names.pop();
        names.push("127.0.0.1".into());
    }
    names
}

/// The TLS key (P-256, in memory only), its certificate from the authority's CA, and a
/// verifier that asks for (does not require) client certificates of the same CA
/// ([`super::client_auth`]: no clientAuth usage needed).
fn tls_config(
    ch: &Change<'_>,
    dir: &Path,
    names: &[String],
) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    let key = p256::SecretKey::random(&mut rand_core::OsRng);
    let spki = key
        .public_key()
        .to_public_key_der()
        .map_err(|e| ServeError::Tls(format!("encoding the TLS key: {e}")))?;
    let (cert, ca) = node::tls_certificate(ch, dir, names, spki.as_bytes())?;
    let pkcs8 = key
        .to_pkcs8_der()
        .map_err(|e| ServeError::Tls(format!("encoding the TLS key: {e}")))?;
    let der_of = |c: &x509_cert::Certificate| {
        c.to_der()
            .map(CertificateDer::from)
            .map_err(|e| ServeError::Tls(format!("encoding a certificate: {e}")))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = super::client_auth::AuthorityClientVerifier::new(
        vec![ca.clone()],
        provider.signature_verification_algorithms,
    )
    .map_err(|e| ServeError::Tls(format!("the client verifier: {e}")))?;
    let verifier = Arc::new(verifier);
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ServeError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![der_of(&cert)?, der_of(&ca)?],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8.as_bytes().to_vec())),
        )
        .map_err(|e| ServeError::Tls(format!("the TLS certificate: {e}")))?;
    Ok(Arc::new(config))
}

fn run_listener(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: AppState,
    ready: &dyn Fn() -> std::io::Result<()>,
) -> Result<(), ServeError> {
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ServeError::Io { what, source }
    };
    listener
        .set_nonblocking(true)
        .map_err(io("make the listener non-blocking"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("start the async runtime"))?;
    runtime.block_on(async move {
        let listener = TcpListener::from_std(listener).map_err(io("listen"))?;
        ready().map_err(io("announce the node"))?;
        let app = router(state.clone());
        let acceptor = TlsAcceptor::from(tls);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let mut backoff = AcceptBackoff::default();
        loop {
            // At the cap, no more connections are accepted: they wait in the kernel's backlog.
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return Ok(());
            };
            let tcp = match listener.accept().await {
                Ok((tcp, _)) => {
                    backoff.accepted();
                    tcp
                }
                Err(e) => {
                    // Out of file descriptors (EMFILE) and the like: retrying at once would
                    // spin and flood the log; wait, longer each time, and say it once a second.
                    let (wait, report) = backoff.failed(std::time::Instant::now());
                    if let Some(more) = report {
                        log::warn!(
                            "accepting a connection failed: {e} ({more} more failures since the last report); retrying in {} ms",
                            wait.as_millis()
                        );
                    }
                    drop(slot);
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let (acceptor, app, timeout) = (acceptor.clone(), app.clone(), state.timeout);
            tokio::spawn(async move {
                connection(tcp, acceptor, app, timeout).await;
                drop(slot);
            });
        }
    })
}

/// The most connections a node serves at once; more wait in the kernel's listen backlog
/// until one ends (each holds a file descriptor and, for at most the request timeout, a task).
pub const MAX_CONNECTIONS: usize = 512;

/// The wait after a failed accept: 100 ms, doubling to 1 s while failures go on, and whether
/// to log the failure (at most once a second, with how many were not logged).
#[derive(Debug, Default)]
struct AcceptBackoff {
    wait: Duration,
    last_report: Option<std::time::Instant>,
    unreported: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    fn accepted(&mut self) {
        self.wait = Duration::ZERO;
    }

    /// How long to wait, and `Some(failures not logged since the last report)` when this one
    /// is to be logged.
    fn failed(&mut self, now: std::time::Instant) -> (Duration, Option<u64>) {
        self.wait = (self.wait * 2).clamp(Self::FIRST, Self::MAX);
        let due = self
            .last_report
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if due {
            self.last_report = Some(now);
            let more = std::mem::take(&mut self.unreported);
            (self.wait, Some(more))
        } else {
            self.unreported += 1;
            (self.wait, None)
        }
    }
}

/// Writes the bound address to `ready` (atomically: a reader sees all of it or nothing).
fn write_ready_file(bound: SocketAddr, ready: Option<&Path>) -> std::io::Result<()> {
    if let Some(path) = ready {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{bound}\n"))?;
        std::fs::rename(&tmp, path)?;
    }
    Ok(())
}

async fn connection(
    tcp: tokio::net::TcpStream,
    acceptor: TlsAcceptor,
    app: Router,
    timeout: Duration,
) {
    let tls = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return log::debug!("TLS handshake failed: {e}"),
        Err(_) => return log::debug!("TLS handshake timed out"),
    };
    let peer = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| Arc::new(c.as_ref().to_vec()));
    let service =
        hyper_util::service::TowerToHyperService::new(app.layer(axum::Extension(Peer(peer))));
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .serve_connection(TokioIo::new(tls), service)
        .await;
    if let Err(e) = served {
        log::debug!("connection ended: {e}");
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/cacerts"), get(cacerts))
        .route(&format!("{PREFIX}/csrattrs"), get(csrattrs))
        .route(&format!("{PREFIX}/simpleenroll"), post(simpleenroll))
        .route(&format!("{PREFIX}/serverkeygen"), post(serverkeygen))
        .route(&format!("{PREFIX}/simplereenroll"), post(simplereenroll))
        .route(&format!("{PREFIX}/{KEYWARD_ENROLL}"), post(keyward_enroll))
        .route(
            &format!("{PREFIX}/{KEYWARD_ARCHIVE}"),
            post(keyward_archive),
        )
        .with_state(state)
}

/// A refusal as an HTTP answer: its status and its reason as text.
fn refused(r: Refusal) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = (status, format!("{}\n", r.reason)).into_response();
    if r.status == 401 {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static("Basic realm=\"keyward EST\""),
        );
    }
    resp
}

fn answer(content_type: &str, body: String) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        "content-transfer-encoding",
        header::HeaderValue::from_static("base64"),
    );
    resp
}

/// Runs `f` on a worker thread and waits for it.
async fn on_token<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&Change<'_>, &Path) -> Result<T, Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |ch, dir| {
        let _ = tx.send(f(ch, dir));
    });
    state.jobs.send(job).map_err(|_| Refusal {
        status: 503,
        reason: "the node is stopping; try again".into(),
    })?;
    rx.await.map_err(|_| Refusal {
        status: 500,
        reason: "the token work ended without an answer; see the node's log".into(),
    })?
}

/// Reads a request body: the Content-Type must be application/pkcs10, the declared length at
/// most [`wire::MAX_BODY`] (413 before reading), and it must arrive within the timeout.
async fn read_csr(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<wire::CheckedCsr, Refusal> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let n: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        if n > wire::MAX_BODY {
            return Err(too_large());
        }
    }
    wire::check_content_type(headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()))?;
    let bytes = read_limited(state, headers, body).await?;
    wire::check_csr(&wire::decode_body(&bytes)?)
}

fn too_large() -> Refusal {
    Refusal {
        status: 413,
        reason: format!("the body is over {} bytes", wire::MAX_BODY),
    }
}

/// Reads a body of at most [`wire::MAX_BODY`] bytes (a larger declared length is refused
/// before reading) that must arrive within the timeout.
async fn read_limited(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Refusal> {
    if let Some(len) = headers.get(header::CONTENT_LENGTH) {
        let n: usize = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(usize::MAX);
        if n > wire::MAX_BODY {
            return Err(Refusal {
                status: 413,
                reason: format!("the body is over {} bytes", wire::MAX_BODY),
            });
        }
    }
    let bytes = tokio::time::timeout(state.timeout, axum::body::to_bytes(body, wire::MAX_BODY))
        .await
        .map_err(|_| Refusal {
            status: 408,
            reason: "the request body did not arrive in time".into(),
        })?
        .map_err(|e| Refusal {
            status: 413,
            reason: format!(
                "the body could not be read within {} bytes: {e}",
                wire::MAX_BODY
            ),
        })?;
    Ok(bytes.to_vec())
}

fn basic_of(headers: &HeaderMap) -> Result<wire::Basic, Refusal> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Refusal::unauthorized("no credentials: send the user name and temporary key as HTTP Basic")
    })?;
    let basic = wire::parse_basic(value.as_bytes())?;
    // Checked before the authority sees it: a name no user can have is refused here, never
    // logged or written to the audit log.
    if crate::names::check_user_name(&basic.user).is_err() {
        return Err(Refusal::unauthorized(
            "the Basic user name is no user name (1-64 letters, digits and . _ @ -, not starting with - or .); send your user name and temporary key",
        ));
    }
    Ok(basic)
}

async fn cacerts(State(state): State<AppState>) -> Response {
    let dir = Arc::clone(&state.dir);
    let certs = tokio::task::spawn_blocking(move || node::ca_certs(&dir))
        .await
        .map_err(|e| Refusal {
            status: 500,
            reason: format!("reading the CA certificate failed: {e}"),
        })
        .and_then(|r| r.map_err(|e| node::refusal(&e)))
        .and_then(|c| wire::certs_only(&c));
    match certs {
        Ok(der) => answer(wire::CERTS_ONLY, wire::encode_body(&der)),
        Err(r) => refused(r),
    }
}

async fn csrattrs() -> Response {
    answer(wire::CSRATTRS, wire::encode_body(&wire::csr_attrs()))
}

async fn simpleenroll(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let basic = basic_of(&headers)?;
        let csr = read_csr(&state, &headers, body).await?;
        let cert = on_token(&state, move |ch, dir| {
            node::simple_enroll(ch, dir, &basic, &csr).map_err(|e| node::refusal(&e))
        })
        .await?;
        wire::certs_only(&[cert])
    }
    .await;
    match result {
        Ok(der) => answer(wire::CERTS_ONLY, wire::encode_body(&der)),
        Err(r) => refused(r),
    }
}

async fn serverkeygen(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let basic = basic_of(&headers)?;
        let csr = read_csr(&state, &headers, body).await?;
        on_token(&state, move |ch, dir| {
            node::server_keygen(ch, dir, &basic, &csr).map_err(|e| node::refusal(&e))
        })
        .await
    }
    .await;
    multipart(result)
}

async fn keyward_archive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let basic = basic_of(&headers)?;
        let csr = read_csr(&state, &headers, body).await?;
        on_token(&state, move |ch, dir| {
            node::archive_history(ch, dir, &basic, &csr).map_err(|e| node::refusal(&e))
        })
        .await
    }
    .await;
    multipart(result)
}

/// A multipart/mixed answer (serverkeygen's, keyward-archive's), or the refusal.
fn multipart(result: Result<String, Refusal>) -> Response {
    match result {
        Ok(body) => {
            let mut resp = (StatusCode::OK, body).into_response();
            if let Ok(v) = header::HeaderValue::from_str(&format!(
                "multipart/mixed; boundary={}",
                wire::BOUNDARY
            )) {
                resp.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            resp
        }
        Err(r) => refused(r),
    }
}

async fn keyward_enroll(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        wire::check_media_type(
            headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
            KEYWARD_REQUEST,
        )?;
        let bytes = read_limited(&state, &headers, body).await?;
        on_token(&state, move |ch, dir| {
            node::process_request(ch, dir, &bytes).map_err(|e| node::refusal(&e))
        })
        .await
    }
    .await;
    match result {
        Ok(reply) => {
            let mut resp = (StatusCode::OK, reply).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static(KEYWARD_REPLY),
            );
            resp
        }
        Err(r) => refused(r),
    }
}

async fn simplereenroll(
    State(state): State<AppState>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let result = async {
        let cert = peer.0.ok_or_else(|| {
            Refusal::unauthorized(
                "simplereenroll needs a TLS client certificate: your current signing certificate and its key",
            )
        })?;
        let csr = read_csr(&state, &headers, body).await?;
        let cert = on_token(&state, move |ch, dir| {
            node::simple_reenroll(ch, dir, &cert, &csr).map_err(|e| node::refusal(&e))
        })
        .await?;
        wire::certs_only(&[cert])
    }
    .await;
    match result {
        Ok(der) => answer(wire::CERTS_ONLY, wire::encode_body(&der)),
        Err(r) => refused(r),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Failed accepts wait 100 ms, doubling to 1 s, and are logged at most once a second;
    /// an accepted connection starts over.
    #[test]
    fn accept_failures_back_off_and_are_logged_once_a_second() {
        let mut b = AcceptBackoff::default();
        let t0 = Instant::now();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(b.failed(t0), (ms(100), Some(0)));
        assert_eq!(b.failed(t0 + ms(100)), (ms(200), None));
        assert_eq!(b.failed(t0 + ms(300)), (ms(400), None));
        assert_eq!(b.failed(t0 + ms(700)), (ms(800), None));
        assert_eq!(b.failed(t0 + ms(1500)), (ms(1000), Some(3)));
        assert_eq!(b.failed(t0 + ms(2000)), (ms(1000), None));
        b.accepted();
        assert_eq!(b.failed(t0 + ms(2600)), (ms(100), Some(1)));
    }
}
