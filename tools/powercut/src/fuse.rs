//! The FUSE side: each request of the kernel becomes one call on the [`Tree`] under a lock.
//! Attributes and entries are never cached by the kernel (TTL 0), so what a program sees is
//! always the tree's.

use std::ffi::OsStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::model::{Inode, Tree};

const TTL: Duration = Duration::ZERO;

/// The state shared by the FUSE thread and the [`crate::Mount`] handle.
pub struct Shared {
    pub tree: Tree,
    /// Set by the power cut: from then on every request fails with EIO.
    pub cut: bool,
}

pub struct PowerCutFs {
    pub shared: Arc<Mutex<Shared>>,
}

type Tr<'a> = MutexGuard<'a, Shared>;

impl PowerCutFs {
    /// The tree, or EIO once the power is cut. A poisoned lock (a panic in another request)
    /// still holds a usable tree.
    fn tree(&self) -> Result<Tr<'_>, Errno> {
        let guard = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        if guard.cut {
            return Err(Errno::EIO);
        }
        Ok(guard)
    }

    fn attr(tree: &Tree, ino: u64) -> Result<FileAttr, Errno> {
        tree.get(ino).map(|i| attr_of(ino, i)).map_err(Errno::from_i32)
    }
}

fn attr_of(ino: u64, inode: &Inode) -> FileAttr {
    let size = inode.size();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: inode.atime,
        mtime: inode.mtime,
        ctime: inode.ctime,
        crtime: inode.ctime,
        kind: if inode.is_dir() { FileType::Directory } else { FileType::RegularFile },
        perm: inode.perm,
        nlink: if inode.is_dir() { 2 } else { inode.nlink },
        uid: inode.uid,
        gid: inode.gid,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// Runs `f` on the tree and sends its result, or its errno, with `ok`/`err`.
macro_rules! answer {
    ($self:ident, $reply:ident, |$t:ident| $body:expr, |$v:ident| $ok:expr) => {{
        let result = (|| -> Result<_, Errno> {
            #[allow(unused_mut)]
            let mut $t = $self.tree()?;
            $body
        })();
        match result {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    }};
}

fn errno(e: i32) -> Errno {
    Errno::from_i32(e)
}

impl PowerCutFs {
    /// `mknod` (a regular file) and `mkdir`: a new entry with the permission bits of `mode`
    /// (umask already applied), owned by the caller.
    fn create_node(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, dir: bool, reply: ReplyEntry) {
        answer!(
            self,
            reply,
            |t| {
                let perm = (mode & 0o7777) as u16;
                let ino = t.tree.create(parent.0, name, perm, req.uid(), req.gid(), dir).map_err(errno)?;
                Self::attr(&t.tree, ino)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        answer!(
            self,
            reply,
            |t| {
                let ino = t.tree.lookup(parent.0, name).map_err(errno)?;
                Self::attr(&t.tree, ino)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer!(self, reply, |t| Self::attr(&t.tree, ino.0), |a| reply.attr(&TTL, &a))
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        answer!(
            self,
            reply,
            |t| {
                if let Some(size) = size {
                    t.tree.truncate(ino.0, size).map_err(errno)?;
                }
                let inode = t.tree.get_mut(ino.0).map_err(errno)?;
                if let Some(mode) = mode {
                    inode.perm = (mode & 0o7777) as u16;
                }
                if let Some(uid) = uid {
                    inode.uid = uid;
                }
                if let Some(gid) = gid {
                    inode.gid = gid;
                }
                if let Some(a) = atime {
                    inode.atime = time(a);
                }
                if let Some(m) = mtime {
                    inode.mtime = time(m);
                }
                inode.ctime = SystemTime::now();
                Self::attr(&t.tree, ino.0)
            },
            |a| reply.attr(&TTL, &a)
        )
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            return reply.error(Errno::EPERM);
        }
        self.create_node(req, parent, name, mode & !umask, false, reply)
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.create_node(req, parent, name, mode & !umask, true, reply)
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(self, reply, |t| t.tree.remove(parent.0, name, false).map_err(errno), |_v| reply.ok())
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer!(self, reply, |t| t.tree.remove(parent.0, name, true).map_err(errno), |_v| reply.ok())
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !(flags - RenameFlags::RENAME_NOREPLACE).is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        answer!(self, reply, |t| t.tree.rename(parent.0, name, newparent.0, newname, no_replace).map_err(errno), |_v| {
            reply.ok()
        })
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        answer!(
            self,
            reply,
            |t| {
                t.tree.link(ino.0, newparent.0, newname).map_err(errno)?;
                Self::attr(&t.tree, ino.0)
            },
            |a| reply.entry(&TTL, &a, Generation(0))
        )
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        answer!(
            self,
            reply,
            |t| {
                if flags.0 & libc::O_TRUNC != 0 {
                    t.tree.truncate(ino.0, 0).map_err(errno)?;
                }
                t.tree.get(ino.0).map_err(errno).map(|_| ())
            },
            |_v| reply.opened(FileHandle(0), FopenFlags::empty())
        )
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        answer!(self, reply, |t| t.tree.read(ino.0, offset, size as usize).map_err(errno), |data| reply.data(&data))
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        answer!(self, reply, |t| t.tree.write(ino.0, offset, data).map_err(errno), |_v| reply
            .written(data.len() as u32))
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply.ok()
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer!(self, reply, |t| t.tree.sync(ino.0).map_err(errno), |_v| reply.ok())
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        answer!(self, reply, |t| t.tree.list(ino.0).map_err(errno), |entries| {
            for (i, (name, child, is_dir)) in entries.into_iter().enumerate().skip(offset as usize) {
                let kind = if is_dir { FileType::Directory } else { FileType::RegularFile };
                if reply.add(INodeNo(child), i as u64 + 1, kind, &name) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        answer!(self, reply, |t| t.tree.sync(ino.0).map_err(errno), |_v| reply.ok())
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room (1 TiB): nats-server sizes its JetStream limits from the free space.
        let blocks = (1u64 << 40) / 4096;
        reply.statfs(blocks, blocks, blocks, 1 << 20, 1 << 20, 4096, 255, 4096)
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok()
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        answer!(
            self,
            reply,
            |t| {
                let ino = match t.tree.lookup(parent.0, name) {
                    Ok(_) if flags & libc::O_EXCL != 0 => return Err(Errno::EEXIST),
                    Ok(ino) => {
                        if flags & libc::O_TRUNC != 0 {
                            t.tree.truncate(ino, 0).map_err(errno)?;
                        }
                        ino
                    }
                    Err(_) => {
                        let perm = (mode & !umask & 0o7777) as u16;
                        t.tree.create(parent.0, name, perm, req.uid(), req.gid(), false).map_err(errno)?
                    }
                };
                Self::attr(&t.tree, ino)
            },
            |a| reply.created(&TTL, &a, Generation(0), FileHandle(0), FopenFlags::empty())
        )
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        answer!(
            self,
            reply,
            |t| {
                match mode {
                    0 => {
                        let end = offset + length;
                        if end > t.tree.get(ino.0).map_err(errno)?.size() {
                            t.tree.truncate(ino.0, end).map_err(errno)?;
                        }
                        Ok(())
                    }
                    libc::FALLOC_FL_KEEP_SIZE => Ok(()),
                    _ => Err(Errno::EOPNOTSUPP),
                }
            },
            |_v| reply.ok()
        )
    }
}
