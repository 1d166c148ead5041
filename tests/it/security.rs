//! Security (`security.enabled`, `[tls]`): the NATS server itself refuses unauthenticated
//! clients and an application principal's publishes and subscriptions outside the data API;
//! admin may drop; the Milvus gRPC API refuses wrong passwords and an app's DropCollection; TLS
//! on gRPC and NATS works with a test CA and plaintext is refused; `quiver cluster` sets all of
//! this up as standalone does.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use quiver_actors::proxy::milvus::proto::{common, milvus as pb};
use quiver_client::{ClientError, ConnectOptions, Subjects};
use quiver_testkit::TestCa;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

use crate::common::data;
use crate::common::{free_port, quiver_cli, run, Harness, READY};

const SECURE: (&str, &str) = ("QUIVER_SECURITY__ENABLED", "true");

/// A raw NATS connection as `principal` of the harness's cluster, with the server's error
/// texts (permission violations) collected.
async fn raw_as(h: &Harness, principal: &str) -> (async_nats::Client, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let text = std::fs::read_to_string(h.credentials_file(principal)).expect("credentials file");
    let (user, password) = text.trim().split_once(':').expect("user:password");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(user.into(), password.into())
        .custom_inbox_prefix(format!("_INBOX.{user}"))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    let _ = tx.send(e.to_string());
                }
            }
        })
        .connect(h.url())
        .await
        .expect("connect with the generated credentials");
    (client, rx)
}

/// Waits for the server's permission violation naming `subject`.
async fn refused(errors: &mut tokio::sync::mpsc::UnboundedReceiver<String>, what: &str, subject: &str) {
    let wanted = format!("Permissions Violation for {what} to \"{subject}\"");
    let wait = async {
        while let Some(e) = errors.recv().await {
            if e.contains(&wanted) {
                return;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("the server did not refuse: {wanted}"));
}

#[test]
fn nats_refuses_strangers_and_keeps_the_app_to_the_data_api() {
    run(Duration::from_secs(60), async {
        let h = Harness::standalone("sec_nats", &[SECURE]);
        let admin = h.client().await;
        h.wait_ready(&admin, &h.standalone_nodes(), READY).await;

        // Credentials are private to their owner.
        for f in ["node.nk", "admin.credentials", "app.credentials"] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(h.data_dir().join("credentials").join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }

        // No credentials, or wrong ones: the server closes the connection.
        let err = async_nats::ConnectOptions::new().connect(h.url()).await.expect_err("anonymous connect");
        assert!(err.to_string().to_lowercase().contains("authorization violation"), "{err}");
        let err = async_nats::ConnectOptions::new()
            .user_and_password("app".into(), "wrong".into())
            .connect(h.url())
            .await
            .expect_err("wrong password");
        assert!(err.to_string().to_lowercase().contains("authorization violation"), "{err}");

        // The app principal works on data through the SDK ...
        let app_options = ConnectOptions::default().credentials_file(h.credentials_file("app")).unwrap();
        let app = h.client_with(&app_options).await;
        data::create_simple(&app, "docs").await;
        data::insert_rows(&app, "docs", 0, 200, 200).await;
        assert_eq!(app.list_collections().await.unwrap(), vec!["docs".to_string()]);
        // ... but the server refuses its drop at once (no reply, no timeout).
        let started = std::time::Instant::now();
        match app.drop_collection("docs").await {
            Err(ClientError::PermissionDenied(text)) => assert!(text.contains("drop_collection"), "{text}"),
            other => panic!("app drop_collection: {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(5), "refusal took {:?}", started.elapsed());
        assert!(matches!(app.drain_node("standalone-querynode").await, Err(ClientError::PermissionDenied(_))));

        // Raw: every internal and admin subject is refused by the server itself.
        let s = Subjects::new(&h.cluster);
        let (raw, mut errors) = raw_as(&h, "app").await;
        let c = &h.cluster;
        for subject in [
            s.api("drop_collection"),
            s.api("plugin_load"),
            s.api("plugin_activate"),
            format!("quiver.{c}.coord.segment_flushed"),
            format!("quiver.{c}.coord.drop_collection"),
            format!("quiver.{c}.dml.1.0.insert"),
            s.node("standalone-querynode", "drain"),
            s.node("standalone-querynode", "load"),
            format!("$JS.API.STREAM.DELETE.{}", s.dml_stream(1, 0)),
            format!("$KV.{}.collection.docs", s.meta_bucket()),
        ] {
            raw.publish(subject.clone(), "x".into()).await.unwrap();
            raw.flush().await.unwrap();
            refused(&mut errors, "Publish", &subject).await;
        }
        for subject in [format!("quiver.{c}.coord.*"), format!("quiver.{c}.dml.>"), "_INBOX.>".to_string()] {
            let _sub = raw.subscribe(subject.clone()).await.unwrap();
            raw.flush().await.unwrap();
            refused(&mut errors, "Subscription", &subject).await;
        }
        // Joining the coordinator's queue group (to steal its requests) is refused too.
        let coord = format!("quiver.{c}.coord.*");
        let _sub = raw.queue_subscribe(coord.clone(), "coordinator".into()).await.unwrap();
        raw.flush().await.unwrap();
        refused(&mut errors, "Subscription", &coord).await;

        // Admin may drop, but is no node either.
        let (raw_admin, mut admin_errors) = raw_as(&h, "admin").await;
        let flushed = format!("quiver.{c}.coord.segment_flushed");
        raw_admin.publish(flushed.clone(), "x".into()).await.unwrap();
        raw_admin.flush().await.unwrap();
        refused(&mut admin_errors, "Publish", &flushed).await;
        admin.drop_collection("docs").await.expect("admin drops");
        assert!(admin.list_collections().await.unwrap().is_empty());
        // All of the above left the cluster serving.
        h.wait_ready(&admin, &h.standalone_nodes(), READY).await;
    });
}

/// A unary Milvus call over `channel` with an optional `user:password` token.
async fn milvus<Req, Resp>(
    channel: &Channel,
    method: &str,
    req: Req,
    token: Option<&str>,
) -> Result<Resp, tonic::Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut request = tonic::Request::new(req);
    if let Some(t) = token {
        let value = base64::engine::general_purpose::STANDARD.encode(t);
        request.metadata_mut().insert("authorization", value.parse().unwrap());
    }
    let path = format!("/milvus.proto.milvus.MilvusService/{method}").parse().unwrap();
    grpc.unary(request, path, tonic_prost::ProstCodec::default()).await.map(tonic::Response::into_inner)
}

fn token(h: &Harness, principal: &str) -> String {
    std::fs::read_to_string(h.credentials_file(principal)).unwrap().trim().to_string()
}

async fn show(channel: &Channel, token: Option<&str>) -> Result<pb::ShowCollectionsResponse, tonic::Status> {
    milvus(channel, "ShowCollections", pb::ShowCollectionsRequest::default(), token).await
}

async fn drop_collection(channel: &Channel, name: &str, token: Option<&str>) -> Result<common::Status, tonic::Status> {
    let req = pb::DropCollectionRequest { collection_name: name.into(), ..Default::default() };
    milvus(channel, "DropCollection", req, token).await
}

/// Env of a standalone with security and TLS everywhere (mutual TLS on NATS), certificates from `ca`.
fn tls_env(ca: &TestCa, grpc_port: u16) -> Vec<(&'static str, String)> {
    let p = |p: &Path| p.display().to_string();
    vec![
        (SECURE.0, SECURE.1.to_string()),
        ("QUIVER_PROXY__GRPC_PORT", grpc_port.to_string()),
        ("QUIVER_TLS__GRPC_CERT_FILE", p(&ca.cert)),
        ("QUIVER_TLS__GRPC_KEY_FILE", p(&ca.key)),
        ("QUIVER_TLS__NATS_SERVER_CERT_FILE", p(&ca.cert)),
        ("QUIVER_TLS__NATS_SERVER_KEY_FILE", p(&ca.key)),
        ("QUIVER_TLS__NATS_CA_FILE", p(&ca.ca)),
        ("QUIVER_TLS__NATS_VERIFY_CLIENTS", "true".into()),
        ("QUIVER_TLS__NATS_CLIENT_CERT_FILE", p(&ca.cert)),
        ("QUIVER_TLS__NATS_CLIENT_KEY_FILE", p(&ca.key)),
    ]
}

#[test]
fn grpc_principals_and_tls_everywhere() {
    run(Duration::from_secs(60), async {
        let certs = tempfile::tempdir().unwrap();
        let ca = TestCa::generate(certs.path());
        let grpc_port = free_port().unwrap();
        let env = tls_env(&ca, grpc_port);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut h = Harness::standalone("sec_tls", &env);
        // NATS over mutual TLS, as admin.
        h.client_options.ca_file = Some(ca.ca.clone());
        h.client_options.client_cert = Some((ca.cert.clone(), ca.key.clone()));
        let admin = h.client().await;
        h.wait_ready(&admin, &h.standalone_nodes(), READY).await;
        data::create_simple(&admin, "docs").await;

        // NATS: without TLS (or without a client certificate) there is no connection.
        let creds = ConnectOptions::default().credentials_file(h.credentials_file("admin")).unwrap();
        let plain = tokio::time::timeout(
            Duration::from_secs(5),
            quiver_client::Client::connect_with(&h.url(), &h.cluster, &creds),
        )
        .await;
        assert!(!matches!(plain, Ok(Ok(_))), "a client without TLS connected");
        let no_cert = creds.clone().ca_file(ca.ca.clone());
        let no_cert = tokio::time::timeout(
            Duration::from_secs(5),
            quiver_client::Client::connect_with(&h.url(), &h.cluster, &no_cert),
        )
        .await;
        assert!(!matches!(no_cert, Ok(Ok(_))), "a client without a certificate connected");

        // gRPC over TLS with the test CA.
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(std::fs::read(&ca.ca).unwrap()))
            .domain_name("localhost");
        let channel = Channel::from_shared(format!("https://127.0.0.1:{grpc_port}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .expect("TLS gRPC channel");
        let (app_token, admin_token) = (token(&h, "app"), token(&h, "admin"));
        let listed = show(&channel, Some(&app_token)).await.expect("app lists over TLS");
        assert_eq!(listed.collection_names, vec!["docs".to_string()]);
        // Wrong or missing credentials: UNAUTHENTICATED, as Milvus answers.
        for bad in [None, Some("app:wrong"), Some("admin:"), Some("nobody:x")] {
            let e = show(&channel, bad).await.expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{bad:?}: {e}");
        }
        // The app may not drop: PERMISSION_DENIED, and the collection stays.
        let e = drop_collection(&channel, "docs", Some(&app_token)).await.expect_err("app drop refused");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        assert_eq!(admin.list_collections().await.unwrap(), vec!["docs".to_string()]);
        let status = drop_collection(&channel, "docs", Some(&admin_token)).await.expect("admin drops");
        assert_eq!(status.code, 0, "{status:?}");
        assert!(admin.list_collections().await.unwrap().is_empty());

        // Plaintext gRPC against the TLS port gets nowhere.
        let plain = Channel::from_shared(format!("http://127.0.0.1:{grpc_port}")).unwrap().connect().await;
        if let Ok(plain) = plain {
            let e = tokio::time::timeout(Duration::from_secs(5), show(&plain, Some(&admin_token))).await;
            assert!(!matches!(e, Ok(Ok(_))), "plaintext gRPC was served");
        }
    });
}

#[test]
fn quiver_cluster_generates_credentials_and_enforces_them() {
    run(Duration::from_secs(90), async {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("it_sec_cluster_{}", std::process::id());
        let nats_port = free_port().unwrap();
        let text = format!(
            r#"
[cluster]
name = "{name}"
data_dir = "data"
[cluster.env]
QUIVER_SECURITY__ENABLED = true
QUIVER_PROXY__GRPC_PORT = 0
QUIVER_PROXY__HTTP_PORT = 0
QUIVER_METRICS__LISTEN = ""
[nats]
port = {nats_port}
[supervisor]
backoff_initial = "300ms"
stop_grace = "5s"
[[node]]
id = "main"
roles = ["coordinator", "proxy", "datanode", "indexnode"]
[[node]]
id = "qn"
roles = ["querynode"]
"#
        );
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, text).unwrap();
        let file = file.display().to_string();
        let cli = |args: &[&str]| quiver_cli(args, &[], dir.path());
        // `up` waits until every node is healthy: it connects as the generated admin.
        let (st, out, err) = cli(&["cluster", "up", "--config", &file]);
        let _down = Guard(|| {
            let _ = quiver_cli(&["cluster", "down", "--config", &file], &[], dir.path());
        });
        assert!(st.success(), "cluster up failed:\n{out}\n{err}");
        let (st, out, err) = cli(&["cluster", "status", "--config", &file]);
        assert!(st.success() && out.contains("healthy"), "status:\n{out}\n{err}");

        let url = format!("nats://127.0.0.1:{nats_port}");
        let creds =
            |p: &str| dir.path().join("data/credentials").join(format!("{p}.credentials")).display().to_string();
        let ctl = |principal: Option<&str>, args: &[&str]| {
            let mut all = vec!["ctl", "--url", &url, "--cluster", &name];
            let c;
            if let Some(p) = principal {
                c = creds(p);
                all.extend(["--credentials", c.as_str()]);
            }
            all.extend_from_slice(args);
            quiver_cli(&all, &[], dir.path())
        };
        let (st, _, err) = ctl(None, &["collections"]);
        assert!(!st.success() && err.contains("authorization violation"), "anonymous ctl: {err}");
        let (st, _, err) = ctl(Some("app"), &["create", "docs", "--dim", "4"]);
        assert!(st.success(), "app create: {err}");
        let (st, _, err) = ctl(Some("app"), &["drop", "docs"]);
        assert!(!st.success() && err.contains("permission denied"), "app drop: {err}");
        let (st, _, err) = ctl(Some("admin"), &["drop", "docs"]);
        assert!(st.success(), "admin drop: {err}");
    });
}

/// Runs `f` when dropped (also when the test fails), so no cluster outlives its test.
struct Guard<F: FnMut()>(F);

impl<F: FnMut()> Drop for Guard<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}
