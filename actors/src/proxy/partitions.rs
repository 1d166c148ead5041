//! Partitions (Milvus'): which partition an insert goes to, and which partitions a read covers.
//!
//! A partition is a tag on each row, written with it to the log and kept in its segments. A
//! read covers the partitions it names, or every loaded one; when that is not every partition
//! the collection ever had (a read naming some, or one released or dropped), the proxy adds
//! [`Expr::Partition`] to the read's filter, and query nodes answer it like any filter.

use std::sync::Arc;

use quiver_runtime::bus::RequestContext;
use quiver_runtime::{Error, Result};
use quiver_schemas::{
    check_partition_names, CollectionInfo, Distribution, Expr, PartitionId, PartitionState, DEFAULT_PARTITION,
};

use super::Proxy;

/// The partitions a read of `names` covers (none named: every loaded one), or `None` when
/// that is every row the collection holds.
pub(super) fn read_scope(info: &CollectionInfo, names: &[String]) -> Result<Option<Vec<PartitionId>>> {
    // The common case, on every read: a collection that never had a partition but `_default`.
    if info.partitions.is_empty() && names.iter().all(|n| n.is_empty() || n == DEFAULT_PARTITION) {
        return Ok(None);
    }
    check_partition_names(names).map_err(Error::InvalidArgument)?;
    let all = info.partition_list();
    let ids: Vec<PartitionId> = if names.is_empty() {
        all.iter().filter(|p| p.state == PartitionState::Loaded).map(|p| p.id).collect()
    } else {
        let mut ids = Vec::with_capacity(names.len());
        for name in names {
            let p = info.partition(name).ok_or_else(|| not_found(info, name))?;
            if p.state != PartitionState::Loaded {
                return Err(Error::NotLoaded(format!(
                    "partition not loaded[partition={name}]: partition {name:?} of collection {:?} is released; \
                     load it first (LoadPartitions)",
                    info.schema.name
                )));
            }
            if !ids.contains(&p.id) {
                ids.push(p.id);
            }
        }
        ids
    };
    Ok((!all.iter().all(|p| ids.contains(&p.id))).then_some(ids))
}

/// A read's filter narrowed to `scope`.
pub(super) fn restrict(expr: Option<Expr>, scope: Option<Vec<PartitionId>>) -> Option<Expr> {
    match (expr, scope) {
        (expr, None) => expr,
        (None, Some(ids)) => Some(Expr::Partition(ids)),
        (Some(Expr::And(mut items)), Some(ids)) => {
            items.push(Expr::Partition(ids));
            Some(Expr::And(items))
        }
        (Some(expr), Some(ids)) => Some(Expr::And(vec![expr, Expr::Partition(ids)])),
    }
}

/// The partition rows written to `name` go to (empty: `_default`).
pub(super) fn write_target(info: &CollectionInfo, name: &str) -> Result<PartitionId> {
    check_partition_names(&[name]).map_err(Error::InvalidArgument)?;
    info.partition(name).map(|p| p.id).ok_or_else(|| not_found(info, name))
}

fn not_found(info: &CollectionInfo, name: &str) -> Error {
    Error::InvalidArgument(info.missing_partition(name))
}

/// Whether every name in `names` is a partition of `info` (an empty name is `_default`); a
/// request that could never name partitions (too many, too long) needs no fresh layout.
fn knows(info: &CollectionInfo, names: &[&str]) -> bool {
    check_partition_names(names).is_err() || names.iter().all(|n| info.partition(n).is_some())
}

impl Proxy {
    /// The collection's layout, fetched again when the cached copy lacks one of the
    /// partitions `names`: another proxy may have just created it.
    pub(super) async fn distribution_with(
        &self,
        collection: &str,
        names: &[&str],
        ctx: &RequestContext,
    ) -> Result<Arc<Distribution>> {
        let dist = self.distribution(collection, ctx).await?;
        if knows(&dist.collection, names) {
            return Ok(dist);
        }
        self.refresh(collection, ctx).await
    }

    /// [`Self::distribution_with`]'s collection.
    pub(super) async fn collection_with(
        &self,
        collection: &str,
        names: &[&str],
        ctx: &RequestContext,
    ) -> Result<CollectionInfo> {
        Ok(self.distribution_with(collection, names, ctx).await?.collection.clone())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use quiver_schemas::{CollectionSchema, PartitionInfo};

    fn info(partitions: &[(u32, &str, PartitionState)]) -> CollectionInfo {
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
            created_ts: 0,
            scalar_indexes: Vec::new(),
            partitions: partitions
                .iter()
                .map(|&(id, name, state)| PartitionInfo { id, name: name.into(), created_ts: 0, state })
                .collect(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_read_is_narrowed_only_when_some_rows_must_stay_unread() {
        use PartitionState::*;
        let plain = info(&[]);
        assert_eq!(read_scope(&plain, &[]).unwrap(), None);
        assert_eq!(read_scope(&plain, &names(&["_default"])).unwrap(), None);
        assert!(read_scope(&plain, &names(&["p"])).unwrap_err().to_string().contains("partition not found"));

        let two = info(&[(0, "_default", Loaded), (1, "p", Loaded)]);
        assert_eq!(read_scope(&two, &[]).unwrap(), None, "everything loaded: no filter");
        assert_eq!(read_scope(&two, &names(&["p"])).unwrap(), Some(vec![1]));
        assert_eq!(read_scope(&two, &names(&["p", "_default", "p"])).unwrap(), None);

        let released = info(&[(0, "_default", Loaded), (1, "p", Released)]);
        assert_eq!(read_scope(&released, &[]).unwrap(), Some(vec![0]));
        let e = read_scope(&released, &names(&["p"])).unwrap_err();
        assert!(matches!(e, Error::NotLoaded(_)) && e.to_string().contains("partition not loaded"), "{e}");

        // A dropped partition's rows stay hidden until compaction removes them; its name is free.
        let dropped = info(&[(0, "_default", Loaded), (1, "p", Dropped), (2, "p", Loaded)]);
        assert_eq!(read_scope(&dropped, &[]).unwrap(), Some(vec![0, 2]));
        assert_eq!(read_scope(&dropped, &names(&["p"])).unwrap(), Some(vec![2]));
        assert_eq!(write_target(&dropped, "p").unwrap(), 2);
        assert_eq!(write_target(&dropped, "").unwrap(), 0);
        // Hostile sizes are refused before any lookup, and not echoed.
        let e = write_target(&dropped, &"p".repeat(1 << 20)).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("at most 255"), "{}", &e[..200.min(e.len())]);
        let many: Vec<String> = (0..100_000).map(|i| format!("p{i}")).collect();
        assert!(read_scope(&dropped, &many).unwrap_err().to_string().contains("at most 1024"));
    }

    #[test]
    fn the_scope_joins_the_filter() {
        let cmp = Expr::Exists(quiver_schemas::expr::Field::Dynamic { path: Vec::new() });
        assert_eq!(restrict(None, None), None);
        assert_eq!(restrict(Some(cmp.clone()), None), Some(cmp.clone()));
        assert_eq!(restrict(None, Some(vec![1])), Some(Expr::Partition(vec![1])));
        assert_eq!(
            restrict(Some(Expr::And(vec![cmp.clone()])), Some(vec![2])),
            Some(Expr::And(vec![cmp.clone(), Expr::Partition(vec![2])]))
        );
        assert_eq!(restrict(Some(cmp.clone()), Some(vec![3])), Some(Expr::And(vec![cmp, Expr::Partition(vec![3])])));
    }
}
