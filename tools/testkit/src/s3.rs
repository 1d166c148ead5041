//! An S3-compatible object store for tests: `s3rver` (npm; `scripts/install-deps.sh` installs it
//! under `~/.cache/quiver-npm`), which keeps its objects in a directory, so it can be SIGKILLed
//! and started again without losing what it acknowledged. It checks request signatures against
//! its one key pair (`S3RVER` / `S3RVER`) and answers S3's errors for unknown buckets and
//! keys; it does not emulate IAM policies, regions, storage classes, object locking or
//! throttling.

use std::path::PathBuf;

/// The bucket every test store has.
pub const BUCKET: &str = "quiver";
/// The key pair s3rver accepts.
pub const ACCESS_KEY: &str = "S3RVER";

/// The `s3rver` executable: `QUIVER_S3RVER`, else the one `scripts/install-deps.sh` installs,
/// else `s3rver` on `PATH`.
pub fn s3rver_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("QUIVER_S3RVER").filter(|v| !v.is_empty()) {
        return bin.into();
    }
    let cache = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quiver-npm/node_modules/.bin/s3rver"));
    cache.filter(|p| p.is_file()).unwrap_or_else(|| "s3rver".into())
}

/// How quiver processes reach a test store: `QUIVER_STORAGE__*` settings for `s3://<bucket>/<prefix>`.
pub fn storage_env(port: u16, bucket: &str, prefix: &str, key: &str) -> Vec<(String, String)> {
    vec![
        ("QUIVER_STORAGE__URL".into(), format!("s3://{bucket}/{prefix}")),
        ("QUIVER_STORAGE__ENDPOINT".into(), format!("http://127.0.0.1:{port}")),
        ("QUIVER_STORAGE__REGION".into(), "us-east-1".into()),
        ("QUIVER_STORAGE__ACCESS_KEY_ID".into(), key.into()),
        ("QUIVER_STORAGE__SECRET_ACCESS_KEY".into(), key.into()),
        // A store restarted by a test is back within seconds: retry often.
        ("QUIVER_STORAGE__BACKOFF_MAX".into(), "1s".into()),
    ]
}
