//! The file system's state: every inode in memory, each with what a program sees now (`live`)
//! and what a power cut would leave (`durable`).
//!
//! The rules are POSIX's, taken literally (as LazyFS does), in [`Semantics::Posix`]:
//! - `fsync`/`fdatasync` of a file makes its current content durable, and nothing else;
//! - `fsync` of a directory makes its current entries durable (files and directories created,
//!   renamed, linked or removed in it), and nothing else: not the content of those files;
//! - a file named by a durable entry but never fsynced comes back empty.
//!
//! [`Semantics::Linux`] adds one rule that Linux's journaling file systems keep in practice
//! (ext4 and XFS commit every earlier metadata change with an fsync, btrfs logs a new file's
//! names with it) and that programs rely on: an fsync of a file or directory also makes
//! durable the names it has at that moment, and those of the directories above it. Unrelated
//! entries, renames after the fsync, and unlinks still need an fsync of their directory.
//!
//! A power cut rebuilds the tree from the durable parts alone, starting at the root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// Inode number of the root directory (FUSE's).
pub const ROOT: u64 = 1;

/// File content in 64 KiB pages shared between `live` and `durable`: an fsync copies page
/// pointers, a write after it copies only the pages it touches.
const PAGE: usize = 64 * 1024;

#[derive(Clone, Default)]
pub struct Pages {
    size: u64,
    pages: Vec<Arc<Vec<u8>>>,
}

impl Pages {
    fn from_bytes(bytes: &[u8]) -> Pages {
        let mut p = Pages::default();
        p.write(0, bytes);
        p
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn read(&self, offset: u64, len: usize) -> Vec<u8> {
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        let mut at = offset;
        while at < end {
            let (page, within) = ((at / PAGE as u64) as usize, (at % PAGE as u64) as usize);
            let take = (PAGE - within).min((end - at) as usize);
            match self.pages.get(page) {
                Some(p) => out.extend_from_slice(&p[within..within + take]),
                None => out.resize(out.len() + take, 0),
            }
            at += take as u64;
        }
        out
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        if end > self.size {
            self.resize(end);
        }
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let (page, within) = ((at / PAGE as u64) as usize, (at % PAGE as u64) as usize);
            let take = (PAGE - within).min(data.len() - done);
            if let Some(p) = self.pages.get_mut(page) {
                Arc::make_mut(p)[within..within + take].copy_from_slice(&data[done..done + take]);
            }
            done += take;
        }
    }

    pub fn resize(&mut self, size: u64) {
        let pages = size.div_ceil(PAGE as u64) as usize;
        self.pages.truncate(pages);
        // Bytes past the new end of the last page read as zeros if the file grows again.
        if size < self.size {
            let within = (size % PAGE as u64) as usize;
            if within > 0 {
                if let Some(last) = self.pages.last_mut() {
                    Arc::make_mut(last)[within..].fill(0);
                }
            }
        }
        while self.pages.len() < pages {
            self.pages.push(Arc::new(vec![0; PAGE]));
        }
        self.size = size;
    }

    /// Whether both hold the very same pages (no write since one was copied from the other).
    fn same(&self, other: &Pages) -> bool {
        self.size == other.size && self.pages.iter().zip(&other.pages).all(|(a, b)| Arc::ptr_eq(a, b))
    }
}

pub enum Body {
    File {
        live: Pages,
        /// Content at the last fsync; `None`: never fsynced (comes back empty).
        durable: Option<Pages>,
    },
    Dir {
        live: BTreeMap<OsString, u64>,
        /// Entries at the last fsync of this directory.
        durable: BTreeMap<OsString, u64>,
        /// The live parent (for `..` and for refusing to move a directory under itself).
        parent: u64,
    },
}

pub struct Inode {
    pub perm: u16,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub body: Body,
}

impl Inode {
    fn new(perm: u16, uid: u32, gid: u32, body: Body) -> Inode {
        let now = SystemTime::now();
        Inode { perm, uid, gid, nlink: 1, atime: now, mtime: now, ctime: now, body }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self.body, Body::Dir { .. })
    }

    pub fn size(&self) -> u64 {
        match &self.body {
            Body::File { live, .. } => live.size(),
            Body::Dir { live, .. } => live.len() as u64,
        }
    }
}

/// Which directory entries an fsync makes durable besides those of the directory fsynced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Semantics {
    /// None: POSIX taken literally (LazyFS).
    Posix,
    /// The current names of the inode fsynced, and of the directories above it (ext4, XFS,
    /// btrfs in practice).
    Linux,
}

/// What a power cut threw away, as paths relative to the mount point.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Lost {
    /// Files whose content differed from their last fsync (or were never fsynced).
    pub files: Vec<PathBuf>,
    /// Directories whose entries differed from their last fsync.
    pub dirs: Vec<PathBuf>,
}

/// Errors are errno values, as FUSE replies carry them.
pub type Errno = i32;

pub struct Tree {
    inodes: HashMap<u64, Inode>,
    next: u64,
    semantics: Semantics,
}

impl Tree {
    /// The tree of `backing`, all of it durable (it is what the disk holds).
    pub fn load(backing: &Path, semantics: Semantics) -> io::Result<Tree> {
        let meta = std::fs::metadata(backing)?;
        let mut tree = Tree { inodes: HashMap::new(), next: ROOT + 1, semantics };
        let body = Body::Dir { live: BTreeMap::new(), durable: BTreeMap::new(), parent: ROOT };
        tree.inodes.insert(ROOT, Inode::new(meta.permissions().mode() as u16 & 0o7777, meta.uid(), meta.gid(), body));
        tree.load_dir(backing, ROOT)?;
        Ok(tree)
    }

    fn load_dir(&mut self, dir: &Path, ino: u64) -> io::Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let perm = meta.permissions().mode() as u16 & 0o7777;
            let child = self.next;
            self.next += 1;
            if meta.is_dir() {
                let body = Body::Dir { live: BTreeMap::new(), durable: BTreeMap::new(), parent: ino };
                self.inodes.insert(child, Inode::new(perm, meta.uid(), meta.gid(), body));
                self.load_dir(&entry.path(), child)?;
            } else if meta.is_file() {
                let pages = Pages::from_bytes(&std::fs::read(entry.path())?);
                let body = Body::File { live: pages.clone(), durable: Some(pages) };
                self.inodes.insert(child, Inode::new(perm, meta.uid(), meta.gid(), body));
            } else {
                return Err(io::Error::other(format!("{}: only files and directories", entry.path().display())));
            }
            if let Some(Body::Dir { live, durable, .. }) = self.inodes.get_mut(&ino).map(|i| &mut i.body) {
                live.insert(entry.file_name(), child);
                durable.insert(entry.file_name(), child);
            }
        }
        Ok(())
    }

    pub fn get(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    pub fn get_mut(&mut self, ino: u64) -> Result<&mut Inode, Errno> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn entries(&self, dir: u64) -> Result<&BTreeMap<OsString, u64>, Errno> {
        match &self.get(dir)?.body {
            Body::Dir { live, .. } => Ok(live),
            Body::File { .. } => Err(libc::ENOTDIR),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        let inode = self.get_mut(dir)?;
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        match &mut inode.body {
            Body::Dir { live, .. } => Ok(live),
            Body::File { .. } => Err(libc::ENOTDIR),
        }
    }

    pub fn lookup(&self, dir: u64, name: &OsStr) -> Result<u64, Errno> {
        self.entries(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    /// `(name, ino, is_dir)` of a directory's live entries, `.` and `..` first.
    pub fn list(&self, dir: u64) -> Result<Vec<(OsString, u64, bool)>, Errno> {
        let parent = match &self.get(dir)?.body {
            Body::Dir { parent, .. } => *parent,
            Body::File { .. } => return Err(libc::ENOTDIR),
        };
        let mut out = vec![(OsString::from("."), dir, true), (OsString::from(".."), parent, true)];
        for (name, ino) in self.entries(dir)? {
            out.push((name.clone(), *ino, self.get(*ino)?.is_dir()));
        }
        Ok(out)
    }

    /// A new file or directory `name` in `dir`.
    pub fn create(
        &mut self,
        dir: u64,
        name: &OsStr,
        perm: u16,
        uid: u32,
        gid: u32,
        is_dir: bool,
    ) -> Result<u64, Errno> {
        if self.entries(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next;
        self.next += 1;
        let body = if is_dir {
            Body::Dir { live: BTreeMap::new(), durable: BTreeMap::new(), parent: dir }
        } else {
            Body::File { live: Pages::default(), durable: None }
        };
        self.inodes.insert(ino, Inode::new(perm, uid, gid, body));
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub fn link(&mut self, ino: u64, dir: u64, name: &OsStr) -> Result<(), Errno> {
        if self.get(ino)?.is_dir() {
            return Err(libc::EPERM);
        }
        if self.entries(dir)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        self.entries_mut(dir)?.insert(name.to_owned(), ino);
        self.get_mut(ino)?.nlink += 1;
        Ok(())
    }

    /// Removes `name` from `dir` (`rmdir` when `want_dir`, else `unlink`). The inode itself
    /// stays: an open file can still be read, and a durable entry may still name it.
    pub fn remove(&mut self, dir: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(dir, name)?;
        let target = self.get(ino)?;
        match (&target.body, want_dir) {
            (Body::Dir { live, .. }, true) if !live.is_empty() => return Err(libc::ENOTEMPTY),
            (Body::Dir { .. }, false) => return Err(libc::EISDIR),
            (Body::File { .. }, true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        self.entries_mut(dir)?.remove(name);
        let target = self.get_mut(ino)?;
        target.nlink = target.nlink.saturating_sub(1);
        Ok(())
    }

    /// `rename(2)` (with `RENAME_NOREPLACE` when `no_replace`).
    pub fn rename(
        &mut self,
        dir: u64,
        name: &OsStr,
        to_dir: u64,
        to_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(dir, name)?;
        let moving_dir = self.get(ino)?.is_dir();
        if moving_dir {
            // Not into itself or below it.
            let mut at = to_dir;
            loop {
                if at == ino {
                    return Err(libc::EINVAL);
                }
                match &self.get(at)?.body {
                    Body::Dir { parent, .. } if *parent != at => at = *parent,
                    _ => break,
                }
            }
        }
        if let Ok(existing) = self.lookup(to_dir, to_name) {
            if existing == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            match (&self.get(existing)?.body, moving_dir) {
                (Body::Dir { live, .. }, true) if !live.is_empty() => return Err(libc::ENOTEMPTY),
                (Body::Dir { .. }, false) => return Err(libc::EISDIR),
                (Body::File { .. }, true) => return Err(libc::ENOTDIR),
                _ => {}
            }
            let replaced = self.get_mut(existing)?;
            replaced.nlink = replaced.nlink.saturating_sub(1);
        }
        self.entries_mut(dir)?.remove(name);
        self.entries_mut(to_dir)?.insert(to_name.to_owned(), ino);
        let moved = self.get_mut(ino)?;
        moved.ctime = SystemTime::now();
        if let Body::Dir { parent, .. } = &mut moved.body {
            *parent = to_dir;
        }
        Ok(())
    }

    pub fn read(&self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>, Errno> {
        match &self.get(ino)?.body {
            Body::File { live, .. } => Ok(live.read(offset, len)),
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let inode = self.get_mut(ino)?;
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        match &mut inode.body {
            Body::File { live, .. } => {
                live.write(offset, data);
                Ok(())
            }
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    pub fn truncate(&mut self, ino: u64, size: u64) -> Result<(), Errno> {
        let inode = self.get_mut(ino)?;
        inode.mtime = SystemTime::now();
        inode.ctime = inode.mtime;
        match &mut inode.body {
            Body::File { live, .. } => {
                live.resize(size);
                Ok(())
            }
            Body::Dir { .. } => Err(libc::EISDIR),
        }
    }

    /// `fsync`/`fdatasync` of a file, or `fsync` of a directory: what it holds now is durable
    /// (and, with [`Semantics::Linux`], the names leading to it).
    pub fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        match &mut self.get_mut(ino)?.body {
            Body::File { live, durable } => *durable = Some(live.clone()),
            Body::Dir { live, durable, .. } => *durable = live.clone(),
        }
        if self.semantics == Semantics::Linux {
            self.sync_names(ino);
        }
        Ok(())
    }

    /// Makes every current name of `ino` durable, then those of the directories holding them,
    /// up to the root.
    fn sync_names(&mut self, ino: u64) {
        let mut todo = vec![ino];
        let mut done = HashSet::new();
        while let Some(child) = todo.pop() {
            if child == ROOT || !done.insert(child) {
                continue;
            }
            let links: Vec<(u64, OsString)> = self
                .inodes
                .iter()
                .filter_map(|(dir, inode)| match &inode.body {
                    Body::Dir { live, .. } => {
                        Some(live.iter().filter(|(_, i)| **i == child).map(|(n, _)| (*dir, n.clone())))
                    }
                    Body::File { .. } => None,
                })
                .flatten()
                .collect();
            for (dir, name) in links {
                if let Some(Inode { body: Body::Dir { durable, .. }, .. }) = self.inodes.get_mut(&dir) {
                    durable.insert(name, child);
                }
                todo.push(dir);
            }
        }
    }

    /// What a power cut would throw away now: the paths (as programs see them) of files and
    /// directories that differ from their durable state.
    pub fn unsynced(&self) -> Lost {
        let mut lost = Lost::default();
        let mut todo = vec![(ROOT, PathBuf::new())];
        let mut seen = HashSet::new();
        while let Some((ino, path)) = todo.pop() {
            let Some(inode) = self.inodes.get(&ino) else { continue };
            match &inode.body {
                Body::File { live, durable } => {
                    if !durable.as_ref().is_some_and(|d| d.same(live)) {
                        lost.files.push(path);
                    }
                }
                Body::Dir { live, durable, .. } => {
                    if !seen.insert(ino) {
                        continue;
                    }
                    if live != durable {
                        lost.dirs.push(path.clone());
                    }
                    todo.extend(live.iter().map(|(name, child)| (*child, path.join(name))));
                }
            }
        }
        lost.files.sort();
        lost.dirs.sort();
        lost
    }

    /// Writes the tree into the empty directory `to`: only its durable parts (`durable`), as a
    /// power cut leaves the disk, or all of it as programs see it (a clean unmount).
    pub fn store(&self, to: &Path, durable: bool) -> io::Result<()> {
        let mut seen = HashSet::from([ROOT]);
        self.store_dir(ROOT, to, durable, &mut seen)
    }

    fn store_dir(&self, ino: u64, to: &Path, durable: bool, seen: &mut HashSet<u64>) -> io::Result<()> {
        let Some(Inode { body: Body::Dir { live, durable: synced, .. }, .. }) = self.inodes.get(&ino) else {
            return Ok(());
        };
        for (name, child) in if durable { synced } else { live } {
            let Some(inode) = self.inodes.get(child) else { continue };
            let path = to.join(name);
            match &inode.body {
                Body::Dir { .. } => {
                    // A directory named twice (renames synced in one directory but not the
                    // other) is written once, and a cycle is cut.
                    if !seen.insert(*child) {
                        continue;
                    }
                    std::fs::create_dir(&path)?;
                    self.store_dir(*child, &path, durable, seen)?;
                }
                Body::File { live, durable: synced } => {
                    let pages = if durable { synced.clone().unwrap_or_default() } else { live.clone() };
                    std::fs::write(&path, pages.read(0, pages.size() as usize))?;
                }
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(u32::from(inode.perm)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cut(tree: &Tree) -> tempfile::TempDir {
        let out = tempfile::tempdir().unwrap();
        tree.store(out.path(), true).unwrap();
        out
    }

    fn name(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn only_synced_content_and_entries_survive() {
        let backing = tempfile::tempdir().unwrap();
        std::fs::write(backing.path().join("old"), b"on disk").unwrap();
        let mut t = Tree::load(backing.path(), Semantics::Posix).unwrap();
        assert_eq!(t.unsynced(), Lost::default());

        // Written but not fsynced: old content; entry of a new file not synced: gone.
        let old = t.lookup(ROOT, name("old")).unwrap();
        t.write(old, 0, b"ON").unwrap();
        let a = t.create(ROOT, name("a"), 0o644, 0, 0, false).unwrap();
        t.write(a, 0, b"aaa").unwrap();
        t.sync(a).unwrap();
        let out = cut(&t);
        assert_eq!(std::fs::read(out.path().join("old")).unwrap(), b"on disk");
        assert!(!out.path().join("a").exists(), "a's entry was never synced");
        assert_eq!(t.unsynced(), Lost { files: vec![PathBuf::from("old")], dirs: vec![PathBuf::new()] });

        // Directory synced: a is there with its synced content; a later write is lost.
        t.sync(ROOT).unwrap();
        t.write(a, 3, b"bbb").unwrap();
        let out = cut(&t);
        assert_eq!(std::fs::read(out.path().join("a")).unwrap(), b"aaa");
        assert_eq!(t.read(a, 0, 100).unwrap(), b"aaabbb");

        // A never-synced file named by a synced entry comes back empty.
        let b = t.create(ROOT, name("b"), 0o644, 0, 0, false).unwrap();
        t.write(b, 0, b"x").unwrap();
        t.sync(ROOT).unwrap();
        assert_eq!(std::fs::read(cut(&t).path().join("b")).unwrap(), b"");
    }

    #[test]
    fn rename_needs_the_directory_synced() {
        let backing = tempfile::tempdir().unwrap();
        let mut t = Tree::load(backing.path(), Semantics::Posix).unwrap();
        let d = t.create(ROOT, name("d"), 0o755, 0, 0, true).unwrap();
        let tmp = t.create(d, name("f#1"), 0o644, 0, 0, false).unwrap();
        t.write(tmp, 0, b"new").unwrap();
        t.sync(tmp).unwrap();
        t.sync(ROOT).unwrap();
        t.rename(d, name("f#1"), d, name("f"), false).unwrap();
        let out = cut(&t);
        assert!(out.path().join("d").is_dir());
        assert!(!out.path().join("d/f").exists(), "rename not synced");
        t.sync(d).unwrap();
        assert_eq!(std::fs::read(cut(&t).path().join("d/f")).unwrap(), b"new");
        // Unlink needs the directory synced too.
        t.remove(d, name("f"), false).unwrap();
        assert!(cut(&t).path().join("d/f").exists());
        t.sync(d).unwrap();
        assert!(!cut(&t).path().join("d/f").exists());
    }

    #[test]
    fn linux_semantics_keep_the_names_of_what_was_fsynced() {
        let backing = tempfile::tempdir().unwrap();
        let mut t = Tree::load(backing.path(), Semantics::Linux).unwrap();
        let d = t.create(ROOT, name("d"), 0o755, 0, 0, true).unwrap();
        let e = t.create(d, name("e"), 0o755, 0, 0, true).unwrap();
        let f = t.create(e, name("f"), 0o644, 0, 0, false).unwrap();
        let other = t.create(e, name("other"), 0o644, 0, 0, false).unwrap();
        t.write(f, 0, b"f").unwrap();
        t.write(other, 0, b"o").unwrap();
        t.sync(f).unwrap();
        // Renamed after its fsync: the rename needs the directory synced.
        t.rename(e, name("f"), e, name("g"), false).unwrap();
        let out = cut(&t);
        assert_eq!(std::fs::read(out.path().join("d/e/f")).unwrap(), b"f");
        assert!(!out.path().join("d/e/other").exists(), "an unrelated new file's name is not synced");
        assert!(!out.path().join("d/e/g").exists());
        t.sync(e).unwrap();
        let out = cut(&t);
        assert!(out.path().join("d/e/g").exists() && !out.path().join("d/e/f").exists());
        assert_eq!(std::fs::read(out.path().join("d/e/other")).unwrap(), b"", "named, content never synced");
    }

    #[test]
    fn pages_read_write_truncate() {
        let mut p = Pages::default();
        p.write(PAGE as u64 - 2, b"abcd");
        assert_eq!(p.size(), PAGE as u64 + 2);
        assert_eq!(p.read(PAGE as u64 - 3, 10), b"\0abcd");
        let copy = p.clone();
        p.resize(PAGE as u64 - 1);
        p.resize(PAGE as u64 + 2);
        assert_eq!(p.read(PAGE as u64 - 2, 4), b"a\0\0\0");
        assert_eq!(copy.read(PAGE as u64 - 2, 4), b"abcd", "a synced copy is not changed by later writes");
    }
}
