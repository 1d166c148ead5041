//! Admission control: what a node checks before it takes on a request, so that no request
//! (or crowd of them) can exhaust the process. Limits on a request's own size live with its
//! validation; this module holds the process-wide ones.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Instant;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::telemetry;

/// How long a resident-memory reading is reused: reading `/proc/self/statm` costs a few
/// microseconds, too much for every request but nothing ten times a second.
const SAMPLE_EVERY_MS: u64 = 100;

/// Refuses new work while the process' resident memory is above its high-water mark
/// (`limits.memory_high_water_percentage` of `node.memory_limit_mb`, or of the machine).
pub struct MemoryGuard {
    high_water: u64,
    limit: u64,
    epoch: Instant,
    rss: AtomicU64,
    /// When `rss` was read, in ms since `epoch` + 1 (0: never).
    sampled: AtomicU64,
    /// Loads refused by [`MemoryGuard::reserve`] since the process started.
    refusals: AtomicU32,
    /// Above the high-water mark at the last [`MemoryGuard::mark_crossed`].
    over: AtomicBool,
}

impl MemoryGuard {
    pub fn new(config: &Config) -> MemoryGuard {
        let limit = match config.node.memory_limit_mb {
            0 => telemetry::machine_memory(),
            mb => mb.saturating_mul(1 << 20),
        };
        let pct = config.limits.memory_high_water_percentage;
        let high_water = if pct >= 100.0 || limit == 0 { u64::MAX } else { (limit as f64 * pct / 100.0) as u64 };
        MemoryGuard {
            high_water,
            limit,
            epoch: Instant::now(),
            rss: AtomicU64::new(0),
            sampled: AtomicU64::new(0),
            refusals: AtomicU32::new(0),
            over: AtomicBool::new(false),
        }
    }

    /// The memory budget: `node.memory_limit_mb` (the node's size), or the machine's memory.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether `bytes` more resident memory (data about to be loaded, on top of `pending` bytes
    /// accepted and not loaded yet) stay below the high-water mark of the budget
    /// (`limits.memory_high_water_percentage` of `node.memory_limit_mb`, the node's size): the
    /// rest of the budget is room for searches and transient buffers. When they do not, the
    /// refusal is counted as an out-of-memory event ([`MemoryGuard::refusals`], reported in
    /// the heartbeat for the autoscaler) and explained.
    pub fn reserve(&self, what: &str, bytes: u64, pending: u64) -> Result<()> {
        let ceiling = if self.high_water == u64::MAX { self.limit } else { self.high_water };
        let rss = telemetry::process_rss();
        let after = rss.saturating_add(pending).saturating_add(bytes);
        if after <= ceiling {
            return Ok(());
        }
        self.refusals.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("quiver_memory_refusals_total").increment(1);
        Err(Error::ResourceExhausted(format!(
            "{what} refused: it needs {} MiB more, which would take this process to {} MiB, over {} MiB \
             ({:.0}% of its memory budget of {} MiB: limits.memory_high_water_percentage, node.memory_limit_mb, \
             the node's size); give the role a larger size or more nodes",
            bytes.div_ceil(1 << 20),
            after >> 20,
            ceiling >> 20,
            ceiling as f64 * 100.0 / self.limit.max(1) as f64,
            self.limit >> 20
        )))
    }

    /// `Some((over, rss))` when resident memory (read at most every [`SAMPLE_EVERY_MS`])
    /// crossed the high-water mark since the last call, `over` saying which way; `None`
    /// otherwise and when there is no mark. For a node that must tell others at once.
    pub fn mark_crossed(&self) -> Option<(bool, u64)> {
        if self.high_water == u64::MAX {
            return None;
        }
        let rss = self.rss();
        let over = rss > self.high_water;
        (self.over.swap(over, Ordering::Relaxed) != over).then_some((over, rss))
    }

    /// Loads refused for memory since the process started.
    pub fn refusals(&self) -> u32 {
        self.refusals.load(Ordering::Relaxed)
    }

    /// The resident memory, read at most every [`SAMPLE_EVERY_MS`].
    fn rss(&self) -> u64 {
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let at = self.sampled.load(Ordering::Relaxed);
        if at == 0 || now.saturating_sub(at) >= SAMPLE_EVERY_MS {
            self.rss.store(telemetry::process_rss(), Ordering::Relaxed);
            self.sampled.store(now, Ordering::Relaxed);
        }
        self.rss.load(Ordering::Relaxed)
    }

    /// The resident memory when it is above `ceiling` (a refusal, counted); `None` under it and
    /// when there is no mark.
    fn over(&self, ceiling: u64) -> Option<u64> {
        if self.high_water == u64::MAX {
            return None;
        }
        let rss = self.rss();
        if rss <= ceiling {
            return None;
        }
        metrics::counter!("quiver_admission_refused_total", "reason" => "memory").increment(1);
        Some(rss)
    }

    /// `ResourceExhausted` while resident memory is above the high-water mark: for writes,
    /// which add to what the node holds. `what` names the refused work in the message.
    pub fn admit(&self, what: &str) -> Result<()> {
        let Some(rss) = self.over(self.high_water) else { return Ok(()) };
        Err(Error::ResourceExhausted(format!(
            "{what} refused: this process uses {} MiB, over its high-water mark of {} MiB ({:.0}% of {} MiB; \
             limits.memory_high_water_percentage, node.memory_limit_mb); retry later or add nodes",
            rss >> 20,
            self.high_water >> 20,
            self.high_water as f64 * 100.0 / self.limit.max(1) as f64,
            self.limit >> 20
        )))
    }

    /// `ResourceExhausted` while resident memory is above the whole budget: for reads
    /// (searches, queries, gets), which hold little once answered. The room between the
    /// high-water mark and the budget is theirs, since writes and loads stop at the mark: a
    /// node that is full keeps answering for what it holds. No mark, no refusal.
    pub fn admit_read(&self, what: &str) -> Result<()> {
        let Some(rss) = self.over(self.limit) else { return Ok(()) };
        Err(Error::ResourceExhausted(format!(
            "{what} refused: this process uses {} MiB, over its whole memory budget of {} MiB \
             (node.memory_limit_mb, the node's size); retry later or give the role a larger size",
            rss >> 20,
            self.limit >> 20
        )))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn reserve_refuses_loads_beyond_the_high_water_mark_and_counts_them() {
        let mut config = Config::default();
        config.node.memory_limit_mb = 1 << 20; // 1 TiB
        let guard = MemoryGuard::new(&config);
        guard.reserve("a small load", 1 << 20, 0).unwrap();
        assert_eq!(guard.refusals(), 0);
        // 90 % of 1 TiB is the ceiling: 1 TiB more does not fit, nor 900 GiB on top of 100 GiB pending.
        let e = guard.reserve("loading segment 7", 1 << 40, 0).unwrap_err().to_string();
        assert!(
            e.contains("loading segment 7 refused") && e.contains("90% of its memory budget of 1048576 MiB"),
            "{e}"
        );
        assert!(guard.reserve("x", 900 << 30, 100 << 30).is_err());
        assert_eq!(guard.refusals(), 2);
    }

    #[test]
    fn refuses_above_the_high_water_mark_only() {
        let mut config = Config::default();
        config.node.memory_limit_mb = 1 << 20; // 1 TiB: far above this test's RSS
        assert!(MemoryGuard::new(&config).admit("a search").is_ok());
        config.node.memory_limit_mb = 1; // 1 MiB: every process is above it
        config.limits.memory_high_water_percentage = 50.0;
        let err = MemoryGuard::new(&config).admit("a search").unwrap_err();
        assert!(matches!(err, Error::ResourceExhausted(_)), "{err}");
        assert!(err.to_string().contains("limits.memory_high_water_percentage"), "{err}");
        config.limits.memory_high_water_percentage = 100.0;
        assert!(MemoryGuard::new(&config).admit("a search").is_ok());
    }

    #[test]
    fn reads_are_refused_only_above_the_whole_budget() {
        let mut config = Config::default();
        let rss = telemetry::process_rss();
        assert!(rss > 4 << 20, "this test process uses {rss} bytes");
        // Between the mark and the budget: writes refused, reads served.
        config.node.memory_limit_mb = (rss >> 20) + 2;
        config.limits.memory_high_water_percentage = 10.0;
        let guard = MemoryGuard::new(&config);
        assert!(guard.admit("an insert").is_err());
        guard.admit_read("a search").unwrap();
        // Over the budget: reads refused too, saying which limit.
        config.node.memory_limit_mb = 1;
        let err = MemoryGuard::new(&config).admit_read("a search").unwrap_err().to_string();
        assert!(err.contains("a search refused") && err.contains("whole memory budget of 1 MiB"), "{err}");
        // No mark: nothing refused.
        config.limits.memory_high_water_percentage = 100.0;
        MemoryGuard::new(&config).admit_read("a search").unwrap();
    }

    #[test]
    fn a_crossing_of_the_mark_is_reported_once() {
        let mut config = Config::default();
        config.node.memory_limit_mb = 1 << 20;
        let under = MemoryGuard::new(&config);
        assert_eq!(under.mark_crossed(), None, "starts under the mark: nothing crossed");
        config.node.memory_limit_mb = 1;
        let over = MemoryGuard::new(&config);
        let (crossed, rss) = over.mark_crossed().expect("over a 1 MiB budget");
        assert!(crossed && rss > 1 << 20);
        assert_eq!(over.mark_crossed(), None, "still over: no new crossing");
        config.limits.memory_high_water_percentage = 100.0;
        assert_eq!(MemoryGuard::new(&config).mark_crossed(), None, "no mark");
    }
}
