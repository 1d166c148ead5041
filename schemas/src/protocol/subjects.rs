//! NATS subject, stream and bucket names of one cluster, derived from the services: roles,
//! SDKs and tests all build them here, so there is one scheme.

use super::{NodeCall, QueueCall, Service};
use crate::types::{CollectionId, ShardId};

/// Subjects, streams and buckets of one cluster.
#[derive(Debug, Clone)]
pub struct Subjects {
    cluster: String,
}

impl Subjects {
    pub fn new(cluster: &str) -> Subjects {
        Subjects { cluster: cluster.to_string() }
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The subject of method `C` of a service served by a queue group (API, coordinator,
    /// index nodes).
    pub fn call<C: QueueCall>(&self) -> String {
        self.queue_prefix(C::SERVICE).map_or_else(String::new, |p| format!("{p}.{}", C::METHOD))
    }

    /// The subject of method `C` of node `node_id`.
    pub fn node_call<C: NodeCall>(&self, node_id: &str) -> String {
        match C::SERVICE {
            Service::Host => self.host(node_id, C::METHOD),
            _ => self.node(node_id, C::METHOD),
        }
    }

    /// The subject of `method` of the public API (for raw calls, e.g. tests sending garbage).
    pub fn api(&self, method: &str) -> String {
        format!("quiver.{}.api.{method}", self.cluster)
    }

    fn queue_prefix(&self, service: Service) -> Option<String> {
        match service {
            Service::Api => Some(format!("quiver.{}.api", self.cluster)),
            Service::Coord => Some(format!("quiver.{}.coord", self.cluster)),
            Service::IndexNode => Some(format!("quiver.{}.index", self.cluster)),
            Service::QueryNode | Service::DataNode | Service::NodeControl | Service::Host => None,
        }
    }

    /// What a server of `service` subscribes to (every method), with its queue group; node
    /// services are the node's own subjects and have no queue group.
    pub fn serve(&self, service: Service, node_id: &str) -> (String, Option<&'static str>) {
        let group = match service {
            Service::Api => Some("proxy"),
            Service::Coord => Some("coordinator"),
            Service::IndexNode => Some("indexnode"),
            Service::QueryNode | Service::DataNode | Service::NodeControl | Service::Host => None,
        };
        match (self.queue_prefix(service), service) {
            (Some(prefix), _) => (format!("{prefix}.*"), group),
            (None, Service::Host) => (self.host(node_id, "*"), None),
            (None, _) => (self.node(node_id, "*"), None),
        }
    }

    /// The method name of a subject a server received (its last token).
    pub fn method_of(subject: &str) -> &str {
        subject.rsplit('.').next().unwrap_or_default()
    }

    /// Method `method` of one specific node.
    pub fn node(&self, node_id: &str, method: &str) -> String {
        format!("quiver.{}.node.{node_id}.{method}", self.cluster)
    }

    /// Method `method` of one host agent.
    pub fn host(&self, host_id: &str, method: &str) -> String {
        format!("quiver.{}.host.{host_id}.{method}", self.cluster)
    }

    /// MISSION S1.4's query channel of a collection: `sealedSegmentChangeInfo` events.
    pub fn query_channel(&self, collection: CollectionId) -> String {
        format!("quiver.{}.querychannel.{collection}", self.cluster)
    }

    /// Every collection's query channel.
    pub fn query_channels(&self) -> String {
        format!("quiver.{}.querychannel.*", self.cluster)
    }

    /// The collection a query-channel event is about.
    pub fn query_channel_collection(subject: &str) -> Option<CollectionId> {
        let rest = subject.strip_prefix("quiver.")?;
        let mut parts = rest.split('.');
        let (_, kind, id) = (parts.next()?, parts.next()?, parts.next()?);
        (kind == "querychannel").then(|| id.parse().ok()).flatten()
    }

    /// Published by the coordinator whenever a collection's serving layout changes.
    pub fn distribution_event(&self, collection: CollectionId) -> String {
        format!("quiver.{}.event.distribution.{collection}", self.cluster)
    }

    /// Every collection's layout-change events.
    pub fn distribution_events(&self) -> String {
        format!("quiver.{}.event.distribution.*", self.cluster)
    }

    /// Query nodes' memory high-water mark crossings ([`crate::MemoryMarkEvent`]).
    pub fn memory_events(&self) -> String {
        format!("quiver.{}.event.memory", self.cluster)
    }

    /// The collection a layout-change event is about.
    pub fn distribution_event_collection(subject: &str) -> Option<CollectionId> {
        subject.strip_prefix("quiver.")?.split('.').nth(3)?.parse().ok()
    }

    /// The DML subject prefix of one shard; entries go to `<prefix>.<kind>` ([`DmlKind`]).
    pub fn dml(&self, collection: CollectionId, shard: ShardId) -> String {
        format!("quiver.{}.dml.{collection}.{shard}", self.cluster)
    }

    /// The DML subject of one kind of entry of one shard.
    pub fn dml_entry(&self, collection: CollectionId, shard: ShardId, kind: DmlKind) -> String {
        format!("{}.{}", self.dml(collection, shard), kind.as_str())
    }

    /// The JetStream stream holding one shard's DML log.
    pub fn dml_stream(&self, collection: CollectionId, shard: ShardId) -> String {
        format!("QUIVER_{}_DML_{collection}_{shard}", self.cluster)
    }

    /// The metadata KV bucket (keys: [`super::keys`]).
    pub fn meta_bucket(&self) -> String {
        format!("quiver_{}_meta", self.cluster)
    }

    /// The node registry KV bucket (heartbeats with a TTL).
    pub fn nodes_bucket(&self) -> String {
        format!("quiver_{}_nodes", self.cluster)
    }

    /// The host agents' registry KV bucket (capacity and processes, with a TTL).
    pub fn hosts_bucket(&self) -> String {
        format!("quiver_{}_hosts", self.cluster)
    }
}

/// The kinds of DML log entries, each its own subject under the shard's prefix (so a consumer
/// can take only inserts or only deletes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmlKind {
    Insert,
    Delete,
}

impl DmlKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DmlKind::Insert => "insert",
            DmlKind::Delete => "delete",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{api, coord, indexnode, querynode};

    #[test]
    fn subjects_follow_the_scheme() {
        let s = Subjects::new("c1");
        assert_eq!(s.call::<api::Search>(), "quiver.c1.api.search");
        assert_eq!(s.call::<coord::AllocTs>(), "quiver.c1.coord.alloc_ts");
        assert_eq!(s.call::<indexnode::Build>(), "quiver.c1.index.build");
        assert_eq!(s.node_call::<querynode::Load>("q1"), "quiver.c1.node.q1.load");
        assert_eq!(s.serve(Service::Api, "p1"), ("quiver.c1.api.*".to_string(), Some("proxy")));
        assert_eq!(s.serve(Service::QueryNode, "q1"), ("quiver.c1.node.q1.*".to_string(), None));
        assert_eq!(Subjects::method_of("quiver.c1.node.q1.search"), "search");
        assert_eq!(s.dml_entry(7, 1, DmlKind::Delete), "quiver.c1.dml.7.1.delete");
        assert_eq!(Subjects::distribution_event_collection(&s.distribution_event(42)), Some(42));
        assert_eq!(Subjects::query_channel_collection(&s.query_channel(42)), Some(42));
        assert_eq!(Subjects::query_channel_collection(&s.distribution_event(42)), None);
        assert_eq!(s.node_call::<crate::protocol::host::StartNode>("h1"), "quiver.c1.host.h1.start_node");
        assert_eq!(s.serve(Service::Host, "h1"), ("quiver.c1.host.h1.*".to_string(), None));
    }
}
