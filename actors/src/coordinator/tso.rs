//! Timestamp oracle and id allocator. Both persist a reservation ahead of what they hand out,
//! so a restarted coordinator never repeats a timestamp or an id.
//!
//! Nothing from a new reservation is handed out before its KV write is acknowledged, and
//! nats-server acknowledges only after an fsync (nats.sync_interval = always, the default), so
//! this holds across a power cut too. With a background sync interval a cut could lose the
//! latest reservation, and the restarted coordinator would hand out ids again (and timestamps,
//! if it restarts within the reservation window).

use quiver_runtime::{bus::now_ms, Error, JsonBucket, Result};
use quiver_schemas::{ts_compose, TS_LOGICAL_BITS};

use quiver_schemas::protocol::keys::{IDS as IDS_KEY, TSO as TSO_KEY};
/// How far ahead of the wall clock the TSO reserves (ms).
const TSO_WINDOW_MS: u64 = 3_000;
/// How many ids are reserved per KV write.
const ID_BLOCK: u64 = 100_000;
/// Most timestamps one request may take: well within one millisecond's logical space, so a
/// range never spills into the physical bits.
pub const MAX_TS_PER_ALLOC: u64 = 4096;
/// Most ids one request may take (an insert takes one per row).
pub const MAX_IDS_PER_ALLOC: u64 = 1 << 24;

fn check_count(count: u64, max: u64, what: &str) -> Result<()> {
    if count == 0 || count > max {
        return Err(Error::InvalidArgument(format!("cannot allocate {count} {what}: ask for 1 to {max} at a time")));
    }
    Ok(())
}

pub struct Tso {
    physical: u64,
    logical: u64,
    reserved_until: u64,
}

impl Tso {
    pub async fn load(meta: &JsonBucket) -> Result<Tso> {
        let saved: u64 = meta.get(TSO_KEY).await?.unwrap_or(0);
        Ok(Tso { physical: saved.max(now_ms()), logical: 0, reserved_until: saved })
    }

    /// `count` consecutive hybrid timestamps; returns the first.
    pub async fn alloc(&mut self, meta: &JsonBucket, count: u64) -> Result<u64> {
        check_count(count, MAX_TS_PER_ALLOC, "timestamps")?;
        let max_logical = 1u64 << TS_LOGICAL_BITS;
        let now = now_ms();
        if now > self.physical {
            self.physical = now;
            self.logical = 0;
        }
        if self.logical + count >= max_logical {
            self.physical += 1;
            self.logical = 0;
        }
        if self.physical >= self.reserved_until {
            let until = self.physical + TSO_WINDOW_MS;
            meta.put(TSO_KEY, &until).await?;
            self.reserved_until = until;
        }
        let ts = ts_compose(self.physical, self.logical);
        self.logical += count;
        Ok(ts)
    }
}

pub struct IdAllocator {
    next: u64,
    reserved_until: u64,
}

impl IdAllocator {
    pub async fn load(meta: &JsonBucket) -> Result<IdAllocator> {
        let saved: u64 = meta.get(IDS_KEY).await?.unwrap_or(1);
        Ok(IdAllocator { next: saved, reserved_until: saved })
    }

    /// `count` consecutive ids; returns the first.
    pub async fn alloc(&mut self, meta: &JsonBucket, count: u64) -> Result<u64> {
        check_count(count, MAX_IDS_PER_ALLOC, "ids")?;
        if self.next + count > self.reserved_until {
            let until = self.next + count + ID_BLOCK;
            meta.put(IDS_KEY, &until).await?;
            self.reserved_until = until;
        }
        let start = self.next;
        self.next += count;
        Ok(start)
    }
}
