//! Test support shared by Quiver's integration tests (`tests/it`) and its benchmarks
//! (`quiver-bench`): both run real `nats-server` and `quiver` processes and read the shared
//! pypi-minilm dataset.
//!
//! - [`process`]: one child process with its log ([`Proc`]), free ports, the `quiver` binary
//!   ([`quiver_bin`]), processes in `/proc`. Returns errors: the benchmarks use it.
//! - [`harness`]: a test's cluster ([`Harness`]: standalone or node by node over an external
//!   nats-server, temp dir, SIGKILL and restart), time-limited test bodies ([`run`]), retries.
//! - [`data`]: a slice of the dataset, exact ground truth, recall, client helpers.
//! - [`netns`]: hosts with their own addresses (network namespaces on a bridge), cut off and
//!   reconnected ([`netns::Hosts`]).
//! - [`tls`]: a throw-away CA with server and client certificates ([`TestCa`]).
//!
//! [`harness`] and [`data`] fail the calling test on any error, as `assert!` does.

pub mod data;
pub mod harness;
pub mod netns;
pub mod otlp;
pub mod process;
pub mod s3;
pub mod tls;

pub use harness::{eventually, quiver_cli, retry, run, wait_for_port, Harness, READY};
pub use process::{child_pids, free_port, process_alive, process_name, quiver_bin, Proc};
pub use tls::TestCa;
