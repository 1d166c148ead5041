//! The HTTP admin API of a proxy (`proxy.http_host`:`proxy.http_port`, JSON in and out): an
//! adapter over the same typed proxy operations as the NATS API, with no product logic of its
//! own (the coordinator validates scale requests, as it does for `api.scale`).
//!
//! ```text
//!   GET   /v1/roles          every scalable role's RoleScaling       (Proxy::scaling)
//!   GET   /v1/roles/{role}   one role's RoleScaling
//!   PATCH /v1/roles/{role}   {"replicas": N, "cpu_millis": C, "memory_mb": M} -> ScaleReply
//!                                                                    (Proxy::scale; any of them)
//!   GET   /v1/status         ClusterStatus                           (Proxy::status)
//!   GET   /v1/events         ClusterEvents                           (Proxy::events)
//!   GET   /v1/collections    each collection's replica groups, shard leaders and segments
//!   GET   /v1/plugins        the plugin catalog: versions, active choices, what nodes run
//!   GET   /v1/searches/slow  this proxy's last slow searches, step by step (slow.rs)
//!   GET   /console           the web console (console/), which reads the endpoints above
//!   GET   /v1/autoscaling    AutoscaleStatus                         (Proxy::autoscaling)
//!   PATCH /v1/autoscaling/{role} {"min_memory_mb": A, "max_memory_mb": B, "reset": false}
//!                                                  -> AutoscaleStatus (Proxy::autoscale)
//! ```
//!
//! Errors are `{"error": {"code": "...", "message": "..."}}` with a status chosen by the
//! error's type ([`ApiError::of`]). Callers authenticate as for the Milvus gRPC API (the same
//! [`Gate`]): `Authorization: Bearer <user:password or token>`; every principal may read, only
//! admin may scale. With `tls.grpc_cert_file` the API is served over HTTPS with the gRPC
//! certificate (and client verification with `tls.grpc_client_ca_file`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use quiver_runtime::bus::RequestContext;
use quiver_runtime::config::TlsConfig;
use quiver_runtime::{security, Error, Result};
use quiver_schemas::protocol::access::Principal;
use quiver_schemas::protocol::coord;
use quiver_schemas::{AutoscaleRequest, Empty, NodeSize, ScaleRequest};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::rustls;

use super::milvus::{bind, credentials_hint, Gate};
use super::Proxy;

/// The largest request body accepted (a scale request is a few bytes).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Requests served at once; more wait (an admin API sees a handful of callers).
const MAX_CONCURRENT: usize = 64;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share.
struct Admin {
    proxy: Arc<Proxy>,
    gate: Gate,
}

/// Serves the admin API on `addr` until `stop` fires (the proxy role drains, stops or restarts);
/// requests already running are finished first.
pub async fn serve(proxy: Arc<Proxy>, addr: String, stop: oneshot::Receiver<()>) -> Result<()> {
    let config = proxy.node.shared.config.clone();
    let gate = Gate::new(security::grpc_credentials(&config)?, credentials_hint(&config));
    let authenticated = !gate.is_open();
    let tls = server_tls(&config.tls)?;
    let listener = bind(&addr, "the HTTP admin API (proxy.http_port)").await?;
    let local = listener.local_addr()?;
    let app = router(Arc::new(Admin { proxy, gate }));
    let stopped = async {
        let _ = stop.await;
    };
    let failed = |e: std::io::Error| Error::Unavailable(format!("the HTTP admin API on {addr} failed: {e}"));
    match tls {
        Some(tls) => {
            tracing::info!(%addr, tls = true, authenticated, "HTTP admin API listening (https)");
            let listener = TlsListener::start(listener, tls, local);
            axum::serve(listener, app).with_graceful_shutdown(stopped).await.map_err(failed)
        }
        None => {
            tracing::info!(%addr, tls = false, authenticated, "HTTP admin API listening (plain http)");
            axum::serve(listener, app).with_graceful_shutdown(stopped).await.map_err(failed)
        }
    }
}

fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route("/v1/roles", get(roles))
        .route("/v1/roles/{role}", get(role).patch(scale))
        .route("/v1/status", get(status))
        .route("/v1/events", get(events))
        .route("/v1/autoscaling", get(autoscaling))
        .route("/v1/autoscaling/{role}", axum::routing::patch(autoscale))
        .route("/v1/collections", get(collections))
        .route("/v1/plugins", get(plugins))
        .route("/v1/searches/slow", get(slow_searches))
        .route("/", get(console_home))
        .route("/console", get(console_page))
        .route("/console/console.js", get(console_script))
        .route("/console/console.css", get(console_style))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower::limit::ConcurrencyLimitLayer::new(MAX_CONCURRENT))
        .with_state(admin)
}

/// The body of `PATCH /v1/roles/{role}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    replicas: Option<u32>,
    cpu_millis: Option<u32>,
    memory_mb: Option<u64>,
}

impl ScaleBody {
    fn request(self, role: String) -> Result<ScaleRequest, ApiError> {
        if self.replicas.is_none() && self.cpu_millis.is_none() && self.memory_mb.is_none() {
            return Err(ApiError::invalid(
                "request body: give \"replicas\", a size (\"cpu_millis\" or \"memory_mb\"), or both; for example \
                 {\"replicas\": 3} or {\"memory_mb\": 8192}"
                    .into(),
            ));
        }
        let memory_bytes = self
            .memory_mb
            .unwrap_or(0)
            .checked_mul(1 << 20)
            .ok_or_else(|| ApiError::invalid(format!("memory_mb {} is too large", self.memory_mb.unwrap_or(0))))?;
        Ok(ScaleRequest {
            role,
            replicas: self.replicas.unwrap_or(0),
            size: NodeSize { cpu_millis: self.cpu_millis.unwrap_or(0), memory_bytes },
        })
    }
}

/// The body of `PATCH /v1/autoscaling/{role}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoscaleBody {
    #[serde(default)]
    min_memory_mb: u64,
    #[serde(default)]
    max_memory_mb: u64,
    #[serde(default)]
    reset: bool,
}

/// Whether a request reads or changes the cluster (only admin may change it).
#[derive(Clone, Copy, PartialEq)]
enum Access {
    Read,
    Write,
}

impl Admin {
    /// The caller's principal, from `Authorization: Bearer <credential>`; refuses a missing or
    /// wrong credential (401) and a principal that may not make a `Write` request (403).
    fn admit(&self, headers: &HeaderMap, access: Access) -> Result<Principal, ApiError> {
        if self.gate.is_open() {
            return Ok(Principal::Admin);
        }
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(format!(
                "no credentials given and this server requires them: send `Authorization: Bearer \
                 <user:password>`; {}",
                self.gate.hint()
            )));
        };
        let wrong = || {
            ApiError::unauthenticated(format!(
                "the credentials are wrong: send `Authorization: Bearer <user:password>`; {}",
                self.gate.hint()
            ))
        };
        let token = bearer_token(value.as_bytes()).ok_or_else(wrong)?;
        let principal = self.gate.principal_of(token).ok_or_else(wrong)?;
        if access == Access::Write && !principal.is_admin() {
            return Err(ApiError {
                status: StatusCode::FORBIDDEN,
                code: "permission_denied",
                message: format!(
                    "the {} principal may read the admin API but not scale: use the admin credentials \
                     (admin.credentials)",
                    principal.user()
                ),
            });
        }
        Ok(principal)
    }
}

/// The credential of an `Authorization: Bearer <credential>` header value (scheme matched
/// without regard to case, as RFC 9110 says); None for any other form.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = value.get(7..)?.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Calls to the coordinator take the bus' default timeout; a caller that gives up closes the
/// connection, which drops the handler.
fn context() -> RequestContext {
    RequestContext::background()
}

async fn roles(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let scaling = admin.proxy.scaling(&context()).await.map_err(ApiError::of)?;
    Ok(json(StatusCode::OK, &scaling.roles))
}

async fn role(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let Path(name) = path.map_err(ApiError::path)?;
    let scaling = admin.proxy.scaling(&context()).await.map_err(ApiError::of)?;
    let known: Vec<&str> = scaling.roles.iter().map(|r| r.role.as_str()).collect();
    match scaling.roles.iter().find(|r| r.role.as_str() == name) {
        Some(r) => Ok(json(StatusCode::OK, r)),
        None => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: format!("no scalable role {name:?}: the roles that scale are {}", known.join(", ")),
        }),
    }
}

async fn scale(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Write)?;
    let Path(role) = path.map_err(ApiError::path)?;
    let body = body.map_err(ApiError::body)?;
    let body: ScaleBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("request body: {e}; send a JSON object such as {{\"replicas\": 3}}")))?;
    let reply = admin.proxy.scale(&body.request(role)?, &context()).await.map_err(ApiError::of)?;
    Ok(json(StatusCode::OK, &reply))
}

async fn autoscaling(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let status = admin.proxy.autoscaling(&context()).await.map_err(ApiError::of)?;
    Ok(json(StatusCode::OK, &status))
}

async fn autoscale(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Write)?;
    let Path(role) = path.map_err(ApiError::path)?;
    let body = body.map_err(ApiError::body)?;
    let AutoscaleBody { min_memory_mb, max_memory_mb, reset } = serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(format!(
            "request body: {e}; send a JSON object such as {{\"min_memory_mb\": 4096, \"max_memory_mb\": 16384}}"
        ))
    })?;
    let mb = |v: u64| v.checked_mul(1 << 20).ok_or_else(|| ApiError::invalid(format!("{v} MiB is too large")));
    let req =
        AutoscaleRequest { role, min_memory_bytes: mb(min_memory_mb)?, max_memory_bytes: mb(max_memory_mb)?, reset };
    let status = admin.proxy.autoscale(&req, &context()).await.map_err(ApiError::of)?;
    Ok(json(StatusCode::OK, &status))
}

async fn status(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let status = admin.proxy.status(&context()).await.map_err(ApiError::of)?;
    Ok(json(StatusCode::OK, &status))
}

async fn events(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let events = admin.proxy.events(&context()).await.map_err(ApiError::of)?;
    Ok(json(StatusCode::OK, &events))
}

/// Collections listed by `GET /v1/collections` at most (each costs a layout lookup).
const MAX_COLLECTIONS_SHOWN: usize = 200;

/// One collection as `GET /v1/collections` shows it.
#[derive(Serialize)]
struct CollectionView {
    name: String,
    released: bool,
    /// Layout version.
    version: u64,
    rows: u64,
    segments: usize,
    replicas: Vec<quiver_schemas::ReplicaGroup>,
    /// Each shard's leader per replica group.
    shards: Vec<quiver_schemas::ShardPlacement>,
    /// Sealed segments each query node serves.
    segments_per_node: std::collections::BTreeMap<String, usize>,
}

#[derive(Serialize)]
struct Collections {
    collections: Vec<CollectionView>,
    /// Collections not shown (beyond the first MAX_COLLECTIONS_SHOWN).
    more: usize,
    /// Collections whose layout could not be read, and why.
    notes: Vec<String>,
}

async fn collections(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let ctx = context();
    let names = admin.proxy.forward::<coord::ListCollections>(&Empty {}, &ctx).await.map_err(ApiError::of)?.names;
    let more = names.len().saturating_sub(MAX_COLLECTIONS_SHOWN);
    // The proxy's cached layouts (refreshed every proxy.distribution_refresh and on every
    // change event): an open console costs the coordinator nothing per refresh.
    let shown = names.iter().take(MAX_COLLECTIONS_SHOWN);
    let layouts = futures::future::join_all(shown.map(|name| admin.proxy.distribution(name, &ctx))).await;
    let mut out = Collections { collections: Vec::new(), more, notes: Vec::new() };
    for (name, layout) in names.iter().zip(layouts) {
        match layout {
            Ok(d) => {
                let mut segments_per_node = std::collections::BTreeMap::new();
                for placement in &d.segments {
                    for node in &placement.nodes {
                        *segments_per_node.entry(node.clone()).or_insert(0) += 1;
                    }
                }
                out.collections.push(CollectionView {
                    name: name.clone(),
                    released: d.released,
                    version: d.version,
                    rows: d.segments.iter().map(|s| s.segment.rows).sum(),
                    segments: d.segments.len(),
                    replicas: d.replicas.clone(),
                    shards: d.shards.clone(),
                    segments_per_node,
                });
            }
            // Dropped since it was listed, or not served: said, not fatal to the page.
            Err(e) => out.notes.push(format!("{name}: {e}")),
        }
    }
    Ok(json(StatusCode::OK, &out))
}

async fn plugins(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    let report = admin.proxy.forward::<coord::PluginList>(&Empty {}, &context()).await.map_err(ApiError::of)?;
    let listing: serde_json::Value =
        serde_json::from_str(&report.json).map_err(|e| ApiError::of(Error::internal(e)))?;
    Ok(json(StatusCode::OK, &listing))
}

async fn slow_searches(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin.admit(&headers, Access::Read)?;
    #[derive(Serialize)]
    struct Slow {
        /// The proxy that served them (each proxy keeps its own).
        proxy: String,
        threshold_ms: f64,
        searches: Vec<super::slow::SlowSearch>,
    }
    let slow = Slow {
        proxy: admin.proxy.node.id.clone(),
        threshold_ms: super::slow::ms(admin.proxy.node.shared.config.tracing.slow_search),
        searches: admin.proxy.slow.list(),
    };
    Ok(json(StatusCode::OK, &slow))
}

/// The console's files: static, holding no data (the page reads the API with the caller's
/// credentials), so they are served to anyone.
const CONSOLE_HTML: &str = include_str!("console/index.html");
const CONSOLE_JS: &str = include_str!("console/console.js");
const CONSOLE_CSS: &str = include_str!("console/console.css");

fn console_file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"),
    );
    response
}

async fn console_home() -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, HeaderValue::from_static("/console"));
    response
}

async fn console_page() -> Response {
    console_file("text/html; charset=utf-8", CONSOLE_HTML)
}

async fn console_script() -> Response {
    console_file("text/javascript; charset=utf-8", CONSOLE_JS)
}

async fn console_style() -> Response {
    console_file("text/css; charset=utf-8", CONSOLE_CSS)
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        code: "not_found",
        message: "no such endpoint: the admin API serves GET /v1/roles, GET and PATCH /v1/roles/{role}, \
                  GET /v1/status, /v1/events, /v1/collections, /v1/plugins, /v1/searches/slow, GET and \
                  PATCH /v1/autoscaling[/{role}], and the web console at /console (docs/scaling.md, \
                  docs/observability.md)"
            .into(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        code: "method_not_allowed",
        message: "method not allowed here: /v1/roles/{role} takes GET and PATCH, the other endpoints GET \
                  (docs/scaling.md)"
            .into(),
    }
}

/// `value` as a JSON response.
fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
        }
        Err(e) => ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: format!("cannot encode the answer as JSON: {e}"),
        }
        .into_response(),
    }
}

/// An error answer: `{"error": {"code": ..., "message": ...}}` with its HTTP status.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    fn invalid(message: String) -> ApiError {
        ApiError { status: StatusCode::BAD_REQUEST, code: "invalid_argument", message }
    }

    fn unauthenticated(message: String) -> ApiError {
        ApiError { status: StatusCode::UNAUTHORIZED, code: "unauthenticated", message }
    }

    fn path(e: PathRejection) -> ApiError {
        ApiError::invalid(format!("request path: {}", e.body_text()))
    }

    fn body(e: BytesRejection) -> ApiError {
        let status = e.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError {
                status,
                code: "payload_too_large",
                message: format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
            };
        }
        ApiError::invalid(format!("request body: {}", e.body_text()))
    }

    /// The answer to an operation's error, by the error's type (never its text).
    fn of(e: Error) -> ApiError {
        let (status, code) = match &e {
            Error::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            Error::CollectionNotFound(_) | Error::IndexNotFound(_) | Error::NotFound(_) => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            Error::NotLoaded(_) => (StatusCode::CONFLICT, "failed_precondition"),
            Error::AlreadyExists(_) => (StatusCode::CONFLICT, "already_exists"),
            // The coordinator is down, not ready, busy or did not answer in time: retry later.
            Error::Unavailable(_) | Error::NotServed(_) | Error::Stale(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            Error::Timeout { .. } | Error::DeadlineExceeded(_) => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            Error::ResourceExhausted(_) => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            // The HTTP caller sends no bus messages: a malformed one is a reply from inside.
            Error::Decode(_) | Error::Internal(_) | Error::Config(_) | Error::ObjectStore(_) | Error::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError { status, code, message: e.to_string() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: &self.message } };
        let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":{\"code\":\"internal\"}}".to_vec());
        let mut response = (self.status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes)
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// The rustls settings of the API from `tls.grpc_*` (None: plain HTTP): the gRPC certificate,
/// and client certificates verified against `tls.grpc_client_ca_file` when it is set.
fn server_tls(tls: &TlsConfig) -> Result<Option<Arc<rustls::ServerConfig>>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    if !tls.grpc_enabled() {
        return Ok(None);
    }
    let bad = |key: &str, e: &dyn std::fmt::Display| {
        Error::Config(format!("{key}: cannot set up TLS for the HTTP admin API: {e}"))
    };
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Config(format!("{key}: cannot read {}: {e}", path.display())))
    };
    let certs = CertificateDer::pem_slice_iter(&read("tls.grpc_cert_file", &tls.grpc_cert_file)?)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad("tls.grpc_cert_file", &e))?;
    let key = PrivateKeyDer::from_pem_slice(&read("tls.grpc_key_file", &tls.grpc_key_file)?)
        .map_err(|e| bad("tls.grpc_key_file", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("tls.grpc_cert_file", &e))?;
    let builder = if tls.grpc_client_ca_file.as_os_str().is_empty() {
        builder.with_no_client_auth()
    } else {
        let key = "tls.grpc_client_ca_file";
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&read(key, &tls.grpc_client_ca_file)?) {
            roots.add(cert.map_err(|e| bad(key, &e))?).map_err(|e| bad(key, &e))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| bad(key, &e))?;
        builder.with_client_cert_verifier(verifier)
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| bad("tls.grpc_key_file", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Accepted connections after their TLS handshake. Handshakes run in tasks of their own (each
/// within [`HANDSHAKE_TIMEOUT`]), so a client that stalls one does not hold up the others.
struct TlsListener {
    ready: mpsc::Receiver<(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn start(listener: tokio::net::TcpListener, config: Arc<rustls::ServerConfig>, local: SocketAddr) -> TlsListener {
        let (tx, ready) = mpsc::channel(MAX_CONCURRENT);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    // The server stopped (the listener was dropped): stop accepting.
                    _ = tx.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::debug!(error = %e, "HTTP admin API: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "HTTP admin API: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "HTTP admin API: TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { ready, local }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task is gone (it only stops with the server): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_parsed_strictly() {
        assert_eq!(bearer_token(b"Bearer admin:pw"), Some(&b"admin:pw"[..]));
        assert_eq!(bearer_token(b"bearer  tok "), Some(&b"tok"[..]));
        for bad in [&b""[..], b"Bearer", b"Bearer ", b"Basic YWRtaW46cHc=", b"Bearerx tok", b"\xff\xfe"] {
            assert_eq!(bearer_token(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn errors_map_by_type() {
        let cases = [
            (Error::InvalidArgument("x".into()), StatusCode::BAD_REQUEST),
            (Error::NotFound("x".into()), StatusCode::NOT_FOUND),
            (Error::Unavailable("x".into()), StatusCode::SERVICE_UNAVAILABLE),
            (Error::Timeout { subject: "s".into(), timeout: Duration::from_secs(1) }, StatusCode::SERVICE_UNAVAILABLE),
            (Error::Internal("x".into()), StatusCode::INTERNAL_SERVER_ERROR),
        ];
        for (e, status) in cases {
            assert_eq!(ApiError::of(e).status, status);
        }
        let e = ApiError::invalid("bad".into()).into_response();
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = ApiError::unauthenticated("no".into()).into_response();
        assert_eq!(e.headers().get(header::WWW_AUTHENTICATE).unwrap(), "Bearer");
    }

    #[test]
    fn scale_bodies_are_checked() {
        let req = |body: &[u8]| serde_json::from_slice::<ScaleBody>(body).unwrap().request("querynode".into());
        assert_eq!(req(br#"{"replicas": 3}"#).unwrap().replicas, 3);
        let sized = req(br#"{"memory_mb": 8192, "cpu_millis": 2000}"#).unwrap();
        assert_eq!((sized.replicas, sized.size.cpu_millis, sized.size.memory_bytes), (0, 2000, 8 << 30));
        assert!(req(br#"{}"#).is_err(), "nothing asked");
        assert!(req(br#"{"memory_mb": 18446744073709551615}"#).is_err(), "overflows bytes");
        for bad in [&br#"{"replicas": -1}"#[..], br#"{"replicas": "3"}"#, br#"{"replicas": 3, "x": 1}"#, b"[", b""] {
            assert!(serde_json::from_slice::<ScaleBody>(bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_slice::<AutoscaleBody>(br#"{"min_memory_mb": 1, "x": 2}"#).is_err());
    }
}
