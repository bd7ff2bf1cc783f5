//! The HTTPS side of `keyward enroll --server URL`: one POST to the node, trusting only the
//! authority's CA certificate. hyper's HTTP/1.1 client over tokio-rustls (the same stack the
//! node serves with, so no second HTTP or TLS library is linked in), on a one-thread runtime.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, Request, Uri};
use der::Encode;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};

/// The most an answer may have (a reply with a long key history is tens of KiB).
const MAX_ANSWER: usize = 4 * 1024 * 1024;
/// How long one exchange may take (the node generates a key on its token).
const TIMEOUT: Duration = Duration::from_secs(300);

/// Errors of the EST client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL is not `https://HOST[:PORT][/PATH]`.
    #[error("--server {url:?} is not an https:// URL; pass the node's address, e.g. https://est.example.org:8443")]
    Url {
        /// What was given.
        url: String,
    },
    /// Connecting, TLS or HTTP failed.
    #[error("cannot reach the EST node at {url}: {reason}; check --server and that `keyward authority serve` runs there (its certificate must be issued by the CA in --authority-cert)")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node refused.
    #[error("the EST node refused ({status}): {reason}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The node's reason.
        reason: String,
    },
}

/// POSTs `body` to `base` + `path` and returns the answer's body; a status other than 200 is
/// [`ClientError::Refused`] with the node's reason.
pub fn post(
    base: &str,
    path: &str,
    ca: &x509_cert::Certificate,
    content_type: &str,
    body: Vec<u8>,
) -> Result<Vec<u8>, ClientError> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let uri: Uri = url
        .parse()
        .map_err(|_| ClientError::Url { url: base.into() })?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(ClientError::Url { url: base.into() });
    }
    let fail = |reason: String| ClientError::Connect {
        url: url.clone(),
        reason,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail(format!("no async runtime: {e}")))?;
    let exchange = exchange(&uri, ca, content_type, body);
    let (status, answer) = runtime
        .block_on(async { tokio::time::timeout(TIMEOUT, exchange).await })
        .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))?
        .map_err(fail)?;
    if status != 200 {
        return Err(ClientError::Refused {
            status,
            reason: String::from_utf8_lossy(&answer).trim().to_string(),
        });
    }
    Ok(answer)
}

fn tls_config(ca: &x509_cert::Certificate) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let der = ca
        .to_der()
        .map_err(|e| format!("the CA certificate: {e}"))?;
    roots
        .add(CertificateDer::from(der))
        .map_err(|e| format!("the CA certificate: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

async fn exchange(
    uri: &Uri,
    ca: &x509_cert::Certificate,
    content_type: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connecting: {e}"))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| format!("server name: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(ca)?));
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            log::debug!("EST connection ended: {e}");
        }
    });
    let authority = match uri.port_u16() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let request = Request::post(uri.path())
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(bytes_of(body)))
        .map_err(|e| format!("the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let status = response.status().as_u16();
    let answer = Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes()
        .to_vec();
    Ok((status, answer))
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}
