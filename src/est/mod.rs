//! EST (RFC 7030): the authority online. [`wire`] is the protocol without I/O (parsed the same
//! way by the fuzz targets), [`node`] the authority's side of each endpoint (synchronous token
//! work through the authority's own functions and audit log), [`envelope`] the CMS
//! EnvelopedData a server-generated key travels in, [`server`] the HTTPS listener of
//! `keyward authority serve` and [`client_auth`] its check of TLS client certificates.

pub mod client;
pub mod client_auth;
pub mod envelope;
pub mod node;
pub mod server;
pub mod wire;

/// Errors of EST, serving or enrolling.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EstError {
    /// The node could not start.
    #[error("{0}")]
    Serve(#[from] server::ServeError),
    /// The client could not enroll.
    #[error("{0}")]
    Client(#[from] client::ClientError),
}

/// Test hook: `KEYWARD_FAULT=<point>` stops the process there at once, as a kill would (the
/// EST tests kill a node mid-request this way, before and after its commit).
pub fn kill_point(point: &str) {
    if std::env::var("KEYWARD_FAULT").is_ok_and(|v| v == point) {
        std::process::abort();
    }
}
