//! The markdown report.

use super::kill::{stats, KillReport, Sample, Stats, POLL};
use super::*;

pub(super) struct ReplicaReport {
    pub(super) facts: RunFacts,
    pub(super) k: usize,
    pub(super) duration_secs: f64,
    pub(super) warmup_secs: f64,
    pub(super) raw: Vec<LoadResult>,
    pub(super) raw_build: Option<Duration>,
    /// Raw faiss over the same segments: (build time, rows).
    pub(super) raw_segments: Option<(Duration, Vec<LoadResult>)>,
    pub(super) segment_max_rows: usize,
    pub(super) batch: usize,
    pub(super) node_env: Vec<(String, String)>,
    pub(super) load: ClusterLoad,
    /// (replicas, result)
    pub(super) rows: Vec<(u32, LoadResult)>,
    pub(super) kill: Option<KillReport>,
}

/// What the cluster benches' reports open with: the command, the machine, the data and the index.
pub(super) struct RunFacts {
    pub(super) command: String,
    pub(super) cpu: String,
    pub(super) cores: usize,
    pub(super) loadavg_start: String,
    /// Set when the cluster is down ([`RunFacts::finish`]).
    pub(super) loadavg_end: String,
    pub(super) data_facts: String,
    pub(super) params: IndexParams,
    pub(super) search: SearchParams,
}

impl RunFacts {
    /// At the start of a run, with the CPU's model name.
    pub(super) fn new(
        cpu: String,
        workload: &Workload,
        data: &Data,
        params: &IndexParams,
        search: SearchParams,
    ) -> Self {
        RunFacts {
            command: command_line(),
            cpu,
            cores: available_cores(),
            loadavg_start: loadavg(),
            loadavg_end: String::new(),
            data_facts: format!(
                "{} — {} base × {} dim, {} queries, k = {}; ground truth: {}",
                workload.dataset.display(),
                data.n,
                data.dim,
                data.nq,
                workload.k,
                data.truth_source
            ),
            params: params.clone(),
            search,
        }
    }

    pub(super) fn finish(&mut self) {
        self.loadavg_end = loadavg();
    }

    /// Title, command, machine (with `machine_note`), dataset and index (with `index_note`) lines.
    pub(super) fn header(&self, s: &mut String, bench: &str, machine_note: &str, index_note: &str) {
        let p = &self.params;
        let _ = writeln!(s, "## quiver-bench {bench}\n\n```sh\n{}\n```\n", self.command);
        let _ = writeln!(
            s,
            "- machine: {} × {} cores{machine_note}; load average {} at the start, {} at the end",
            self.cpu, self.cores, self.loadavg_start, self.loadavg_end
        );
        let _ = writeln!(s, "- dataset: {}", self.data_facts);
        let _ = writeln!(
            s,
            "- index: {:?} {:?} (M {}, efConstruction {}, nlist {}, nbits {}; 0 = default); search ef {}, nprobe {}{index_note}",
            p.index_type, p.metric, p.m, p.ef_construction, p.nlist, p.nbits, self.search.ef, self.search.nprobe
        );
    }
}

/// Prints the report, and writes it to `out` too.
pub(super) fn print_report(text: &str, out: Option<&Path>) -> anyhow::Result<()> {
    print!("{text}");
    if let Some(out) = out {
        std::fs::write(out, text).with_context(|| format!("cannot write the report to {}", out.display()))?;
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

pub(super) fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=,:@+".contains(c)) {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub(super) fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

pub(super) fn us(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else {
        format!("{v:.0}")
    }
}

fn cpu_cell(cpu: Option<&CpuUsage>) -> String {
    let Some(cpu) = cpu else { return "—".into() };
    let mut parts: Vec<String> = cpu.parts.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
    parts.push(format!("**other processes {:.2}**", cpu.other));
    parts.join(", ")
}

impl ReplicaReport {
    pub(super) fn markdown(&self) -> String {
        let mut s = String::new();
        self.facts.header(&mut s, "replicas", "", "; faiss threads 1 (query nodes and raw)");
        let _ = writeln!(
            s,
            "- load: closed loop, one query per call, consistency Eventually, one OS thread and NATS connection per client; {} s warm-up + {} s measured per row",
            self.warmup_secs, self.duration_secs
        );
        let l = &self.load;
        let procs: Vec<String> = l.processes.iter().map(|(name, pid)| format!("{name} {pid}")).collect();
        let _ = writeln!(
            s,
            "- cluster: `quiver cluster up` — nats-server, coordinator, proxy, data node, index node, {} query nodes, each its own process (pids: {}); 1 shard; datanode.segment_max_rows = {} → {} sealed segments {:?}; balancer row-count, balance interval 1h; security.enabled = false (loopback only); proxy router {}{}",
            l.processes.iter().filter(|(name, _)| name.starts_with("qn")).count(),
            procs.join(", "),
            self.segment_max_rows,
            l.segment_rows.len(),
            l.segment_rows,
            self.node_env
                .iter()
                .rev()
                .find(|(k, _)| k == "QUIVER_PLUGINS__ROUTER")
                .map_or("rendezvous (the default)".to_string(), |(_, v)| v.clone()),
            if self.node_env.is_empty() {
                String::new()
            } else {
                format!(
                    "; extra node env `{}`",
                    self.node_env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
                )
            }
        );
        let _ = writeln!(
            s,
            "- load: insert {} (batches of ≤ {} rows, cut at segment boundaries), flush → served {}, create_index → all segments Indexed {} (raw faiss, 1 thread: whole base {}, the same segments {}); then release and load again, so every holder loads its segments with their index",
            secs(l.insert),
            self.batch,
            secs(l.flush_served),
            secs(l.index_built),
            self.raw_build.map_or("—".into(), secs),
            self.raw_segments.as_ref().map_or("—".into(), |(b, _)| secs(*b))
        );
        for (replicas, t, layout) in &l.loads {
            let _ = writeln!(s, "- load_collection({replicas}) → fully replicated in {t:.1} s: {layout}");
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "| system | client threads | calls | QPS | p50 µs | p99 µs | mean µs | recall@{} | errors | QPS / raw | QPS / raw segments | QPS / 1 replica |",
            self.k
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let ratio = |a: f64, b: Option<&LoadResult>| {
            b.filter(|b| b.qps > 0.0).map_or("—".into(), |b| format!("{:.0}%", 100.0 * a / b.qps))
        };
        let raw_for = |t: usize| self.raw.iter().find(|r| r.threads == t);
        let seg_rows = self.raw_segments.as_ref().map_or(&[][..], |(_, rows)| rows.as_slice());
        let seg_for = |t: usize| seg_rows.iter().find(|r| r.threads == t);
        let one_for = |t: usize| self.rows.iter().find(|(n, r)| *n == 1 && r.threads == t).map(|(_, r)| r);
        let mut row = |name: &str, r: &LoadResult, one: Option<&LoadResult>| {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {:.0} | {} | {} | {} | {:.4} | {} | {} | {} | {} |",
                r.threads,
                r.calls,
                r.qps,
                us(r.p50_us),
                us(r.p99_us),
                us(r.mean_us),
                r.recall,
                r.errors,
                ratio(r.qps, raw_for(r.threads)),
                ratio(r.qps, seg_for(r.threads)),
                ratio(r.qps, one)
            );
        };
        for r in &self.raw {
            row("raw faiss, 1 index of the whole base (in-process)", r, None);
        }
        for r in seg_rows {
            row(&format!("raw faiss, {} segment indexes searched in turn (in-process)", l.segment_rows.len()), r, None);
        }
        for (n, r) in &self.rows {
            row(&format!("Quiver, {n} replica{}", if *n == 1 { "" } else { "s" }), r, one_for(r.threads));
        }
        let _ = writeln!(s);
        for (n, r) in &self.rows {
            if let Some(e) = &r.first_error {
                let _ = writeln!(s, "- errors, {n} replica(s), {} threads: {} (first: {e})", r.threads, r.errors);
            }
        }
        let _ = writeln!(
            s,
            "CPU in cores (1.0 = one core busy) per process over each measured window, from /proc; \"other processes\" is the rest of the machine (other users, kernel work not charged to ours):\n"
        );
        let _ = writeln!(s, "| system | client threads | CPU |");
        let _ = writeln!(s, "|---|---:|---|");
        for r in &self.raw {
            let _ = writeln!(s, "| raw faiss, 1 index | {} | {} |", r.threads, cpu_cell(r.cpu.as_ref()));
        }
        if let Some((_, rows)) = &self.raw_segments {
            for r in rows {
                let _ = writeln!(s, "| raw faiss, segments | {} | {} |", r.threads, cpu_cell(r.cpu.as_ref()));
            }
        }
        for (n, r) in &self.rows {
            let _ = writeln!(s, "| Quiver, {n} replica(s) | {} | {} |", r.threads, cpu_cell(r.cpu.as_ref()));
        }
        if let Some(k) = &self.kill {
            let _ = writeln!(s, "| kill phase (2 replicas) | {} | {} |", k.threads, cpu_cell(k.result.cpu.as_ref()));
        }
        let _ = writeln!(s);
        if let Some(k) = &self.kill {
            let _ = writeln!(
                s,
                "In the kill phase `{}` is the killed process; its restarted successor (loading its segments again) is not watched, so its CPU counts under \"other processes\".\n",
                k.node
            );
        }
        if let Some(k) = &self.kill {
            k.markdown(&mut s, self.k);
        }
        s
    }
}

impl KillReport {
    pub(super) fn markdown(&self, s: &mut String, k: usize) {
        let _ = writeln!(
            s,
            "### Query-node kill with 2 replicas\n\n{} client threads, {} measured after the warm-up; SIGKILL of `{}` (pid {}) {} into it. Layout before: {}.\n",
            self.threads,
            secs(self.phase),
            self.node,
            self.old_pid,
            secs(self.kill_after),
            self.layout_before
        );
        let end = self.window_start + self.phase;
        let in_window: Vec<&Sample> =
            self.samples.iter().filter(|x| x.start >= self.window_start && x.start < end).collect();
        let rec = &self.recovery;
        let Some(killed) = rec.killed_at else {
            let _ = writeln!(s, "- the node was **not** killed (the load did not start)\n");
            return;
        };
        let whole = stats(in_window.iter().copied(), k);
        let before = stats(in_window.iter().copied().filter(|x| x.start < killed), k);
        let after_to = killed + Duration::from_secs(2);
        // Every call that overlapped the 2 s after the kill, including those in flight at it.
        let after = stats(in_window.iter().copied().filter(|x| x.end >= killed && x.start < after_to), k);
        let rest = stats(in_window.iter().copied().filter(|x| x.start >= after_to), k);
        let _ = writeln!(s, "| window | calls | failed | p50 µs | p99 µs | max µs | recall@{k} (every answer) |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|");
        for (name, st) in [
            ("whole phase", &whole),
            ("calls started before the kill", &before),
            ("2 s after the kill (calls overlapping it)", &after),
            ("from 2 s after the kill to the end", &rest),
        ] {
            let _ = writeln!(s, "| {name} | {} |", st.cells());
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "- failed searches: **{}** of {} in the phase{}; QPS over the phase {:.0}",
            whole.failed,
            whole.calls,
            self.result.first_error.as_ref().map_or(String::new(), |e| format!(" (first: {e})")),
            self.result.qps
        );
        let at = |t: Option<Instant>| {
            t.map_or_else(
                || "not seen".to_string(),
                |t| format!("{:.2} s", t.saturating_duration_since(killed).as_secs_f64()),
            )
        };
        let _ = writeln!(
            s,
            "- after the kill: supervisor restarted the process at {}{}; registered again (new pid, healthy) at {}; coordinator took the dead process's segments out of the layout at {}; **fully replicated again at {}**{}",
            at(rec.restarted_at),
            rec.new_pid.map_or(String::new(), |p| format!(
                " (pid {p}, last exit: {})",
                rec.last_exit.as_deref().unwrap_or("?")
            )),
            at(rec.rejoined_at),
            at(rec.dropped_at),
            at(rec.replicated_at),
            if rec.replicated_at.is_none() {
                format!(" (gave up after {})", secs(self.recovery_timeout))
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "- layout polled every {} ms through the proxy (status + distribution){}",
            POLL.as_millis(),
            if rec.poll_errors > 0 { format!("; {} polls failed", rec.poll_errors) } else { String::new() }
        );
        for (t, summary) in &rec.events {
            let _ = writeln!(s, "  - +{:.2} s: {summary}", t.saturating_duration_since(killed).as_secs_f64());
        }
        let _ = writeln!(s, "\nPer second of the phase (by call start; ◀ kill):\n");
        let _ = writeln!(s, "| second | calls | failed | p50 µs | p99 µs | max µs | recall@{k} |");
        let _ = writeln!(s, "|---:|---:|---:|---:|---:|---:|---:|");
        let kill_sec = killed.saturating_duration_since(self.window_start).as_secs();
        for sec in 0..self.phase.as_secs_f64().ceil() as u64 {
            let from = self.window_start + Duration::from_secs(sec);
            let to = from + Duration::from_secs(1);
            let st = stats(in_window.iter().copied().filter(|x| x.start >= from && x.start < to), k);
            let _ = writeln!(s, "| {sec}{} | {} |", if sec == kill_sec { " ◀" } else { "" }, st.cells());
        }
        let _ = writeln!(s);
    }
}

impl Stats {
    /// The table cells after the label: calls, failed, p50, p99, max, recall.
    fn cells(&self) -> String {
        format!(
            "{} | {} | {} | {} | {} | {:.4}",
            self.calls,
            self.failed,
            us(self.p50),
            us(self.p99),
            us(self.max),
            self.recall
        )
    }
}
