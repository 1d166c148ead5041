//! Integration tests: real `quiver` processes (standalone and multi-process clusters over a
//! real `nats-server`), driven through the Rust SDK and the CLI. See `common` for the harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod autoscaling;
mod bad_input;
mod brute_force;
mod cli;
mod cluster;
mod cluster_cli;
mod common;
mod compaction;
mod console;
mod coordinator_ha;
mod crud;
mod drain;
mod durability;
mod hostile;
mod hosts;
mod idling;
mod memory_quota;
mod nats_cluster;
mod netns;
mod object_store;
mod partitions;
mod plugins;
mod power_cut;
mod prometheus;
mod replicas;
mod scale_api;
mod scaling;
mod sdk_resend;
mod search;
mod security;
mod supervisor;
mod tracing;
