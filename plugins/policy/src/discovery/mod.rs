//! Service discovery (coordinator): which registered nodes are members right now (MISSION
//! S4.3). Mirrors `wit/discovery.wit`.

mod heartbeat;
mod static_list;

pub use heartbeat::HeartbeatDiscovery;
pub use static_list::StaticDiscovery;

/// A node's registration and latest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRecord {
    pub node_id: String,
    pub role: String,
    pub started_ms: u64,
    pub last_heartbeat_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// The coordinator's clock, ms since the Unix epoch.
    pub now_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub suspect_after_ms: u64,
    pub dead_after_ms: u64,
    /// The operator's static member list; empty if unset.
    pub static_nodes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Serving: gets work.
    Alive,
    /// Possibly failing: keeps its work, gets no new work.
    Suspect,
    /// Gone: its work is reassigned.
    Dead,
}

/// A discovery policy: one verdict per node, in order.
pub trait Discovery: Send + Sync {
    fn classify(&self, nodes: &[NodeRecord], settings: &DiscoverySettings) -> Vec<Liveness>;
}
