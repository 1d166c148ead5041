//! `quiver ctl compact NAME [--force [--target-rows N]] [--wait]`: starts a compaction job
//! (a force merge with `--force`) and, with `--wait`, follows its plans until every one is done.

use std::time::{Duration, Instant};

use quiver_client::{Client, CompactionState};

/// How often `--wait` asks for the job's state.
const POLL: Duration = Duration::from_millis(500);

/// `quiver ctl compact NAME [--force [--target-rows N]] [--wait --timeout T]`: `force` holds
/// the force merge's target rows; exit code 1 when a plan failed.
pub async fn compact(client: &Client, name: &str, force: Option<u64>, wait: Option<Duration>) -> anyhow::Result<i32> {
    let mut job = match force {
        Some(target_rows) => client.force_merge(name, target_rows).await?,
        None => client.compact(name).await?,
    };
    println!("compaction {} of {name}: {}", job.id, summary(&job));
    for p in &job.plans {
        println!("  plan {} ({}, shard {}): {:?} → {}", p.id, p.kind, p.shard, p.sources, p.target);
    }
    let Some(timeout) = wait else { return Ok(0) };
    let started = Instant::now();
    let mut last = summary(&job);
    while !job.is_done() {
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "compaction {} did not finish within {}; last seen: {last}",
                job.id,
                humantime::format_duration(timeout)
            );
        }
        tokio::time::sleep(POLL).await;
        job = client.compaction_state(job.id).await?;
        let line = summary(&job);
        if line != last {
            println!("compaction {}: {line}", job.id);
            last = line;
        }
    }
    let failed: Vec<String> = job
        .plans
        .iter()
        .filter(|p| p.state == CompactionState::FAILED)
        .map(|p| format!("plan {}: {}", p.id, p.error))
        .collect();
    println!("compaction {} completed in {:.1}s", job.id, started.elapsed().as_secs_f64());
    if failed.is_empty() {
        Ok(0)
    } else {
        eprintln!("{}", failed.join("\n"));
        Ok(1)
    }
}

/// `3 plans: 1 executing, 2 completed` (or `nothing to compact`).
fn summary(job: &CompactionState) -> String {
    if job.plans.is_empty() {
        return "nothing to compact".into();
    }
    let count = |s: &str| job.plans.iter().filter(|p| p.state == s).count();
    let mut parts = Vec::new();
    for state in [CompactionState::EXECUTING, CompactionState::COMPLETED, CompactionState::FAILED] {
        let n = count(state);
        if n > 0 {
            parts.push(format!("{n} {state}"));
        }
    }
    format!("{} plans: {}", job.plans.len(), parts.join(", "))
}

#[cfg(test)]
mod tests {
    use quiver_client::CompactionPlan;

    use super::*;

    #[test]
    fn a_job_reads_as_its_plan_counts() {
        let plan = |state: &str| CompactionPlan { state: state.into(), ..Default::default() };
        let mut job = CompactionState::default();
        assert_eq!(summary(&job), "nothing to compact");
        job.plans = vec![plan("executing"), plan("completed"), plan("completed")];
        assert_eq!(summary(&job), "3 plans: 1 executing, 2 completed");
    }
}
