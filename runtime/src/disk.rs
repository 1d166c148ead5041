//! Writing local files so that they survive a power cut, not only a crash of the process.
//!
//! A `write` or `rename` that returned has reached the kernel's page cache, which a SIGKILL
//! does not lose but a power cut does. What makes it durable: `fsync` of the file for its
//! data, and `fsync` of its directory for the entry naming it (a new file, a rename), for
//! every directory created on the way too. POSIX asks for all of these; how much a file system
//! keeps without being asked varies (by file system and mount options), so nothing here
//! counts on it.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Creates `dir` and its missing ancestors, and fsyncs the parent of each directory it
/// created, so the new directories are still there after a power cut. A no-op (no fsync) when
/// `dir` exists.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The directories about to be created, deepest first.
    let mut missing: Vec<PathBuf> = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.exists() {
            break;
        }
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in &missing {
        sync_dir(parent_of(created))?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: a temporary file in the same directory,
/// fsynced, renamed over `path`, then the directory fsynced (and any directory created for it,
/// see [`create_dir_all`]). A reader sees the old content or the new, never a part; after a
/// power cut, `path` holds the new content once this returned.
pub fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = parent_of(path);
    create_dir_all(dir)?;
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
    sync_dir(dir)
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
        write_file(&path, b"one").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        // No temporary file is left beside it.
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("a/b/c")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("data")]);
        create_dir_all(&dir.path().join("x/y")).unwrap();
        assert!(dir.path().join("x/y").is_dir());
    }
}
