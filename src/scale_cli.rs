//! `quiver ctl scale`, `quiver ctl status`, `quiver ctl events` and `quiver ctl autoscale`: the
//! wanted node count and size per role, what every node and host agent is doing, what moved
//! recently, and the autoscaler's windows and decisions. The formatting is
//! pure functions over the API's types (unit-tested below); the commands call the Rust SDK.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use quiver_client::{
    AutoscaleDecision, AutoscaleRequest, AutoscaleStatus, Client, ClusterEvents, ClusterStatus, HostStatus, NodeSize,
    NodeState, NodeStatus, Role, RoleScaling, ScaleReply, ScaleRequest, ScalingEvent, SegmentChangeInfo,
};

use crate::ctl::human_bytes;

/// How often `scale --wait` asks for the role's counts.
const POLL: Duration = Duration::from_millis(500);

/// The size of `--cpu` / `--memory` (either, or both; the coordinator derives the other).
pub fn size_arg(cpu: Option<f64>, memory: Option<u64>) -> anyhow::Result<NodeSize> {
    let cpu_millis = match cpu {
        None => 0,
        Some(c) if c.is_finite() && c > 0.0 && c <= 1000.0 => (c * 1000.0).round() as u32,
        Some(c) => anyhow::bail!("--cpu {c}: give a number of cores above 0 and at most 1000 (e.g. 2 or 0.5)"),
    };
    Ok(NodeSize { cpu_millis, memory_bytes: memory.unwrap_or(0) })
}

/// `quiver ctl scale ROLE [--replicas N] [--cpu C | --memory M] [--wait --timeout T]`.
pub async fn scale(client: &Client, req: &ScaleRequest, wait: Option<Duration>) -> anyhow::Result<i32> {
    let reply = client.scale_with(req).await?;
    println!("{}", change_line(&reply));
    if !reply.warning.is_empty() {
        eprintln!("warning: {}", reply.warning);
    }
    match wait {
        Some(timeout) => wait_converged(client, reply.role, timeout).await,
        None => Ok(0),
    }
}

/// `querynode: 1 → 3`, `querynode: 2 (unchanged), size 1 CPU / 4 GiB → 2 CPU / 8 GiB`.
fn change_line(reply: &ScaleReply) -> String {
    let role = reply.role.as_str();
    let mut line = match reply.previous {
        0 => format!("{role}: (not set) → {}", reply.replicas),
        p if p == reply.replicas => format!("{role}: {p} (unchanged)"),
        p => format!("{role}: {p} → {}", reply.replicas),
    };
    match (reply.previous_size, reply.size) {
        (before, after) if before == after && after.is_unsized() => {}
        (before, after) if before == after => line.push_str(&format!(", size {after} (unchanged)")),
        (before, after) => line.push_str(&format!(", size {before} → {after}")),
    }
    line
}

/// Polls the role's counts until it is converged, showing progress: a spinner on a terminal,
/// otherwise a plain line whenever the progress changes (scripts and tests read those).
async fn wait_converged(client: &Client, role: Role, timeout: Duration) -> anyhow::Result<i32> {
    let started = Instant::now();
    let bar = std::io::stdout().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stdout());
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last = String::new();
    loop {
        let line = match client.scaling().await {
            Ok(s) => match s.roles.iter().find(|r| r.role == role) {
                Some(r) if r.converged && r.serving == r.desired && r.resizing == 0 => {
                    let done = format!(
                        "{}: {}/{} serving, converged in {:.1}s",
                        role.as_str(),
                        r.serving,
                        r.desired,
                        started.elapsed().as_secs_f64()
                    );
                    match &bar {
                        Some(bar) => bar.finish_with_message(done),
                        None => println!("{done}"),
                    }
                    return Ok(0);
                }
                Some(r) => progress_line(r),
                None => format!("{}: not reported by the coordinator", role.as_str()),
            },
            // A proxy or the coordinator may be the role that changes: keep asking.
            Err(e) => format!("{}: counts unavailable ({e})", role.as_str()),
        };
        if line != last {
            match &bar {
                Some(bar) => bar.set_message(line.clone()),
                None => println!("{line}"),
            }
            last = line;
        }
        if started.elapsed() >= timeout {
            if let Some(bar) = &bar {
                bar.abandon();
            }
            anyhow::bail!(
                "{} did not converge within {}; last seen: {last} (the scaler keeps working on it: `quiver ctl \
                 status` and `quiver ctl events` show what it does)",
                role.as_str(),
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `querynode: 2/3 serving, 1 starting, 0 draining — starting qn-7 on h1` (and `, 1 of
/// another size` while resizing).
fn progress_line(r: &RoleScaling) -> String {
    let mut line = format!(
        "{}: {}/{} serving, {} starting, {} draining",
        r.role.as_str(),
        r.serving,
        r.desired,
        r.starting,
        r.draining
    );
    if r.resizing > 0 {
        line.push_str(&format!(", {} of another size than {}", r.resizing, r.size));
    }
    if !r.activity.is_empty() {
        line.push_str(" — ");
        line.push_str(&r.activity);
    }
    line
}

/// `quiver ctl status [--json]`.
pub async fn status(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).context("cannot encode the status as JSON")?);
    } else {
        print!("{}", status_text(&status, now_ms()));
    }
    Ok(())
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The whole listing: nodes, roles, host agents, notes.
fn status_text(status: &ClusterStatus, now: u64) -> String {
    let mut out = format!("cluster {}: {} nodes\n", status.cluster, status.nodes.len());
    let mut rows = vec![[
        "NODE", "ROLE", "HOST", "PID", "STATE", "HEALTH", "CPU", "SIMD", "MEMORY", "SEGMENTS", "RESTARTS", "AGE",
        "DETAIL",
    ]
    .map(String::from)
    .to_vec()];
    for n in &status.nodes {
        rows.push(vec![
            n.node_id.clone(),
            n.role.as_str().into(),
            host(n),
            n.pid.to_string(),
            n.state.as_str().into(),
            if n.healthy { "healthy" } else { "UNHEALTHY" }.into(),
            cpu(n),
            if n.faiss_simd.is_empty() { "-".into() } else { n.faiss_simd.clone() },
            memory(n),
            n.segments.to_string(),
            n.restarts.to_string(),
            age(now, n.started_ms),
            n.detail.clone(),
        ]);
    }
    out.push_str(&table(&rows));
    out.push_str("\nROLES\n");
    for line in role_lines(status) {
        out.push_str(&format!("  {line}\n"));
    }
    if !status.hosts.is_empty() {
        out.push('\n');
        let mut rows =
            vec![["HOST AGENT", "HOSTNAME", "CPUS", "MEMORY (AVAILABLE/TOTAL)", "PROCESSES", "SIZES", "AGE"]
                .map(String::from)
                .to_vec()];
        rows.extend(status.hosts.iter().map(|h| host_row(h, now)));
        out.push_str(&table(&rows));
    }
    for note in &status.notes {
        out.push_str(&format!("note: {note}\n"));
    }
    out
}

/// The host, and the host agent that started the node if one did.
fn host(n: &NodeStatus) -> String {
    if n.host_agent.is_empty() {
        n.host.clone()
    } else {
        format!("{} ({})", n.host, n.host_agent)
    }
}

/// Cores busy / cores allowed: `0.35/2`.
fn cpu(n: &NodeStatus) -> String {
    if n.cpu_cores <= 0.0 {
        return "-".into();
    }
    format!("{:.2}/{}", n.cpu_busy, cores(n.cpu_cores))
}

/// A core count without a needless fraction: `2`, `1.5`.
fn cores(c: f32) -> String {
    if c.fract() == 0.0 {
        format!("{c:.0}")
    } else {
        format!("{c:.1}")
    }
}

/// Used / limit: `120.0 MiB/2.0 GiB` (just the used memory when there is no limit).
fn memory(n: &NodeStatus) -> String {
    if n.mem_capacity == 0 {
        human_bytes(n.mem_used)
    } else {
        format!("{}/{}", human_bytes(n.mem_used), human_bytes(n.mem_capacity))
    }
}

/// The largest unit of the time since `since_ms`: `3m`, `2h`.
fn age(now: u64, since_ms: u64) -> String {
    let d = Duration::from_secs(now.saturating_sub(since_ms) / 1000);
    humantime::format_duration(d).to_string().split(' ').next().unwrap_or("0s").to_string()
}

fn host_row(h: &HostStatus, now: u64) -> Vec<String> {
    vec![
        h.host_id.clone(),
        h.hostname.clone(),
        h.cpus.to_string(),
        format!("{}/{}", human_bytes(h.mem_available), human_bytes(h.mem_total)),
        format!("{}/{}", h.nodes.len(), h.max_nodes),
        if h.enforcement.is_empty() { "-".into() } else { h.enforcement.clone() },
        age(now, h.started_ms),
    ]
}

/// One line per role: wanted vs actual from the scaler where it reported the role, else the
/// actual counts from the nodes' own states (the coordinator, or every role when the
/// coordinator did not answer).
fn role_lines(status: &ClusterStatus) -> Vec<String> {
    let mut actual: BTreeMap<&str, [u32; 3]> = BTreeMap::new();
    for n in &status.nodes {
        let c = actual.entry(n.role.as_str()).or_default();
        match n.state {
            NodeState::Serving => c[0] += 1,
            NodeState::Starting => c[1] += 1,
            NodeState::Draining => c[2] += 1,
            NodeState::Stopped | NodeState::Standby => {}
        }
    }
    let width = Role::ALL.iter().map(|r| r.as_str().len()).max().unwrap_or(0);
    Role::ALL
        .iter()
        .map(|&role| {
            let name = role.as_str();
            match status.roles.iter().find(|r| r.role == role) {
                Some(r) => {
                    let wanted =
                        if r.desired == 0 { "no wanted count".to_string() } else { format!("{} wanted", r.desired) };
                    let mut line = format!(
                        "{name:<width$}  {wanted}, {} serving, {} starting, {} draining",
                        r.serving, r.starting, r.draining
                    );
                    if !r.size.is_unsized() {
                        line.push_str(&format!(", size {}", r.size));
                    }
                    if r.resizing > 0 {
                        line.push_str(&format!(" ({} of another size)", r.resizing));
                    }
                    if !r.activity.is_empty() {
                        line.push_str(" — ");
                        line.push_str(&r.activity);
                    }
                    line
                }
                None => {
                    let [serving, starting, draining] = actual.get(name).copied().unwrap_or_default();
                    let why =
                        if role == Role::Coordinator { "one active coordinator" } else { "no wanted count known" };
                    format!("{name:<width$}  {why}, {serving} serving, {starting} starting, {draining} draining")
                }
            }
        })
        .collect()
}

/// Columns padded to their widest cell; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let w = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `quiver ctl autoscale [ROLE --min-memory A --max-memory B | ROLE --reset | history] [--json]`.
pub async fn autoscale(
    client: &Client,
    target: Option<String>,
    min_memory: Option<u64>,
    max_memory: Option<u64>,
    reset: bool,
    json: bool,
) -> anyhow::Result<()> {
    let changes = min_memory.is_some() || max_memory.is_some() || reset;
    let (status, history) = match target.as_deref() {
        Some("history") if !changes => (client.autoscaling().await?, true),
        Some(role) if changes => {
            let req = AutoscaleRequest {
                role: role.to_string(),
                min_memory_bytes: min_memory.unwrap_or(0),
                max_memory_bytes: max_memory.unwrap_or(0),
                reset,
            };
            (client.autoscale(&req).await?, false)
        }
        Some(other) => anyhow::bail!(
            "`quiver ctl autoscale {other}`: give --min-memory, --max-memory or --reset to change the role's bounds, \
             or use `quiver ctl autoscale` (status) or `quiver ctl autoscale history`"
        ),
        None if changes => anyhow::bail!("give the role whose bounds to change: quiver ctl autoscale querynode ..."),
        None => (client.autoscaling().await?, false),
    };
    if json {
        let text = match history {
            true => serde_json::to_string_pretty(&status.decisions),
            false => serde_json::to_string_pretty(&status),
        };
        println!("{}", text.context("cannot encode the answer as JSON")?);
    } else if history {
        print!("{}", history_text(&status.decisions));
    } else {
        print!("{}", autoscale_text(&status));
    }
    Ok(())
}

/// `quiver ctl idling [--json]`.
pub async fn idling(client: &Client, json: bool) -> anyhow::Result<()> {
    let status = client.idling().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status).context("cannot encode the answer as JSON")?);
    } else {
        print!("{}", idling_text(&status, now_ms()));
    }
    Ok(())
}

/// A few lines on the idling state.
fn idling_text(s: &quiver_client::IdlingStatus, now: u64) -> String {
    let d = |ms: u64| humantime::format_duration(Duration::from_secs(ms / 1000)).to_string();
    if !s.enabled {
        return "idling off (idling.enabled = false)\n".into();
    }
    let mut out = match s.since_ms {
        // Never changed state: awake since the cluster began.
        0 => format!("idling on: {}\n", s.state),
        since => format!("idling on: {} since {}\n", s.state, time(since)),
    };
    let timeout = if s.timeout_ms == s.after_ms {
        d(s.timeout_ms)
    } else {
        format!("{} (idling.after {}, grown with the last start-up time)", d(s.timeout_ms), d(s.after_ms))
    };
    out.push_str(&format!("  idles after {timeout} without a data request\n"));
    match s.last_request_ms {
        0 => out.push_str("  no data request seen since the coordinator started\n"),
        t => out.push_str(&format!("  last data request {} ago\n", d(now.saturating_sub(t)))),
    }
    if !s.blocked.is_empty() {
        out.push_str(&format!("  kept awake: {}\n", s.blocked));
    }
    if s.last_startup_ms > 0 {
        out.push_str(&format!("  last wake took {:.1} s\n", s.last_startup_ms as f64 / 1000.0));
    }
    if s.state == "idle" {
        out.push_str(&format!("  {} compute processes stopped; the next read wakes the cluster\n", s.stopped));
    }
    out
}

/// The autoscaler's settings and one row per role.
fn autoscale_text(s: &AutoscaleStatus) -> String {
    let state = if s.enabled { "on" } else { "off (autoscaling.enabled = false)" };
    let mut out = format!(
        "autoscaling {state}: every {}, window {}\n",
        humantime::format_duration(Duration::from_millis(s.interval_ms)),
        humantime::format_duration(Duration::from_millis(s.window_ms))
    );
    let mut rows =
        vec![["ROLE", "AUTOSCALED", "SIZE", "MIN", "MAX", "SAMPLES", "PEAK CPU", "PEAK MEMORY", "OOM", "HELD"]
            .map(String::from)
            .to_vec()];
    for r in &s.roles {
        let pinned = r.min_memory_bytes == r.max_memory_bytes;
        rows.push(vec![
            r.role.as_str().into(),
            if pinned {
                "pinned (min = max)".into()
            } else if r.enabled {
                "yes".into()
            } else {
                "no".into()
            },
            r.size.to_string(),
            human_bytes(r.min_memory_bytes),
            human_bytes(r.max_memory_bytes),
            r.samples.to_string(),
            format!("{:.1}%", r.peak_cpu_percent),
            human_bytes(r.peak_memory_bytes),
            r.ooms.to_string(),
            if r.held_until_ms == 0 { "-".into() } else { format!("until {}", time(r.held_until_ms)) },
        ]);
    }
    out.push_str(&table(&rows));
    out
}

/// One line per decision, oldest first.
fn history_text(decisions: &[AutoscaleDecision]) -> String {
    if decisions.is_empty() {
        return "no autoscaler decisions yet\n".into();
    }
    decisions
        .iter()
        .map(|d| {
            let change = if d.from == d.to { format!("{}", d.to) } else { format!("{} → {}", d.from, d.to) };
            format!("{}  {}  {}  {change}  [{}] {}\n", time(d.at_ms), d.role.as_str(), d.action, d.plugin, d.reason)
        })
        .collect()
}

/// `quiver ctl events [--json]`.
pub async fn events(client: &Client, json: bool) -> anyhow::Result<()> {
    let events = client.events().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&events).context("cannot encode the events as JSON")?);
    } else {
        print!("{}", events_text(&events));
    }
    Ok(())
}

fn events_text(events: &ClusterEvents) -> String {
    let mut out = String::from("HAND-OFFS (sealedSegmentChangeInfo)\n");
    if events.handoffs.is_empty() {
        out.push_str("  none\n");
    }
    let mut handoffs: Vec<&SegmentChangeInfo> = events.handoffs.iter().collect();
    handoffs.sort_by_key(|h| h.at_ms);
    for h in handoffs {
        out.push_str(&format!("  {}\n", handoff_line(h)));
    }
    out.push_str("\nSCALING\n");
    if events.scaling.is_empty() {
        out.push_str("  none\n");
    }
    let mut scaling: Vec<&ScalingEvent> = events.scaling.iter().collect();
    scaling.sort_by_key(|e| e.at_ms);
    for e in scaling {
        out.push_str(&format!("  {}\n", scaling_line(e)));
    }
    out
}

/// `2026-12-04T20:18:13Z  collection 3  qn-1 → qn-2  segments 4,5  drain  released`.
fn handoff_line(h: &SegmentChangeInfo) -> String {
    let ids = |v: &[u64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
        }
    };
    let mut segments = format!("segments {}", ids(&h.online_segment_ids));
    if h.offline_segment_ids != h.online_segment_ids {
        segments.push_str(&format!(" (offline {})", ids(&h.offline_segment_ids)));
    }
    let node = |n: &str| if n.is_empty() { "-".to_string() } else { n.to_string() };
    let released = if h.released_ms == 0 { "pending".to_string() } else { format!("released {}", time(h.released_ms)) };
    format!(
        "{}  collection {}  {} → {}  {segments}  {}  {released}",
        time(h.at_ms),
        h.collection,
        node(&h.offline_node_id),
        node(&h.online_node_id),
        h.reason
    )
}

/// `2026-12-04T20:18:13Z  querynode  qn-7  start  on h1`.
fn scaling_line(e: &ScalingEvent) -> String {
    let node = if e.node_id.is_empty() { "-" } else { &e.node_id };
    format!("{}  {}  {node}  {}  {}", time(e.at_ms), e.role.as_str(), e.action, e.detail).trim_end().to_string()
}

/// A wall-clock time in ms as RFC 3339 (UTC, seconds).
fn time(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(id: &str, role: Role, state: NodeState) -> NodeStatus {
        NodeStatus {
            node_id: id.into(),
            role,
            host: "h1".into(),
            pid: 7,
            healthy: true,
            mem_used: 100 << 20,
            mem_capacity: 2 << 30,
            segments: 3,
            restarts: 1,
            started_ms: 1_000,
            heartbeat_ms: 2_000,
            detail: "quarantined: seg 9".into(),
            state,
            cpu_cores: 2.0,
            cpu_busy: 0.35,
            host_agent: String::new(),
            faiss_simd: "avx512".into(),
            memory_refusals: 0,
            last_request_ms: 0,
        }
    }

    fn scaling(role: Role, desired: u32, serving: u32, starting: u32) -> RoleScaling {
        RoleScaling {
            role,
            desired,
            serving,
            starting,
            draining: 0,
            converged: serving == desired && starting == 0,
            activity: if starting > 0 { "starting qn-7 on h1".into() } else { String::new() },
            size: NodeSize::UNSIZED,
            resizing: 0,
        }
    }

    #[test]
    fn scale_changes_read_as_arrows() {
        let reply = |previous, replicas| ScaleReply {
            role: Role::QueryNode,
            replicas,
            previous,
            warning: String::new(),
            size: NodeSize::UNSIZED,
            previous_size: NodeSize::UNSIZED,
        };
        assert_eq!(change_line(&reply(1, 3)), "querynode: 1 → 3");
        assert_eq!(change_line(&reply(0, 2)), "querynode: (not set) → 2");
        assert_eq!(change_line(&reply(2, 2)), "querynode: 2 (unchanged)");
        let mut resized = reply(2, 2);
        resized.size = NodeSize { cpu_millis: 2000, memory_bytes: 8 << 30 };
        assert_eq!(change_line(&resized), "querynode: 2 (unchanged), size unsized → 2 CPU / 8 GiB");
        resized.previous_size = resized.size;
        assert_eq!(change_line(&resized), "querynode: 2 (unchanged), size 2 CPU / 8 GiB (unchanged)");
        assert_eq!(
            progress_line(&scaling(Role::QueryNode, 3, 2, 1)),
            "querynode: 2/3 serving, 1 starting, 0 draining — starting qn-7 on h1"
        );
        let mut r = scaling(Role::QueryNode, 2, 3, 0);
        (r.resizing, r.size, r.activity) =
            (1, NodeSize { cpu_millis: 500, memory_bytes: 512 << 20 }, "draining qn-1-querynode".into());
        assert_eq!(
            progress_line(&r),
            "querynode: 3/2 serving, 0 starting, 0 draining, 1 of another size than 0.5 CPU / 512 MiB — draining \
             qn-1-querynode"
        );
    }

    #[test]
    fn status_lists_nodes_roles_hosts_and_notes() {
        let mut agent_node = node("qn-7-querynode", Role::QueryNode, NodeState::Starting);
        agent_node.host_agent = "agent-1".into();
        agent_node.mem_capacity = 0;
        let status = ClusterStatus {
            cluster: "c".into(),
            nodes: vec![
                node("standalone-coordinator", Role::Coordinator, NodeState::Serving),
                node("standalone-querynode", Role::QueryNode, NodeState::Serving),
                agent_node,
            ],
            roles: vec![scaling(Role::QueryNode, 3, 1, 1), scaling(Role::Proxy, 0, 0, 0)],
            hosts: vec![HostStatus {
                host_id: "agent-1".into(),
                hostname: "h1".into(),
                cpus: 8,
                mem_total: 16 << 30,
                mem_available: 8 << 30,
                max_nodes: 4,
                started_ms: 1_000,
                enforcement: "cgroup-v1".into(),
                ..HostStatus::default()
            }],
            notes: vec!["host agents unavailable: down".into()],
        };
        let text = status_text(&status, 61_000);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "cluster c: 3 nodes");
        assert_eq!(lines[1].split_whitespace().take(3).collect::<Vec<_>>(), ["NODE", "ROLE", "HOST"]);
        let row = lines[2];
        for part in [
            "standalone-coordinator",
            "0.35/2",
            "avx512",
            "100.0 MiB/2.0 GiB",
            "serving",
            "healthy",
            "1m",
            "quarantined: seg 9",
        ] {
            assert!(row.contains(part), "{part} in {row}");
        }
        assert!(text.contains("h1 (agent-1)"), "{text}");
        assert!(
            text.contains("querynode    3 wanted, 1 serving, 1 starting, 0 draining — starting qn-7 on h1"),
            "{text}"
        );
        assert!(text.contains("proxy        no wanted count, 0 serving"), "{text}");
        assert!(text.contains("coordinator  one active coordinator, 1 serving, 0 starting, 0 draining"), "{text}");
        assert!(text.contains("datanode     no wanted count known, 0 serving"), "{text}");
        let agent = lines.iter().find(|l| l.starts_with("agent-1")).unwrap();
        assert!(agent.contains("8.0 GiB/16.0 GiB") && agent.contains("0/4") && agent.contains("cgroup-v1"), "{agent}");
        assert!(text.ends_with("note: host agents unavailable: down\n"), "{text}");
    }

    #[test]
    fn sizes_parse_and_autoscaling_reads_as_a_table() {
        use crate::ctl::parse_bytes;
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        for bad in ["", "GiB", "8 GB", "-1GiB", "0", "1e999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        assert_eq!(size_arg(Some(0.5), None).unwrap(), NodeSize { cpu_millis: 500, memory_bytes: 0 });
        assert!(size_arg(Some(0.0), None).is_err() && size_arg(Some(f64::NAN), None).is_err());

        let size = NodeSize { cpu_millis: 2000, memory_bytes: 8 << 30 };
        let status = AutoscaleStatus {
            enabled: true,
            interval_ms: 60_000,
            window_ms: 30 * 3_600_000,
            roles: vec![quiver_client::RoleAutoscale {
                role: Role::QueryNode,
                enabled: true,
                min_memory_bytes: 4 << 30,
                max_memory_bytes: 64 << 30,
                size,
                samples: 12,
                peak_cpu_percent: 81.25,
                peak_memory_bytes: 3 << 30,
                ooms: 1,
                held_until_ms: 0,
            }],
            decisions: vec![AutoscaleDecision {
                at_ms: 0,
                role: Role::QueryNode,
                from: NodeSize { cpu_millis: 1000, memory_bytes: 4 << 30 },
                to: size,
                reason: "cpu peak 81.2% > 75%: double to 2 CPU / 8 GiB".into(),
                plugin: "threshold@builtin".into(),
                action: "resize".into(),
            }],
        };
        let text = autoscale_text(&status);
        assert!(text.starts_with("autoscaling on: every 1m, window 1day 6h"), "{text}");
        let row = text.lines().find(|l| l.starts_with("querynode")).unwrap();
        for part in ["yes", "2 CPU / 8 GiB", "4.0 GiB", "64.0 GiB", "12", "81.2%", "3.0 GiB"] {
            assert!(row.contains(part), "{part} in {row}");
        }
        let history = history_text(&status.decisions);
        assert!(
            history.contains("querynode  resize  1 CPU / 4 GiB → 2 CPU / 8 GiB  [threshold@builtin] cpu peak 81.2%"),
            "{history}"
        );
        assert_eq!(history_text(&[]), "no autoscaler decisions yet\n");
    }

    #[test]
    fn idling_reads_as_a_few_lines() {
        let mut s = quiver_client::IdlingStatus::default();
        assert_eq!(idling_text(&s, 0), "idling off (idling.enabled = false)\n");
        s = quiver_client::IdlingStatus {
            enabled: true,
            state: "idle".into(),
            since_ms: 1_000,
            last_request_ms: 60_000,
            after_ms: 300_000,
            timeout_ms: 900_000,
            last_startup_ms: 1_234_000,
            blocked: String::new(),
            stopped: 3,
        };
        let text = idling_text(&s, 1_260_000);
        assert!(text.starts_with("idling on: idle since 1970-01-01T00:00:01Z"), "{text}");
        assert!(text.contains("idles after 15m (idling.after 5m, grown with the last start-up time)"), "{text}");
        assert!(text.contains("last data request 20m ago") && text.contains("last wake took 1234.0 s"), "{text}");
        assert!(text.contains("3 compute processes stopped"), "{text}");
        s.blocked = "2 compaction tasks running or queued".into();
        assert!(idling_text(&s, 0).contains("kept awake: 2 compaction tasks"), "{s:?}");
        s.since_ms = 0;
        s.state = "awake".into();
        assert!(idling_text(&s, 0).starts_with("idling on: awake\n"), "{s:?}");
    }

    #[test]
    fn cpu_and_memory_read_compactly() {
        let mut n = node("n", Role::Proxy, NodeState::Serving);
        n.cpu_cores = 1.5;
        assert_eq!(cpu(&n), "0.35/1.5");
        n.cpu_cores = 0.0;
        assert_eq!(cpu(&n), "-");
        n.mem_capacity = 0;
        assert_eq!(memory(&n), "100.0 MiB");
    }

    #[test]
    fn events_read_oldest_first() {
        let events = ClusterEvents {
            handoffs: vec![SegmentChangeInfo {
                collection: 3,
                online_node_id: "qn-2".into(),
                online_segment_ids: vec![4, 5],
                offline_node_id: "qn-1".into(),
                offline_segment_ids: vec![4, 5],
                reason: "drain".into(),
                at_ms: 1_000,
                released_ms: 0,
            }],
            scaling: vec![
                ScalingEvent {
                    at_ms: 5_000,
                    role: Role::QueryNode,
                    node_id: "qn-7".into(),
                    action: "start".into(),
                    detail: "on h1".into(),
                },
                ScalingEvent {
                    at_ms: 2_000,
                    role: Role::QueryNode,
                    node_id: String::new(),
                    action: "requested".into(),
                    detail: "1 → 3 querynodes".into(),
                },
            ],
        };
        let text = events_text(&events);
        assert!(
            text.contains("1970-01-01T00:00:01Z  collection 3  qn-1 → qn-2  segments 4,5  drain  pending"),
            "{text}"
        );
        let requested = text.find("requested").unwrap();
        assert!(requested < text.find("qn-7  start  on h1").unwrap(), "{text}");
        assert!(text.contains("querynode  -  requested"), "{text}");
        assert!(events_text(&ClusterEvents::default()).contains("none"));
    }
}
