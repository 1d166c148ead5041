//! TODO(helper): implement.

use super::{AutoscaleSettings, Autoscaler, MetricSample, Recommendation, ReplicaSize};

#[derive(Debug, Default, Clone, Copy)]
pub struct ThresholdAutoscaler;

impl Autoscaler for ThresholdAutoscaler {
    fn recommend(&self, _window: &[MetricSample], current: &ReplicaSize, _settings: &AutoscaleSettings) -> Recommendation {
        Recommendation { size: *current, reason: String::from("unchanged") }
    }
}
