//! Rows with scalar and dynamic fields: get returns fields and vectors; deletes hide rows in
//! growing data, sealed segments and indexed segments; re-inserted keys come back; Strong
//! consistency reads its own writes.

use std::time::Duration;

use quiver_client::{
    schema, CollectionSchema, Column, Consistency, DataType, GetResults, IndexType, MetricType, PrimaryKey, RowBatch,
    ScalarValue, SearchParams, SegmentState,
};

use crate::common::data::{self, dataset};
use crate::common::{run, Harness, READY};

const FIELDS: [&str; 4] = ["title", "price", "tag", "n"];

/// `id` Int64 key, `title` VarChar, `price` Double, `vector`, dynamic fields on.
fn products_schema(name: &str) -> CollectionSchema {
    let mut s = schema::simple(name, dataset().dim32());
    let mut title = schema::field("title", DataType::VarChar);
    title.max_length = 64;
    s.fields.push(title);
    s.fields.push(schema::field("price", DataType::Double));
    s
}

/// Rows with key `id` holding base row `row`'s vector and fields derived from `id`.
fn product_rows(items: &[(i64, usize)], title: &str) -> RowBatch {
    let ds = dataset();
    let mut vectors = Vec::new();
    for (_, row) in items {
        vectors.extend_from_slice(ds.row(*row));
    }
    let mut rows = schema::rows(items.iter().map(|(id, _)| *id), ds.dim32(), vectors);
    rows.columns = vec![
        Column {
            name: "title".into(),
            values: items.iter().map(|(id, _)| ScalarValue::VarChar(format!("{title}-{id}"))).collect(),
        },
        // Int64 values into a Double field are coerced.
        Column { name: "price".into(), values: items.iter().map(|(id, _)| ScalarValue::Int64(*id * 2)).collect() },
    ];
    rows.dynamic = items.iter().map(|(id, _)| format!(r#"{{"tag":"t{}","n":{id}}}"#, id % 7)).collect();
    rows
}

fn pks(ids: &[i64]) -> Vec<PrimaryKey> {
    ids.iter().map(|i| PrimaryKey::Int64(*i)).collect()
}

fn found(res: &GetResults) -> Vec<i64> {
    res.rows
        .pks
        .iter()
        .map(|p| match p {
            PrimaryKey::Int64(v) => *v,
            other => panic!("{other:?}"),
        })
        .collect()
}

async fn get(client: &quiver_client::Client, ids: &[i64]) -> GetResults {
    let fields = FIELDS.iter().map(|s| s.to_string()).collect();
    client.get("products", pks(ids), fields, Consistency::Strong).await.expect("get")
}

/// Checks one returned row: vector of base row `row`, fields derived from `id` and `title`.
fn check_row(res: &GetResults, id: i64, row: usize, title: &str) {
    let ds = dataset();
    let i = res.rows.pks.iter().position(|p| *p == PrimaryKey::Int64(id)).unwrap_or_else(|| panic!("{id} missing"));
    assert_eq!(&res.rows.vectors[i * ds.dim..(i + 1) * ds.dim], ds.row(row), "vector of {id}");
    let col = |name: &str| {
        res.rows.columns.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no column {name}")).values[i].clone()
    };
    assert_eq!(col("title"), ScalarValue::VarChar(format!("{title}-{id}")));
    assert_eq!(col("price"), ScalarValue::Double((id * 2) as f64));
    assert_eq!(col("tag"), ScalarValue::VarChar(format!("t{}", id % 7)));
    assert_eq!(col("n"), ScalarValue::Int64(id));
}

/// Asserts that a Strong search for each deleted row's own vector never returns its key.
async fn assert_not_searchable(client: &quiver_client::Client, deleted: &[i64]) {
    let ds = dataset();
    let mut queries = Vec::new();
    for id in deleted {
        queries.extend_from_slice(ds.row(*id as usize));
    }
    let req = data::search("products", queries, 20, SearchParams { nprobe: 0, ef: 64 }, Consistency::Strong);
    let res = client.search(&req).await.expect("search");
    for (q, hits) in res.results.iter().enumerate() {
        assert_eq!(hits.pks.len(), 20);
        for d in deleted {
            assert!(
                !hits.pks.contains(&PrimaryKey::Int64(*d)),
                "deleted key {d} returned by search {q}: {:?}",
                hits.pks
            );
        }
    }
}

#[test]
fn get_delete_and_reinsert_with_scalar_fields() {
    run(Duration::from_secs(50), async {
        let h = Harness::standalone("crud", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        crate::common::retry("create", Duration::from_secs(10), || {
            client.create_collection(products_schema("products"))
        })
        .await;
        let items: Vec<(i64, usize)> = (0..1_000).map(|i| (i, i as usize)).collect();
        let res = client.insert("products", product_rows(&items, "first")).await.expect("insert");
        assert_eq!(res.pks.len(), 1_000);

        // Get from growing data: fields, dynamic keys and the vector.
        let got = get(&client, &[0, 1, 500, 999, 123_456]).await;
        assert_eq!(found(&got), vec![0, 1, 500, 999], "existing keys in request order, unknown key skipped");
        for id in [0, 1, 500, 999] {
            check_row(&got, id, id as usize, "first");
        }
        // Search returns requested output fields per hit.
        let mut req = data::search("products", dataset().rows(7, 8), 3, SearchParams::default(), Consistency::Strong);
        req.output_fields = vec!["title".into(), "tag".into()];
        let hits = &client.search(&req).await.expect("search").results[0];
        assert_eq!(hits.pks[0], PrimaryKey::Int64(7));
        assert_eq!(hits.columns.len(), 2);
        assert_eq!(hits.columns[0].values[0], ScalarValue::VarChar("first-7".into()));
        assert_eq!(hits.columns[1].values[0], ScalarValue::VarChar("t0".into()));

        // Delete in growing data.
        let del = client.delete("products", pks(&[1, 2, 3])).await.expect("delete");
        assert_eq!(del.pks.len(), 3);
        assert_eq!(found(&get(&client, &[1, 2, 3, 4]).await), vec![4]);
        assert_not_searchable(&client, &[1, 2, 3]).await;

        // Seal everything; deletes made before the flush still hide the sealed rows.
        data::flush(&client, "products").await;
        data::wait_segments(&client, "products", 1_000, SegmentState::Flushed, Duration::from_secs(15)).await;
        assert_eq!(found(&get(&client, &[1, 2, 3, 4]).await), vec![4]);
        assert_not_searchable(&client, &[1, 2, 3]).await;
        check_row(&get(&client, &[4]).await, 4, 4, "first");

        // Delete rows that live in a sealed segment.
        client.delete("products", pks(&[10, 11, 12])).await.expect("delete sealed");
        assert!(found(&get(&client, &[10, 11, 12]).await).is_empty());
        assert_not_searchable(&client, &[1, 2, 3, 10, 11, 12]).await;

        // And in an indexed segment.
        client.create_index("products", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 100)).await.expect("index");
        data::wait_segments(&client, "products", 1_000, SegmentState::Indexed, Duration::from_secs(20)).await;
        client.delete("products", pks(&[20, 21])).await.expect("delete indexed");
        assert!(found(&get(&client, &[1, 2, 3, 10, 11, 12, 20, 21]).await).is_empty());
        assert_not_searchable(&client, &[1, 2, 3, 10, 11, 12, 20, 21]).await;

        // Re-insert deleted keys (2 was deleted while growing, 10 while sealed) with new
        // vectors and titles: the new versions are visible, the old ones stay hidden.
        let again = [(2, 15_002usize), (10, 15_010)];
        client.insert("products", product_rows(&again, "again")).await.expect("re-insert");
        let got = get(&client, &[2, 10]).await;
        assert_eq!(found(&got), vec![2, 10]);
        check_row(&got, 2, 15_002, "again");
        check_row(&got, 10, 15_010, "again");
        let ds = dataset();
        let mut queries = ds.rows(15_002, 15_003);
        queries.extend_from_slice(ds.row(2));
        let req = data::search("products", queries, 10, SearchParams { nprobe: 0, ef: 64 }, Consistency::Strong);
        let res = client.search(&req).await.expect("search");
        assert_eq!(res.results[0].pks[0], PrimaryKey::Int64(2), "new version found by its vector");
        assert!(res.results[0].scores[0] > 0.999);
        let old = &res.results[1];
        if let Some(i) = old.pks.iter().position(|p| *p == PrimaryKey::Int64(2)) {
            assert!(old.scores[i] < 0.999, "the old vector of key 2 must not be served: {:?}", old);
        }
        // The survivors are intact: 1000 - 8 deleted + 2 re-inserted.
        let all: Vec<i64> = (0..1_000).collect();
        assert_eq!(found(&get(&client, &all).await).len(), 994);
    });
}

#[test]
fn strong_consistency_reads_its_own_writes() {
    run(Duration::from_secs(50), async {
        let h = Harness::standalone("ryw", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let ds = dataset();
        data::create_simple(&client, "ryw").await;
        data::insert_rows(&client, "ryw", 0, 2_000, 1_000).await;
        for i in 0..50usize {
            let key = 1_000_000 + i as i64;
            let row = 2_000 + i;
            client
                .insert("ryw", schema::rows([key], ds.dim32(), ds.rows(row, row + 1)))
                .await
                .unwrap_or_else(|e| panic!("insert {i}: {e}"));
            let req = data::search("ryw", ds.rows(row, row + 1), 1, SearchParams::default(), Consistency::Strong);
            let res = client.search(&req).await.unwrap_or_else(|e| panic!("search {i}: {e}"));
            assert_eq!(
                res.results[0].pks,
                vec![PrimaryKey::Int64(key)],
                "iteration {i}: own write not found by search"
            );
            assert!(res.results[0].scores[0] > 0.999);
            let got = client
                .get("ryw", vec![PrimaryKey::Int64(key)], Vec::new(), Consistency::Strong)
                .await
                .unwrap_or_else(|e| panic!("get {i}: {e}"));
            assert_eq!(got.rows.pks, vec![PrimaryKey::Int64(key)], "iteration {i}: own write not found by get");
            assert_eq!(got.rows.vectors, ds.row(row));
            // Seal now and then, so reads also cross the growing → sealed hand-off.
            if i % 10 == 9 {
                data::flush(&client, "ryw").await;
            }
        }
    });
}

/// An upsert replaces the rows of its keys, and a reader never sees them gone: per shard its
/// delete and insert are one log batch, which the query node applies as one step.
#[test]
fn upserts_replace_rows_and_readers_never_see_them_gone() {
    run(Duration::from_secs(60), async {
        let h = Harness::standalone("upsert", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let ds = dataset();
        let n = 200usize;
        data::create_simple(&client, "ups").await;
        data::insert_rows(&client, "ups", 0, n, n).await;
        // Read with Eventually consistency from here on: first wait until the rows are served
        // (a shard leader assigned moments ago may still be reading the log).
        assert_eq!(data::count(&client, "ups").await, n as i64);
        let keys: Vec<i64> = (0..n as i64).collect();
        let count = quiver_client::Query {
            partitions: Default::default(),
            collection: "ups".into(),
            filter: String::new(),
            output_fields: vec!["count(*)".into()],
            limit: 0,
            offset: 0,
            consistency: Consistency::Eventually,
        };
        let reader = {
            let client = client.clone();
            tokio::spawn(async move {
                let mut counts = Vec::new();
                let end = std::time::Instant::now() + Duration::from_secs(5);
                while std::time::Instant::now() < end {
                    let res = client.query(&count).await.expect("count");
                    match res.rows.columns.first().map(|c| c.values.as_slice()) {
                        Some([ScalarValue::Int64(c)]) => counts.push(*c),
                        other => panic!("count(*) answered {other:?}"),
                    }
                }
                counts
            })
        };
        // Each round gives every key the vector of another base row.
        let mut rounds = 0usize;
        while !reader.is_finished() {
            let from = (rounds % 10 + 1) * n;
            client
                .upsert("ups", schema::rows(keys.clone(), ds.dim32(), ds.rows(from, from + n)))
                .await
                .expect("upsert");
            rounds += 1;
        }
        let counts = reader.await.expect("reader");
        let wrong: Vec<&i64> = counts.iter().filter(|c| **c != n as i64).collect();
        eprintln!("{rounds} upserts of {n} keys, {} reads, {} of them wrong", counts.len(), wrong.len());
        assert!(rounds > 20 && counts.len() > 100, "{rounds} upserts, {} reads", counts.len());
        assert!(wrong.is_empty(), "{} of {} reads counted {wrong:?}", wrong.len(), counts.len());
        // The last round's vectors are what a get returns.
        let last = ((rounds - 1) % 10 + 1) * n;
        let got = client.get("ups", pks(&[7]), Vec::new(), Consistency::Strong).await.expect("get");
        assert_eq!(got.rows.vectors, ds.row(last + 7), "key 7 holds the last upsert's vector");
    });
}
