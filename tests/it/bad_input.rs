//! Bad input gets a clear error of the right kind, naming the problem, and crashes nothing:
//! afterwards the server answers normally and no role was restarted.

use std::time::{Duration, Instant};

use quiver_client::{
    schema, ClientError, CollectionSchema, Column, Consistency, DataType, IndexType, Insert, MetricType, PrimaryKey,
    ScalarValue, SearchParams, Wire,
};

use crate::common::data::{self, dataset};
use crate::common::{api_error_as_node, run, Harness, READY};

/// Asserts `InvalidArgument` whose message mentions every needle (case-insensitive).
#[track_caller]
fn invalid<T: std::fmt::Debug>(res: Result<T, ClientError>, needles: &[&str]) {
    match res {
        Err(ClientError::InvalidArgument(msg)) => {
            let lower = msg.to_lowercase();
            for n in needles {
                assert!(lower.contains(&n.to_lowercase()), "error {msg:?} should mention {n:?}");
            }
        }
        other => panic!("expected InvalidArgument mentioning {needles:?}, got {other:?}"),
    }
}

#[track_caller]
fn not_found<T: std::fmt::Debug>(res: Result<T, ClientError>, name: &str) {
    match res {
        Err(ClientError::NotFound(msg)) => assert!(msg.contains(name), "error {msg:?} should name {name:?}"),
        other => panic!("expected NotFound for {name:?}, got {other:?}"),
    }
}

/// `id` Int64 key, `title` VarChar, `price` Double, `vector` of 384.
fn typed_schema() -> CollectionSchema {
    let mut s = schema::simple("typed", dataset().dim32());
    s.fields.push(schema::field("title", DataType::VarChar));
    s.fields.push(schema::field("price", DataType::Double));
    s
}

fn one_row(id: i64, vector: Vec<f32>) -> quiver_client::RowBatch {
    schema::rows([id], dataset().dim32(), vector)
}

#[test]
fn bad_input_gets_clear_errors_and_breaks_nothing() {
    run(Duration::from_secs(50), async {
        let mut h = Harness::standalone("badinput", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let ds = dataset();
        data::create_simple(&client, "good").await;
        data::insert_rows(&client, "good", 0, 6_000, 2_000).await;
        client.create_collection(typed_schema()).await.expect("typed collection");

        // Wrong dimension, insert and search.
        let short = schema::rows([1], 128, vec![0.5; 128]);
        invalid(client.insert("good", short).await, &["dimension", "384", "128"]);
        invalid(
            client.insert("good", schema::rows([1], 384, vec![0.5; 383])).await,
            &["383 floats", "384-dimensional"],
        );
        let s = schema::search("good", 128, vec![0.5; 128], 10);
        invalid(client.search(&s).await, &["dimension", "384", "128"]);

        // NaN and infinity, insert and search.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let mut v = ds.rows(0, 1);
            v[7] = bad;
            invalid(client.insert("good", one_row(99_999, v.clone())).await, &["NaN or infinity", "element 7"]);
            invalid(client.search(&schema::search("good", 384, v, 10)).await, &["NaN or infinity"]);
        }

        // Unknown collection.
        not_found(client.insert("nope", one_row(1, ds.rows(0, 1))).await, "nope");
        not_found(client.search(&schema::search("nope", 384, ds.rows(0, 1), 10)).await, "nope");
        not_found(client.describe_collection("nope").await, "nope");
        not_found(client.get("nope", vec![PrimaryKey::Int64(1)], Vec::new(), Consistency::Strong).await, "nope");
        not_found(client.delete("nope", vec![PrimaryKey::Int64(1)]).await, "nope");
        not_found(client.flush("nope").await, "nope");
        not_found(client.create_index("nope", data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 0)).await, "nope");
        not_found(client.drop_collection("nope").await, "nope");

        // top_k out of range.
        invalid(client.search(&schema::search("good", 384, ds.rows(0, 1), 0)).await, &["top_k", "16384", "got 0"]);
        invalid(client.search(&schema::search("good", 384, ds.rows(0, 1), 16_385)).await, &["top_k", "16384", "16385"]);
        let empty_search = schema::search("good", 384, Vec::new(), 10);
        invalid(client.search(&empty_search).await, &["no query vectors"]);

        // Empty insert batch.
        invalid(client.insert("good", schema::rows(Vec::<i64>::new(), 384, Vec::new())).await, &["empty batch"]);

        // Missing or mistyped fields, wrong primary key type or count.
        invalid(client.insert("typed", one_row(1, ds.rows(0, 1))).await, &["missing", "title"]);
        let mut rows = one_row(1, ds.rows(0, 1));
        rows.columns = vec![
            Column { name: "title".into(), values: vec![ScalarValue::VarChar("a".into())] },
            Column { name: "price".into(), values: vec![ScalarValue::VarChar("cheap".into())] },
        ];
        invalid(client.insert("typed", rows.clone()).await, &["price", "Double"]);
        rows.columns[1].values = vec![ScalarValue::Double(1.5)];
        rows.columns.push(Column { name: "color".into(), values: vec![ScalarValue::VarChar("red".into())] });
        invalid(client.insert("typed", rows.clone()).await, &["color", "not in the schema"]);
        rows.columns.pop();
        rows.pks = vec![PrimaryKey::VarChar("one".into())];
        invalid(client.insert("typed", rows.clone()).await, &["primary key", "Int64"]);
        rows.pks = vec![PrimaryKey::Int64(1), PrimaryKey::Int64(2)];
        invalid(client.insert("typed", rows.clone()).await, &["primary key", "2 values for 1 rows"]);
        invalid(
            client.get("good", vec![PrimaryKey::VarChar("x".into())], Vec::new(), Consistency::Strong).await,
            &["primary key"],
        );
        invalid(client.delete("good", vec![PrimaryKey::VarChar("x".into())]).await, &["primary key"]);
        invalid(client.delete("good", Vec::new()).await, &["at least one primary key"]);
        rows.pks = vec![PrimaryKey::Int64(1)];
        rows.dynamic = vec!["[1, 2]".into()];
        invalid(client.insert("typed", rows.clone()).await, &["dynamic", "JSON object"]);
        rows.dynamic.clear();
        client.insert("typed", rows).await.expect("the corrected row is accepted");

        // Malformed bytes straight onto the API subjects.
        let valid =
            Insert { partition: Default::default(), collection: "good".into(), rows: one_row(5, ds.rows(5, 6)) }
                .to_bytes();
        let truncated = valid[..valid.len() / 2].to_vec();
        let garbage: Vec<u8> = (0..512u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for method in ["insert", "search", "create_collection"] {
            for (what, bytes) in [("garbage", garbage.clone()), ("empty", Vec::new()), ("truncated", truncated.clone())]
            {
                let res = client.call_raw(method, bytes).await;
                match res {
                    Err(ClientError::InvalidArgument(msg)) => {
                        assert!(msg.contains("malformed"), "{method} with {what} bytes: {msg:?} should say malformed")
                    }
                    other => panic!("{method} with {what} bytes: expected InvalidArgument, got {other:?}"),
                }
            }
        }
        // A method that does not exist: the NATS server itself refuses the admin's publish (its
        // permissions list the API's methods) ...
        match client.call_raw("no_such_method", Vec::new()).await {
            Err(ClientError::PermissionDenied(m)) => assert!(m.contains("no_such_method"), "{m}"),
            other => panic!("no_such_method: expected the NATS server's refusal, got {other:?}"),
        }
        // ... and a process that may publish there gets the proxy's answer.
        let error = api_error_as_node(&h, "no_such_method", Vec::new()).await;
        assert!(error.contains("unknown method"), "{error:?}");

        // Invalid schemas.
        let mut s = schema::simple("novec", 8);
        s.fields.retain(|f| f.data_type != DataType::FloatVector);
        invalid(client.create_collection(s).await, &["FloatVector"]);
        invalid(client.create_collection(schema::simple("dimzero", 0)).await, &["dim 0"]);
        let mut s = schema::simple("nopk", 8);
        s.fields[0].is_primary = false;
        invalid(client.create_collection(s).await, &["primary key"]);
        invalid(client.create_collection(schema::simple("bad name", 8)).await, &["bad name", "invalid"]);
        let mut s = schema::simple("twice", 8);
        s.fields.push(schema::field("id", DataType::Bool));
        invalid(client.create_collection(s).await, &["twice"]);
        match client.create_collection(schema::simple("good", 8)).await {
            Err(ClientError::AlreadyExists(msg)) => assert!(msg.contains("good"), "{msg}"),
            other => panic!("re-creating with another schema: {other:?}"),
        }

        // Invalid index parameters.
        let pq = quiver_client::IndexParams { nbits: 8, ..data::index(IndexType::IvfPq, MetricType::Ip, 64, 7, 0) };
        invalid(client.create_index("good", pq).await, &["m = 7", "384"]);
        let pq = quiver_client::IndexParams { nbits: 20, ..data::index(IndexType::IvfPq, MetricType::Ip, 64, 8, 0) };
        invalid(client.create_index("good", pq).await, &["nbits"]);
        invalid(
            client.create_index("good", data::index(IndexType::IvfFlat, MetricType::Ip, 100_000, 0, 0)).await,
            &["nlist"],
        );
        invalid(client.create_index("good", data::index(IndexType::Hnsw, MetricType::Ip, 0, 1, 0)).await, &["M = 1"]);
        invalid(
            client.create_index("good", data::index(IndexType::Hnsw, MetricType::Ip, 0, 5_000, 0)).await,
            &["M = 5000"],
        );
        // None of the rejected definitions stuck: a valid one is accepted and used.
        assert_eq!(client.describe_collection("good").await.expect("describe").info.index, None);
        let hnsw = data::index(IndexType::Hnsw, MetricType::Ip, 0, 16, 64);
        client.create_index("good", hnsw.clone()).await.expect("a valid index");
        match client.create_index("good", data::index(IndexType::IvfFlat, MetricType::Ip, 0, 0, 0)).await {
            Err(ClientError::AlreadyExists(msg)) => assert!(msg.contains("different index"), "{msg}"),
            other => panic!("a second, different index: {other:?}"),
        }

        // A reply that cannot fit in one NATS message is refused at once, not timed out.
        let all: Vec<PrimaryKey> = (0..6_000).map(PrimaryKey::Int64).collect();
        let started = Instant::now();
        invalid(client.get("good", all, Vec::new(), Consistency::Strong).await, &["max_payload"]);
        assert!(started.elapsed() < Duration::from_secs(5), "refused after {:?}", started.elapsed());

        // Nothing crashed: the server answers, every role is healthy and was never restarted.
        assert!(h.proc("standalone").is_running());
        let mut names = client.list_collections().await.expect("list");
        names.sort();
        assert_eq!(names, vec!["good".to_string(), "typed".to_string()]);
        let req = data::search("good", ds.rows(42, 43), 1, SearchParams::default(), Consistency::Strong);
        assert_eq!(client.search(&req).await.expect("search").results[0].pks, vec![PrimaryKey::Int64(42)]);
        let got = client.get("good", vec![PrimaryKey::Int64(5)], Vec::new(), Consistency::Strong).await.expect("get");
        assert_eq!(got.rows.vectors, ds.row(5), "row 5 is intact");
        let status = h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        for n in &status.nodes {
            assert!(n.healthy && n.restarts == 0, "no role crashed: {n:?}");
        }
    });
}
