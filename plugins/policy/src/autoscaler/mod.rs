//! Vertical autoscaling: the size each replica should have, from a window of metrics
//! (MISSION S3.3/S3.4). Mirrors `wit/autoscaler.wit`.

mod threshold;

pub use threshold::ThresholdAutoscaler;

/// One metrics sample of the service.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct MetricSample {
    /// When (ms since the Unix epoch).
    pub at_ms: u64,
    /// CPU use in percent of the current allocation.
    pub cpu_percent: f64,
    /// Memory in use, in bytes.
    pub memory_used: u64,
    /// A replica ran out of memory since the previous sample.
    pub oom: bool,
}

/// A replica's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ReplicaSize {
    /// CPU in thousandths of a core.
    pub cpu_millis: u32,
    /// Memory in bytes.
    pub memory_bytes: u64,
}

/// One gibibyte.
pub const GIB: u64 = 1 << 30;

/// The operator's autoscaling settings.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AutoscaleSettings {
    /// Lower bound on memory per replica; `min = max` pins the size (no autoscaling).
    pub min_memory_bytes: u64,
    /// Upper bound on memory per replica.
    pub max_memory_bytes: u64,
    /// CPU above this (%) doubles the size; below half of it halves it (75).
    pub cpu_upper_percent: f64,
    /// Size memory to this percentage of peak use (125) ...
    pub memory_headroom_percent: f64,
    /// ... or this one after an out-of-memory event in the window (150).
    pub oom_headroom_percent: f64,
    /// Memory that comes with one CPU core (4 GiB).
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

/// The size every replica should have, and why.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Recommendation {
    /// The recommended size.
    pub size: ReplicaSize,
    /// Why, for the operator's log (e.g. "cpu peak 82.0% > 75%: double to 4 CPU / 16 GiB").
    pub reason: String,
}

/// An autoscaling policy.
pub trait Autoscaler: Send + Sync {
    /// The size for `window` (oldest first) given the `current` size.
    fn recommend(&self, window: &[MetricSample], current: &ReplicaSize, settings: &AutoscaleSettings)
        -> Recommendation;
}
