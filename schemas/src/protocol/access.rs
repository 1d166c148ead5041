//! Who may do what over NATS: the principals of a cluster and the publish / subscribe
//! permissions Quiver generates for each, derived from the services and subjects so that a
//! new method or subject cannot be forgotten here without a test failing.
//!
//! The permissions are enforced by the NATS server itself (an `authorization` block in its
//! configuration): a refused publish or subscribe never reaches a Quiver process.
//!
//! ```text
//!   app    publish   quiver.<c>.api.<data method>            (one exact subject per method)
//!          subscribe _INBOX.app.>                            (its own replies only)
//!   admin  publish   the app's subjects, quiver.<c>.api.<admin method> (scale included),
//!                    quiver.<c>.node.*.drain
//!          subscribe _INBOX.admin.>
//!   node   publish   quiver.<c>.>, $JS.API.>, $JS.ACK.>, $JS.FC.>, $KV.<each bucket>.>, _INBOX.>
//!          subscribe quiver.<c>.>, $KV.<each bucket>.>, _INBOX.>
//! ```

use super::{api, control, ApiRequest, Call, ServiceRequest, Subjects};

/// The principals of a cluster. One internal `Node` principal serves every role: the roles of
/// one process share one NATS connection (all five in `quiver standalone`), and every role
/// opens the cluster's KV buckets and JetStream streams, so per-role users would differ only
/// in a few subjects while doubling the credentials to distribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Principal {
    /// Quiver's own nodes (every role).
    Node,
    /// Operators: the data API plus dropping collections, plugins and draining nodes.
    Admin,
    /// Applications: the data API only.
    App,
}

impl Principal {
    pub const ALL: [Principal; 3] = [Principal::Node, Principal::Admin, Principal::App];

    /// The principal's user name (NATS user, Milvus user, credentials file stem).
    pub fn user(self) -> &'static str {
        match self {
            Principal::Node => "node",
            Principal::Admin => "admin",
            Principal::App => "app",
        }
    }

    /// The principal of a user name.
    pub fn of_user(user: &str) -> Option<Principal> {
        Principal::ALL.into_iter().find(|p| p.user() == user)
    }

    /// The inbox prefix the principal's clients must use (`custom_inbox_prefix` in async-nats,
    /// `inbox_prefix` in nats-py): a client may only read replies under its own prefix, so an
    /// application cannot read the replies sent to other clients or to the nodes.
    pub fn inbox_prefix(self) -> String {
        match self {
            // Nodes keep the default prefix; they may read every inbox anyway.
            Principal::Node => "_INBOX".to_string(),
            other => format!("_INBOX.{}", other.user()),
        }
    }

    /// Whether the principal may call every API method (admin-only ones included).
    pub fn is_admin(self) -> bool {
        matches!(self, Principal::Node | Principal::Admin)
    }
}

/// API methods an application may call. Every API method not listed here is admin-only, so a
/// method added to the API stays closed to applications until it is classified here.
pub const DATA_METHODS: &[&str] = &[
    api::CreateCollection::METHOD,
    api::DescribeCollection::METHOD,
    api::ListCollections::METHOD,
    api::CreateIndex::METHOD,
    api::DropIndex::METHOD,
    api::LoadCollection::METHOD,
    api::ReleaseCollection::METHOD,
    // Partitions as collections: dropping one (its rows) is admin-only.
    api::CreatePartition::METHOD,
    api::LoadPartitions::METHOD,
    api::ReleasePartitions::METHOD,
    api::Flush::METHOD,
    // Applications compact what they flushed (Milvus lets a collection's users do both).
    api::Compact::METHOD,
    api::CompactionState::METHOD,
    api::Distribution::METHOD,
    api::Insert::METHOD,
    api::Delete::METHOD,
    api::Upsert::METHOD,
    api::Query::METHOD,
    api::Get::METHOD,
    api::Search::METHOD,
    api::Status::METHOD,
    api::PluginList::METHOD,
    // Read-only views of the cluster, like `status` (changing the counts is admin-only).
    api::Scaling::METHOD,
    api::Events::METHOD,
    api::Autoscaling::METHOD,
    api::Idling::METHOD,
];

/// Whether API method `method` is admin-only (dropping a collection, loading, activating or
/// rolling back plugins, and any method not classified as data).
pub fn is_admin_method(method: &str) -> bool {
    !DATA_METHODS.contains(&method)
}

/// The admin-only API methods.
pub fn admin_methods() -> impl Iterator<Item = &'static str> {
    ApiRequest::METHODS.iter().copied().filter(|m| is_admin_method(m))
}

/// What one principal may publish to and subscribe to (NATS subjects with wildcards); anything
/// else is refused by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Subjects {
    /// The plugin catalog KV bucket.
    pub fn plugins_bucket(&self) -> String {
        format!("quiver_{}_plugins", self.cluster())
    }

    /// Every KV bucket of the cluster.
    pub fn buckets(&self) -> [String; 4] {
        [self.meta_bucket(), self.nodes_bucket(), self.plugins_bucket(), self.hosts_bucket()]
    }

    /// The permissions of `principal` in this cluster.
    pub fn permissions(&self, principal: Principal) -> Permissions {
        let c = self.cluster();
        let inbox = format!("{}.>", principal.inbox_prefix());
        match principal {
            Principal::App => {
                Permissions { publish: DATA_METHODS.iter().map(|m| self.api(m)).collect(), subscribe: vec![inbox] }
            }
            Principal::Admin => {
                let mut publish: Vec<String> = ApiRequest::METHODS.iter().map(|m| self.api(m)).collect();
                publish.push(self.node("*", control::Drain::METHOD));
                Permissions { publish, subscribe: vec![inbox] }
            }
            Principal::Node => {
                let kv = self.buckets().map(|b| format!("$KV.{b}.>"));
                let mut publish = vec![
                    format!("quiver.{c}.>"),
                    // JetStream: stream and consumer management, KV reads, acks and the flow
                    // control replies of ordered consumers.
                    "$JS.API.>".to_string(),
                    "$JS.ACK.>".to_string(),
                    "$JS.FC.>".to_string(),
                    inbox.clone(),
                ];
                publish.extend(kv.iter().cloned());
                let mut subscribe = vec![format!("quiver.{c}.>"), inbox];
                subscribe.extend(kv);
                Permissions { publish, subscribe }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::subjects::DmlKind;

    /// NATS subject matching (`*` one token, `>` one or more trailing tokens).
    fn matches(pattern: &str, subject: &str) -> bool {
        let (p, s): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), subject.split('.').collect());
        for (i, t) in p.iter().enumerate() {
            match *t {
                ">" => return s.len() > i,
                "*" if i < s.len() => {}
                t if s.get(i) == Some(&t) => {}
                _ => return false,
            }
        }
        p.len() == s.len()
    }

    fn allowed(list: &[String], subject: &str) -> bool {
        list.iter().any(|p| matches(p, subject))
    }

    #[test]
    fn every_api_method_is_data_or_admin_and_data_methods_exist() {
        for m in DATA_METHODS {
            assert!(ApiRequest::METHODS.contains(m), "{m} is not an API method");
        }
        let admin: Vec<&str> = admin_methods().collect();
        assert_eq!(
            admin,
            [
                "drop_collection",
                "drop_partition",
                "plugin_load",
                "plugin_activate",
                "plugin_rollback",
                "scale",
                "autoscale"
            ]
        );
    }

    #[test]
    fn app_reaches_only_the_data_api_and_its_inbox() {
        let s = Subjects::new("c1");
        let app = s.permissions(Principal::App);
        assert!(allowed(&app.publish, &s.api("search")));
        assert!(allowed(&app.publish, &s.api("insert")));
        for denied in [
            s.api("drop_collection"),
            s.api("plugin_load"),
            s.api("plugin_activate"),
            s.api("no_such_method"),
            "quiver.c1.coord.segment_flushed".to_string(),
            s.node("q1", "drain"),
            s.dml_entry(1, 0, DmlKind::Insert),
            "$JS.API.STREAM.DELETE.QUIVER_c1_DML_1_0".to_string(),
            "$KV.quiver_c1_meta.collection.docs".to_string(),
        ] {
            assert!(!allowed(&app.publish, &denied), "app may publish {denied}");
        }
        assert!(allowed(&app.subscribe, "_INBOX.app.abc.1"));
        for denied in ["_INBOX.abc.1", "_INBOX.admin.x.1", "quiver.c1.api.search", "quiver.c1.coord.flush"] {
            assert!(!allowed(&app.subscribe, denied), "app may subscribe {denied}");
        }
    }

    #[test]
    fn admin_adds_admin_methods_and_drain_but_no_internals() {
        let s = Subjects::new("c1");
        let admin = s.permissions(Principal::Admin);
        for ok in [s.api("drop_collection"), s.api("plugin_activate"), s.api("search"), s.node("q1", "drain")] {
            assert!(allowed(&admin.publish, &ok), "admin may not publish {ok}");
        }
        for denied in [
            s.node("q1", "debug_panic"),
            s.node("q1", "load"),
            "quiver.c1.coord.drop_collection".into(),
            "$JS.API.INFO".into(),
        ] {
            assert!(!allowed(&admin.publish, &denied), "admin may publish {denied}");
        }
    }

    #[test]
    fn nodes_stay_in_their_cluster() {
        let s = Subjects::new("c1");
        let node = s.permissions(Principal::Node);
        assert!(allowed(&node.publish, "quiver.c1.coord.segment_flushed"));
        assert!(allowed(&node.publish, "$KV.quiver_c1_plugins.active.router"));
        assert!(allowed(&node.subscribe, "quiver.c1.api.search"));
        assert!(!allowed(&node.publish, "quiver.c2.coord.segment_flushed"));
        assert!(!allowed(&node.publish, "$KV.quiver_c2_meta.tso"));
    }
}
