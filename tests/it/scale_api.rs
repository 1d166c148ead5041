//! Scaling commands and the HTTP admin API on a standalone (which has no host agent): `ctl
//! status --json`, `ctl scale` accepted with warnings and refused with the scaler's reasons,
//! `--wait`, `ctl events`, and `/v1/roles` with good and bad bodies and credentials. And the
//! counts behind them: a node that stopped is no longer counted as serving.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{eventually, free_port, quiver_cli, run, start_nodes, Harness, READY, TWO_QUERY_NODES};

/// One HTTP/1.1 request on a fresh connection; answers (status, JSON body).
async fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, Value) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect to the HTTP admin API");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut answer)).await.expect("an answer within 30 s");
    // A server that answers before reading the whole body (413) resets the connection after
    // its answer: what arrived before the reset is the answer.
    if let Err(e) = read {
        assert!(!answer.is_empty(), "{method} {path}: no answer: {e}");
    }
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no header end: {text}"));
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{head}"));
    assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body}"));
    (status, json)
}

fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code: {v}"))
}

fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or_else(|| panic!("no error message: {v}"))
}

#[test]
fn ctl_scale_status_events_and_the_http_admin_api() {
    run(Duration::from_secs(120), async {
        let port = free_port().expect("free port");
        let port_text = port.to_string();
        let h = Harness::standalone("scaling", &[("QUIVER_PROXY__HTTP_PORT", port_text.as_str())]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let url = h.url();
        let data_dir = h.data_dir().display().to_string();
        let env = [("QUIVER_CLUSTER__DATA_DIR", data_dir.as_str())];
        let ctl = |args: &[&str]| {
            let mut all = vec!["ctl", "--url", url.as_str(), "--cluster", h.cluster.as_str()];
            all.extend_from_slice(args);
            quiver_cli(&all, &env, h.dir.path())
        };

        // status --json: every node with its CPU allowance, every scalable role.
        let (status, out, err) = ctl(&["status", "--json"]);
        assert!(status.success(), "{out}{err}");
        let json: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let nodes = json["nodes"].as_array().expect("nodes");
        assert_eq!(nodes.len(), 5, "{out}");
        for n in nodes {
            assert!(n["cpu_cores"].as_f64().unwrap_or(0.0) > 0.0, "cpu_cores of {n}");
            let simd = n["faiss_simd"].as_str().unwrap_or("");
            assert!(["generic", "avx2", "avx512"].contains(&simd), "faiss_simd of {n}");
        }
        let roles: Vec<&str> =
            json["roles"].as_array().expect("roles").iter().filter_map(|r| r["role"].as_str()).collect();
        for role in ["Proxy", "DataNode", "IndexNode", "QueryNode"] {
            assert!(roles.contains(&role), "{role} in {roles:?}");
        }
        // The table: nodes, then the roles, coordinator included.
        let (status, out, err) = ctl(&["status"]);
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("CPU") && out.contains("SIMD") && out.contains("MEMORY") && out.contains("AGE"), "{out}");
        assert!(out.contains("ROLES") && out.contains("one active coordinator"), "{out}");

        // Refusals, as the coordinator words them, with a non-zero exit.
        let (status, _, err) = ctl(&["scale", "coordinator", "--replicas", "2"]);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("S0.2") && err.contains("one active coordinator"), "{err}");
        let (status, _, err) = ctl(&["scale", "querynode", "--replicas", "21"]);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("scaling.max_replicas"), "{err}");
        let (status, _, err) = ctl(&["scale", "nosuchrole", "--replicas", "2"]);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("unknown role") && err.contains("nosuchrole"), "{err}");
        let (status, _, err) = ctl(&["scale", "querynode", "--replicas", "0"]);
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("at least 1"), "{err}");

        // Accepted, with the warning that nothing can start the nodes.
        let (status, out, err) = ctl(&["scale", "querynode", "--replicas", "2"]);
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("querynode: (not set) → 2"), "{out}");
        assert!(err.contains("warning:") && err.contains("no host agent is registered"), "{err}");
        // --wait gives up at its timeout, naming what it was waiting for.
        let (status, out, err) = ctl(&["scale", "querynode", "--replicas", "2", "--wait", "--timeout", "2s"]);
        assert_eq!(status.code(), Some(1), "{out}{err}");
        assert!(out.contains("querynode: 2 (unchanged)") && out.contains("1/2 serving"), "{out}");
        assert!(err.contains("did not converge within 2s"), "{err}");
        // One query node is what runs: --wait returns at once, warning about availability.
        let (status, out, err) = ctl(&["scale", "querynode", "--replicas", "1", "--wait", "--timeout", "30s"]);
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("querynode: 2 → 1") && out.contains("1/1 serving, converged in"), "{out}");
        assert!(err.contains("one querynode"), "{err}");
        // The requests are scaling events.
        let (status, out, err) = ctl(&["events"]);
        assert!(status.success(), "{out}{err}");
        assert!(out.contains("HAND-OFFS") && out.contains("querynode  -  requested"), "{out}");
        let (status, out, err) = ctl(&["events", "--json"]);
        assert!(status.success(), "{out}{err}");
        let events: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert!(events["scaling"].as_array().is_some_and(|a| a.len() >= 2), "{out}");

        // The HTTP admin API: the admin and app tokens are the generated credentials.
        let read = |p: &str| std::fs::read_to_string(h.credentials_file(p)).expect("credentials").trim().to_string();
        let (admin, app) = (read("admin"), read("app"));
        let admin = Some(admin.as_str());
        let (code, roles) = http(port, "GET", "/v1/roles", admin, None).await;
        assert_eq!(code, 200, "{roles}");
        assert_eq!(roles.as_array().map(Vec::len), Some(4), "{roles}");
        let (code, one) = http(port, "GET", "/v1/roles/querynode", admin, None).await;
        assert_eq!((code, one["desired"].as_u64()), (200, Some(1)), "{one}");
        let (code, e) = http(port, "GET", "/v1/roles/coordinator", admin, None).await;
        assert_eq!((code, error_code(&e)), (404, "not_found"), "{e}");

        let patch = |role: &'static str, body: &'static str, token: Option<&'static str>| async move {
            http(port, "PATCH", &format!("/v1/roles/{role}"), token, Some(body)).await
        };
        let admin_token: &'static str = Box::leak(read("admin").into_boxed_str());
        let app_token: &'static str = Box::leak(app.into_boxed_str());
        let (code, reply) = patch("querynode", r#"{"replicas": 2}"#, Some(admin_token)).await;
        assert_eq!(code, 200, "{reply}");
        assert_eq!((reply["replicas"].as_u64(), reply["previous"].as_u64()), (Some(2), Some(1)), "{reply}");
        assert!(reply["warning"].as_str().is_some_and(|w| w.contains("no host agent")), "{reply}");
        // Bad requests: 400 with the reason.
        for (role, body, needle) in [
            ("querynode", r#"{"replicas": 0}"#, "at least 1"),
            ("querynode", r#"{"replicas": 21}"#, "scaling.max_replicas"),
            ("coordinator", r#"{"replicas": 2}"#, "S0.2"),
            ("nosuchrole", r#"{"replicas": 2}"#, "unknown role"),
            ("querynode", r#"{"replicas": -1}"#, "request body"),
            ("querynode", r#"{"replicas": "2"}"#, "request body"),
            ("querynode", r#"{"replica": 2}"#, "request body"),
            ("querynode", r#"{}"#, "replicas"),
            ("querynode", "{not json", "request body"),
            ("querynode", "", "request body"),
        ] {
            let (code, e) = patch(role, body, Some(admin_token)).await;
            assert_eq!((code, error_code(&e)), (400, "invalid_argument"), "{role} {body}: {e}");
            assert!(error_message(&e).contains(needle), "{role} {body}: {e}");
        }
        // Credentials: none or wrong is 401, the app may read but not scale (403).
        for token in [None, Some("admin:wrong"), Some("")] {
            let (code, e) = patch("querynode", r#"{"replicas": 2}"#, token).await;
            assert_eq!((code, error_code(&e)), (401, "unauthenticated"), "{token:?}: {e}");
            let (code, _) = http(port, "GET", "/v1/roles", token, None).await;
            assert_eq!(code, 401, "{token:?}");
        }
        let (code, e) = patch("querynode", r#"{"replicas": 2}"#, Some(app_token)).await;
        assert_eq!((code, error_code(&e)), (403, "permission_denied"), "{e}");
        let (code, _) = http(port, "GET", "/v1/roles", Some(app_token), None).await;
        assert_eq!(code, 200);
        // Status and events, an unknown path, a too large body.
        let (code, status) = http(port, "GET", "/v1/status", admin, None).await;
        assert_eq!((code, status["nodes"].as_array().map(Vec::len)), (200, Some(5)), "{status}");
        let (code, events) = http(port, "GET", "/v1/events", admin, None).await;
        assert!(code == 200 && events["scaling"].is_array(), "{events}");
        let (code, e) = http(port, "GET", "/v2/nothing", admin, None).await;
        assert_eq!((code, error_code(&e)), (404, "not_found"), "{e}");
        let big: &'static str =
            Box::leak(format!("{{\"replicas\": 2, \"pad\": \"{}\"}}", "x".repeat(100_000)).into_boxed_str());
        let (code, e) = patch("querynode", big, Some(admin_token)).await;
        assert_eq!((code, error_code(&e)), (413, "payload_too_large"), "{e}");
    });
}

/// A node that stops deregisters; the coordinator's counts (what `ctl scaling` shows, and what
/// the scaler, the autoscaler and idling decide on) drop it at once, not only once it has
/// missed heartbeats for `discovery.suspect_after` (a resize once drained the only query node
/// of the new size: the old one it had replaced still counted as serving).
#[test]
fn a_node_that_stops_is_no_longer_counted_as_serving() {
    run(Duration::from_secs(120), async {
        let mut h = Harness::new("stopped_uncounted");
        h.start_nats();
        // A wide window: a node silent for 30 s would only then stop counting as alive.
        let env = [("QUIVER_DISCOVERY__SUSPECT_AFTER", "30s"), ("QUIVER_DISCOVERY__DEAD_AFTER", "40s")];
        let (client, _) = start_nodes(&mut h, &TWO_QUERY_NODES, &env).await;
        let serving = |client: &quiver_client::Client| {
            let client = client.clone();
            async move {
                let s = client.scaling().await.map_err(|e| e.to_string())?;
                let qn = s.roles.iter().find(|r| r.role.as_str() == "querynode").ok_or("no querynode role")?;
                Ok::<u32, String>(qn.serving)
            }
        };
        eventually("2 query nodes counted", READY, || async {
            match serving(&client).await? {
                2 => Ok(()),
                n => Err(format!("{n} serving")),
            }
        })
        .await;
        let exit = h.proc("qn2").terminate(Duration::from_secs(30)).expect("qn2 exits on SIGTERM");
        assert!(exit.success(), "qn2 exited with {exit:?}:\n{}", h.proc("qn2").log_tail(30));
        let stopped = Instant::now();
        eventually("1 query node counted", Duration::from_secs(20), || async {
            match serving(&client).await? {
                1 => Ok(()),
                n => Err(format!("{n} serving")),
            }
        })
        .await;
        let took = stopped.elapsed();
        eprintln!("the stopped query node was no longer counted {:.1} s after it exited", took.as_secs_f32());
        assert!(took < Duration::from_secs(10), "counted as serving for {took:?} after it exited");
    });
}
