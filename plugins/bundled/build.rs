//! Builds every plugin component for `wasm32-wasip2` with one nested `cargo build --profile
//! plugin`, then copies the `.wasm` files into `OUT_DIR` for `src/lib.rs` to embed.
//!
//! The nested build gets its own target directory, `<outer target dir>/wasm-plugins`, derived
//! from `OUT_DIR` so that `cargo check`, `clippy`, `build` and `test` (any profile) share it and
//! only the first of them compiles anything. The outer cargo's environment is scrubbed of what
//! would leak into the nested build: host RUSTFLAGS (e.g. `-C target-cpu=native`), clippy's
//! `RUSTC_WORKSPACE_WRAPPER`, jobserver flags, the outer target dir, profile overrides.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

const TARGET: &str = "wasm32-wasip2";
const PROFILE: &str = "plugin";

/// Every component `src/lib.rs` embeds: (package, directory relative to the workspace root).
const COMPONENTS: &[(&str, &str)] = &[
    ("quiver-plugin-router-rendezvous", "plugins/router-rendezvous"),
    ("quiver-plugin-router-round-robin", "plugins/router-round-robin"),
    ("quiver-plugin-router-hash", "plugins/router-hash"),
    ("quiver-plugin-router-least-loaded", "plugins/router-least-loaded"),
    ("quiver-plugin-balancer-memory", "plugins/balancer-memory"),
    ("quiver-plugin-balancer-row-count", "plugins/balancer-row-count"),
    ("quiver-plugin-discovery-heartbeat", "plugins/discovery-heartbeat"),
    ("quiver-plugin-discovery-static", "plugins/discovery-static"),
    ("quiver-plugin-autoscaler-threshold", "plugins/autoscaler-threshold"),
    ("quiver-example-plugin-router", "examples/plugin-router"),
    ("quiver-plugin-hostile-router", "plugins/testing/hostile-router"),
    ("quiver-plugin-forbidden-import", "plugins/testing/forbidden-import"),
];

/// Inputs of the components besides their own crates, relative to the workspace root. The root
/// manifest holds `[profile.plugin]` and the dependency versions.
const SHARED_INPUTS: &[&str] = &[
    "wit",
    "plugins/policy/src",
    "plugins/policy/Cargo.toml",
    "plugins/sdk/src",
    "plugins/sdk/Cargo.toml",
    "Cargo.toml",
    "Cargo.lock",
];

/// Environment variables of the outer build that must not reach the nested one.
const SCRUBBED_VARS: &[&str] = &[
    "RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "RUSTDOCFLAGS",
    "CARGO_ENCODED_RUSTDOCFLAGS",
    "CARGO_BUILD_RUSTDOCFLAGS",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_BUILD_BUILD_DIR",
    "CARGO_BUILD_TARGET",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
    "CARGO_INCREMENTAL",
    "CLIPPY_ARGS",
    "CLIPPY_CONF_DIR",
];

/// Prefixes of environment variables to scrub: profile overrides, and the cfg/feature values
/// cargo sets for this build script (they describe the host build, not the plugins).
const SCRUBBED_PREFIXES: &[&str] = &["CARGO_PROFILE_", "CARGO_CFG_", "CARGO_FEATURE_", "__CARGO_"];

fn main() -> ExitCode {
    match build() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: quiver-plugins-bundled: {message}");
            ExitCode::FAILURE
        }
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let workspace = manifest_dir.join("../..");

    // Paths relative to this manifest, as cargo prefers; directories are scanned recursively.
    for input in SHARED_INPUTS {
        println!("cargo:rerun-if-changed=../../{input}");
    }
    for (_, dir) in COMPONENTS {
        println!("cargo:rerun-if-changed=../../{dir}/src");
        println!("cargo:rerun-if-changed=../../{dir}/Cargo.toml");
    }

    check_target_installed()?;

    // OUT_DIR is <target dir>/<profile>/build/<package>-<hash>/out (or <target dir>/<triple>/...
    // with --target): a fixed place next to the outer build's profile directories.
    let target_root =
        out_dir.ancestors().nth(4).ok_or_else(|| format!("unexpected OUT_DIR layout: {}", out_dir.display()))?;
    let nested_target_dir = target_root.join("wasm-plugins");

    let cargo = env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(&cargo);
    command
        .current_dir(&workspace)
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["--profile", PROFILE, "--target", TARGET])
        .arg("--target-dir")
        .arg(&nested_target_dir);
    // A user-configured `build.build-dir` would otherwise be shared with (and locked by) the
    // outer build.
    if let Some(dir) = nested_target_dir.to_str().filter(|d| !d.contains('\'')) {
        command.arg("--config").arg(format!("build.build-dir='{dir}'"));
    }
    for (package, _) in COMPONENTS {
        command.args(["-p", package]);
    }
    for (key, _) in env::vars_os() {
        let Some(name) = key.to_str() else { continue };
        if SCRUBBED_VARS.contains(&name) || SCRUBBED_PREFIXES.iter().any(|p| name.starts_with(p)) {
            command.env_remove(&key);
        }
    }
    // Our stdout is cargo's instruction channel: send the nested cargo's output to stderr.
    command.stdout(Stdio::from(std::io::stderr())).stderr(Stdio::inherit());

    let started = Instant::now();
    let status = command
        .status()
        .map_err(|e| format!("could not run {} (the `CARGO` of the outer build): {e}", cargo.to_string_lossy()))?;
    if !status.success() {
        return Err(format!(
            "the nested `cargo build --profile {PROFILE} --target {TARGET}` of the plugin components failed ({status}); \
             its output is above. Build one with `cargo build --profile {PROFILE} --target {TARGET} -p <package>` \
             to see the errors directly."
        ));
    }
    eprintln!("quiver-plugins-bundled: nested plugin build took {:.1} s", started.elapsed().as_secs_f64());

    let built = nested_target_dir.join(TARGET).join(PROFILE);
    for (package, _) in COMPONENTS {
        let file = format!("{}.wasm", package.replace('-', "_"));
        copy_if_changed(&built.join(&file), &out_dir.join(&file))?;
    }
    Ok(())
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("{name} is not set by cargo: {e}"))
}

/// Fails with instructions when the standard library for `wasm32-wasip2` is missing, instead of
/// letting the nested build fail with "can't find crate for `core`".
fn check_target_installed() -> Result<(), String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| OsString::from("rustc"));
    let output = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("could not run {} --print sysroot: {e}", rustc.to_string_lossy()))?;
    let sysroot = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let std_dir = Path::new(&sysroot).join("lib/rustlib").join(TARGET).join("lib");
    if output.status.success() && !std_dir.is_dir() {
        return Err(format!(
            "the Rust target {TARGET} is not installed (no {}), and the bundled policy plugins are \
             built for it. Run scripts/install-deps.sh, or `rustup target add {TARGET}`.",
            std_dir.display()
        ));
    }
    Ok(())
}

/// Copies `from` to `to` unless `to` already has the same bytes, so an unchanged component keeps
/// its timestamp.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let bytes = fs::read(from).map_err(|e| format!("the nested build did not produce {}: {e}", from.display()))?;
    if fs::read(to).ok().as_deref() == Some(bytes.as_slice()) {
        return Ok(());
    }
    fs::write(to, &bytes).map_err(|e| format!("could not write {}: {e}", to.display()))
}
