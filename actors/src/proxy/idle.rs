//! The proxy's part in idling (MISSION S3.6; the coordinator's is `coordinator/idling.rs`):
//! every data request is noted (its time goes out in the heartbeat, `last_request_ms`), and
//! with `idling.enabled` a read first makes sure the cluster is awake: while it idles the proxy
//! asks the coordinator to wake it and holds the request until the compute nodes serve again
//! (up to `idling.wake_timeout`). Writes are not held: they land in the shards' JetStream logs,
//! which the data nodes consume once they are back; they only start the wake.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use quiver_runtime::bus::{now_ms, RequestContext};
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::coord;
use quiver_schemas::Empty;

use super::Proxy;

/// The last data request of this process (one proxy per process).
static LAST_REQUEST_MS: AtomicU64 = AtomicU64::new(0);

/// Reads and writes of this process's proxy under way (including those held during a wake).
static IN_FLIGHT: AtomicU64 = AtomicU64::new(0);

/// How long an "awake" answer of the coordinator is trusted.
const AWAKE_FOR: Duration = Duration::from_secs(1);

/// How often a held request asks whether the cluster serves again.
const POLL: Duration = Duration::from_millis(250);

/// When the last data request arrived at this process's proxy (0: none yet); now while one is
/// under way, so that a long request keeps the cluster awake.
pub fn last_request_ms() -> u64 {
    if IN_FLIGHT.load(Ordering::Relaxed) > 0 {
        return now_ms();
    }
    LAST_REQUEST_MS.load(Ordering::Relaxed)
}

/// Counts a request as under way until dropped, and notes its end as activity too.
struct Busy;

impl Busy {
    fn start() -> Busy {
        IN_FLIGHT.fetch_add(1, Ordering::Relaxed);
        Busy
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        LAST_REQUEST_MS.fetch_max(now_ms(), Ordering::Relaxed);
        IN_FLIGHT.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Until when (ms) the cluster is known to be awake.
#[derive(Default)]
pub(super) struct AwakeCache(AtomicU64);

impl Proxy {
    fn idling(&self) -> bool {
        self.node.shared.config.idling.enabled
    }

    /// Notes a data request.
    pub(super) fn touch(&self) {
        LAST_REQUEST_MS.fetch_max(now_ms(), Ordering::Relaxed);
    }

    /// Returns once the cluster serves: at once while it is known to be awake, else after
    /// waking it (`coord.wake`) and waiting for it, up to `idling.wake_timeout`.
    pub(super) async fn awake(&self, ctx: &RequestContext) -> Result<()> {
        if !self.idling() || now_ms() < self.awake_until.0.load(Ordering::Relaxed) {
            return Ok(());
        }
        let started = Instant::now();
        let limit = self.node.shared.config.idling.wake_timeout;
        // Reads must not depend on a live coordinator: when it does not answer, the read goes
        // ahead (and fails on its own if the cluster really idles).
        let mut status = match self.forward::<coord::Idling>(&Empty {}, ctx).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "idling state unknown (the coordinator did not answer); reading anyway");
                return Ok(());
            }
        };
        loop {
            if status.state == "awake" {
                self.awake_until.0.store(now_ms() + AWAKE_FOR.as_millis() as u64, Ordering::Relaxed);
                if started.elapsed() > POLL {
                    tracing::info!(
                        waited_ms = started.elapsed().as_millis() as u64,
                        "request held while the cluster woke"
                    );
                }
                return Ok(());
            }
            if started.elapsed() >= limit {
                metrics::counter!("quiver_proxy_wake_failures_total").increment(1);
                return Err(Error::Unavailable(format!(
                    "the cluster is waking from idle and did not serve within idling.wake_timeout ({limit:?}); retry \
                     (the wake goes on)"
                )));
            }
            status = self.forward::<coord::Wake>(&Empty {}, ctx).await.inspect_err(|_| {
                metrics::counter!("quiver_proxy_wake_failures_total").increment(1);
            })?;
            if status.state != "awake" {
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Runs the read `op` on `req` after [`Proxy::awake`]; when it fails as unavailable and the
    /// cluster turns out to have gone idle meanwhile, wakes it and runs it once more. With
    /// idling off it only notes the request (and `req` is not copied).
    pub(super) async fn read_awake<Q, T, F, Fut>(&self, ctx: &RequestContext, req: Q, op: F) -> Result<T>
    where
        Q: Clone,
        F: Fn(Q) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.touch();
        if !self.idling() {
            return op(req).await;
        }
        let _busy = Busy::start();
        self.awake(ctx).await?;
        match op(req.clone()).await {
            Err(Error::Unavailable(why)) => {
                self.awake_until.0.store(0, Ordering::Relaxed);
                match self.forward::<coord::Idling>(&Empty {}, ctx).await {
                    Ok(status) if status.state != "awake" => {}
                    _ => return Err(Error::Unavailable(why)),
                }
                self.awake(ctx).await?;
                op(req).await
            }
            other => other,
        }
    }

    /// Notes a write and, while the cluster idles, starts waking it (the write is not held).
    pub(super) async fn write_awake(&self, ctx: &RequestContext) {
        self.touch();
        if !self.idling() || now_ms() < self.awake_until.0.load(Ordering::Relaxed) {
            return;
        }
        match self.forward::<coord::Wake>(&Empty {}, ctx).await {
            Ok(s) if s.state == "awake" => {
                self.awake_until.0.store(now_ms() + AWAKE_FOR.as_millis() as u64, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("quiver_proxy_wake_failures_total").increment(1);
                tracing::debug!(error = %e, "could not ask the coordinator to wake the cluster")
            }
        }
    }

    pub(super) async fn search(
        &self,
        req: quiver_schemas::Search,
        ctx: &RequestContext,
    ) -> Result<quiver_schemas::SearchResults> {
        self.read_awake(ctx, req, |r| self.search_now(r, ctx)).await
    }

    pub(super) async fn get(
        &self,
        req: quiver_schemas::Get,
        ctx: &RequestContext,
    ) -> Result<quiver_schemas::GetResults> {
        self.read_awake(ctx, req, |r| self.get_now(r, ctx)).await
    }

    /// A get of rows in the partitions `names` only (none named: every loaded one).
    pub(super) async fn get_in(
        &self,
        req: quiver_schemas::Get,
        names: &[String],
        ctx: &RequestContext,
    ) -> Result<quiver_schemas::GetResults> {
        self.read_awake(ctx, req, |r| self.get_scoped(r, names, ctx)).await
    }

    pub(super) async fn query(
        &self,
        req: quiver_schemas::Query,
        ctx: &RequestContext,
    ) -> Result<quiver_schemas::QueryResults> {
        self.read_awake(ctx, req, |r| self.query_now(r, ctx)).await
    }
}
