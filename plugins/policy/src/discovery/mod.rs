//! Service discovery (coordinator): which registered nodes are members right now (MISSION
//! S4.3). Mirrors `wit/discovery.wit`.

mod heartbeat;
mod static_list;

pub use heartbeat::HeartbeatDiscovery;
pub use static_list::StaticDiscovery;

/// A node's registration and latest heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeRecord {
    /// The node's id.
    pub node_id: String,
    /// `coordinator`, `proxy`, `querynode`, `datanode` or `indexnode`.
    pub role: String,
    /// When this incarnation of the node started (ms since the Unix epoch).
    pub started_ms: u64,
    /// When the coordinator last saw a heartbeat from it (ms since the Unix epoch).
    pub last_heartbeat_ms: u64,
}

/// The coordinator's clock and the operator's discovery settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct DiscoverySettings {
    /// The coordinator's clock, ms since the Unix epoch.
    pub now_ms: u64,
    /// How often nodes send heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Silent longer than this: suspect (kept, but given no new work).
    pub suspect_after_ms: u64,
    /// Silent longer than this: dead (its work is reassigned).
    pub dead_after_ms: u64,
    /// The operator's static member list; empty if unset.
    pub static_nodes: Vec<String>,
}

/// A discovery verdict on one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// One verdict per entry of `nodes`, in order.
    fn classify(&self, nodes: &[NodeRecord], settings: &DiscoverySettings) -> Vec<Liveness>;
}
