//! A small OTLP/gRPC trace collector (`opentelemetry-proto`'s `TraceService`) for the tracing
//! test, which checks the spans Quiver's processes export, and the tracing-overhead benchmark,
//! which only counts them (as a collector decodes every batch, so does this).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};

/// One span as received, with the process that sent it (`service.instance.id`).
#[derive(Debug, Clone)]
pub struct Received {
    pub process: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent: String,
    pub name: String,
    pub attributes: HashMap<String, String>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
}

/// A running collector: keeps the spans exported to it (or only counts them).
#[derive(Clone)]
pub struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
    count: Arc<AtomicU64>,
    keep: bool,
    addr: SocketAddr,
}

impl Collector {
    /// Starts a collector on a free loopback port on the current tokio runtime; `keep`:
    /// whether spans are kept (else only counted).
    pub async fn start(keep: bool) -> std::io::Result<Collector> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let collector = Collector { spans: Arc::default(), count: Arc::new(AtomicU64::new(0)), keep, addr };
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let accepted = listener.accept().await.map(|(stream, _)| stream);
            Some((accepted, listener))
        });
        let server = tonic::transport::Server::builder().add_service(TraceServiceServer::new(collector.clone()));
        tokio::spawn(server.serve_with_incoming(incoming));
        Ok(collector)
    }

    /// Its endpoint, for `tracing.endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Spans received so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Every span kept so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The kept spans of one trace (hex id).
    pub fn trace(&self, trace_id: &str) -> Vec<Received> {
        self.spans().into_iter().filter(|s| s.trace_id == trace_id).collect()
    }
}

fn text(kv: &KeyValue) -> String {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for batch in request.into_inner().resource_spans {
            let process = batch
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.instance.id")
                .map(text)
                .unwrap_or_default();
            for span in batch.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received {
                    process: process.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    attributes: span.attributes.iter().map(|kv| (kv.key.clone(), text(kv))).collect(),
                    status_code: span.status.map_or(0, |s| s.code),
                });
            }
        }
        self.count.fetch_add(received.len() as u64, Ordering::Relaxed);
        if self.keep {
            if let Ok(mut kept) = self.spans.lock() {
                kept.extend(received);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}
