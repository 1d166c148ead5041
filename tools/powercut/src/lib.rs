//! A test-only FUSE file system that can lose power: everything written to it that was not
//! made durable (by `fsync` of the file for its content, and of its directory for creates,
//! renames and unlinks) is thrown away by [`Disk::power_cut`], exactly as POSIX allows a disk
//! to lose it. The semantics are LazyFS's; the implementation is small and slow on purpose.
//!
//! - [`model`]: the tree in memory, each inode with its live and its durable state, and the
//!   rules above (unit-tested without FUSE); [`Semantics`] says whether an fsync of a file also
//!   keeps its name (as Linux's journaling file systems do) or, strictly POSIX, only an fsync of
//!   its directory does.
//! - [`fuse`]: the `fuser` file system serving that tree to the kernel.
//! - [`Disk`]: mount a backing directory, cut the power or unmount cleanly.
//!
//! At mount the backing directory is read into memory (all of it durable: it is the disk);
//! nothing is written to it until the end, when it is rewritten to hold what survives: after a
//! power cut the durable state only, after a clean unmount everything.
//!
//! Why FUSE rather than a block device that drops writes (dm-flakey, dm-log-writes): a kernel
//! file system on a block device keeps unsynced data in the page cache and journals metadata
//! on its own schedule, so which unsynced writes a cut loses depends on timing (and the
//! device-mapper targets are not available in every container). Here a cut loses every write
//! that was not fsynced, every time, so a missing fsync always shows.
//!
//! Needs root (it mounts and unmounts with mount(2)/umount2(2)) and `/dev/fuse`.

pub mod fuse;
pub mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use model::{Lost, Semantics};

/// A mounted power-cut file system.
pub struct Disk {
    session: Option<fuser::BackgroundSession>,
    shared: Arc<Mutex<fuse::Shared>>,
    backing: PathBuf,
    mountpoint: PathBuf,
}

impl Disk {
    /// Mounts `backing` (read into memory) at `mountpoint` (an existing empty directory),
    /// keeping what a power cut keeps by `semantics`.
    pub fn mount(backing: &Path, mountpoint: &Path, semantics: Semantics) -> io::Result<Disk> {
        let tree = model::Tree::load(backing, semantics)?;
        let shared = Arc::new(Mutex::new(fuse::Shared { tree, cut: false }));
        let fs = fuse::PowerCutFs { shared: shared.clone() };
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("powercut".into()), fuser::MountOption::RW];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Disk { session: Some(session), shared, backing: backing.into(), mountpoint: mountpoint.into() })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What a power cut would throw away now.
    pub fn unsynced(&self) -> Lost {
        self.lock().tree.unsynced()
    }

    /// Cuts the power: from now on every access fails (EIO), the file system is unmounted, and
    /// the backing directory is rewritten to hold only what was durable. Stop the programs
    /// using it first (SIGKILL): a process still writing just gets errors. Returns what was
    /// lost; mount the backing directory again to see what survived.
    pub fn power_cut(mut self) -> io::Result<Lost> {
        let lost = {
            let mut shared = self.lock();
            shared.cut = true;
            shared.tree.unsynced()
        };
        self.unmount_session()?;
        self.rewrite_backing(true)?;
        Ok(lost)
    }

    /// Unmounts cleanly: the backing directory gets everything, synced or not (as a clean
    /// shutdown writes back the page cache).
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_session()?;
        self.rewrite_backing(false)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, fuse::Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unmounts, waiting up to 10 s for the last user to let go: a killed process releases
    /// its files only when all of its threads have exited, which may be after its main thread
    /// shows as gone.
    fn unmount_session(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else { return Ok(()) };
        let path = std::ffi::CString::new(self.mountpoint.canonicalize()?.into_os_string().into_encoded_bytes())
            .map_err(io::Error::other)?;
        let start = Instant::now();
        loop {
            // SAFETY: umount2(2) with a valid NUL-terminated path and no flags.
            if unsafe { libc::umount2(path.as_ptr(), 0) } == 0 {
                break;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                // Not (or no longer) mounted: the session ends on its own.
                Some(libc::EINVAL) => break,
                Some(libc::EBUSY) if start.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    // Put the session back so that dropping the mount tries again.
                    self.session = Some(session);
                    let users = users_of(&self.mountpoint);
                    return Err(io::Error::new(
                        err.kind(),
                        format!("cannot unmount {}: {err}; still used by {users:?}", self.mountpoint.display()),
                    ));
                }
            }
        }
        // The kernel ends the FUSE connection with the unmount, and with it the session's
        // thread.
        session.join()
    }

    fn rewrite_backing(&self, durable_only: bool) -> io::Result<()> {
        for entry in std::fs::read_dir(&self.backing)? {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        self.lock().tree.store(&self.backing, durable_only)
    }
}

/// `pid (name)` of the processes with a file, directory or mapping under `dir` (for errors).
fn users_of(dir: &Path) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    let mut users = Vec::new();
    for p in procs.flatten() {
        let pid = p.path();
        let mut links = std::fs::read_dir(pid.join("fd"))
            .map(|fds| fds.flatten().map(|f| f.path()).collect())
            .unwrap_or_else(|_| Vec::new());
        links.push(pid.join("cwd"));
        if links.iter().any(|l| std::fs::read_link(l).is_ok_and(|t| t.starts_with(dir))) {
            let name = std::fs::read_to_string(pid.join("comm")).unwrap_or_default();
            users.push(format!("{} ({})", p.file_name().to_string_lossy(), name.trim()));
        }
    }
    users
}

impl Drop for Disk {
    /// A mount dropped without [`Disk::power_cut`] or [`Disk::unmount`] (a failing test) is
    /// unmounted, leaving the backing directory as it was mounted.
    fn drop(&mut self) {
        let _ = self.unmount_session();
    }
}
