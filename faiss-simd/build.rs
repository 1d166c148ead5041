//! Builds faiss' AVX2 and AVX-512 variants (static faiss + C API) from the same source and
//! with the same flags as faiss-sys' generic build, then prefixes every symbol they define so
//! that they link into one binary beside the generic build (`qv_avx2_…`, `qv_avx512_…`).
//!
//! The faiss source is the one faiss-sys built: faiss-sys declares `links = "faiss_c"` and its
//! cmake build prints `cargo:root`, so `DEP_FAISS_C_ROOT/build/CMakeCache.txt` names the source
//! directory, the compiler and the flags.
//!
//! `QUIVER_FAISS_SIMD_BUILD` chooses the variants: a comma-separated list of `avx2` and
//! `avx512` (default: [`DEFAULT_VARIANTS`]), or `generic` for none (only faiss-sys' build is
//! linked). On targets other than x86_64 none is built. The variants built are announced to
//! the crate as `cfg(quiver_faiss_avx2)` / `cfg(quiver_faiss_avx512)`.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

type Result<T> = std::result::Result<T, String>;

/// What an unset `QUIVER_FAISS_SIMD_BUILD` builds.
const DEFAULT_VARIANTS: &str = "avx2,avx512";

/// (variant, symbol prefix, faiss target, C API target)
const VARIANTS: [(&str, &str, &str, &str); 2] =
    [("avx2", "qv_avx2_", "faiss_avx2", "faiss_c_avx2"), ("avx512", "qv_avx512_", "faiss_avx512", "faiss_c_avx512")];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=QUIVER_FAISS_SIMD_BUILD");
    println!("cargo::rustc-check-cfg=cfg(quiver_faiss_avx2)");
    println!("cargo::rustc-check-cfg=cfg(quiver_faiss_avx512)");
    if let Err(e) = run() {
        println!("cargo::error=quiver-faiss-simd: {e}");
    }
}

fn run() -> Result<()> {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    let wanted = std::env::var("QUIVER_FAISS_SIMD_BUILD").unwrap_or_else(|_| DEFAULT_VARIANTS.into());
    let wanted: Vec<&str> = wanted.split(',').map(str::trim).filter(|v| !v.is_empty() && *v != "generic").collect();
    if let Some(bad) = wanted.iter().find(|w| !VARIANTS.iter().any(|v| v.0 == **w)) {
        return Err(format!(
            "QUIVER_FAISS_SIMD_BUILD: unknown variant {bad:?}; use avx2, avx512 (comma-separated) or generic"
        ));
    }
    let variants: Vec<_> = VARIANTS.iter().filter(|v| wanted.contains(&v.0)).copied().collect();
    if arch != "x86_64" || variants.is_empty() {
        return Ok(());
    }
    // faiss-sys replaced by a `links` override (scripts/fuzz.sh reuses a built faiss that
    // way) runs no cmake and names no source: link the generic build alone.
    let Ok(root) = std::env::var("DEP_FAISS_C_ROOT").map(PathBuf::from) else {
        println!("cargo::warning=faiss-sys names no build directory (a links override?): faiss runs without SIMD");
        return Ok(());
    };
    let cache = std::fs::read_to_string(root.join("build/CMakeCache.txt"))
        .map_err(|e| format!("reading faiss-sys' CMakeCache.txt under {}: {e}", root.display()))?;
    let cached = |key: &str| {
        cache.lines().find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.split(':').next() == Some(key)).then(|| v.to_string())
        })
    };
    let source = cached("faiss_SOURCE_DIR").ok_or("faiss-sys' CMakeCache.txt has no faiss_SOURCE_DIR")?;
    let out = PathBuf::from(env("OUT_DIR")?);
    let build = out.join("build");
    std::fs::create_dir_all(&build).map_err(|e| format!("creating {}: {e}", build.display()))?;

    let mut configure = Command::new("cmake");
    configure.arg("-S").arg(&source).arg("-B").arg(&build);
    for (key, value) in [
        ("FAISS_OPT_LEVEL", "avx512"),
        ("FAISS_ENABLE_C_API", "ON"),
        ("FAISS_ENABLE_GPU", "OFF"),
        ("FAISS_ENABLE_PYTHON", "OFF"),
        ("FAISS_ENABLE_EXTRAS", "OFF"),
        ("BUILD_TESTING", "OFF"),
        ("BUILD_SHARED_LIBS", "OFF"),
        ("CMAKE_BUILD_TYPE", "Release"),
    ] {
        configure.arg(format!("-D{key}={value}"));
    }
    // The generic build's compiler and flags, so the variants differ only in SIMD.
    for key in ["CMAKE_CXX_COMPILER", "CMAKE_C_COMPILER", "CMAKE_CXX_FLAGS", "CMAKE_C_FLAGS"] {
        if let Some(value) = cached(key) {
            configure.arg(format!("-D{key}={value}"));
        }
    }
    run_cmd(&mut configure)?;

    let jobs = std::env::var("NUM_JOBS").unwrap_or_else(|_| "1".into());
    let mut compile = Command::new("cmake");
    compile.arg("--build").arg(&build).arg("--parallel").arg(&jobs).arg("--target");
    for (_, _, faiss, c_api) in &variants {
        compile.arg(faiss).arg(c_api);
    }
    run_cmd(&mut compile)?;

    let lib_dir = out.join("lib");
    std::fs::create_dir_all(&lib_dir).map_err(|e| format!("creating {}: {e}", lib_dir.display()))?;
    for (variant, prefix, faiss, c_api) in variants {
        let archives = [build.join(format!("c_api/lib{c_api}.a")), build.join(format!("faiss/lib{faiss}.a"))];
        let mut defined = BTreeSet::new();
        for a in &archives {
            defined.extend(defined_symbols(a)?);
        }
        let mut renames = String::new();
        for s in &defined {
            let _ = writeln!(renames, "{s} {prefix}{s}");
        }
        let map = out.join(format!("{variant}.redefine"));
        std::fs::write(&map, renames).map_err(|e| format!("writing {}: {e}", map.display()))?;
        for (a, name) in archives.iter().zip([format!("qv_{c_api}"), format!("qv_{faiss}")]) {
            let renamed = lib_dir.join(format!("lib{name}.a"));
            run_cmd(Command::new("objcopy").arg(format!("--redefine-syms={}", map.display())).arg(a).arg(&renamed))?;
            println!("cargo::rustc-link-lib=static={name}");
        }
        println!("cargo::rustc-cfg=quiver_faiss_{variant}");
    }
    println!("cargo::rustc-link-search=native={}", lib_dir.display());
    // What the variants need besides themselves (faiss-sys links the same for the generic one).
    for lib in ["stdc++", "gomp", "blas", "lapack"] {
        println!("cargo::rustc-link-lib={lib}");
    }
    Ok(())
}

fn env(key: &str) -> Result<String> {
    std::env::var(key).map_err(|_| format!("{key} is not set (build scripts run under cargo)"))
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().map_err(|e| format!("running {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

/// Every symbol `archive` defines (`nm`, everything but undefined references), local ones
/// included. Each must be renamed, or the linker would merge the variant's inline functions
/// and templates (compiled with other instructions) with the generic ones. Global and weak
/// definitions are not enough: a COMDAT group is named by its *signature* symbol, which for a
/// constructor or destructor is a local `C5`/`D5` name no function is called by; left as it is,
/// the linker keeps the generic build's group of that name and drops the variant's, and the
/// variant's calls to the renamed `C1`/`D1` in it resolve to nothing (a crash at start-up, in
/// the variant's static initialisers).
fn defined_symbols(archive: &Path) -> Result<Vec<String>> {
    let out = Command::new("nm")
        .args(["--format=posix"])
        .arg(archive)
        .output()
        .map_err(|e| format!("running nm on {}: {e}", archive.display()))?;
    if !out.status.success() {
        return Err(format!("nm {} failed: {}", archive.display(), String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.ends_with(':'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (name, kind) = (fields.next()?, fields.next()?);
            // U: undefined, w / v: weak undefined (from libstdc++, libgomp, BLAS, ...).
            (!matches!(kind, "U" | "w" | "v")).then(|| name.to_string())
        })
        .collect())
}
