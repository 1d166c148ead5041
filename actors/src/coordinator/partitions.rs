//! Partitions (Milvus'): created, dropped, loaded and released in the collection's catalog
//! entry. Rows carry their partition's id (the proxy writes it with them); a read covers the
//! loaded partitions, or those it names, by a filter the proxy adds (`proxy/partitions.rs`).
//! Loading or releasing a partition changes what reads cover, not what query nodes hold: the
//! collection is loaded or released whole.

use quiver_runtime::bus::RequestContext;
use quiver_runtime::{Error, Result};
use quiver_schemas::protocol::keys;
use quiver_schemas::{
    check_partition_names, CollectionInfo, CollectionName, Empty, LoadCollection, PartitionInfo, PartitionRequest,
    PartitionState, DEFAULT_PARTITION, MAX_PARTITIONS,
};

use super::{catalog, Coordinator};

/// `name`'s partition in `partitions` (dropped ones are gone).
fn live<'a>(partitions: &'a mut [PartitionInfo], name: &str) -> Option<&'a mut PartitionInfo> {
    partitions.iter_mut().find(|p| p.name == name && p.state != PartitionState::Dropped)
}

fn not_found(info: &CollectionInfo, name: &str) -> Error {
    Error::InvalidArgument(info.missing_partition(name))
}

/// Adds partition `name` to `info` (loaded); `false` when it exists already (as in Milvus,
/// creating it again succeeds).
pub fn with_partition(info: &mut CollectionInfo, name: &str, created_ts: u64) -> Result<bool> {
    check_partition_names(&[name]).map_err(Error::InvalidArgument)?;
    if !catalog::valid_identifier(name) {
        return Err(Error::InvalidArgument(format!(
            "partition name {name:?} is invalid: use 1-255 letters, digits or '_', starting with a letter or '_'"
        )));
    }
    let mut partitions = info.partition_list();
    if live(&mut partitions, name).is_some() {
        return Ok(false);
    }
    let count = partitions.iter().filter(|p| p.state != PartitionState::Dropped).count();
    if count >= MAX_PARTITIONS {
        return Err(Error::InvalidArgument(format!(
            "partition number ({count}) exceeds max configuration ({MAX_PARTITIONS}), collection: {}",
            info.schema.name
        )));
    }
    let id = partitions.iter().map(|p| p.id).max().unwrap_or(0) + 1;
    partitions.push(PartitionInfo { id, name: name.into(), created_ts, state: PartitionState::Loaded });
    info.partitions = partitions;
    Ok(true)
}

/// Marks partition `name` of `info` dropped; `false` when there is none (dropping it again
/// succeeds, as in Milvus). `loaded`: whether the collection is loaded.
pub fn without_partition(info: &mut CollectionInfo, name: &str, loaded: bool) -> Result<bool> {
    check_partition_names(&[name]).map_err(Error::InvalidArgument)?;
    if name == DEFAULT_PARTITION {
        return Err(Error::InvalidArgument("default partition cannot be deleted".into()));
    }
    let mut partitions = info.partition_list();
    let Some(p) = live(&mut partitions, name) else { return Ok(false) };
    if loaded && p.state == PartitionState::Loaded {
        return Err(Error::InvalidArgument(format!(
            "partition cannot be dropped, partition is loaded, please release it first (partition {name:?} of \
             collection {:?})",
            info.schema.name
        )));
    }
    p.state = PartitionState::Dropped;
    info.partitions = partitions;
    Ok(true)
}

/// Sets the state of the partitions `names` (all must exist) and, with `others`, of every
/// other live partition; whether anything changed.
pub fn with_states(
    info: &mut CollectionInfo,
    names: &[String],
    state: PartitionState,
    others: Option<PartitionState>,
) -> Result<bool> {
    check_partition_names(names).map_err(Error::InvalidArgument)?;
    let mut partitions = info.partition_list();
    for name in names {
        if live(&mut partitions, name).is_none() {
            return Err(not_found(info, name));
        }
    }
    let mut changed = false;
    for p in partitions.iter_mut().filter(|p| p.state != PartitionState::Dropped) {
        let want = if names.contains(&p.name) { Some(state) } else { others };
        if let Some(want) = want.filter(|w| *w != p.state) {
            p.state = want;
            changed = true;
        }
    }
    if changed {
        info.partitions = partitions;
    }
    Ok(changed)
}

impl Coordinator {
    /// Applies `change` to a collection's catalog entry (given whether the collection is
    /// loaded); when it reports a change, the entry is persisted and proxies are told.
    async fn update_collection(
        &self,
        name: &str,
        change: impl FnOnce(&mut CollectionInfo, bool) -> Result<bool>,
    ) -> Result<bool> {
        let mut catalog = self.catalog.lock().await;
        let mut info = catalog.by_name(name)?.clone();
        let loaded = catalog.layouts.get(&info.id).is_some_and(|l| !l.released);
        if !change(&mut info, loaded)? {
            return Ok(false);
        }
        self.meta.put(&keys::collection(name), &info).await?;
        let id = info.id;
        catalog.collections.insert(name.to_string(), info);
        drop(catalog);
        self.publish_change(id).await;
        Ok(true)
    }

    pub(super) async fn create_partition(&self, req: PartitionRequest) -> Result<Empty> {
        let [name] = req.names.as_slice() else {
            return Err(Error::InvalidArgument(format!("create_partition takes one name, not {}", req.names.len())));
        };
        let created_ts = self.alloc_ts(1).await?;
        if self.update_collection(&req.collection, |info, _| with_partition(info, name, created_ts)).await? {
            tracing::info!(collection = %req.collection, partition = %name, "partition created");
        }
        Ok(Empty {})
    }

    pub(super) async fn drop_partition(&self, req: PartitionRequest) -> Result<Empty> {
        let [name] = req.names.as_slice() else {
            return Err(Error::InvalidArgument(format!("drop_partition takes one name, not {}", req.names.len())));
        };
        if self.update_collection(&req.collection, |info, loaded| without_partition(info, name, loaded)).await? {
            tracing::info!(collection = %req.collection, partition = %name,
                "partition dropped; compaction removes its rows");
            self.reconcile.notify_one();
        }
        Ok(Empty {})
    }

    /// Reads cover the partitions `names` from now on; a released collection is loaded with
    /// them alone.
    pub(super) async fn load_partitions(&self, req: PartitionRequest, ctx: &RequestContext) -> Result<Empty> {
        if req.names.is_empty() {
            return Err(Error::InvalidArgument("load_partitions needs at least one partition name".into()));
        }
        let mut released = false;
        self.update_collection(&req.collection, |info, loaded| {
            released = !loaded;
            let others = (!loaded).then_some(PartitionState::Released);
            with_states(info, &req.names, PartitionState::Loaded, others)
        })
        .await?;
        if released {
            let load = LoadCollection { name: req.collection.clone(), replicas: req.replicas };
            self.load_layout(load, ctx).await?;
        }
        tracing::info!(collection = %req.collection, partitions = ?req.names, "partitions loaded");
        Ok(Empty {})
    }

    /// Reads no longer cover the partitions `names`; with none left, the collection is
    /// released (as in Milvus).
    pub(super) async fn release_partitions(&self, req: PartitionRequest) -> Result<Empty> {
        let mut none_left = false;
        self.update_collection(&req.collection, |info, _| {
            let changed = with_states(info, &req.names, PartitionState::Released, None)?;
            none_left = info.partition_list().iter().all(|p| p.state != PartitionState::Loaded);
            Ok(changed)
        })
        .await?;
        if none_left {
            self.release_collection(CollectionName { name: req.collection.clone() }).await?;
        }
        tracing::info!(collection = %req.collection, partitions = ?req.names, "partitions released");
        Ok(Empty {})
    }

    /// A collection loaded whole reads every partition.
    pub(super) async fn load_every_partition(&self, name: &str) -> Result<()> {
        self.update_collection(name, |info, _| {
            if info.partitions.is_empty() {
                return Ok(false);
            }
            with_states(info, &[], PartitionState::Loaded, Some(PartitionState::Loaded))
        })
        .await?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quiver_schemas::CollectionSchema;
    use PartitionState::*;

    fn info() -> CollectionInfo {
        CollectionInfo {
            id: 1,
            schema: CollectionSchema {
                name: "docs".into(),
                description: String::new(),
                fields: Vec::new(),
                enable_dynamic_field: false,
                num_shards: 1,
                consistency: Default::default(),
            },
            index: None,
            created_ts: 5,
            scalar_indexes: Vec::new(),
            partitions: Vec::new(),
        }
    }

    fn states(info: &CollectionInfo) -> Vec<(u32, &str, PartitionState)> {
        info.partitions.iter().map(|p| (p.id, p.name.as_str(), p.state)).collect()
    }

    #[test]
    fn partitions_are_created_dropped_and_their_ids_never_reused() {
        let mut c = info();
        assert!(with_partition(&mut c, "a", 7).unwrap());
        assert_eq!(states(&c), [(0, "_default", Loaded), (1, "a", Loaded)]);
        assert_eq!(c.partitions[0].created_ts, 5, "_default dates from the collection");
        assert!(!with_partition(&mut c, "a", 8).unwrap(), "creating it again succeeds and changes nothing");
        for bad in ["", "1a", "a-b", &"x".repeat(256)] {
            assert!(with_partition(&mut c, bad, 9).unwrap_err().to_string().contains("partition name"), "{bad:?}");
        }

        let e = without_partition(&mut c, "a", true).unwrap_err().to_string();
        assert!(e.contains("please release it first"), "{e}");
        assert!(without_partition(&mut c, "_default", false).unwrap_err().to_string().contains("cannot be deleted"));
        assert!(without_partition(&mut c, "a", false).unwrap());
        assert!(!without_partition(&mut c, "a", false).unwrap(), "dropping it again succeeds");
        assert!(with_partition(&mut c, "a", 10).unwrap(), "the name is free again");
        assert_eq!(states(&c), [(0, "_default", Loaded), (1, "a", Dropped), (2, "a", Loaded)]);
    }

    #[test]
    fn loading_and_releasing_set_what_reads_cover() {
        let mut c = info();
        with_partition(&mut c, "a", 1).unwrap();
        with_partition(&mut c, "b", 2).unwrap();
        assert!(with_states(&mut c, &["a".into()], Released, None).unwrap());
        assert_eq!(states(&c), [(0, "_default", Loaded), (1, "a", Released), (2, "b", Loaded)]);
        assert!(!with_states(&mut c, &["a".into()], Released, None).unwrap(), "no change");
        // Loading `b` alone into a released collection: the others are released.
        assert!(with_states(&mut c, &["b".into()], Loaded, Some(Released)).unwrap());
        assert_eq!(states(&c), [(0, "_default", Released), (1, "a", Released), (2, "b", Loaded)]);
        let e = with_states(&mut c, &["nope".into()], Loaded, None).unwrap_err().to_string();
        assert!(e.contains("partition not found[partition=nope]"), "{e}");
        let e = with_states(&mut c, &["x".repeat(1 << 20)], Loaded, None).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("partition names have at most 255"), "{}", &e[..200.min(e.len())]);
        let many: Vec<String> = (0..5_000).map(|i| format!("p{i}")).collect();
        let e = with_states(&mut c, &many, Loaded, None).unwrap_err().to_string();
        assert!(e.contains("5000 partition names; a request names at most 1024"), "{e}");
        assert!(with_states(&mut c, &[], Loaded, Some(Loaded)).unwrap());
        assert!(c.partitions.iter().all(|p| p.state == Loaded));
    }

    #[test]
    fn a_collection_holds_at_most_max_partitions() {
        let mut c = info();
        for i in 1..MAX_PARTITIONS {
            assert!(with_partition(&mut c, &format!("p{i}"), 1).unwrap());
        }
        let e = with_partition(&mut c, "one_more", 1).unwrap_err().to_string();
        assert!(e.contains("exceeds max configuration (1024)"), "{e}");
        without_partition(&mut c, "p1", false).unwrap();
        assert!(with_partition(&mut c, "one_more", 1).unwrap(), "a dropped partition frees its place");
    }
}
