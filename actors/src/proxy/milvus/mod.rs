//! The Milvus-compatible gRPC API (`milvus.proto.milvus.MilvusService`), so existing pymilvus
//! code works unchanged. It runs inside the proxy role (tonic on the proxy's arbiter) and calls
//! the same code paths as the native NATS API: no extra hop.
//!
//! Conventions (as Milvus): application errors travel in `common.Status` with gRPC OK (see
//! [`convert::status_of`] for the codes); methods outside the subset answer UNIMPLEMENTED;
//! authentication failures are gRPC UNAUTHENTICATED. Only the `default` database exists.

mod convert;
mod service;

use std::collections::HashSet;
use std::sync::Arc;

use base64::Engine;
use quiver_runtime::{Error, Result};
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
    let listener = bind(&addr).await?;
    tracing::info!(%addr, "Milvus gRPC API listening");
    let credentials = Arc::new(proxy.node.shared.config.proxy.credentials.iter().cloned().collect::<HashSet<_>>());
    let limits = proxy.node.shared.config.limits.clone();
    let svc = MilvusServiceServer::new(service::MilvusApi::new(proxy))
        .max_decoding_message_size(limits.grpc_max_message_bytes)
        .max_encoding_message_size(limits.grpc_max_message_bytes);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, move |req: tonic::Request<()>| {
        authenticate(&credentials, &req)?;
        Ok(req)
    });
    let incoming = tokio_stream_listener(listener);
    // One limit for the whole API, not per connection: a request beyond it is refused at once
    // with RESOURCE_EXHAUSTED (load shedding) rather than queued.
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .load_shed(true)
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limits.grpc_max_concurrent_requests))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop.await;
        })
        .await
        .map_err(|e| Error::Unavailable(format!("Milvus gRPC API on {addr} failed: {e}")))
}

/// Binds, retrying briefly: a restarted proxy may find its previous listener still closing.
async fn bind(addr: &str) -> Result<tokio::net::TcpListener> {
    let mut last = None;
    for _ in 0..20 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let e = last.map(|e| e.to_string()).unwrap_or_default();
    Err(Error::Config(format!("cannot listen on {addr} for the Milvus gRPC API (proxy.grpc_port): {e}")))
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

/// Checks the `authorization` metadata (base64 of "user:password" or of a token, as pymilvus
/// sends it) when credentials are configured.
fn authenticate(credentials: &HashSet<String>, req: &tonic::Request<()>) -> Result<(), tonic::Status> {
    if credentials.is_empty() {
        return Ok(());
    }
    let denied =
        || tonic::Status::unauthenticated("auth check failure, please check username and password are correct");
    let header = req.metadata().get("authorization").ok_or_else(denied)?;
    let text = header.to_str().map_err(|_| denied())?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| denied())?;
    let given = String::from_utf8(decoded).map_err(|_| denied())?;
    if credentials.contains(&given) {
        Ok(())
    } else {
        Err(denied())
    }
}
