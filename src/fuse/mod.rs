//! The fuser adapter: converts each FUSE request's arguments, calls one
//! method of the view core and sends its answer as the reply (`reply.rs`),
//! logging failures (`log.rs`). Every decision is the core's.

mod log;
mod reply;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, Errno as FErrno, FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow, WriteFlags,
};

use crate::view::{self, Caller, SetAttr, SetTime, View};
use log::{failed, Req};
use reply::{answer, file_attr, kind, GEN};

pub struct WopFs {
    view: Arc<View>,
}

impl WopFs {
    pub fn new(view: Arc<View>) -> WopFs {
        WopFs { view }
    }
}

/// Drops what the kernel cached of a revoked view (`View::revoke`): each
/// name's dentry (a directory's takes its subtree with it) and each inode's
/// attributes and cached pages, the root's included, so the next access
/// asks the view, which answers ENOENT. Notifications about what the
/// kernel never cached fail with ENOENT and are ignored. Returns how many
/// the kernel took.
pub fn invalidate(notifier: &fuser::Notifier, known: &[view::Known]) -> usize {
    let mut taken = 0;
    for k in known {
        if notifier
            .inval_entry(INodeNo(k.parent), OsStr::new(&k.name))
            .is_ok()
        {
            taken += 1;
        }
    }
    // Offset 0, length 0: the attributes and every cached page.
    let inodes = std::iter::once(crate::tree::ROOT).chain(known.iter().map(|k| k.ino));
    for ino in inodes {
        if notifier.inval_inode(INodeNo(ino), 0, 0).is_ok() {
            taken += 1;
        }
    }
    taken
}

/// Drops what the kernel cached that an undo changed (`View::undo`).
/// Returns how many notifications the kernel took.
pub fn invalidate_stale(notifier: &fuser::Notifier, stale: &view::Stale) -> usize {
    let mut taken = 0;
    for (parent, name) in &stale.entries {
        if notifier
            .inval_entry(INodeNo(*parent), OsStr::new(name))
            .is_ok()
        {
            taken += 1;
        }
    }
    for ino in &stale.inodes {
        if notifier.inval_inode(INodeNo(*ino), 0, 0).is_ok() {
            taken += 1;
        }
    }
    taken
}

impl Filesystem for WopFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Best effort: each capability the kernel lacks is simply not used.
        // Readdirplus always, not "auto": in auto mode every entry the kernel
        // makes from a listing drops the first path walk through it out of
        // RCU mode (FUSE_I_INIT_RDPLUS), and later parts of a listing come
        // without attributes; a cold find + stat through the kernel engine
        // took 10% longer with it, and a cold find alone 15%. The price: a
        // cold plain `ls` of one 100,000-entry directory gets every entry's
        // attributes (0.58 -> 0.78 s; `ls -l` the same either way).
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS);
        let _ = config.add_capabilities(InitFlags::FUSE_PARALLEL_DIROPS);
        let _ = config.add_capabilities(InitFlags::FUSE_CACHE_SYMLINKS);
        // open(O_TRUNC) arrives as one request, so a copy-up skips the data.
        let _ = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC);
        // We clear set-id bits ourselves (see View::write and setattr), so
        // the kernel need not ask for security.capability before each write.
        let _ = config.add_capabilities(InitFlags::FUSE_HANDLE_KILLPRIV_V2);
        // Kept page caches are dropped when a file's mtime or size changes.
        let _ = config.add_capabilities(InitFlags::FUSE_AUTO_INVAL_DATA);
        if self.view.wants_passthrough() {
            let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
                && config.set_max_stack_depth(1).is_ok();
            self.view.use_passthrough(ok);
        }
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        view::set_requester(req.pid());
        let req = Req::named("lookup", parent.0, name);
        answer(reply, req, self.view.lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let entry = match fh {
            Some(fh) => self.view.getattr_fh(ino.0, fh.0),
            None => self.view.getattr(ino.0),
        };
        answer(reply, Req::on("getattr", ino.0), entry);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        answer(reply, Req::on("readlink", ino.0), self.view.readlink(ino.0));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        view::set_requester(req.pid());
        let open = self.view.open(ino.0, flags.0, |f| reply.open_backing(f));
        answer(reply, Req::on("open", ino.0), open);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        answer(
            reply,
            Req::on("read", ino.0),
            self.view.read(fh.0, offset, size),
        );
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here, so there is nothing to flush: ENOSYS
        // tells the kernel to stop sending FLUSH at every close.
        reply.error(FErrno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.view.release(fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer(reply, Req::on("opendir", ino.0), self.view.opendir(ino.0));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.view.readdir_each(ino.0, fh.0, offset, |next, e| {
            reply.add(INodeNo(e.ino), next, kind(e.attr.kind), &*e.name)
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed(Req::on("readdir", ino.0), &e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let listed = self.view.readdir_each(ino.0, fh.0, offset, |next, e| {
            reply.add(
                INodeNo(e.ino),
                next,
                &*e.name,
                &e.ttl,
                &file_attr(&e.attr),
                GEN,
            )
        });
        match listed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(failed(Req::on("readdirplus", ino.0), &e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.view.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _ds: bool,
        reply: ReplyEmpty,
    ) {
        answer(reply, Req::on("fsyncdir", ino.0), self.view.fsyncdir());
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, ds: bool, reply: ReplyEmpty) {
        answer(reply, Req::on("fsync", ino.0), self.view.fsync(fh.0, ds));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        answer(reply, Req::on("statfs", ino.0), self.view.statfs());
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let privileged = || caller_has_sys_admin(req.pid());
        let value = self.view.getxattr(ino.0, name, privileged);
        xattr_reply(Req::named("getxattr", ino.0, name), value, size, reply);
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let privileged = || caller_has_sys_admin(req.pid());
        let names = self.view.listxattr(ino.0, privileged);
        xattr_reply(Req::on("listxattr", ino.0), names, size, reply);
    }

    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = self.view.access(ino.0, mask.bits(), req.uid(), req.gid());
        answer(reply, Req::on("access", ino.0), r);
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
        };
        let r = self.view.setattr(ino.0, fh.map(|f| f.0), set, caller(req));
        answer(reply, Req::on("setattr", ino.0), r);
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.view.mknod(parent.0, name, mode, caller(req));
        answer(reply, Req::named("mknod", parent.0, name), r);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.view.mkdir(parent.0, name, mode, caller(req));
        answer(reply, Req::named("mkdir", parent.0, name), r);
    }

    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        view::set_requester(req.pid());
        let r = self.view.unlink(parent.0, name);
        answer(reply, Req::named("unlink", parent.0, name), r);
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        view::set_requester(req.pid());
        let r = self.view.rmdir(parent.0, name);
        answer(reply, Req::named("rmdir", parent.0, name), r);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes();
        let r = self.view.symlink(parent.0, name, target, caller(req));
        answer(reply, Req::named("symlink", parent.0, name), r);
    }

    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        view::set_requester(req.pid());
        let r = self
            .view
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        answer(reply, Req::named("rename", parent.0, name), r);
    }

    fn link(
        &self,
        req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        view::set_requester(req.pid());
        let r = self.view.link(ino.0, newparent.0, newname);
        answer(reply, Req::named("link", newparent.0, newname), r);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wflags: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = wflags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let r = self.view.write(fh.0, offset, data, kill);
        answer(reply, Req::on("write", ino.0), r);
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let register = |f: &std::fs::File| reply.open_backing(f);
        let r = self
            .view
            .create(parent.0, name, mode, caller(req), register);
        answer(reply, Req::named("create", parent.0, name), r);
    }

    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        view::set_requester(req.pid());
        let r = self.view.setxattr(ino.0, name, value, flags);
        answer(reply, Req::named("setxattr", ino.0, name), r);
    }

    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        view::set_requester(req.pid());
        let r = self.view.removexattr(ino.0, name);
        answer(reply, Req::named("removexattr", ino.0, name), r);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.view.fallocate(fh.0, offset, length, mode);
        answer(reply, Req::on("fallocate", ino.0), r);
    }

    fn destroy(&mut self) {
        self.view.shutdown();
    }
}

/// The caller of a request that may make or change an entry; names its
/// process for the denied-access log too.
fn caller(req: &Request) -> Caller {
    view::set_requester(req.pid());
    Caller {
        uid: req.uid(),
        gid: req.gid(),
    }
}

/// Whether the process that sent a request holds CAP_SYS_ADMIN where the
/// daemon does: an effective CAP_SYS_ADMIN in the daemon's own user
/// namespace. (Capabilities held only inside a nested user namespace, as a
/// container's root has them, do not count: the host filesystem would not
/// show such a caller `trusted.*` either.) Anything unreadable counts as
/// unprivileged. The request's pid is in the connection's pid namespace,
/// the daemon's.
fn caller_has_sys_admin(pid: u32) -> bool {
    const CAP_SYS_ADMIN: u32 = 21;
    if pid == 0 {
        return false;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    if cap_eff.is_none_or(|c| c & (1 << CAP_SYS_ADMIN) == 0) {
        return false;
    }
    match (
        std::fs::read_link(format!("/proc/{pid}/ns/user")),
        std::fs::read_link("/proc/self/ns/user"),
    ) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        _ => false,
    }
}

fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(t) => SetTime::At(t),
        TimeOrNow::Now => SetTime::Now,
    }
}

/// getxattr/listxattr protocol: size 0 asks for the length; a too-small
/// buffer is ERANGE.
fn xattr_reply(req: Req, value: view::Result<Vec<u8>>, size: u32, reply: ReplyXattr) {
    match value {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() <= size as usize => reply.data(&v),
        Ok(_) => reply.error(FErrno::ERANGE),
        Err(e) => reply.error(failed(req, &e)),
    }
}
