//! The markdown report of `quiver-bench scale`.

use super::kill::{stats, Stats};
use super::report::{secs, us, RunFacts};
use super::scale::{Timeline, BALANCE_INTERVAL, POLL};
use super::*;

pub(super) struct ScaleReport {
    pub(super) facts: RunFacts,
    pub(super) k: usize,
    pub(super) threads: usize,
    pub(super) to: u32,
    pub(super) steady: Duration,
    pub(super) stable: Duration,
    pub(super) segment_max_rows: usize,
    pub(super) node_env: Vec<(String, String)>,
    pub(super) load: ClusterLoad,
    pub(super) timeline: Option<Timeline>,
    pub(super) curve: Vec<CurveStep>,
}

/// One step of `--scale-curve`.
pub(super) struct CurveStep {
    pub(super) nodes: u32,
    /// From the scale request until the layout had settled.
    pub(super) settle: Duration,
    pub(super) layout: String,
    pub(super) result: LoadResult,
}

impl ScaleReport {
    /// Every failed search: (seconds since the first search, why).
    pub(super) fn failed_searches(&self) -> Vec<(f64, String)> {
        let mut out = Vec::new();
        if let Some(t) = &self.timeline {
            for s in t.samples.iter().filter(|s| !s.ok) {
                let why = s.error.clone().unwrap_or_default();
                out.push((s.start.saturating_duration_since(t.t0).as_secs_f64(), why));
            }
        }
        for c in self.curve.iter().filter(|c| c.result.errors > 0) {
            let first = c.result.first_error.as_deref().unwrap_or("?");
            out.push((0.0, format!("{} query node(s): {} failed, first: {first}", c.nodes, c.result.errors)));
        }
        out
    }

    pub(super) fn markdown(&self) -> String {
        let mut s = String::new();
        let l = &self.load;
        self.facts.header(&mut s, "scale", ", shared by every process of the cluster and the clients", "");
        let procs: Vec<String> = l.processes.iter().map(|(name, pid)| format!("{name} {pid}")).collect();
        let _ = writeln!(
            s,
            "- cluster: `quiver cluster up` — nats-server, coordinator, proxy, data node, index node and one query node (qn1), each its own process (pids: {}); the supervisor is the host agent the scaler starts `qn-<n>` through; 1 shard; datanode.segment_max_rows = {} → {} sealed segments {:?}; balancer row-count, balance interval {BALANCE_INTERVAL}; security off (loopback); node env `{}`",
            procs.join(", "),
            self.segment_max_rows,
            l.segment_rows.len(),
            l.segment_rows,
            self.node_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
        );
        let _ = writeln!(
            s,
            "- load: insert {}, flush → served {}, create_index → all segments Indexed {}; load_collection(1) → served {}",
            secs(l.insert),
            secs(l.flush_served),
            secs(l.index_built),
            l.loads.first().map_or("—".into(), |(_, t, layout)| format!("in {t:.1} s: {layout}"))
        );
        let _ = writeln!(
            s,
            "- clients: {} closed-loop threads (one NATS connection each, one query per call, top-{}, consistency Eventually) for the whole run; {} held at each node count; a change counts as settled when the scaler converged, every query node holds a segment, every segment has one holder and the layout stayed unchanged for {} (polled every {} ms: registry, scaler, layout)\n",
            self.threads,
            self.k,
            secs(self.steady),
            secs(self.stable),
            POLL.as_millis()
        );
        if let Some(t) = &self.timeline {
            t.markdown(&mut s, self.k, self.to);
        }
        if !self.curve.is_empty() {
            let _ = writeln!(s, "### Steady QPS per query-node count\n");
            let _ = writeln!(
                s,
                "| query nodes | settled after | calls | QPS | p50 µs | p99 µs | recall@{} | errors | layout |",
                self.k
            );
            let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---|");
            for c in &self.curve {
                let r = &c.result;
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {:.0} | {} | {} | {:.4} | {} | {} |",
                    c.nodes,
                    secs(c.settle),
                    r.calls,
                    r.qps,
                    us(r.p50_us),
                    us(r.p99_us),
                    r.recall,
                    r.errors,
                    c.layout
                );
            }
            let _ = writeln!(s);
        }
        s
    }
}

impl Timeline {
    fn markdown(&self, s: &mut String, k: usize, to: u32) {
        let m = &self.marks;
        let end = m.end.unwrap_or_else(|| self.samples.last().map_or(self.t0, |x| x.end));
        let out_req = m.out_requested.map(|(i, _)| i);
        let in_req = m.in_requested.map(|(i, _)| i);
        let phases = [
            ("1 query node", Some(self.t0), out_req),
            ("scaling out (request → settled)", out_req, m.out_settled),
            (&format!("{to} query nodes") as &str, m.out_settled, in_req),
            ("scaling in (request → converged)", in_req, m.in_converged),
            ("back to 1 query node", m.in_converged, Some(end)),
        ];
        let whole = stats(self.samples.iter(), k);
        let _ = writeln!(
            s,
            "### Phases\n\nFailed searches: **{}** of {} over the run (QPS over the whole run {:.0}).\n",
            whole.failed, whole.calls, self.result.qps
        );
        let _ =
            writeln!(s, "| phase | from s | length s | calls | QPS | p50 µs | p99 µs | max µs | failed | recall@{k} |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, from, to) in phases {
            let (Some(from), Some(to)) = (from, to) else {
                let _ = writeln!(s, "| {name} | — | — | | | | | | | |");
                continue;
            };
            let st = self.window(from, to, k);
            let len = to.saturating_duration_since(from).as_secs_f64();
            let _ = writeln!(
                s,
                "| {name} | {:.1} | {len:.1} | {} | {:.0} | {} | {} | {} | {} | {:.4} |",
                from.saturating_duration_since(self.t0).as_secs_f64(),
                st.calls,
                if len > 0.0 { (st.calls - st.failed) as f64 / len } else { 0.0 },
                us(st.p50),
                us(st.p99),
                us(st.max),
                st.failed,
                st.recall
            );
        }
        let _ = writeln!(s);
        self.times(s);
        self.per_second(s, k);
        self.event_list(s);
    }

    fn window(&self, from: Instant, to: Instant, k: usize) -> Stats {
        stats(self.samples.iter().filter(|x| x.start >= from && x.start < to), k)
    }

    /// Seconds from a request (wall-clock ms) to an event's time.
    fn after(req_ms: u64, at_ms: u64) -> String {
        format!("{:.2} s", (at_ms as f64 - req_ms as f64) / 1000.0)
    }

    fn times(&self, s: &mut String) {
        let m = &self.marks;
        let _ = writeln!(s, "### Times\n");
        let since = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(f), Some(t)) => format!("{:.2} s", t.saturating_duration_since(f).as_secs_f64()),
            _ => "not seen".to_string(),
        };
        if let Some((req, req_ms)) = m.out_requested {
            let serving: Vec<String> = self
                .events
                .scaling
                .iter()
                .filter(|e| e.action == "serving" && e.at_ms >= req_ms)
                .filter(|e| m.in_requested.is_none_or(|(_, ms)| e.at_ms < ms))
                .map(|e| format!("{} {}", e.node_id, Self::after(req_ms, e.at_ms)))
                .collect();
            let _ = writeln!(
                s,
                "- scale-out request → every new query node serving (registered; the scaler converged): **{}** (the scaler's `serving` events: {})",
                since(Some(req), m.out_converged),
                if serving.is_empty() { "none".into() } else { serving.join(", ") }
            );
            let held: Vec<String> = m
                .first_held
                .iter()
                .map(|(n, at)| format!("{n} {:.2} s", at.saturating_duration_since(req).as_secs_f64()))
                .collect();
            let _ = writeln!(
                s,
                "- scale-out request → every new query node holding segments: **{}** ({})",
                since(Some(req), m.first_held.values().max().copied()),
                held.join(", ")
            );
            let _ = writeln!(
                s,
                "- scale-out request → hand-offs finished (the last layout change; unchanged after it): **{}**; settled (that plus the stable window) at {}",
                since(Some(req), m.out_last_change),
                since(Some(req), m.out_settled)
            );
            if let Some(p) = self.polls.iter().rev().find(|p| m.in_requested.is_none_or(|(i, _)| p.at < i)) {
                let _ = writeln!(s, "- layout before the scale-in: {}", held_by(p));
            }
        }
        if let Some((req, req_ms)) = m.in_requested {
            let _ = writeln!(
                s,
                "- scale-in request → converged on 1 query node (the drained ones gone): **{}**",
                since(Some(req), m.in_converged)
            );
            let of = |node: &str, action: &str| {
                self.events.scaling.iter().find(|e| e.node_id == node && e.action == action && e.at_ms >= req_ms)
            };
            for d in self.events.scaling.iter().filter(|e| e.action == "drain" && e.at_ms >= req_ms) {
                let step = |action: &str| {
                    of(&d.node_id, action).map_or("not seen".to_string(), |e| Self::after(d.at_ms, e.at_ms))
                };
                let _ = writeln!(
                    s,
                    "  - {}: drain at {} after the request → stopped (drained and exited) {} later → removed (cluster fully served again) {} later; {}",
                    d.node_id,
                    Self::after(req_ms, d.at_ms),
                    step("stopped"),
                    step("removed"),
                    d.detail
                );
            }
            if let Some(p) = self.polls.last() {
                let _ = writeln!(s, "- layout at the end: {}", held_by(p));
            }
        }
        let mut by_reason: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
        for h in &self.events.handoffs {
            let e = by_reason.entry(h.reason.as_str()).or_default();
            e.0 += 1;
            e.1 += h.online_segment_ids.len();
            e.2 += usize::from(h.released_ms > 0);
        }
        let reasons: Vec<String> = by_reason
            .iter()
            .map(|(r, (n, segs, released))| format!("{r} {n} ({segs} segments, {released} released by the old holder)"))
            .collect();
        let _ = writeln!(
            s,
            "- hand-offs (sealedSegmentChangeInfo) from the scale-out request on, by reason: {}{}\n",
            if reasons.is_empty() { "none".into() } else { reasons.join("; ") },
            if self.poll_errors > 0 { format!("; {} polls failed", self.poll_errors) } else { String::new() }
        );
    }

    fn per_second(&self, s: &mut String, k: usize) {
        let m = &self.marks;
        let end = m.end.unwrap_or(self.t0);
        let marks: Vec<(Option<Instant>, &str)> = vec![
            (m.out_requested.map(|(i, _)| i), "◀ scale out requested"),
            (m.out_converged, "converged"),
            (m.out_last_change, "last layout change"),
            (m.out_settled, "settled"),
            (m.in_requested.map(|(i, _)| i), "◀ scale in requested"),
            (m.in_converged, "converged"),
        ];
        let _ = writeln!(
            s,
            "### Per second\n\nBy call start; query nodes = registered and serving, as polled in that second.\n"
        );
        let _ = writeln!(s, "| s | QPS | p50 µs | p99 µs | max µs | failed | recall@{k} | query nodes | |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        let mut last_count = String::from("1");
        for sec in 0..end.saturating_duration_since(self.t0).as_secs_f64().ceil() as u64 {
            let from = self.t0 + Duration::from_secs(sec);
            let to = from + Duration::from_secs(1);
            let st = self.window(from, to, k);
            let counts: Vec<usize> =
                self.polls.iter().filter(|p| p.at >= from && p.at < to).map(|p| p.serving.len()).collect();
            if let (Some(lo), Some(hi)) = (counts.iter().min(), counts.iter().max()) {
                last_count = if lo == hi { lo.to_string() } else { format!("{lo}–{hi}") };
            }
            let notes: Vec<&str> =
                marks.iter().filter(|(at, _)| at.is_some_and(|at| at >= from && at < to)).map(|(_, n)| *n).collect();
            let _ = writeln!(
                s,
                "| {sec} | {} | {} | {} | {} | {} | {:.4} | {last_count} | {} |",
                st.calls - st.failed,
                us(st.p50),
                us(st.p99),
                us(st.max),
                st.failed,
                st.recall,
                notes.join(", ")
            );
        }
        let _ = writeln!(s);
    }

    fn event_list(&self, s: &mut String) {
        let Some((_, req_ms)) = self.marks.out_requested else { return };
        let _ = writeln!(s, "### Events (seconds after the scale-out request)\n");
        // Scaling steps and hand-offs in one list, by time.
        let mut lines: Vec<(u64, String)> = Vec::new();
        for e in &self.events.scaling {
            let node = if e.node_id.is_empty() { "-" } else { &e.node_id };
            lines.push((e.at_ms, format!("{} `{node}` {} — {}", e.role.as_str(), e.action, e.detail)));
        }
        for h in &self.events.handoffs {
            let released = match h.released_ms {
                0 => "not released".to_string(),
                ms => format!("released {} after", Self::after(h.at_ms, ms)),
            };
            let from = if h.offline_node_id.is_empty() { "-" } else { &h.offline_node_id };
            lines.push((
                h.at_ms,
                format!(
                    "hand-off ({}) {from} → {}, segments {:?}, {released}",
                    h.reason, h.online_node_id, h.online_segment_ids
                ),
            ));
        }
        lines.sort_by_key(|(at, _)| *at);
        for (at, line) in lines {
            let _ = writeln!(s, "- +{}: {line}", Self::after(req_ms, at));
        }
        let _ = writeln!(s);
    }
}

/// `qn1 3, qn-2 3, qn-3 2` (segments per holder).
fn held_by(p: &super::scale::Poll) -> String {
    let mut per: BTreeMap<String, usize> = BTreeMap::new();
    for holders in p.layout.values() {
        for n in holders {
            *per.entry(n.trim_end_matches("-querynode").to_string()).or_default() += 1;
        }
    }
    per.iter().map(|(n, c)| format!("{n} {c}")).collect::<Vec<_>>().join(", ")
}
