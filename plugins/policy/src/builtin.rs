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

/// The built-in router called `name` (one of [`ROUTERS`]), `None` for an unknown name.
pub fn router(name: &str) -> Option<Box<dyn Router>> {
    match name {
        "rendezvous" => Some(Box::new(Rendezvous)),
        "round-robin" => Some(Box::new(RoundRobin)),
        "hash" => Some(Box::new(HashRouter)),
        "least-loaded" => Some(Box::new(LeastLoaded)),
        _ => None,
    }
}

/// The built-in balancer called `name` (one of [`BALANCERS`]), `None` for an unknown name.
pub fn balancer(name: &str) -> Option<Box<dyn Balancer>> {
    match name {
        "memory" => Some(Box::new(MemoryBalancer)),
        "row-count" => Some(Box::new(RowCountBalancer)),
        _ => None,
    }
}

/// The built-in discovery called `name` (one of [`DISCOVERIES`]), `None` for an unknown name.
pub fn discovery(name: &str) -> Option<Box<dyn Discovery>> {
    match name {
        "heartbeat" => Some(Box::new(HeartbeatDiscovery)),
        "static" => Some(Box::new(StaticDiscovery)),
        _ => None,
    }
}

/// The built-in autoscaler called `name` (one of [`AUTOSCALERS`]), `None` for an unknown name.
pub fn autoscaler(name: &str) -> Option<Box<dyn Autoscaler>> {
    match name {
        "threshold" => Some(Box::new(ThresholdAutoscaler)),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::router::RouteRequest;

    #[test]
    fn every_listed_name_resolves() {
        for name in ROUTERS {
            assert!(router(name).is_some(), "router {name}");
        }
        for name in BALANCERS {
            assert!(balancer(name).is_some(), "balancer {name}");
        }
        for name in DISCOVERIES {
            assert!(discovery(name).is_some(), "discovery {name}");
        }
        for name in AUTOSCALERS {
            assert!(autoscaler(name).is_some(), "autoscaler {name}");
        }
    }

    #[test]
    fn unknown_names_do_not_resolve() {
        assert!(router("consistent").is_none());
        assert!(router("").is_none());
        assert!(balancer("Memory").is_none());
        assert!(discovery("kubernetes").is_none());
        assert!(autoscaler("none").is_none());
    }

    #[test]
    fn the_defaults_are_listed_first() {
        assert_eq!(ROUTERS[0], "rendezvous");
        assert_eq!(BALANCERS[0], "memory");
        assert_eq!(DISCOVERIES[0], "heartbeat");
        assert_eq!(AUTOSCALERS[0], "threshold");
    }

    #[test]
    fn every_router_gives_a_valid_answer() {
        let mut request = RouteRequest {
            nodes: ["a", "b", "c"].into_iter().map(crate::router::NodeLoad::idle).collect(),
            ..RouteRequest::default()
        };
        for id in 0..20 {
            request.push_segment(id, 100, (0..3).filter(|n| (id + n) % 4 != 0).map(|n| n as u32));
        }
        request.push_segment(99, 100, []);
        for name in ROUTERS {
            let routes = router(name).unwrap().route(&request);
            request.check(&routes).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
