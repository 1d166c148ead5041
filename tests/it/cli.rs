//! The command line: configuration helpers and `quiver ctl`.

use std::time::Duration;

use crate::common::{quiver_cli, run, Harness, READY};

#[test]
fn default_config_round_trips_and_bad_configs_name_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, default, stderr) = quiver_cli(&["config", "default"], &[], dir.path());
    assert!(status.success(), "config default failed: {stderr}");
    for section in ["[cluster]", "[nats]", "[storage]", "[node]", "[metrics]", "[supervisor]", "[proxy]", "[datanode]"]
    {
        assert!(default.contains(section), "default config has {section}:\n{default}");
    }
    let path = dir.path().join("quiver.toml");
    std::fs::write(&path, &default).expect("write");
    let file = path.display().to_string();
    let (status, out, err) = quiver_cli(&["config", "check", &file], &[], dir.path());
    assert!(status.success(), "the default configuration must check: {out}{err}");
    assert!(out.contains("ok"), "{out}");

    // Each bad file fails with exit code 1 and a message naming the key (or the problem).
    let cases: [(&str, &[&str]); 6] = [
        ("[proxy]\nmax_top_k = 0\n", &["proxy.max_top_k"]),
        ("[nats]\nurll = \"nats://x:4222\"\n", &["urll"]),
        ("[node]\nheartbeat_ttl = 5\n", &["heartbeat_ttl"]),
        ("[node]\nheartbeat_ttl = \"500ms\"\n", &["node.heartbeat_ttl", "heartbeat_interval"]),
        ("[metrics]\nlisten = \"not an address\"\n", &["metrics.listen"]),
        ("[proxy\nmax_top_k = 1\n", &["bad.toml"]),
    ];
    let bad = dir.path().join("bad.toml");
    let bad_file = bad.display().to_string();
    for (text, needles) in cases {
        std::fs::write(&bad, text).expect("write");
        let (status, out, err) = quiver_cli(&["config", "check", &bad_file], &[], dir.path());
        assert_eq!(status.code(), Some(1), "{text:?} must be rejected: {out}{err}");
        for n in needles {
            assert!(err.contains(n), "error for {text:?} should mention {n:?}: {err}");
        }
        assert!(err.contains("invalid configuration"), "{err}");
    }
    // Environment overrides are validated the same way.
    let (status, _, err) =
        quiver_cli(&["config", "check", &file], &[("QUIVER_COORDINATOR__DEFAULT_SHARDS", "0")], dir.path());
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("coordinator.default_shards"), "{err}");
    // A server refuses to start on a bad configuration, saying why.
    std::fs::write(&bad, "[supervisor]\nmax_restarts = 0\n").expect("write");
    let (status, _, err) = quiver_cli(&["standalone", "-c", &bad_file], &[], dir.path());
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("supervisor.max_restarts"), "{err}");
}

#[test]
fn ctl_status_lists_all_five_roles() {
    run(Duration::from_secs(30), async {
        let h = Harness::standalone("ctl", &[]);
        let client = h.client().await;
        h.wait_ready(&client, &h.standalone_nodes(), READY).await;
        let url = h.url();
        let conn = ["ctl", "--url", url.as_str(), "--cluster", h.cluster.as_str()];
        // Security is on by default: without credentials (none under ./quiver-data here) the
        // server refuses the connection, and the error says where the credentials are.
        let all: Vec<&str> = conn.iter().chain(&["status"]).copied().collect();
        let (status, _, err) = quiver_cli(&all, &[], h.dir.path());
        assert_eq!(status.code(), Some(1), "{err}");
        assert!(err.contains("requires credentials") && err.contains("--credentials"), "{err}");
        // With the server's data dir, ctl finds the admin credentials there by itself.
        let data_dir = h.data_dir().display().to_string();
        let env = [("QUIVER_CLUSTER__DATA_DIR", data_dir.as_str())];
        let ctl = |args: &[&str]| {
            let all: Vec<&str> = conn.iter().chain(args).copied().collect();
            let (status, out, err) = quiver_cli(&all, &env, h.dir.path());
            assert!(status.success(), "quiver {all:?} failed: {out}{err}");
            out
        };
        let out = ctl(&["status"]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].contains(&h.cluster) && lines[0].contains("5 nodes"), "{out}");
        let header = lines[1].split_whitespace().collect::<Vec<_>>();
        assert_eq!(&header[..3], ["NODE", "ROLE", "HOST"], "{out}");
        assert!(header.contains(&"HEALTH") && header.contains(&"RESTARTS"), "{out}");
        for role in ["coordinator", "proxy", "datanode", "indexnode", "querynode"] {
            let row = lines
                .iter()
                .find(|l| l.split_whitespace().nth(1) == Some(role))
                .unwrap_or_else(|| panic!("no row for {role}:\n{out}"));
            assert!(row.starts_with(&format!("standalone-{role}")), "{row}");
            assert!(row.contains("healthy") && row.contains("serving"), "{row}");
        }

        // A few more commands against the same cluster.
        assert!(ctl(&["create", "docs", "--dim", "8"]).contains("created docs"));
        assert_eq!(ctl(&["collections"]).trim(), "docs");
        let described = ctl(&["describe", "docs"]);
        assert!(described.contains("dim=8") && described.contains("brute force"), "{described}");
        // Errors from the server reach the user with a non-zero exit.
        let all: Vec<&str> = conn.iter().chain(&["describe", "nope"]).copied().collect();
        let (status, _, err) = quiver_cli(&all, &env, h.dir.path());
        assert_eq!(status.code(), Some(1));
        assert!(err.contains("not found") && err.contains("nope"), "{err}");
    });
}
