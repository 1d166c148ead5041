//! The faiss-cpu leg of `quiver-bench standalone --milvus`: faiss-cpu from PyPI, in process in
//! Python (`tools/bench/bench-faiss-cpu-threads.py`, run with the faiss-cpu venv
//! [`crate::pyvenv::faiss_cpu_python`] that `quiver-bench simd` uses too), on the same base rows,
//! queries, ground truth and HNSW parameters as the other legs.
//!
//! The driver builds its own `IndexHNSWFlat` with every core (the build time is reported), then
//! stays up and runs one configuration per `search THREADS WARMUP DURATION` line on its stdin:
//! N Python threads, one OpenMP thread each, one query per call, answering with the object the
//! pymilvus driver prints ([`DriverOutput`]). One process for every client count, so the index is
//! built once, and the bench can wait for a quiet machine before each configuration.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Deserialize;

use super::milvus::{DriverOutput, PyInputs};
use super::HnswSettings;

/// What the driver prints once its index is built (`"event": "built"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(super) struct Built {
    pub event: String,
    /// faiss' `__version__`.
    pub version: String,
    /// The SIMD levels the wheel was compiled with (`faiss.get_compile_options()`).
    pub compile_options: String,
    pub rows: usize,
    pub dim: usize,
    pub build_secs: f64,
    pub build_threads: usize,
}

impl Built {
    /// The driver's first stdout line.
    pub(super) fn parse(line: &str) -> anyhow::Result<Built> {
        let built: Built = serde_json::from_str(line.trim())
            .with_context(|| format!("cannot parse the faiss-cpu driver's first line {line:?}"))?;
        if built.event != "built" {
            bail!("the faiss-cpu driver said {:?} where \"built\" was expected", built.event);
        }
        Ok(built)
    }
}

/// The running driver (stopped on drop: stdin closed, then killed if it lingers).
pub(super) struct FaissCpu {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub python: PathBuf,
    pub built: Built,
}

impl FaissCpu {
    /// Starts the driver on the first `rows` rows of `base` (an .fvecs file) and waits until its
    /// index is built.
    pub(super) fn start(
        python: PathBuf,
        inputs: &PyInputs,
        base: &Path,
        rows: usize,
        k: usize,
        hnsw: &HnswSettings,
    ) -> anyhow::Result<FaissCpu> {
        let script = inputs.path("bench-faiss-cpu-threads.py");
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let mut child = Command::new(&python)
            .arg(&script)
            .arg("--base")
            .arg(base)
            .args(["--rows", &rows.to_string(), "--k", &k.to_string(), "--metric", hnsw.metric])
            .arg("--queries")
            .arg(inputs.path("queries.npy"))
            .arg("--truth")
            .arg(inputs.path("truth.npy"))
            .args(["--m", &hnsw.m.to_string(), "--ef-construction", &hnsw.ef_construction.to_string()])
            .args(["--ef", &hnsw.ef.to_string(), "--build-threads", &cores.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot run {} {}", python.display(), script.display()))?;
        let stdin = child.stdin.take();
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the faiss-cpu driver has no stdout");
        };
        let mut stdout = BufReader::new(stdout);
        let built =
            match next_line(&mut stdout, &mut child, &python, "building its index").and_then(|l| Built::parse(&l)) {
                Ok(b) => b,
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(e);
                }
            };
        let driver = FaissCpu { child, stdin, stdout, python, built };
        if driver.built.rows != rows {
            bail!("the faiss-cpu driver indexed {} rows, not {rows}", driver.built.rows);
        }
        Ok(driver)
    }

    /// The driver's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// One configuration: `threads` searching threads through `warmup` and `duration`.
    pub(super) fn run(&mut self, threads: usize, warmup: Duration, duration: Duration) -> anyhow::Result<DriverOutput> {
        let stdin = self.stdin.as_mut().ok_or_else(|| anyhow!("the faiss-cpu driver's stdin is closed"))?;
        writeln!(stdin, "{}", search_command(threads, warmup, duration))
            .and_then(|()| stdin.flush())
            .context("cannot send a command to the faiss-cpu driver")?;
        let doing = format!("searching with {threads} thread(s)");
        let line = next_line(&mut self.stdout, &mut self.child, &self.python, &doing)?;
        DriverOutput::parse(&line).context("the faiss-cpu driver's answer")
    }
}

/// The driver's next stdout line; its exit status when there is none.
fn next_line(
    stdout: &mut BufReader<ChildStdout>,
    child: &mut Child,
    python: &Path,
    doing: &str,
) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut line = String::new();
    let n = stdout.read_line(&mut line).context("cannot read the faiss-cpu driver's output")?;
    if n == 0 {
        let status = child.wait().map_or_else(|e| e.to_string(), |s| s.to_string());
        bail!(
            "the faiss-cpu driver ({}) exited ({status}) while {doing}, after {:.1}s; its stderr is above",
            python.display(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(line)
}

impl Drop for FaissCpu {
    fn drop(&mut self) {
        // EOF ends the driver's command loop.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The driver's command line for one configuration.
fn search_command(threads: usize, warmup: Duration, duration: Duration) -> String {
    format!("search {threads} {} {}", warmup.as_secs_f64(), duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn parses_the_built_line() {
        let b = Built::parse(
            r#"{"event": "built", "version": "1.15.1", "compile_options": "OPTIMIZE AVX2 AVX512", "rows": 3000, "dim": 384, "build_secs": 0.48, "build_threads": 2}
"#,
        )
        .unwrap();
        assert_eq!((b.version.as_str(), b.rows, b.dim, b.build_threads), ("1.15.1", 3000, 384, 2));
        assert!((b.build_secs - 0.48).abs() < 1e-9);
        assert_eq!(b.compile_options, "OPTIMIZE AVX2 AVX512");
    }

    #[test]
    fn rejects_a_first_line_that_is_not_built() {
        // A search answer where the build report belongs.
        let run = r#"{"event": "ran", "version": "1", "compile_options": "", "rows": 1, "dim": 1, "build_secs": 0, "build_threads": 1}"#;
        assert!(Built::parse(run).is_err());
        assert!(Built::parse("Traceback (most recent call last):").is_err());
        assert!(Built::parse(r#"{"event": "built"}"#).is_err());
    }

    #[test]
    fn search_commands_are_what_the_driver_reads() {
        assert_eq!(search_command(2, Duration::from_millis(500), Duration::from_secs(5)), "search 2 0.5 5");
        assert_eq!(search_command(1, Duration::ZERO, Duration::from_secs_f64(1.25)), "search 1 0 1.25");
    }
}
