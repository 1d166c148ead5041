//! Connects to a running Quiver (`./scripts/standalone.sh`), creates a collection, inserts
//! vectors with a dynamic field, searches, gets by key and deletes.
//!
//! `cargo run --release --example quickstart [-- nats://127.0.0.1:4222]`
//!
//! Security is on by default, so it connects as the admin principal: the credentials file in
//! `QUIVER_CREDENTIALS`, else `quiver-data/credentials/admin.credentials` (the one
//! `standalone.sh` generated, when run from the repository root); none if neither exists (a
//! server with `security.enabled = false`).

use quiver_client::{schema, Client, ConnectOptions, Consistency, PrimaryKey};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args().nth(1).unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let credentials = std::env::var_os("QUIVER_CREDENTIALS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "quiver-data/credentials/admin.credentials".into());
    let mut options = ConnectOptions::default();
    if credentials.exists() {
        options = options.credentials_file(&credentials)?;
    }
    let client = Client::connect_with(&url, "quiver", &options).await?;
    let name = "quickstart";
    if client.list_collections().await?.iter().any(|c| c == name) {
        client.drop_collection(name).await?;
    }
    client.create_collection(schema::simple(name, 4)).await?;

    let mut rows = schema::rows(0..3, 4, vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.7, 0.7, 0.0, 0.0]);
    rows.dynamic = vec![r#"{"color":"red"}"#.into(), r#"{"color":"green"}"#.into(), r#"{"color":"yellow"}"#.into()];
    let written = client.insert(name, rows).await?;
    println!("inserted {} rows at timestamp {}", written.pks.len(), written.timestamp);

    let mut search = schema::search(name, 4, vec![0.9, 0.1, 0.0, 0.0], 2);
    search.output_fields = vec!["color".into()];
    search.consistency = Consistency::Strong;
    let hits = client.search(&search).await?.results.remove(0);
    for ((pk, score), color) in hits.pks.iter().zip(&hits.scores).zip(&hits.columns[0].values) {
        println!("hit {pk:?} score {score:.3} color {color:?}");
    }

    let got = client.get(name, vec![PrimaryKey::Int64(2)], vec!["color".into()], Consistency::Strong).await?;
    println!("get 2 → vector {:?}", got.rows.vectors);
    client.delete(name, vec![PrimaryKey::Int64(0)]).await?;
    let hits = client.search(&search).await?.results.remove(0);
    println!("after deleting 0, best hit is {:?}", hits.pks.first());
    Ok(())
}
