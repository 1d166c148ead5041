//! The Python the benchmarks run their reference drivers with (faiss-cpu, pymilvus): one venv
//! per package version under `${QUIVER_PY_CACHE:-~/.cache/quiver-py}`, created or repaired
//! when it cannot import what it should, as tests/pymilvus/run.sh does for the test suite.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

/// A venv the benchmarks need.
pub struct Venv<'a> {
    /// Directory name under the cache (e.g. `faiss-cpu-1.15.1`).
    pub name: String,
    /// What `pip install` gets.
    pub packages: &'a [String],
    /// Python code that succeeds once the venv has the right packages.
    pub check: String,
    /// Who asks (prefix of the progress line).
    pub who: &'a str,
    /// Added to a failure: what the user can do instead.
    pub hint: &'a str,
}

impl Venv<'_> {
    /// `given` (a `--python` option) when set, used as is; else this venv's python, created
    /// and installed when it is missing or cannot pass `check`.
    pub fn python(&self, given: Option<&Path>) -> anyhow::Result<PathBuf> {
        if let Some(p) = given {
            return Ok(p.to_path_buf());
        }
        let cache = match std::env::var_os("QUIVER_PY_CACHE") {
            Some(c) if !c.is_empty() => PathBuf::from(c),
            _ => PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?)
                .join(".cache/quiver-py"),
        };
        let venv = cache.join(&self.name);
        let python = venv.join("bin/python");
        let ready = |py: &Path| {
            Command::new(py)
                .args(["-c", &self.check])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if python.exists() && ready(&python) {
            return Ok(python);
        }
        eprintln!("{}: preparing the venv {} ({})...", self.who, venv.display(), self.packages.join(", "));
        std::fs::create_dir_all(&cache).with_context(|| format!("cannot create {}", cache.display()))?;
        let run = |cmd: &mut Command, what: &str| -> anyhow::Result<()> {
            let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
            if !status.success() {
                bail!("{what} failed ({status}){}", self.hint);
            }
            Ok(())
        };
        if !python.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv), "python3 -m venv")?;
        }
        let mut pip = Command::new(&python);
        pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"]).args(self.packages);
        run(&mut pip, "pip install")?;
        if !ready(&python) {
            bail!("{} still cannot import {}{}", python.display(), self.packages.join(", "), self.hint);
        }
        Ok(python)
    }
}
