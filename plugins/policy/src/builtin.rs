//! The built-in policies by the names operators use in config and `quiver ctl plugin`.

use crate::autoscaler::{Autoscaler, ThresholdAutoscaler};
use crate::balancer::{Balancer, MemoryBalancer, RowCountBalancer};
use crate::discovery::{Discovery, HeartbeatDiscovery, StaticDiscovery};
use crate::router::{HashRouter, LeastLoaded, Rendezvous, RoundRobin, Router};

/// Router names; the first is the default.
pub const ROUTERS: &[&str] = &["rendezvous", "round-robin", "hash", "least-loaded"];
/// Balancer names; the first is the default.
pub const BALANCERS: &[&str] = &["memory", "row-count"];
/// Discovery names; the first is the default.
pub const DISCOVERIES: &[&str] = &["heartbeat", "static"];
/// Autoscaler names; the first is the default.
pub const AUTOSCALERS: &[&str] = &["threshold"];

pub fn router(name: &str) -> Option<Box<dyn Router>> {
    match name {
        "rendezvous" => Some(Box::new(Rendezvous)),
        "round-robin" => Some(Box::new(RoundRobin)),
        "hash" => Some(Box::new(HashRouter)),
        "least-loaded" => Some(Box::new(LeastLoaded)),
        _ => None,
    }
}

pub fn balancer(name: &str) -> Option<Box<dyn Balancer>> {
    match name {
        "memory" => Some(Box::new(MemoryBalancer)),
        "row-count" => Some(Box::new(RowCountBalancer)),
        _ => None,
    }
}

pub fn discovery(name: &str) -> Option<Box<dyn Discovery>> {
    match name {
        "heartbeat" => Some(Box::new(HeartbeatDiscovery)),
        "static" => Some(Box::new(StaticDiscovery)),
        _ => None,
    }
}

pub fn autoscaler(name: &str) -> Option<Box<dyn Autoscaler>> {
    match name {
        "threshold" => Some(Box::new(ThresholdAutoscaler)),
        _ => None,
    }
}
