//! The Rust SDK sends a call again when its answer does not come: core NATS delivers at most
//! once, and a request (or its answer) on its way through a nats-server that died is lost
//! without a trace. Against a real nats-server with no Quiver: a responder on the API subject
//! drops the first request it gets and answers the next, as a proxy whose server died
//! mid-request looks to a client connected elsewhere. Reads and keyed inserts are sent again
//! after 2 s of silence under one request id; inserts whose keys the cluster assigns are not.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use quiver_client::status::HEADER_REQUEST_ID;
use quiver_client::{ClientError, CollectionList, MutationResult, PrimaryKey, RowBatch, Subjects, Wire};

use crate::common::{run, Harness};

type Seen = Arc<Mutex<Vec<Option<String>>>>;

/// Serves `method` as the `node` principal: drops the first request, answers the others.
async fn responder(h: &Harness, method: &str, answer: Vec<u8>) -> Seen {
    let nats = h.nats_as("node").await;
    let mut requests = nats.subscribe(Subjects::new(&h.cluster).api(method)).await.expect("subscribe");
    nats.flush().await.expect("flush");
    let seen: Seen = Arc::default();
    let log = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            let id = msg.headers.as_ref().and_then(|h| h.get(HEADER_REQUEST_ID)).map(|v| v.as_str().to_string());
            let first = {
                let mut log = log.lock().expect("log");
                log.push(id);
                log.len() == 1
            };
            if let (false, Some(reply)) = (first, msg.reply) {
                nats.publish(reply, answer.clone().into()).await.expect("answer");
            }
        }
    });
    seen
}

fn rows(pks: Vec<PrimaryKey>) -> RowBatch {
    RowBatch { pks, dim: 4, vectors: vec![0.0; 8], columns: Vec::new(), dynamic: Vec::new() }
}

#[test]
fn reads_and_keyed_inserts_whose_request_was_lost_are_sent_again_under_one_id() {
    run(Duration::from_secs(60), async {
        let mut h = Harness::new("resend");
        h.start_nats();
        let client = h.client().await.with_timeout(Duration::from_secs(10));

        let list = CollectionList { names: vec!["docs".into()] };
        let seen = responder(&h, "list_collections", list.to_bytes()).await;
        let started = Instant::now();
        assert_eq!(client.list_collections().await.expect("list"), vec!["docs".to_string()]);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(1_900) && waited < Duration::from_secs(4), "{waited:?}");
        let ids = seen.lock().expect("seen").clone();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids[0].is_some() && ids[0] == ids[1], "one request id: {ids:?}");

        let done = MutationResult { pks: Vec::new(), timestamp: 1, count: 2 };
        let seen = responder(&h, "insert", done.to_bytes()).await;
        let keyed = rows(vec![PrimaryKey::Int64(1), PrimaryKey::Int64(2)]);
        assert_eq!(client.insert("docs", keyed).await.expect("keyed insert").count, 2);
        let ids = seen.lock().expect("seen").clone();
        assert!(ids.len() == 2 && ids[0].is_some() && ids[0] == ids[1], "{ids:?}");

        // Keys the cluster assigns differ on every send: such an insert is sent once.
        seen.lock().expect("seen").clear();
        let unkeyed = client.clone().with_timeout(Duration::from_secs(3));
        let outcome = unkeyed.insert("docs", rows(Vec::new())).await;
        assert!(matches!(outcome, Err(ClientError::Timeout(_))), "{outcome:?}");
        assert_eq!(seen.lock().expect("seen").len(), 1);
    });
}
