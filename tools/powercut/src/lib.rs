//! A test-only FUSE file system that can lose power: everything written to it that was not
//! made durable (by `fsync` of the file for its content, and of its directory for creates,
//! renames and unlinks) is thrown away by [`Mount::power_cut`], exactly as POSIX allows a disk
//! to lose it. The semantics are LazyFS's; the implementation is small and slow on purpose.
//!
//! - [`model`]: the tree in memory, each inode with its live and its durable state, and the
//!   rules above (unit-tested without FUSE).
//! - [`fuse`]: the `fuser` file system serving that tree to the kernel.
//! - [`Mount`]: mount a backing directory, cut the power or unmount cleanly.
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
//! Mounting needs root (or the `fusermount3` helper) and `/dev/fuse`.

pub mod fuse;
pub mod model;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use model::Lost;

/// A mounted power-cut file system.
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    shared: Arc<Mutex<fuse::Shared>>,
    backing: PathBuf,
    mountpoint: PathBuf,
}

impl Mount {
    /// Mounts `backing` (read into memory) at `mountpoint` (an existing empty directory).
    pub fn mount(backing: &Path, mountpoint: &Path) -> io::Result<Mount> {
        let tree = model::Tree::load(backing)?;
        let shared = Arc::new(Mutex::new(fuse::Shared { tree, cut: false }));
        let fs = fuse::PowerCutFs { shared: shared.clone() };
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("powercut".into()), fuser::MountOption::RW];
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Mount { session: Some(session), shared, backing: backing.into(), mountpoint: mountpoint.into() })
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

    fn unmount_session(&mut self) -> io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
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

impl Drop for Mount {
    /// A mount dropped without [`Mount::power_cut`] or [`Mount::unmount`] (a failing test) is
    /// unmounted, leaving the backing directory as it was mounted.
    fn drop(&mut self) {
        let _ = self.unmount_session();
    }
}
