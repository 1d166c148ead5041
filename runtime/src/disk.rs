//! Writing local files so that they survive a power cut, not only a crash of the process.
//!
//! A `write` or `rename` that returned has reached the kernel's page cache, which a SIGKILL
//! does not lose but a power cut does. What makes it durable: `fsync` of the file for its
//! data, and `fsync` of its directory for the entry naming it (a new file, a rename), and of
//! every directory above it up to one known to be durable. POSIX asks for all of these; how much a file system
//! keeps without being asked varies (by file system and mount options), so nothing here
//! counts on it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates `dir` and its missing ancestors and makes the whole path durable: fsyncs `dir` and
/// every ancestor, not only those created now, because a directory left by a process that
/// crashed between creating it and syncing its parent exists but may not survive a power cut.
/// For start-up paths (a few fsyncs, once). An ancestor that existed before and cannot be
/// fsynced (a read-only or special file system above the data) is not an error.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    let mut existed: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if !d.as_os_str().is_empty() && d.exists() {
            existed.push(d.to_path_buf());
        }
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    let dir = dir.canonicalize()?;
    for d in dir.ancestors() {
        match sync_dir(d) {
            Err(_) if d != dir && existed.iter().any(|e| e.canonicalize().is_ok_and(|e| e == d)) => {}
            other => other?,
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` under `root` (a directory made durable with [`create_dir_all`])
/// atomically and durably: a temporary file in the same directory, fsynced, renamed over
/// `path`, then every directory from the file's up to `root` fsynced, whether created now or
/// by an earlier process. A reader sees the old content or the new, never a part; after a power
/// cut, `path` holds the new content once this returned.
pub fn write_file(root: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    std::fs::create_dir_all(dir)?;
    let tmp = temp_name(path);
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    for d in dir.ancestors() {
        sync_dir(d)?;
        if d == root || !d.starts_with(root) {
            break;
        }
    }
    Ok(())
}

/// fsyncs a directory: its entries (files created, renamed or removed in it) become durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// `<path>#<digits>`: unique within this process, and the shape object_store's local store
/// takes for an upload in progress, so a temporary file left by a crash is never listed as an
/// object.
fn temp_name(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!("#{}{n}", std::process::id()));
    name.into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn write_file_creates_dirs_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/c/data");
        write_file(dir.path(), &path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_file(dir.path(), &path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        // No temporary file is left beside it.
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("a/b/c")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("data")]);
        create_dir_all(&dir.path().join("x/y")).unwrap();
        assert!(dir.path().join("x/y").is_dir());
    }
}
