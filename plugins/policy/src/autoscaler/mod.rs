//! Vertical autoscaling: the size each replica should have, from a window of metrics
//! (MISSION S3.3/S3.4). Mirrors `wit/autoscaler.wit`.

mod threshold;

pub use threshold::ThresholdAutoscaler;

/// One metrics sample of the service.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSample {
    pub at_ms: u64,
    /// CPU use in percent of the current allocation.
    pub cpu_percent: f64,
    pub memory_used: u64,
    /// A replica ran out of memory since the previous sample.
    pub oom: bool,
}

/// A replica's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSize {
    pub cpu_millis: u32,
    pub memory_bytes: u64,
}

pub const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq)]
pub struct AutoscaleSettings {
    pub min_memory_bytes: u64,
    pub max_memory_bytes: u64,
    pub cpu_upper_percent: f64,
    pub memory_headroom_percent: f64,
    pub oom_headroom_percent: f64,
    pub memory_per_cpu_bytes: u64,
}

impl Default for AutoscaleSettings {
    /// S3.3's numbers; bounds 4 GiB ..= 64 GiB.
    fn default() -> Self {
        AutoscaleSettings {
            min_memory_bytes: 4 * GIB,
            max_memory_bytes: 64 * GIB,
            cpu_upper_percent: 75.0,
            memory_headroom_percent: 125.0,
            oom_headroom_percent: 150.0,
            memory_per_cpu_bytes: 4 * GIB,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub size: ReplicaSize,
    pub reason: String,
}

/// An autoscaling policy.
pub trait Autoscaler: Send + Sync {
    fn recommend(&self, window: &[MetricSample], current: &ReplicaSize, settings: &AutoscaleSettings) -> Recommendation;
}
