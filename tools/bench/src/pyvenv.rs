//! The Python the benchmarks run their reference drivers with (faiss-cpu, pymilvus, Milvus
//! standalone): one venv per package version under `${QUIVER_PY_CACHE:-~/.cache/quiver-py}`,
//! created or repaired when it cannot import what it should, as tests/pymilvus/run.sh does for
//! the test suite.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context};

/// faiss-cpu version the comparison venv gets (the newest on PyPI when this was written).
pub const FAISS_CPU_VERSION: &str = "1.15.1";
/// The `milvus` package from PyPI (Milvus standalone with embedded etcd and local storage) the
/// Milvus comparison runs.
pub const MILVUS_SERVER_VERSION: &str = "2.3.5";

/// `${QUIVER_PY_CACHE:-~/.cache/quiver-py}`: where the venvs (and what they unpack) live.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    Ok(match std::env::var_os("QUIVER_PY_CACHE") {
        Some(c) if !c.is_empty() => PathBuf::from(c),
        _ => {
            PathBuf::from(std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?).join(".cache/quiver-py")
        }
    })
}

/// `given` (a `--python` option) when set, else the faiss-cpu venv (faiss-cpu
/// [`FAISS_CPU_VERSION`] and numpy), created when missing. `who` prefixes the progress line,
/// `hint` is added to a failure.
pub fn faiss_cpu_python(given: Option<&Path>, who: &str, hint: &str) -> anyhow::Result<PathBuf> {
    Venv {
        name: format!("faiss-cpu-{FAISS_CPU_VERSION}"),
        packages: &[format!("faiss-cpu=={FAISS_CPU_VERSION}"), "numpy".into()],
        check: format!("import faiss, numpy; assert faiss.__version__ == '{FAISS_CPU_VERSION}'"),
        who,
        hint,
    }
    .python(given)
}

/// `given` when set, else the venv with the `milvus` package [`MILVUS_SERVER_VERSION`]
/// (`bin/milvus-server`), created when missing, with the two pins that venv was first made with
/// (setuptools < 70, marshmallow < 3.20; the server launcher itself imports neither).
pub fn milvus_server_python(given: Option<&Path>, who: &str, hint: &str) -> anyhow::Result<PathBuf> {
    Venv {
        name: format!("milvus-{MILVUS_SERVER_VERSION}"),
        packages: &[format!("milvus=={MILVUS_SERVER_VERSION}"), "setuptools<70".into(), "marshmallow<3.20".into()],
        check: format!("import milvus; assert milvus.__version__ == '{MILVUS_SERVER_VERSION}'"),
        who,
        hint,
    }
    .python(given)
}

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
        let cache = cache_dir()?;
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
