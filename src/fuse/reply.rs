//! The core's answers as fuser replies: `answer` sends a value, or logs the
//! error and sends its errno.

use std::time::SystemTime;

use fuser::{
    BackingId, FileAttr, FileHandle, FileType, FopenFlags, Generation, INodeNo, ReplyAttr,
    ReplyCreate, ReplyData, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
};

use super::log::{failed, Req};
use crate::view::{self, Attr, Entry, Kind, Lookup, Open, OpenDir, Serve, Statfs};

pub(super) const GEN: Generation = Generation(0);

/// Sends the core's answer to a request, or its (logged) error.
pub(super) fn answer<T, R: Reply<T>>(reply: R, req: Req<'_>, r: view::Result<T>) {
    match r {
        Ok(v) => reply.send(v),
        Err(e) => reply.refuse(failed(req, &e)),
    }
}

/// A fuser reply that carries a `T`.
pub(super) trait Reply<T> {
    fn send(self, value: T);
    fn refuse(self, errno: fuser::Errno);
}

macro_rules! refuse_with_error {
    () => {
        fn refuse(self, errno: fuser::Errno) {
            self.error(errno)
        }
    };
}

impl Reply<()> for ReplyEmpty {
    fn send(self, (): ()) {
        self.ok()
    }
    refuse_with_error!();
}

impl Reply<Entry> for ReplyEntry {
    fn send(self, e: Entry) {
        self.entry_with_ttls(&e.ttl, &e.name_ttl, &file_attr(&e.attr), GEN)
    }
    refuse_with_error!();
}

impl Reply<Lookup> for ReplyEntry {
    fn send(self, l: Lookup) {
        match l {
            Lookup::Found(e) => Reply::<Entry>::send(self, e),
            // Inode 0 is a negative entry.
            Lookup::Absent { ttl } => self.entry(&ttl, &negative_attr(), GEN),
        }
    }
    refuse_with_error!();
}

impl Reply<Entry> for ReplyAttr {
    fn send(self, e: Entry) {
        self.attr(&e.ttl, &file_attr(&e.attr))
    }
    refuse_with_error!();
}

impl Reply<Vec<u8>> for ReplyData {
    fn send(self, data: Vec<u8>) {
        self.data(&data)
    }
    refuse_with_error!();
}

impl Reply<u32> for ReplyWrite {
    fn send(self, n: u32) {
        self.written(n)
    }
    refuse_with_error!();
}

impl Reply<Statfs> for ReplyStatfs {
    fn send(self, s: Statfs) {
        self.statfs(
            s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
        )
    }
    refuse_with_error!();
}

impl Reply<Open<BackingId>> for ReplyOpen {
    fn send(self, open: Open<BackingId>) {
        let fh = FileHandle(open.fh);
        match open.serve {
            Serve::Passthrough(id) => self.opened_passthrough(fh, FopenFlags::empty(), &id),
            Serve::PageCache { keep } => self.opened(fh, keep_cache(keep)),
        }
    }
    refuse_with_error!();
}

impl Reply<OpenDir> for ReplyOpen {
    fn send(self, dir: OpenDir) {
        let flags = if dir.cache_listing {
            FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE
        } else {
            FopenFlags::empty()
        };
        self.opened(FileHandle(dir.fh), flags)
    }
    refuse_with_error!();
}

/// fuser's `created` takes one lifetime for name and attributes; creating
/// happens only in writable views, where the two are the same.
impl Reply<(Entry, Open<BackingId>)> for ReplyCreate {
    fn send(self, (e, open): (Entry, Open<BackingId>)) {
        let (attr, fh) = (file_attr(&e.attr), FileHandle(open.fh));
        match open.serve {
            Serve::Passthrough(id) => {
                self.created_passthrough(&e.ttl, &attr, GEN, fh, FopenFlags::empty(), &id)
            }
            Serve::PageCache { keep } => self.created(&e.ttl, &attr, GEN, fh, keep_cache(keep)),
        }
    }
    refuse_with_error!();
}

fn keep_cache(keep: bool) -> FopenFlags {
    if keep {
        FopenFlags::FOPEN_KEEP_CACHE
    } else {
        FopenFlags::empty()
    }
}

pub(super) fn kind(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: SystemTime::UNIX_EPOCH,
        kind: kind(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: a.blksize,
        flags: 0,
    }
}

fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}
