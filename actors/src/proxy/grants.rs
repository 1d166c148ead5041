//! Timestamps and ids granted to this proxy in blocks, so that a write does not call the
//! coordinator each time, and writes go on while the coordinator fails over to a standby.
//!
//! The coordinator's allocators never hand out a value twice, across its restarts and
//! takeovers (each reservation is persisted before anything from it is handed out), so a block
//! is this proxy's alone, and a block allocated later starts above every earlier one. A block is
//! only ever replaced by a later one, so what one proxy hands out only goes up.
//!
//! - Ids are handed out until the block is used up; the next is fetched in the background once
//!   less than half of one is left (an insert larger than what is left waits for a block of its
//!   own size).
//! - Timestamps are refreshed in the background once the block is older than [`TS_FRESH`], so
//!   they stay within about that of the coordinator's clock; until the new block arrives, and
//!   for as long as the coordinator cannot be reached, the current one is used on.
//!
//! Values left in a block when the proxy stops are never used: ids and timestamps are unique and
//! increasing, not dense.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quiver_runtime::bus::{Bus, CallOptions, RequestContext};
use quiver_runtime::retry::{retry, Backoff};
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::coord;
use quiver_schemas::{Alloc, AllocRange};

/// Timestamps per block: one per write (at most what the coordinator gives at once).
pub const TS_BLOCK: u64 = 4096;
/// Ids per block (an insert takes one per row without its own keys).
pub const ID_BLOCK: u64 = 1 << 16;
/// Age after which a timestamp block is replaced by a fresh one (in the background).
pub const TS_FRESH: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Timestamps,
    Ids,
}

struct Range {
    next: u64,
    end: u64,
    granted: Instant,
}

struct State {
    current: Range,
    /// A later block fetched in the background, not yet in use.
    spare: Option<Range>,
    fetching: bool,
}

struct Pool {
    kind: Kind,
    block: u64,
    state: Mutex<State>,
    /// One foreground fetch at a time: requests that find the pool empty wait for it.
    fetch: tokio::sync::Mutex<()>,
}

/// The proxy's timestamp and id blocks.
pub struct Grants {
    bus: Bus,
    io: tokio::runtime::Handle,
    ts: Arc<Pool>,
    ids: Arc<Pool>,
}

impl Grants {
    pub fn new(bus: Bus, io: tokio::runtime::Handle) -> Grants {
        Grants { bus, io, ts: Pool::new(Kind::Timestamps, TS_BLOCK), ids: Pool::new(Kind::Ids, ID_BLOCK) }
    }

    /// One timestamp for a write.
    pub async fn timestamp(&self, ctx: &RequestContext) -> Result<u64> {
        self.take(&self.ts, 1, ctx).await
    }

    /// `n` consecutive ids; the first of them.
    pub async fn ids(&self, n: u64, ctx: &RequestContext) -> Result<u64> {
        self.take(&self.ids, n, ctx).await
    }

    async fn take(&self, pool: &Arc<Pool>, n: u64, ctx: &RequestContext) -> Result<u64> {
        loop {
            if let Some(start) = self.take_local(pool, n) {
                return Ok(start);
            }
            let _one = pool.fetch.lock().await;
            if let Some(start) = self.take_local(pool, n) {
                return Ok(start);
            }
            let opts = ctx.try_options(self.bus.default_timeout(), "allocating ids or timestamps")?;
            let range = fetch(&self.bus, pool.kind, n.max(pool.block), &opts, ctx).await?;
            pool.install(range, false);
        }
    }

    /// From the current block, if it has `n` left; starts a background refill when it runs low
    /// or (timestamps) grows old.
    fn take_local(&self, pool: &Arc<Pool>, n: u64) -> Option<u64> {
        let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        let left = st.current.end - st.current.next;
        // Timestamps move to a fresher block as soon as there is one; ids when this one is
        // used up.
        if pool.kind == Kind::Timestamps || left < n {
            if let Some(spare) = st.spare.take_if(|s| s.end - s.next >= n) {
                st.current = spare;
            }
        }
        if st.current.end - st.current.next < n {
            return None;
        }
        let start = st.current.next;
        st.current.next += n;
        let low = match pool.kind {
            Kind::Ids => st.current.end - st.current.next < pool.block / 2,
            Kind::Timestamps => st.current.granted.elapsed() >= TS_FRESH,
        };
        if low && st.spare.is_none() && !st.fetching {
            st.fetching = true;
            let (pool, bus) = (pool.clone(), self.bus.clone());
            self.io.spawn(async move {
                let ctx = RequestContext::with_timeout(bus.default_timeout());
                let opts = CallOptions { timeout: Some(bus.default_timeout()), ..Default::default() };
                match fetch(&bus, pool.kind, pool.block, &opts, &ctx).await {
                    Ok(range) => pool.install(range, true),
                    Err(e) => {
                        tracing::debug!(error = %e, "background refill of ids or timestamps failed; the current block goes on");
                        pool.state.lock().unwrap_or_else(|p| p.into_inner()).fetching = false;
                    }
                }
            });
        }
        Some(start)
    }
}

impl Pool {
    fn new(kind: Kind, block: u64) -> Arc<Pool> {
        let empty = Range { next: 0, end: 0, granted: Instant::now() };
        Arc::new(Pool {
            kind,
            block,
            state: Mutex::new(State { current: empty, spare: None, fetching: false }),
            fetch: tokio::sync::Mutex::new(()),
        })
    }

    /// Takes a newly granted block: as the spare (background) or the current one. A block that
    /// is not later than the current one (an older fetch finishing last) is dropped.
    fn install(&self, range: AllocRange, background: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if background {
            st.fetching = false;
        }
        let newest = st.spare.as_ref().map_or(st.current.end, |s| s.end);
        if range.start < newest {
            return;
        }
        let range = Range { next: range.start, end: range.start + range.count, granted: Instant::now() };
        if background {
            st.spare = Some(range);
        } else {
            st.spare = None;
            st.current = range;
        }
    }
}

/// A block from the coordinator. "Nothing serves" (a coordinator failing over to a standby) is
/// retried within the caller's deadline: the request was not delivered.
async fn fetch(bus: &Bus, kind: Kind, count: u64, opts: &CallOptions, ctx: &RequestContext) -> Result<AllocRange> {
    let req = Alloc { count };
    let range = call_coordinator(ctx, bus.default_timeout(), || async {
        match kind {
            Kind::Timestamps => bus.call::<coord::AllocTs>(&req, opts).await,
            Kind::Ids => bus.call::<coord::AllocIds>(&req, opts).await,
        }
    })
    .await?;
    if range.count < count {
        return Err(Error::Internal(format!("the coordinator granted {} of {count} values", range.count)));
    }
    Ok(range)
}

/// Calls the coordinator, again and again while nothing serves its subject (it is failing over
/// to a standby, or restarting), with a growing pause, for as long as `ctx` allows (`patience`
/// when it has no deadline).
pub async fn call_coordinator<T, F, Fut>(ctx: &RequestContext, patience: Duration, call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let backoff =
        Backoff::within(ctx.remaining().unwrap_or(patience), Duration::from_millis(20), Duration::from_millis(500));
    retry(backoff, |e| matches!(e, Error::NotServed(_)), call).await.map_err(|e| match e {
        Error::NotServed(e) => {
            Error::Unavailable(format!("{e}: no coordinator answered within the request's deadline"))
        }
        e => e,
    })
}
