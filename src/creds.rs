//! Acting with a caller's host permissions.
//!
//! `wopfs serve` runs as root and answers callers of any uid. What it reads
//! on a caller's behalf (the search walk, a grant's resolution) must be
//! only what that uid could read itself. Rather than re-implement the
//! kernel's permission checks (modes, groups, ACLs, LSMs), the work runs on
//! threads whose filesystem credentials are the caller's, so the kernel
//! checks every `openat`, `stat` and directory listing itself.
//!
//! Linux keeps credentials per thread at the syscall level. Each thread of
//! a dedicated rayon pool sets, with raw syscalls, its supplementary groups
//! (`SYS_setgroups`: glibc's `setgroups` would change every thread of the
//! process), its fsgid and its fsuid. Setting the fsuid from 0 to another
//! uid also drops CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and the other
//! filesystem capabilities from the thread's effective set (the unit tests
//! check it), so root's bypass of file modes is gone on those threads.
//!
//! [`run_as`] fails closed: before any work runs, every thread of the pool
//! reports its credentials and the work is refused unless all are the
//! caller's. The parallel walks inside the closure (`rayon::scope`,
//! `par_iter`) run on the same pool, hence with the same credentials.

use std::cell::Cell;
use std::ffi::{CStr, CString};
use std::io;

use crate::error::{Error, Result};

/// A caller's filesystem credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, sorted, each once (the kernel sorts them too).
    pub groups: Vec<u32>,
}

impl Creds {
    pub fn new(uid: u32, gid: u32, mut groups: Vec<u32>) -> Creds {
        groups.sort_unstable();
        groups.dedup();
        Creds { uid, gid, groups }
    }

    /// The credentials a login of `uid` would have: `gid` (the caller's
    /// group, from the socket's peer credentials) and the groups the group
    /// database lists for the user (`getgrouplist`). A uid without a passwd
    /// entry has `gid` alone.
    pub fn for_user(uid: u32, gid: u32) -> Creds {
        let groups = match user_name(uid) {
            Some(name) => group_list(&name, gid),
            None => vec![gid],
        };
        Creds::new(uid, gid, groups)
    }

    /// Whether work for these credentials must run as them: not for root
    /// (it may read everything) nor for the uid this process runs as.
    pub fn needs_switch(&self) -> bool {
        self.uid != 0 && self.uid != rustix::process::geteuid().as_raw()
    }
}

/// Runs `f` with `creds` as the filesystem credentials of every thread it
/// runs on (rayon work inside `f` included). Without [`Creds::needs_switch`]
/// it simply runs `f`. Refused (nothing of `f` runs) when any thread cannot
/// take the credentials, e.g. in a server that is not root.
pub fn run_as<T: Send>(creds: &Creds, f: impl FnOnce() -> T + Send) -> Result<T> {
    if !creds.needs_switch() {
        return Ok(f());
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .min(8);
    let c = creds.clone();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("wopfs-as-caller-{i}"))
        .start_handler(move |_| {
            let r = apply(&c);
            if let Err(e) = &r {
                tracing::error!(uid = c.uid, error = %e, "cannot take the caller's credentials");
            }
            APPLIED.with(|a| a.set(r.is_ok()));
        })
        .build()
        .map_err(|e| Error::io("starting the caller's threads", io::Error::other(e)))?;
    // Fail closed: every thread of the pool must carry exactly the caller's
    // credentials before any of the work runs.
    let ok = pool
        .broadcast(|_| APPLIED.with(Cell::get) && current().ok().as_ref() == Some(creds))
        .into_iter()
        .all(|ok| ok);
    if !ok {
        return Err(Error::policy(format!(
            "this server cannot act with the host permissions of uid {} (it runs as uid {}; only root can)",
            creds.uid,
            rustix::process::geteuid().as_raw()
        )));
    }
    Ok(pool.install(f))
}

thread_local! {
    /// Set on a pool thread once it has taken the caller's credentials.
    static APPLIED: Cell<bool> = const { Cell::new(false) };
}

#[cfg(any(target_arch = "x86", target_arch = "arm"))]
mod nr {
    pub const SETFSUID: libc::c_long = libc::SYS_setfsuid32;
    pub const SETFSGID: libc::c_long = libc::SYS_setfsgid32;
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups32;
    pub const GETGROUPS: libc::c_long = libc::SYS_getgroups32;
}
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
mod nr {
    pub const SETFSUID: libc::c_long = libc::SYS_setfsuid;
    pub const SETFSGID: libc::c_long = libc::SYS_setfsgid;
    pub const SETGROUPS: libc::c_long = libc::SYS_setgroups;
    pub const GETGROUPS: libc::c_long = libc::SYS_getgroups;
}

/// Gives the calling thread (only) `c` as its filesystem credentials.
fn apply(c: &Creds) -> io::Result<()> {
    // SAFETY: raw syscalls on this thread's credentials; the group list
    // outlives the call and its length is passed with it.
    unsafe {
        if libc::syscall(nr::SETGROUPS, c.groups.len(), c.groups.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        // setfsuid/setfsgid report no error: `current` checks the result.
        libc::syscall(nr::SETFSGID, c.gid);
        libc::syscall(nr::SETFSUID, c.uid);
    }
    match current()? {
        now if now == *c => Ok(()),
        now => Err(io::Error::other(format!(
            "the thread has fsuid {} fsgid {} groups {:?}",
            now.uid, now.gid, now.groups
        ))),
    }
}

/// The calling thread's filesystem credentials.
pub fn current() -> io::Result<Creds> {
    // SAFETY: an invalid id (-1) changes nothing; the call answers the
    // current fsuid/fsgid. getgroups writes at most `n` entries.
    unsafe {
        let uid = libc::syscall(nr::SETFSUID, u32::MAX) as u32;
        let gid = libc::syscall(nr::SETFSGID, u32::MAX) as u32;
        let n = libc::syscall(nr::GETGROUPS, 0, std::ptr::null_mut::<u32>());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0u32; n as usize];
        let got = libc::syscall(nr::GETGROUPS, groups.len(), groups.as_mut_ptr());
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(got as usize);
        Ok(Creds::new(uid, gid, groups))
    }
}

/// The user name of `uid` in the passwd database.
fn user_name(uid: u32) -> Option<CString> {
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: getpwuid_r writes into `pw` and `buf` (of the given
        // length) only; `out` points at `pw` on success.
        let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let r =
            unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut out) };
        if r == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 || out.is_null() || pw.pw_name.is_null() {
            return None;
        }
        // SAFETY: pw_name points into `buf`, NUL-terminated.
        return Some(unsafe { CStr::from_ptr(pw.pw_name) }.to_owned());
    }
}

/// `getgrouplist(name, gid)`: `gid` and every group listing the user.
fn group_list(name: &CStr, gid: u32) -> Vec<u32> {
    let mut n: libc::c_int = 64;
    loop {
        let mut groups = vec![0 as libc::gid_t; n as usize];
        let mut count = n;
        // SAFETY: `groups` holds `count` entries; getgrouplist writes at
        // most that many and sets `count` to the number it needs.
        let r = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        if r >= 0 {
            groups.truncate(count.max(0) as usize);
            return groups;
        }
        if count <= n || count > 65536 {
            return vec![gid];
        }
        n = count;
    }
}

/// The id of group `name` (a name in the group database, or a number).
pub fn group_id(name: &str) -> Option<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Some(n);
    }
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0u8; 1024];
    loop {
        // SAFETY: getgrnam_r writes into `gr` and `buf` (of the given
        // length) only; `out` points at `gr` on success.
        let mut gr: libc::group = unsafe { std::mem::zeroed() };
        let mut out: *mut libc::group = std::ptr::null_mut();
        let r = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                &mut gr,
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut out,
            )
        };
        if r == libc::ERANGE && buf.len() < (1 << 20) {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if r != 0 || out.is_null() {
            return None;
        }
        return Some(gr.gr_gid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::fs;
    use std::os::unix::fs::{chown, PermissionsExt};
    use std::path::Path;

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    fn mode(p: &Path, m: u32) {
        fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    }

    fn errno<T>(r: io::Result<T>) -> Option<i32> {
        r.err().and_then(|e| e.raw_os_error())
    }

    /// A tree with a root-only file, a group-readable file, a root-only
    /// directory and a public file; traversable by everyone.
    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        mode(p, 0o755);
        for (f, m) in [("secret", 0o600), ("group", 0o640), ("public", 0o644)] {
            fs::write(p.join(f), f).unwrap();
            mode(&p.join(f), m);
        }
        chown(p.join("group"), None, Some(4242)).unwrap();
        fs::create_dir(p.join("private")).unwrap();
        fs::write(p.join("private/inside"), "inside").unwrap();
        mode(&p.join("private"), 0o700);
        d
    }

    #[test]
    fn another_uid_reads_only_what_it_may() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tree();
        let p = d.path().to_path_buf();
        let user = Creds::new(1000, 1000, vec![1000]);
        let (secret, group, public, private, listing, all_threads, me) = run_as(&user, || {
            let secret = errno(fs::read(p.join("secret")));
            let group = errno(fs::read(p.join("group")));
            let public = fs::read_to_string(p.join("public")).ok();
            let private = errno(fs::read(p.join("private/inside")));
            let listing = errno(fs::read_dir(p.join("private")));
            // Work stolen by the pool's other threads is checked the same way.
            let all_threads = (0..256)
                .into_par_iter()
                .all(|_| errno(fs::read(p.join("secret"))) == Some(libc::EACCES));
            (
                secret,
                group,
                public,
                private,
                listing,
                all_threads,
                current().unwrap(),
            )
        })
        .unwrap();
        assert_eq!(secret, Some(libc::EACCES));
        assert_eq!(group, Some(libc::EACCES));
        assert_eq!(public.as_deref(), Some("public"));
        assert_eq!(private, Some(libc::EACCES));
        assert_eq!(listing, Some(libc::EACCES));
        assert!(all_threads);
        assert_eq!(me, user);
        // The calling thread kept its own credentials (the syscalls were
        // per thread), and so did every other thread of the process.
        assert_eq!(current().unwrap().uid, 0);
        assert_eq!(fs::read_to_string(p.join("secret")).unwrap(), "secret");
        let other = std::thread::spawn(move || fs::read(p.join("secret")).is_ok());
        assert!(other.join().unwrap());
    }

    #[test]
    fn groups_count_supplementary_and_fsgid() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tree();
        let p = d.path();
        let read = |c: Creds| run_as(&c, || fs::read_to_string(p.join("group")).ok()).unwrap();
        assert_eq!(
            read(Creds::new(1000, 1000, vec![1000, 4242])).as_deref(),
            Some("group")
        );
        assert_eq!(
            read(Creds::new(1000, 4242, vec![1000])).as_deref(),
            Some("group")
        );
        assert_eq!(read(Creds::new(1000, 1000, vec![1000])), None);
    }

    /// The claim the module rests on: fsuid 0 → non-zero drops root's
    /// filesystem capabilities from the thread's effective set, so even a
    /// file or directory the uid owns, with no permission bits, is refused
    /// (only CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH would pass them).
    #[test]
    fn fsuid_drops_the_dac_capabilities() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tree();
        let p = d.path();
        fs::write(p.join("mine"), "mine").unwrap();
        chown(p.join("mine"), Some(1000), Some(1000)).unwrap();
        mode(&p.join("mine"), 0o000);
        fs::create_dir(p.join("mydir")).unwrap();
        chown(p.join("mydir"), Some(1000), Some(1000)).unwrap();
        mode(&p.join("mydir"), 0o000);
        // Root passes them (the capabilities are in effect here).
        assert!(fs::read(p.join("mine")).is_ok());
        assert!(fs::read_dir(p.join("mydir")).is_ok());
        let cap_eff = || -> u64 {
            let s = fs::read_to_string("/proc/thread-self/status").unwrap();
            let l = s.lines().find(|l| l.starts_with("CapEff:")).unwrap();
            u64::from_str_radix(l.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let (file, dir, caps) = run_as(&Creds::new(1000, 1000, vec![1000]), || {
            (
                errno(fs::read(p.join("mine"))),
                errno(fs::read_dir(p.join("mydir"))),
                cap_eff(),
            )
        })
        .unwrap();
        assert_eq!(file, Some(libc::EACCES));
        assert_eq!(dir, Some(libc::EACCES));
        // CAP_DAC_OVERRIDE is bit 1, CAP_DAC_READ_SEARCH bit 2.
        let dac = (1 << 1) | (1 << 2);
        assert_eq!(
            caps & dac,
            0,
            "CapEff {caps:x} still holds DAC capabilities"
        );
        assert_ne!(
            cap_eff() & dac,
            0,
            "the calling thread lost its capabilities"
        );
    }

    /// An ACL entry naming the uid opens a file its mode bits close: the
    /// kernel's own check, ACLs included.
    #[test]
    fn acls_are_honoured() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let d = tree();
        let f = d.path().join("secret");
        // system.posix_acl_access, version 2: user::rw-, user:1000:r--,
        // group::---, mask::r--, other::---.
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 6u16, u32::MAX),
            (0x02, 4, 1000),
            (0x04, 0, u32::MAX),
            (0x10, 4, u32::MAX),
            (0x20, 0, u32::MAX),
        ] {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(id.to_le_bytes());
        }
        let user = Creds::new(1000, 1000, vec![1000]);
        let other = Creds::new(1001, 1001, vec![1001]);
        let read = |c: &Creds| run_as(c, || fs::read(&f).is_ok()).unwrap();
        assert!(!read(&user));
        match rustix::fs::setxattr(
            &f,
            "system.posix_acl_access",
            &acl,
            rustix::fs::XattrFlags::empty(),
        ) {
            Ok(()) => {}
            Err(e) => {
                eprintln!("skipped: no ACLs here ({e})");
                return;
            }
        }
        assert!(read(&user));
        assert!(!read(&other));
    }

    #[test]
    fn users_and_groups_are_looked_up() {
        let root = Creds::for_user(0, 0);
        assert!(root.groups.contains(&0));
        assert!(!root.needs_switch());
        // No passwd entry: the caller's gid alone.
        let nobody = Creds::for_user(3_999_999, 3_999_998);
        assert_eq!(nobody.groups, vec![3_999_998]);
        assert!(nobody.needs_switch() || !is_root());
        assert_eq!(group_id("0"), Some(0));
        assert_eq!(group_id("root"), Some(0));
        assert_eq!(group_id("no-such-group-wopfs"), None);
    }

    #[test]
    fn an_impossible_caller_is_refused_before_any_work() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        // uid -1 is no uid: no thread can take it.
        let ran = std::sync::atomic::AtomicBool::new(false);
        let r = run_as(&Creds::new(u32::MAX, u32::MAX, vec![]), || {
            ran.store(true, std::sync::atomic::Ordering::SeqCst)
        });
        assert!(r.is_err());
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
    }
}
