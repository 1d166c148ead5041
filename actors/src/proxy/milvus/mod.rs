//! The Milvus-compatible gRPC API (`milvus.proto.milvus.MilvusService`), so existing pymilvus
//! code works unchanged. It runs inside the proxy role (tonic on the proxy's arbiter) and calls
//! the same code paths as the native NATS API: no extra hop.
//!
//! Conventions (as Milvus): application errors travel in `common.Status` with gRPC OK (see
//! [`convert::status_of`] for the codes); methods outside the subset answer UNIMPLEMENTED;
//! authentication failures are gRPC UNAUTHENTICATED, calls the caller's principal may not make
//! PERMISSION_DENIED. Only the `default` database exists. With `tls.grpc_*` the API is served
//! over TLS only.

pub(crate) mod convert;
mod indexes;
mod segments;
mod service;

use std::sync::Arc;

use base64::Engine;
use quiver_runtime::config::TlsConfig;
use quiver_runtime::{security, Error, Result};
use quiver_schemas::protocol::access::{self, Principal};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::oneshot;

use super::Proxy;

/// Code generated from `schemas/proto/milvus` (the served subset of milvus-proto 2.5).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod proto {
    pub mod common {
        tonic::include_proto!("milvus.proto.common");
    }
    pub mod schema {
        tonic::include_proto!("milvus.proto.schema");
    }
    pub mod msg {
        tonic::include_proto!("milvus.proto.msg");
    }
    pub mod milvus {
        tonic::include_proto!("milvus.proto.milvus");
    }
}

use proto::milvus::milvus_service_server::MilvusServiceServer;

/// Serves the Milvus API on `addr` until `stop` fires (the proxy role stopped or restarts).
pub async fn serve(proxy: Arc<Proxy>, addr: String, stop: oneshot::Receiver<()>) -> Result<()> {
    let config = proxy.node.shared.config.clone();
    let gate = Arc::new(Gate::new(security::grpc_credentials(&config)?, credentials_hint(&config)));
    let mut server = tonic::transport::Server::builder().tcp_nodelay(true).trace_fn(call_span);
    if let Some(tls) = server_tls(&config.tls)? {
        server = server
            .tls_config(tls)
            .map_err(|e| Error::Config(format!("tls.grpc_*: cannot set up TLS for the Milvus gRPC API: {e}")))?;
    }
    let listener = bind(&addr, "the Milvus gRPC API (proxy.grpc_port)").await?;
    tracing::info!(%addr, tls = config.tls.grpc_enabled(), authenticated = !gate.is_open(), "Milvus gRPC API listening");
    let limits = config.limits.clone();
    let svc = MilvusServiceServer::new(service::MilvusApi::new(proxy))
        .max_decoding_message_size(limits.grpc_max_message_bytes)
        .max_encoding_message_size(limits.grpc_max_message_bytes);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, move |mut req: tonic::Request<()>| {
        let principal = gate.admit(&req)?;
        req.extensions_mut().insert(principal);
        // With tracing on, a call without a trace context gets an unsampled one, which its
        // calls to nodes carry when it is not traced (a traced call's spans send their own).
        let traceparent = req.metadata().get("traceparent").and_then(|v| v.to_str().ok());
        if let Some(unsampled) = quiver_runtime::trace::untraced_fallback(traceparent) {
            if let Ok(value) = unsampled.parse() {
                req.metadata_mut().insert("traceparent", value);
            }
        }
        Ok(req)
    });
    let incoming = tokio_stream_listener(listener);
    // One limit for the whole API, not per connection: a request beyond it is refused at once
    // with RESOURCE_EXHAUSTED (load shedding) rather than queued.
    server
        .load_shed(true)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limits.grpc_max_concurrent_requests))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop.await;
        })
        .await
        .map_err(|e| Error::Unavailable(format!("Milvus gRPC API on {addr} failed: {e}")))
}

/// Binds `what` (the API and its config key, for the error), retrying briefly: a restarted
/// proxy may find its previous listener still closing.
pub(super) async fn bind(addr: &str, what: &str) -> Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(Error::Config(format!("cannot listen on {addr} for {what}: {e}")))
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let next = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((next, l))
    })
}

/// The TLS settings of the API, read from `tls.grpc_*` (None: plaintext).
fn server_tls(tls: &TlsConfig) -> Result<Option<tonic::transport::ServerTlsConfig>> {
    if !tls.grpc_enabled() {
        return Ok(None);
    }
    let read = |key: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| Error::Config(format!("{key}: cannot read {}: {e}", path.display())))
    };
    let identity = tonic::transport::Identity::from_pem(
        read("tls.grpc_cert_file", &tls.grpc_cert_file)?,
        read("tls.grpc_key_file", &tls.grpc_key_file)?,
    );
    let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
    if !tls.grpc_client_ca_file.as_os_str().is_empty() {
        let ca = read("tls.grpc_client_ca_file", &tls.grpc_client_ca_file)?;
        config = config.client_ca_root(tonic::transport::Certificate::from_pem(ca));
    }
    Ok(Some(config))
}

/// Where a refused caller finds credentials, for the UNAUTHENTICATED message. It names the
/// files but not the server's paths: the caller is not authenticated yet (the server logs the
/// absolute paths at start-up).
pub(super) fn credentials_hint(config: &quiver_runtime::Config) -> String {
    if config.security.enabled {
        "connect with token=\"admin:<password>\" (or \"app:<password>\"): the content of the \
         admin.credentials (app.credentials) file the server generated in its credentials directory, \
         <data_dir>/credentials by default (./quiver-data/credentials for a `quiver standalone` \
         started there; the server logs the path at start-up)"
            .to_string()
    } else {
        "connect with one of the server's proxy.credentials (token=\"user:password\" or an API token)".to_string()
    }
}

/// Who may call the API: the accepted credentials (SHA-256 digests, compared in constant time)
/// and the principal each grants. No credentials: the API is open and every caller is admin,
/// as before authentication existed.
pub(super) struct Gate {
    accepted: Vec<([u8; 32], Principal)>,
    /// Where to find credentials (see [`credentials_hint`]).
    hint: String,
}

impl Gate {
    pub(super) fn new(credentials: Vec<(String, Principal)>, hint: String) -> Gate {
        Gate { accepted: credentials.into_iter().map(|(c, p)| (digest(c.as_bytes()), p)).collect(), hint }
    }

    pub(super) fn is_open(&self) -> bool {
        self.accepted.is_empty()
    }

    /// Where a refused caller finds credentials.
    pub(super) fn hint(&self) -> &str {
        &self.hint
    }

    /// The principal `given` (a "user:password" pair or a token) grants, if any. Digests have
    /// one length, so the comparison takes the same time whatever was given, and every accepted
    /// credential is compared (no early exit on a match).
    pub(super) fn principal_of(&self, given: &[u8]) -> Option<Principal> {
        let given = digest(given);
        let mut principal = None;
        for (accepted, p) in &self.accepted {
            if bool::from(accepted.ct_eq(&given)) {
                principal = Some(*p);
            }
        }
        principal
    }

    /// Checks the `authorization` metadata (base64 of "user:password" or of a token, as
    /// pymilvus sends it) and answers the caller's principal.
    fn admit(&self, req: &tonic::Request<()>) -> Result<Principal, tonic::Status> {
        if self.is_open() {
            return Ok(Principal::Admin);
        }
        // Milvus' own wording first (what pymilvus users search for), then where to look.
        let denied = || {
            tonic::Status::unauthenticated(format!(
                "auth check failure, please check username and password are correct; {}",
                self.hint
            ))
        };
        let header = req.metadata().get("authorization").ok_or_else(|| {
            tonic::Status::unauthenticated(format!(
                "auth check failure: no credentials given and this server requires them; {}",
                self.hint
            ))
        })?;
        let text = header.to_str().map_err(|_| denied())?;
        let given = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| denied())?;
        self.principal_of(&given).ok_or_else(denied)
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Refuses API method `method` (a method name of [`access`]'s classification) to a caller whose
/// principal may not call it, with the status Milvus answers (`PERMISSION_DENIED`).
fn authorize<T>(req: &tonic::Request<T>, method: &str, privilege: &str) -> Result<(), tonic::Status> {
    // No principal: the request did not pass through the gate (not served that way).
    let principal = req.extensions().get::<Principal>().copied().unwrap_or(Principal::App);
    if access::is_admin_method(method) && !principal.is_admin() {
        return Err(tonic::Status::permission_denied(format!(
            "{privilege}: permission deny to {} in the `default` database",
            principal.user()
        )));
    }
    Ok(())
}

/// The server span of one Milvus API call (`milvus.Search`, ...), a child of the client's
/// span when it sends a W3C `traceparent` (a disabled span with tracing off).
fn call_span(req: &axum::http::Request<()>) -> tracing::Span {
    let traceparent = req.headers().get("traceparent").and_then(|v| v.to_str().ok());
    let quiver_runtime::trace::Sampling::Traced(parent) = quiver_runtime::trace::sampling(traceparent) else {
        return tracing::Span::none();
    };
    let method = req.uri().path().rsplit('/').next().unwrap_or_default();
    let span = tracing::debug_span!(
        "grpc",
        otel.name = %format_args!("milvus.{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.method = %method,
        otel.status_code = tracing::field::Empty,
        otel.status_message = tracing::field::Empty,
    );
    quiver_runtime::trace::set_remote_parent(&span, parent);
    span
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(token: Option<&str>) -> tonic::Request<()> {
        let mut req = tonic::Request::new(());
        if let Some(t) = token {
            let value = base64::engine::general_purpose::STANDARD.encode(t);
            req.metadata_mut().insert("authorization", value.parse().unwrap());
        }
        req
    }

    #[test]
    fn the_gate_maps_passwords_to_principals() {
        let open = Gate::new(Vec::new(), String::new());
        assert_eq!(open.admit(&request(None)).unwrap(), Principal::Admin);
        let hint = credentials_hint(&quiver_runtime::Config::default());
        let gate =
            Gate::new(vec![("admin:a1".into(), Principal::Admin), ("app:p1".into(), Principal::App)], hint.clone());
        let missing = gate.admit(&request(None)).unwrap_err();
        assert!(missing.message().contains("no credentials given"), "{}", missing.message());
        assert!(missing.message().contains("admin.credentials"), "{}", missing.message());
        let wrong = gate.admit(&request(Some("app:nope"))).unwrap_err();
        assert!(wrong.message().starts_with("auth check failure, please check username"), "{}", wrong.message());
        assert!(wrong.message().ends_with(&hint), "{}", wrong.message());
        assert_eq!(gate.admit(&request(Some("admin:a1"))).unwrap(), Principal::Admin);
        assert_eq!(gate.admit(&request(Some("app:p1"))).unwrap(), Principal::App);
        for bad in [None, Some("app:p"), Some("app:p1x"), Some("admin:p1"), Some("")] {
            assert_eq!(gate.admit(&request(bad)).unwrap_err().code(), tonic::Code::Unauthenticated, "{bad:?}");
        }
        let mut req = request(Some("app:p1"));
        req.extensions_mut().insert(Principal::App);
        let e = authorize(&req, "drop_collection", "PrivilegeDropCollection").unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(authorize(&req, "search", "PrivilegeSearch").is_ok());
        req.extensions_mut().insert(Principal::Admin);
        assert!(authorize(&req, "drop_collection", "PrivilegeDropCollection").is_ok());
    }
}
