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
        self.node(node_id, C::METHOD)
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
            Service::QueryNode | Service::DataNode | Service::NodeControl => None,
        }
    }

    /// What a server of `service` subscribes to (every method), with its queue group; node
    /// services are the node's own subjects and have no queue group.
    pub fn serve(&self, service: Service, node_id: &str) -> (String, Option<&'static str>) {
        let group = match service {
            Service::Api => Some("proxy"),
            Service::Coord => Some("coordinator"),
            Service::IndexNode => Some("indexnode"),
            Service::QueryNode | Service::DataNode | Service::NodeControl => None,
        };
        match self.queue_prefix(service) {
            Some(prefix) => (format!("{prefix}.*"), group),
            None => (self.node(node_id, "*"), None),
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

    /// Published by the coordinator whenever a collection's serving layout changes.
    pub fn distribution_event(&self, collection: CollectionId) -> String {
        format!("quiver.{}.event.distribution.{collection}", self.cluster)
    }

    /// Every collection's layout-change events.
    pub fn distribution_events(&self) -> String {
        format!("quiver.{}.event.distribution.*", self.cluster)
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
    }
}
