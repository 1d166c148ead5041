//! Which coordinator acts: a lease in the metadata bucket, and the epoch that fences the
//! active coordinator's writes. Any number of coordinators may run; one is active, the others
//! are hot standbys (`NodeState::Standby` in the registry) that take over within about
//! `coordinator.lease_ttl` of the active one dying.
//!
//! - `coord.lease` = [`Lease`]: the active coordinator rewrites it (compare-and-set on its
//!   revision) every `lease_ttl / 5`. A standby reads it every `lease_ttl / 10`; once its
//!   revision has not changed for `lease_ttl` by the standby's own clock, the standby claims it
//!   with the next epoch, compare-and-set on the revision it saw (of several standbys, one wins).
//!   A lease its holder released (a drained coordinator) or that names this node itself (its
//!   previous incarnation: a role restart) is claimed at once.
//! - `coord.epoch` = [`Epoch`]: written once per takeover, compare-and-set and only upwards.
//!   Every metadata write of the active coordinator is fenced on this key's revision
//!   ([`JsonBucket::fenced`]): once a standby has taken over, nothing the old one writes is
//!   stored, even before it notices.
//! - The active coordinator steps down (the lease loop fails, the role stops and the supervisor
//!   restarts it as a standby) when a renewal finds the lease taken, or when it could not renew
//!   for 4/5 of `lease_ttl`. A standby waits the whole `lease_ttl` after the last renewal it
//!   saw, so a coordinator cut off from NATS has stopped acting (stopped sending commands to
//!   nodes, which are not fenced) before another starts. That needs clocks that run at about
//!   the same rate, not synchronised ones.

use std::cell::Cell;
use std::time::Instant;

use quiver_runtime::{Error, JsonBucket, Result};
use quiver_schemas::protocol::keys::{COORD_EPOCH, COORD_LEASE};
use quiver_schemas::NodeState;
use serde::{Deserialize, Serialize};

use crate::node::Node;

/// The value of `coord.lease`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// The active coordinator's node id; empty once released.
    pub holder: String,
    pub epoch: u64,
    /// Renewals since the takeover (each changes the revision standbys watch).
    pub renewals: u64,
    pub since_ms: u64,
}

/// The value of `coord.epoch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch: u64,
    pub holder: String,
}

/// This coordinator holds the lease: its epoch and its fenced view of the metadata bucket.
pub struct Leadership {
    pub epoch: u64,
    /// The metadata bucket with every write fenced on this takeover's epoch revision.
    pub meta: JsonBucket,
    lease: Cell<Lease>,
    revision: Cell<u64>,
    released: Cell<bool>,
    /// When the last renewal that was stored had been sent.
    renewed: Cell<Instant>,
    /// How long the lease is trusted after a renewal was sent (4/5 of `lease_ttl`).
    trusted_for: std::time::Duration,
}

/// Waits (as a standby) until this coordinator holds the lease, then fences the epoch.
pub async fn acquire(node: &Node) -> Result<Leadership> {
    let meta = &node.shared.meta;
    let ttl = node.shared.config.coordinator.lease_ttl;
    let heartbeat_every = node.shared.config.node.heartbeat_interval;
    // The revision last seen, and since when (our clock).
    let mut seen: Option<(u64, Instant)> = None;
    let mut last_heartbeat: Option<Instant> = None;
    let mut drain = std::pin::pin!(node.health.drain_requested());
    loop {
        let current = match meta.get_rev::<Lease>(COORD_LEASE).await {
            Ok(current) => current,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the coordinator lease; retrying");
                seen = None;
                tokio::time::sleep(ttl / 10).await;
                continue;
            }
        };
        let claim = match &current {
            None => Some(0),
            Some((lease, rev)) if lease.holder.is_empty() || lease.holder == node.id => Some(*rev),
            Some((_, rev)) => match seen {
                Some((r, since)) if r == *rev && since.elapsed() >= ttl => Some(*rev),
                Some((r, _)) if r == *rev => None,
                _ => {
                    seen = Some((*rev, Instant::now()));
                    None
                }
            },
        };
        if let Some(rev) = claim {
            let previous = current.as_ref().map(|(l, _)| l.clone());
            match claim_lease(node, meta, rev, previous.as_ref()).await {
                Ok(Some(leadership)) => return Ok(leadership),
                Ok(None) => seen = None,
                Err(e) => {
                    tracing::warn!(error = %e, "could not take the coordinator lease; retrying");
                    seen = None;
                }
            }
        }
        if last_heartbeat.is_none_or(|t| t.elapsed() >= heartbeat_every) {
            node.health.set_state(NodeState::Standby);
            let detail = match &current {
                Some((lease, _)) if !lease.holder.is_empty() => {
                    format!("standby; coordinator {} is active (epoch {})", lease.holder, lease.epoch)
                }
                _ => "standby".to_string(),
            };
            if last_heartbeat.is_none() {
                tracing::info!(node = %node.id, %detail, "coordinator waiting as a standby");
            }
            let status = node.status(0, detail);
            crate::node::export_gauges(&status);
            super::set_cluster_gauges(0.0, 0.0, 0.0, 0.0);
            super::idling::export_idling_state(None);
            if let Err(e) = node.shared.registry.heartbeat(&status).await {
                tracing::debug!(error = %e, "standby heartbeat failed");
            }
            last_heartbeat = Some(Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(ttl / 10) => {}
            _ = &mut drain => {
                // A standby holds nothing: it is stopped at once, and the process's drain
                // shuts it down with the rest.
                let _ = node.shared.registry.deregister(&node.id).await;
                node.health.set_state(NodeState::Stopped);
                tracing::info!(node = %node.id, "standby coordinator stopped");
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Claims the lease at `rev` with the next epoch and fences that epoch. `None`: another
/// coordinator got there first.
async fn claim_lease(node: &Node, meta: &JsonBucket, rev: u64, previous: Option<&Lease>) -> Result<Option<Leadership>> {
    let recorded = meta.get_rev::<Epoch>(COORD_EPOCH).await?;
    let epoch = previous.map_or(0, |l| l.epoch).max(recorded.as_ref().map_or(0, |(e, _)| e.epoch)) + 1;
    let lease = Lease { holder: node.id.clone(), epoch, renewals: 0, since_ms: quiver_runtime::bus::now_ms() };
    let sent = Instant::now();
    let lease_rev = match meta.update(COORD_LEASE, &lease, rev).await {
        Ok(r) => r,
        Err(Error::Stale(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    // The lease is ours; the epoch only goes up. A claim of a later epoch already recorded
    // means a newer takeover happened after ours: we are out before we began.
    let mut recorded = recorded;
    for _ in 0..5 {
        let epoch_rev = match &recorded {
            Some((e, _)) if e.epoch >= epoch => {
                return Err(Error::Stale(format!("coordinator epoch {} is already recorded; not taking over", e.epoch)))
            }
            Some((_, r)) => *r,
            None => 0,
        };
        match meta.update(COORD_EPOCH, &Epoch { epoch, holder: node.id.clone() }, epoch_rev).await {
            Ok(fence) => {
                let from = previous.map(|l| l.holder.as_str()).filter(|h| !h.is_empty()).unwrap_or("nobody");
                tracing::info!(node = %node.id, epoch, from, "coordinator took the lease; acting as the active coordinator");
                metrics::counter!("quiver_coordinator_takeovers_total").increment(1);
                return Ok(Some(Leadership {
                    epoch,
                    meta: meta.fenced(COORD_EPOCH, fence),
                    lease: Cell::new(lease),
                    revision: Cell::new(lease_rev),
                    released: Cell::new(false),
                    renewed: Cell::new(sent),
                    trusted_for: node.shared.config.coordinator.lease_ttl * 4 / 5,
                }));
            }
            Err(Error::Stale(_)) => recorded = meta.get_rev::<Epoch>(COORD_EPOCH).await?,
            Err(e) => return Err(e),
        }
    }
    Err(Error::Unavailable("the coordinator epoch kept changing; retrying".into()))
}

impl Leadership {
    /// Renews the lease until it is lost; then fails, so the role stops and restarts as a
    /// standby.
    pub async fn keep(&self, node: &Node) -> Result<()> {
        let ttl = node.shared.config.coordinator.lease_ttl;
        let every = ttl / 5;
        let meta = &node.shared.meta;
        loop {
            tokio::time::sleep(every).await;
            if self.released.get() {
                // Draining: the role stops soon; a standby may already act.
                return std::future::pending().await;
            }
            let sent = Instant::now();
            let mut next = self.lease.take();
            next.renewals += 1;
            // (revision now, whether this renewal was stored: only then does the lease count
            // from `sent`)
            let outcome = match tokio::time::timeout(every, meta.update(COORD_LEASE, &next, self.revision.get())).await
            {
                Ok(Ok(rev)) => Ok((rev, true)),
                Ok(Err(Error::Stale(e))) => {
                    self.still_ours(meta, &next).await.map(|rev| (rev, false)).ok_or(Error::Stale(e))
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Unavailable(format!("no acknowledgement within {every:?}"))),
            };
            match outcome {
                Ok((rev, stored)) => {
                    self.revision.set(rev);
                    if stored {
                        self.renewed.set(sent);
                    }
                }
                Err(Error::Stale(e)) => {
                    self.lease.set(next);
                    return Err(Error::Stale(format!(
                        "coordinator {} (epoch {}) lost its lease to another coordinator ({e}); stepping down",
                        node.id, self.epoch
                    )));
                }
                Err(e) if self.renewed.get().elapsed() >= self.trusted_for => {
                    self.lease.set(next);
                    return Err(Error::Unavailable(format!(
                        "coordinator {} could not renew its lease for {:?} ({e}); stepping down before a standby \
                         takes over",
                        node.id,
                        self.renewed.get().elapsed()
                    )));
                }
                Err(e) => tracing::warn!(error = %e, "coordinator lease renewal failed; retrying"),
            }
            self.lease.set(next);
        }
    }

    /// Fails unless the lease is still trusted: a coordinator that was paused (or cut off)
    /// for longer than that may have been replaced, so it answers nothing until its next
    /// renewal shows whether it still holds the lease. The caller may send the request again:
    /// an active coordinator answers it.
    pub fn check(&self, node: &Node) -> Result<()> {
        let since = self.renewed.get().elapsed();
        if since >= self.trusted_for {
            return Err(Error::NotServed(format!(
                "coordinator {} has not renewed its lease for {since:?} and may have been replaced; ask again",
                node.id
            )));
        }
        Ok(())
    }

    /// After a refused renewal: the lease's revision, if the lease is still ours (an earlier
    /// renewal of ours was stored but its acknowledgement lost; the lease then counts from that
    /// earlier one, so `renewed` stays).
    async fn still_ours(&self, meta: &JsonBucket, sent: &Lease) -> Option<u64> {
        match meta.get_rev::<Lease>(COORD_LEASE).await {
            Ok(Some((lease, rev))) if lease.holder == sent.holder && lease.epoch == sent.epoch => Some(rev),
            _ => None,
        }
    }

    /// Gives the lease up (a drain): a standby takes over at once instead of after `lease_ttl`.
    pub async fn release(&self, node: &Node) {
        self.released.set(true);
        let mut released = self.lease.take();
        released.holder.clear();
        match node.shared.meta.update(COORD_LEASE, &released, self.revision.get()).await {
            Ok(rev) => {
                self.revision.set(rev);
                tracing::info!(node = %node.id, epoch = self.epoch, "coordinator released its lease");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not release the coordinator lease; a standby waits for it to lapse")
            }
        }
        self.lease.set(released);
    }
}
