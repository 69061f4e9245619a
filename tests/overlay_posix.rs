//! POSIX conformance of a writable overlay view, really mounted: every call
//! an editor, a compiler or a package manager makes works on files that came
//! from the host and on files made in the mount, answers the errno Linux
//! answers, lands in the overlay, and never changes the host tree.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{
    symlink, DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use common::*;
use rustix::fs::XattrFlags;

/// Content of every file at the start of a check, whatever its origin.
const INIT: &[u8] = b"hello world\n";

/// Whether the suite runs on the kernel engine (`WOPFS_TEST_ENGINE`). Where
/// the engines legitimately differ (README, "Two engines") a test asserts
/// each engine's own behaviour.
fn kernel() -> bool {
    test_engine() == "kernel"
}

/// The errno of renaming a host directory that the fuse engine answers
/// with `fuse`: the kernel engine answers EXDEV first (overlayfs keeps
/// redirects off, so a directory of the lower cannot move; `mv` copies).
fn host_dir_rename_errno(fuse: i32) -> i32 {
    if kernel() {
        libc::EXDEV
    } else {
        fuse
    }
}

/// A mounted overlay view of a host tree, and the host's digest before it.
/// Field order matters: the mount is dropped (unmounted) before the temp dir.
struct Fx {
    m: Mounted,
    env: Env,
    before: String,
    /// The grant mounted.
    g: String,
}

impl Fx {
    /// Builds the host tree with `setup`, grants it `read_write_overlay`
    /// with `extra` grant args and mounts it.
    fn new(setup: impl FnOnce(&Env), extra: &[&str]) -> Fx {
        Fx::with_mount_args(setup, extra, &[])
    }

    /// As `new`, with extra `wopfs mount` args.
    fn with_mount_args(setup: impl FnOnce(&Env), extra: &[&str], mount: &[&str]) -> Fx {
        let env = Env::new();
        setup(&env);
        let mut args = vec!["--mode", "read_write_overlay"];
        args.extend_from_slice(extra);
        let g = env.grant(&args);
        let before = tree_digest(&env.host);
        let m = env.mount(&g, &env.mountpoint("mnt"), mount);
        Fx { m, env, before, g }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.m.path(rel)
    }

    /// A new file made in the mount holding `INIT`.
    fn make(&self, rel: &str) -> PathBuf {
        let p = self.p(rel);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("create {rel}: {e}"));
        f.write_all(INIT).unwrap();
        p
    }

    /// The session's patch set as `wopfs export` prints it (contents
    /// inline): (path, operation, content) by path.
    fn exported(&self) -> Vec<(String, String, Vec<u8>)> {
        let text = self.env.ok(&["export", &self.g]);
        let set: serde_json::Value = serde_json::from_str(&text).expect("export prints JSON");
        let b64 = base64::engine::general_purpose::STANDARD;
        set["patches"]
            .as_array()
            .expect("patches")
            .iter()
            .map(|p| {
                let content = p["content"]
                    .as_str()
                    .map(|c| b64.decode(c).expect("base64 content"))
                    .unwrap_or_default();
                (
                    p["path"].as_str().unwrap().to_string(),
                    p["operation"].as_str().unwrap().to_string(),
                    content,
                )
            })
            .collect()
    }

    /// Moves the host directory `from` to `to` as `mv -T` does. On the
    /// fuse engine rename(2) moves it. On the kernel engine rename(2)
    /// answers EXDEV and moves nothing; `mv` then copies what the view
    /// shows and removes the original, which this does with `mv` itself.
    fn move_host_dir(&self, from: &str, to: &str) {
        let r = fs::rename(self.p(from), self.p(to));
        if !kernel() {
            r.unwrap_or_else(|e| panic!("rename the host dir {from} to {to}: {e}"));
            return;
        }
        assert_eq!(
            errno(r),
            libc::EXDEV,
            "rename the host dir {from} to {to} on the kernel engine"
        );
        assert!(
            fs::symlink_metadata(self.p(from)).unwrap().is_dir(),
            "EXDEV left {from}"
        );
        let out = Command::new("mv")
            .arg("-T")
            .arg(self.p(from))
            .arg(self.p(to))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mv -T {from} {to} after EXDEV: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The host tree is unchanged while mounted and after unmounting.
    fn host_unchanged(self) {
        let Fx { m, env, before, .. } = self;
        assert_eq!(
            tree_digest(&env.host),
            before,
            "the host tree changed while mounted"
        );
        drop(m);
        assert_eq!(
            tree_digest(&env.host),
            before,
            "the host tree changed after unmounting"
        );
    }
}

/// What `wopfs diff --json` shows of session `g`: (path, operation).
fn diff_ops(env: &Env, g: &str) -> Vec<(String, String)> {
    let diff: serde_json::Value =
        serde_json::from_str(&env.ok(&["diff", "--json", g])).expect("diff --json prints JSON");
    diff.as_array()
        .expect("an array")
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The result of a libc call that answers -1 and sets errno on failure.
fn cvt(r: libc::c_int) -> io::Result<()> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn truncate(p: &Path, len: u64) -> io::Result<()> {
    cvt(unsafe { libc::truncate(cstr(p).as_ptr(), len as libc::off_t) })
}

fn fallocate(f: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    cvt(unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> io::Result<()> {
    let (a, b) = (cstr(from), cstr(to));
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    cvt(r as libc::c_int)
}

fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64)) -> io::Result<()> {
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, cstr(p).as_ptr(), ts.as_ptr(), 0) })
}

/// The errno of a failed rustix call.
fn xerrno<T: std::fmt::Debug>(r: rustix::io::Result<T>) -> i32 {
    r.expect_err("expected an error").raw_os_error()
}

fn getx(p: &Path, name: &str) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(p, name, &mut buf[..])?;
    buf.truncate(n);
    Ok(buf)
}

fn listx(p: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::listxattr(p, &mut buf[..]).expect("listxattr");
    let mut names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect();
    names.sort();
    names
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("readdir {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn perm(p: &Path) -> u32 {
    fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

/// The files a check runs on: one from the host, one made in the mount,
/// both holding `INIT`, side by side in `dir` (a host directory).
fn both(fx: &Fx, dir: &str) -> [(&'static str, PathBuf); 2] {
    let host = fx.p(&format!("{dir}/host.txt"));
    assert_eq!(read(&host), INIT, "host file visible before the check");
    let made = fx.make(&format!("{dir}/made.txt"));
    [("host-origin", host), ("overlay-origin", made)]
}

fn host_files(dir: &'static str) -> impl FnOnce(&Env) {
    move |env: &Env| {
        fs::create_dir_all(env.host.join(dir)).unwrap();
        fs::write(env.host.join(dir).join("host.txt"), INIT).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Data: create, open flags, write, pwrite, truncate, fallocate, fsync.

#[test]
fn data_calls_on_host_and_overlay_files() {
    let fx = Fx::new(host_files("data"), &[]);

    // create(2): a new name in a host directory and in a made directory.
    let new = fx.p("data/created.txt");
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&new)
        .expect("create (O_CREAT|O_EXCL) of a new name");
    let md = f.metadata().unwrap();
    assert!(md.is_file(), "create: a regular file");
    assert_eq!(md.len(), 0, "create: empty");
    assert_eq!(md.mode() & 0o7777, 0o640, "create: mode as asked");
    assert_eq!(md.uid(), 0, "create: owned by the caller");
    drop(f);
    assert!(
        names(&fx.p("data")).contains(&"created.txt".to_string()),
        "create: listed"
    );
    fs::create_dir(fx.p("made_dir")).expect("mkdir");
    fs::write(fx.p("made_dir/f.txt"), b"in a made dir").expect("create in a made dir");
    assert_eq!(read(&fx.p("made_dir/f.txt")), b"in a made dir");

    for (origin, p) in both(&fx, "data") {
        let what = |call: &str| format!("{call} on a {origin} file");

        // O_CREAT|O_EXCL on an existing name.
        assert_eq!(
            errno(OpenOptions::new().write(true).create_new(true).open(&p)),
            libc::EEXIST,
            "{}",
            what("open(O_CREAT|O_EXCL)")
        );
        // O_CREAT without O_EXCL opens it and keeps the content.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", what("open(O_CREAT)")));
        assert_eq!(read(&p), INIT, "{}", what("open(O_CREAT) kept content"));

        // O_APPEND writes at the end, whatever the offset.
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"more\n").unwrap();
        f.write_all(b"again\n").unwrap();
        drop(f);
        assert_eq!(
            read(&p),
            [INIT, b"more\n", b"again\n"].concat(),
            "{}",
            what("O_APPEND write")
        );

        // O_TRUNC empties it.
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        assert_eq!(f.metadata().unwrap().len(), 0, "{}", what("O_TRUNC"));
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            0,
            "{}",
            what("O_TRUNC stat")
        );

        // write, then pwrite inside and past the end.
        f.write_all(b"abcdef").unwrap();
        f.write_at(b"XY", 2).unwrap();
        assert_eq!(read(&p), b"abXYef", "{}", what("pwrite inside"));
        f.write_at(b"!", 9).unwrap();
        assert_eq!(read(&p), b"abXYef\0\0\0!", "{}", what("pwrite past EOF"));
        let mut buf = [0u8; 4];
        f.read_exact_at(&mut buf, 1).unwrap();
        assert_eq!(&buf, b"bXYe", "{}", what("pread on the writable fd"));

        // ftruncate grows with zeros and shrinks.
        f.set_len(16).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            16,
            "{}",
            what("ftruncate grow")
        );
        assert_eq!(
            read(&p),
            b"abXYef\0\0\0!\0\0\0\0\0\0",
            "{}",
            what("ftruncate grow reads zeros")
        );
        f.set_len(4).unwrap();
        assert_eq!(read(&p), b"abXY", "{}", what("ftruncate shrink"));

        // truncate(2) by path, grow and shrink.
        truncate(&p, 12).unwrap_or_else(|e| panic!("{}: {e}", what("truncate grow")));
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            12,
            "{}",
            what("truncate grow")
        );
        assert_eq!(
            read(&p),
            b"abXY\0\0\0\0\0\0\0\0",
            "{}",
            what("truncate grow")
        );
        truncate(&p, 2).unwrap_or_else(|e| panic!("{}: {e}", what("truncate shrink")));
        assert_eq!(read(&p), b"ab", "{}", what("truncate shrink"));

        // fallocate mode 0 grows the file; KEEP_SIZE does not.
        fallocate(&f, 0, 0, 8192).unwrap_or_else(|e| panic!("{}: {e}", what("fallocate")));
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            8192,
            "{}",
            what("fallocate size")
        );
        let data = read(&p);
        assert_eq!(&data[..2], b"ab", "{}", what("fallocate keeps data"));
        assert!(
            data[2..].iter().all(|b| *b == 0),
            "{}",
            what("fallocate reads zeros")
        );
        fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 8192, 1 << 20)
            .unwrap_or_else(|e| panic!("{}: {e}", what("fallocate KEEP_SIZE")));
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            8192,
            "{}",
            what("fallocate KEEP_SIZE keeps the size")
        );
        f.write_at(b"end", 8189).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().len(),
            8192,
            "{}",
            what("write at the end")
        );

        // fsync and fdatasync.
        f.sync_all()
            .unwrap_or_else(|e| panic!("{}: {e}", what("fsync")));
        f.sync_data()
            .unwrap_or_else(|e| panic!("{}: {e}", what("fdatasync")));
        drop(f);
        let data = read(&p);
        assert_eq!(data.len(), 8192, "{}", what("read back after close"));
        assert_eq!(&data[..2], b"ab");
        assert_eq!(&data[8189..], b"end");
    }
    // fsync of a directory.
    File::open(fx.p("data"))
        .unwrap()
        .sync_all()
        .expect("fsync on a directory");
    // The host file was never touched.
    assert_eq!(read(&fx.env.host.join("data/host.txt")), INIT);
    fx.host_unchanged();
}

#[test]
fn new_entries_get_the_callers_mode_under_umask_0() {
    let fx = Fx::new(host_files("data"), &[]);
    // A child with umask 0: the kernel passes the mode unmasked, and the
    // entry must have exactly that mode (the daemon's umask must not apply).
    let dir = fx.p("data");
    let st = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && : > file && mkdir dir && mkdir -m 0777 dir2")
        .current_dir(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(
        perm(&dir.join("file")),
        0o666,
        "create mode 0666 under umask 0"
    );
    assert_eq!(
        perm(&dir.join("dir")),
        0o777,
        "mkdir mode 0777 under umask 0"
    );
    assert_eq!(
        perm(&dir.join("dir2")),
        0o777,
        "mkdir -m 0777 under umask 0"
    );
    fx.host_unchanged();
}

#[test]
fn sparse_writes_far_beyond_eof() {
    const FAR: u64 = 5 << 30;
    let fx = Fx::new(host_files("data"), &[]);
    // The second file only fits in the 8 GiB quota if shrinking the first
    // gave its bytes back.
    for (origin, p) in both(&fx, "data") {
        let what = |call: &str| format!("{call} on a {origin} file");
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.write_at(b"tail", FAR)
            .unwrap_or_else(|e| panic!("{}: {e}", what("pwrite at 5 GiB")));
        let md = fs::metadata(&p).unwrap();
        assert_eq!(md.len(), FAR + 4, "{}", what("size after pwrite at 5 GiB"));
        assert!(
            md.blocks() * 512 < 64 << 20,
            "{}: {} blocks allocated",
            what("sparse pwrite stays sparse"),
            md.blocks()
        );
        let mut hole = vec![0xffu8; 1 << 16];
        f.read_exact_at(&mut hole, FAR - (1 << 16)).unwrap();
        assert!(
            hole.iter().all(|b| *b == 0),
            "{}",
            what("the hole reads zeros")
        );
        f.read_exact_at(&mut hole, 1 << 30).unwrap();
        assert!(
            hole.iter().all(|b| *b == 0),
            "{}",
            what("the hole reads zeros")
        );
        let mut tail = [0u8; 4];
        f.read_exact_at(&mut tail, FAR).unwrap();
        assert_eq!(&tail, b"tail", "{}", what("read at 5 GiB"));
        let mut head = vec![0u8; INIT.len()];
        f.read_exact_at(&mut head, 0).unwrap();
        assert_eq!(head, INIT, "{}", what("the start is intact"));
        // A fresh read-only open sees the same.
        let r = File::open(&p).unwrap();
        assert_eq!(r.metadata().unwrap().len(), FAR + 4);
        r.read_exact_at(&mut tail, FAR).unwrap();
        assert_eq!(&tail, b"tail", "{}", what("read at 5 GiB, fresh open"));
        drop(r);
        f.set_len(INIT.len() as u64)
            .unwrap_or_else(|e| panic!("{}: {e}", what("ftruncate back")));
        drop(f);
        assert_eq!(read(&p), INIT, "{}", what("after shrinking back"));
    }
    fx.host_unchanged();
}

#[test]
fn shared_writable_mmap() {
    let fx = Fx::new(host_files("data"), &[]);
    const LEN: usize = 8192;
    for (origin, p) in both(&fx, "data") {
        let what = |call: &str| format!("{call} on a {origin} file");
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.set_len(LEN as u64).unwrap();
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(
            ptr,
            libc::MAP_FAILED,
            "{}: {}",
            what("mmap MAP_SHARED"),
            io::Error::last_os_error()
        );
        let map = unsafe { std::slice::from_raw_parts_mut(ptr as *mut u8, LEN) };
        assert_eq!(&map[..INIT.len()], INIT, "{}", what("read through the map"));
        map[100..104].copy_from_slice(b"MMAP");
        map[LEN - 4..].copy_from_slice(b"last");
        assert_eq!(
            unsafe { libc::msync(ptr, LEN, libc::MS_SYNC) },
            0,
            "{}: {}",
            what("msync"),
            io::Error::last_os_error()
        );
        assert_eq!(unsafe { libc::munmap(ptr, LEN) }, 0, "{}", what("munmap"));
        drop(f);
        let mut data = Vec::new();
        File::open(&p).unwrap().read_to_end(&mut data).unwrap();
        assert_eq!(data.len(), LEN, "{}", what("size after mmap"));
        assert_eq!(&data[..INIT.len()], INIT, "{}", what("mmap kept the data"));
        assert_eq!(&data[100..104], b"MMAP", "{}", what("mmap write read back"));
        assert_eq!(
            &data[LEN - 4..],
            b"last",
            "{}",
            what("mmap write read back")
        );
    }
    fx.host_unchanged();
}

/// An unlinked file stays readable and writable through a descriptor
/// opened before the unlink.
#[test]
fn unlinked_open_file_keeps_its_data() {
    let fx = Fx::new(host_files("o"), &[]);
    for (origin, p) in both(&fx, "o") {
        let what = |call: &str| format!("{call} on an unlinked {origin} file");
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        fs::remove_file(&p).unwrap();
        assert_eq!(errno(fs::metadata(&p)), libc::ENOENT, "{}", what("stat"));
        let mut buf = vec![0u8; INIT.len()];
        f.read_exact_at(&mut buf, 0)
            .unwrap_or_else(|e| panic!("{}: {e}", what("read")));
        assert_eq!(buf, INIT, "{}", what("read"));
        f.write_at(b"HELLO", 0)
            .unwrap_or_else(|e| panic!("{}: {e}", what("write")));
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf[..5], b"HELLO", "{}", what("read back"));
        drop(f);
        assert_eq!(
            errno(fs::metadata(&p)),
            libc::ENOENT,
            "{}",
            what("stat after close")
        );
        assert!(
            !names(&fx.p("o")).iter().any(|n| p.ends_with(n)),
            "{}",
            what("listing")
        );
    }
    fx.host_unchanged();
}

/// fstat, ftruncate and fchmod work on a descriptor of an unlinked file
/// (temp-file patterns: open, unlink, then use the descriptor).
#[test]
fn unlinked_open_file_keeps_its_attributes() {
    let fx = Fx::new(host_files("o"), &[]);
    for (origin, p) in both(&fx, "o") {
        let what = |call: &str| format!("{call} on an unlinked {origin} file");
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        fs::remove_file(&p).unwrap();
        let md = f
            .metadata()
            .unwrap_or_else(|e| panic!("{}: {e}", what("fstat")));
        assert_eq!(md.len(), INIT.len() as u64, "{}", what("fstat size"));
        f.set_len(3)
            .unwrap_or_else(|e| panic!("{}: {e}", what("ftruncate")));
        assert_eq!(
            f.metadata().unwrap().len(),
            3,
            "{}",
            what("fstat after ftruncate")
        );
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{}: {e}", what("fchmod")));
        assert_eq!(
            f.metadata().unwrap().mode() & 0o7777,
            0o600,
            "{}",
            what("fchmod")
        );
        drop(f);
    }
    fx.host_unchanged();
}

/// Opening a file for writing while a reader has it open works, and the
/// reader then sees what was written, as on any filesystem. (A host file's
/// first write copies it up into the overlay.)
#[test]
fn reader_opened_before_a_write_sees_it() {
    let fx = Fx::new(host_files("o"), &[]);
    for (origin, p) in both(&fx, "o") {
        let what = |call: &str| format!("{call} on a {origin} file");
        let r = File::open(&p).unwrap();
        let mut buf = vec![0u8; INIT.len()];
        r.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, INIT, "{}", what("read before the write"));
        let mut w = OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", what("open for write while a reader is open")));
        w.write_all(b"CHANGED").unwrap();
        drop(w);
        assert_eq!(
            &read(&p)[..7],
            b"CHANGED",
            "{}",
            what("a fresh open sees the write")
        );
        r.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(
            &buf[..7],
            b"CHANGED",
            "{}",
            what("the early reader sees the write")
        );
        truncate(&p, 3).unwrap();
        assert_eq!(
            r.metadata().unwrap().len(),
            3,
            "{}",
            what("fstat of the early reader")
        );
        let mut all = Vec::new();
        (&r).read_to_end(&mut all).unwrap();
        assert_eq!(all, b"CHA", "{}", what("the early reader after truncate"));
        drop(r);
    }
    fx.host_unchanged();
}

// ---------------------------------------------------------------------------
// Namespace: unlink, rmdir, mkdir.

#[test]
fn unlink_rmdir_mkdir() {
    let fx = Fx::new(
        |env| {
            env.write("d/a.txt", "host a\n");
            env.write("d/b.txt", "host b\n");
            env.write("d/sub/c.txt", "host c\n");
            env.write("solo/only.txt", "only\n");
            env.write("full/x.txt", "x\n");
        },
        &[],
    );

    // unlink of a host file: gone from stat, open and the listing.
    let a = fx.p("d/a.txt");
    fs::remove_file(&a).expect("unlink of a host file");
    assert_eq!(
        errno(fs::symlink_metadata(&a)),
        libc::ENOENT,
        "lstat after unlink"
    );
    assert_eq!(errno(File::open(&a)), libc::ENOENT, "open after unlink");
    assert_eq!(errno(fs::remove_file(&a)), libc::ENOENT, "unlink twice");
    assert_eq!(names(&fx.p("d")), ["b.txt", "sub"], "listing after unlink");
    // The same name made again holds the new content.
    fs::write(&a, "new a\n").expect("recreate an unlinked host name");
    assert_eq!(read(&a), b"new a\n", "recreated content");
    assert_eq!(fs::metadata(&a).unwrap().len(), 6, "recreated size");
    assert_eq!(
        names(&fx.p("d")),
        ["a.txt", "b.txt", "sub"],
        "listing after recreate"
    );

    // unlink of a made file.
    let n = fx.make("d/n.txt");
    fs::remove_file(&n).expect("unlink of a made file");
    assert_eq!(
        errno(fs::symlink_metadata(&n)),
        libc::ENOENT,
        "lstat after unlink"
    );
    assert!(
        !names(&fx.p("d")).contains(&"n.txt".into()),
        "listing after unlink"
    );
    fs::write(&n, "second\n").unwrap();
    assert_eq!(read(&n), b"second\n", "recreated made name");

    // rmdir of an empty host dir (emptied in the mount) and an empty made dir.
    fs::remove_file(fx.p("solo/only.txt")).unwrap();
    assert!(
        names(&fx.p("solo")).is_empty(),
        "emptied host dir lists empty"
    );
    fs::remove_dir(fx.p("solo")).expect("rmdir of an empty host dir");
    assert_eq!(
        errno(fs::metadata(fx.p("solo"))),
        libc::ENOENT,
        "stat after rmdir"
    );
    assert!(
        !names(&fx.p("")).contains(&"solo".into()),
        "listing after rmdir"
    );
    fs::create_dir(fx.p("solo")).expect("mkdir over a removed host dir");
    assert!(names(&fx.p("solo")).is_empty(), "the new dir is empty");
    fs::create_dir(fx.p("od")).expect("mkdir");
    fs::remove_dir(fx.p("od")).expect("rmdir of an empty made dir");
    assert_eq!(
        errno(fs::metadata(fx.p("od"))),
        libc::ENOENT,
        "stat after rmdir"
    );

    // rmdir of non-empty dirs.
    assert_eq!(
        errno(fs::remove_dir(fx.p("full"))),
        libc::ENOTEMPTY,
        "rmdir host dir"
    );
    fs::create_dir(fx.p("od2")).unwrap();
    fx.make("od2/f.txt");
    assert_eq!(
        errno(fs::remove_dir(fx.p("od2"))),
        libc::ENOTEMPTY,
        "rmdir made dir"
    );
    fs::remove_file(fx.p("full/x.txt")).unwrap();
    fx.make("full/new.txt");
    assert_eq!(
        errno(fs::remove_dir(fx.p("full"))),
        libc::ENOTEMPTY,
        "rmdir of a host dir holding a made file"
    );

    // rmdir of a file, unlink of a dir.
    assert_eq!(
        errno(fs::remove_dir(fx.p("d/b.txt"))),
        libc::ENOTDIR,
        "rmdir host file"
    );
    assert_eq!(
        errno(fs::remove_dir(fx.p("od2/f.txt"))),
        libc::ENOTDIR,
        "rmdir made file"
    );
    assert_eq!(
        errno(fs::remove_file(fx.p("d/sub"))),
        libc::EISDIR,
        "unlink host dir"
    );
    assert_eq!(
        errno(fs::remove_file(fx.p("od2"))),
        libc::EISDIR,
        "unlink made dir"
    );
    assert_eq!(
        errno(fs::remove_dir(fx.p("nope"))),
        libc::ENOENT,
        "rmdir missing"
    );

    // mkdir of existing names.
    for rel in ["d", "d/sub", "od2", "d/b.txt", "od2/f.txt", "d/a.txt"] {
        assert_eq!(
            errno(fs::create_dir(fx.p(rel))),
            libc::EEXIST,
            "mkdir existing {rel}"
        );
    }

    // mkdir with a mode, and mkdir -p, in the root, a host dir and a made dir.
    fs::DirBuilder::new()
        .mode(0o750)
        .create(fx.p("d/moded"))
        .expect("mkdir with a mode");
    assert_eq!(perm(&fx.p("d/moded")), 0o750, "mkdir mode");
    for base in ["", "d/sub", "od2"] {
        let deep = fx.p(base).join("p/q/r/s");
        fs::create_dir_all(&deep).expect("mkdir -p");
        fs::write(deep.join("leaf.txt"), "leaf").unwrap();
        assert_eq!(
            list_tree(&fx.p(base).join("p")),
            ["q", "q/r", "q/r/s", "q/r/s/leaf.txt"],
            "mkdir -p under {base:?}"
        );
        assert_eq!(read(&deep.join("leaf.txt")), b"leaf");
    }
    // The untouched host files still read from the host.
    assert_eq!(read(&fx.p("d/b.txt")), b"host b\n");
    assert_eq!(read(&fx.p("d/sub/c.txt")), b"host c\n");
    fx.host_unchanged();
}

// ---------------------------------------------------------------------------
// rename(2) and renameat2(2).

#[test]
fn rename_files() {
    let fx = Fx::new(
        |env| {
            for i in 1..=5 {
                env.write(&format!("r/h{i}.txt"), &format!("host {i}\n"));
            }
            env.write("s/keep.txt", "keep\n");
        },
        &[],
    );
    let made = |rel: &str, content: &str| {
        let p = fx.p(rel);
        fs::write(&p, content).unwrap();
        p
    };
    let gone = |rel: &str, call: &str| {
        assert_eq!(
            errno(fs::symlink_metadata(fx.p(rel))),
            libc::ENOENT,
            "{call}: old name {rel} still there"
        );
    };

    // Within a directory.
    fs::rename(fx.p("r/h1.txt"), fx.p("r/h1-renamed.txt")).expect("rename host file");
    assert_eq!(
        read(&fx.p("r/h1-renamed.txt")),
        b"host 1\n",
        "rename host file"
    );
    gone("r/h1.txt", "rename host file");
    made("r/o1.txt", "made 1\n");
    fs::rename(fx.p("r/o1.txt"), fx.p("r/o1-renamed.txt")).expect("rename made file");
    assert_eq!(
        read(&fx.p("r/o1-renamed.txt")),
        b"made 1\n",
        "rename made file"
    );
    gone("r/o1.txt", "rename made file");

    // Across directories.
    fs::rename(fx.p("r/h2.txt"), fx.p("s/h2.txt")).expect("rename host file across dirs");
    assert_eq!(read(&fx.p("s/h2.txt")), b"host 2\n", "rename across dirs");
    gone("r/h2.txt", "rename across dirs");
    made("r/o2.txt", "made 2\n");
    fs::rename(fx.p("r/o2.txt"), fx.p("s/o2.txt")).expect("rename made file across dirs");
    assert_eq!(
        read(&fx.p("s/o2.txt")),
        b"made 2\n",
        "rename made across dirs"
    );
    gone("r/o2.txt", "rename made across dirs");
    assert_eq!(
        names(&fx.p("s")),
        ["h2.txt", "keep.txt", "o2.txt"],
        "listing of s"
    );
    assert_eq!(
        names(&fx.p("r")),
        [
            "h1-renamed.txt",
            "h3.txt",
            "h4.txt",
            "h5.txt",
            "o1-renamed.txt"
        ],
        "listing of r"
    );

    // Over an existing file: host over host, made over host, host over made.
    fs::rename(fx.p("r/h3.txt"), fx.p("r/h4.txt")).expect("rename host over host");
    assert_eq!(
        read(&fx.p("r/h4.txt")),
        b"host 3\n",
        "host over host replaced"
    );
    gone("r/h3.txt", "host over host");
    fs::rename(fx.p("r/o1-renamed.txt"), fx.p("s/keep.txt")).expect("rename made over host");
    assert_eq!(
        read(&fx.p("s/keep.txt")),
        b"made 1\n",
        "made over host replaced"
    );
    fs::rename(fx.p("r/h5.txt"), fx.p("s/o2.txt")).expect("rename host over made");
    assert_eq!(
        read(&fx.p("s/o2.txt")),
        b"host 5\n",
        "host over made replaced"
    );
    made("r/o3.txt", "made 3\n");
    fs::rename(fx.p("r/o3.txt"), fx.p("s/h2.txt")).expect("rename made over made-moved");
    assert_eq!(read(&fx.p("s/h2.txt")), b"made 3\n", "made over moved host");
    assert_eq!(
        names(&fx.p("r")),
        ["h1-renamed.txt", "h4.txt"],
        "listing of r"
    );
    assert_eq!(
        names(&fx.p("s")),
        ["h2.txt", "keep.txt", "o2.txt"],
        "listing of s"
    );

    // Onto itself: nothing changes.
    fs::rename(fx.p("r/h4.txt"), fx.p("r/h4.txt")).expect("rename onto itself");
    assert_eq!(read(&fx.p("r/h4.txt")), b"host 3\n", "rename onto itself");

    // A moved host file can be written, and moved back.
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.p("r/h4.txt"))
        .unwrap();
    f.write_all(b"appended\n").unwrap();
    drop(f);
    fs::rename(fx.p("r/h4.txt"), fx.p("r/h3.txt")).expect("rename back");
    assert_eq!(
        read(&fx.p("r/h3.txt")),
        b"host 3\nappended\n",
        "moved and written"
    );
    fs::rename(fx.p("r/h1-renamed.txt"), fx.p("r/h1.txt")).expect("rename back");
    assert_eq!(read(&fx.p("r/h1.txt")), b"host 1\n", "moved back unchanged");
    fx.host_unchanged();
}

#[test]
fn rename_directories() {
    let fx = Fx::new(
        |env| {
            env.write("tree/a.txt", "a\n");
            env.write("tree/sub/b.txt", "b\n");
            env.write("tree/sub/deeper/c.txt", "c\n");
            env.link("tree/link", "a.txt");
            env.link("tree/sub/up", "../a.txt");
            env.write("dest/x.txt", "x\n");
        },
        &[],
    );
    const TREE: &[&str] = &[
        "a.txt",
        "link",
        "sub",
        "sub/b.txt",
        "sub/deeper",
        "sub/deeper/c.txt",
        "sub/up",
    ];
    let check_tree = |rel: &str, call: &str| {
        let at = fx.p(rel);
        assert_eq!(list_tree(&at), TREE, "{call}: listing at {rel}");
        assert_eq!(read(&at.join("a.txt")), b"a\n", "{call}: {rel}/a.txt");
        assert_eq!(
            read(&at.join("sub/b.txt")),
            b"b\n",
            "{call}: {rel}/sub/b.txt"
        );
        assert_eq!(read(&at.join("sub/deeper/c.txt")), b"c\n", "{call}: c.txt");
        assert_eq!(
            fs::read_link(at.join("link")).unwrap(),
            Path::new("a.txt"),
            "{call}"
        );
        assert_eq!(read(&at.join("link")), b"a\n", "{call}: through {rel}/link");
        assert_eq!(
            read(&at.join("sub/up")),
            b"a\n",
            "{call}: through {rel}/sub/up"
        );
    };

    // A directory of unmodified host files, within the root (the kernel
    // engine answers EXDEV and `mv` copies: from here on the tree is the
    // copy, a directory of the upper, which moves on either engine).
    fx.move_host_dir("tree", "moved");
    check_tree("moved", "rename a host dir");
    assert_eq!(
        errno(fs::metadata(fx.p("tree"))),
        libc::ENOENT,
        "old dir gone"
    );
    assert_eq!(
        errno(fs::metadata(fx.p("tree/a.txt"))),
        libc::ENOENT,
        "old file gone"
    );
    assert_eq!(
        errno(fs::read_dir(fx.p("tree"))),
        libc::ENOENT,
        "old dir gone"
    );
    assert_eq!(
        names(&fx.p("")),
        ["dest", "moved"],
        "root listing after rename"
    );

    // Across directories.
    fs::rename(fx.p("moved"), fx.p("dest/tree")).expect("rename a dir across dirs");
    check_tree("dest/tree", "rename a dir across dirs");
    assert_eq!(
        errno(fs::metadata(fx.p("moved"))),
        libc::ENOENT,
        "old dir gone"
    );
    assert_eq!(names(&fx.p("dest")), ["tree", "x.txt"]);

    // A moved host file can be changed at its new place; a new name too.
    let mut f = OpenOptions::new()
        .append(true)
        .open(fx.p("dest/tree/sub/b.txt"))
        .unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    assert_eq!(read(&fx.p("dest/tree/sub/b.txt")), b"b\nmore\n");
    fs::write(fx.p("dest/tree/sub/new.txt"), "new\n").unwrap();
    fs::rename(fx.p("dest/tree"), fx.p("tree")).expect("rename back");
    assert_eq!(
        read(&fx.p("tree/sub/b.txt")),
        b"b\nmore\n",
        "changed file moved back"
    );
    assert_eq!(
        read(&fx.p("tree/sub/new.txt")),
        b"new\n",
        "new file moved back"
    );
    assert_eq!(read(&fx.p("tree/sub/deeper/c.txt")), b"c\n");

    // A made directory tree, across directories.
    fs::create_dir_all(fx.p("od/inner")).unwrap();
    fs::write(fx.p("od/f.txt"), "f\n").unwrap();
    fs::write(fx.p("od/inner/g.txt"), "g\n").unwrap();
    fs::rename(fx.p("od"), fx.p("dest/od")).expect("rename a made dir across dirs");
    assert_eq!(
        list_tree(&fx.p("dest/od")),
        ["f.txt", "inner", "inner/g.txt"]
    );
    assert_eq!(read(&fx.p("dest/od/inner/g.txt")), b"g\n");
    assert_eq!(
        errno(fs::metadata(fx.p("od"))),
        libc::ENOENT,
        "old made dir gone"
    );

    // A directory over an empty directory replaces it.
    fs::create_dir(fx.p("empty")).unwrap();
    fs::rename(fx.p("dest/od"), fx.p("empty")).expect("rename a dir over an empty dir");
    assert_eq!(list_tree(&fx.p("empty")), ["f.txt", "inner", "inner/g.txt"]);
    fs::remove_file(fx.p("dest/x.txt")).unwrap();
    fs::remove_file(fx.p("tree/sub/new.txt")).unwrap();
    truncate(&fx.p("tree/sub/b.txt"), 2).unwrap();
    // The kernel engine's merged host directory `dest` can be replaced,
    // though not moved.
    fs::rename(fx.p("tree"), fx.p("dest")).expect("rename a dir over an emptied host dir");
    check_tree("dest", "rename over an emptied host dir");
    assert_eq!(
        names(&fx.p("")),
        ["dest", "empty"],
        "root listing at the end"
    );
    fx.host_unchanged();
}

#[test]
fn rename_flags_and_errors() {
    let fx = Fx::new(
        |env| {
            env.write("x/f1.txt", "f1\n");
            env.write("x/f2.txt", "f2\n");
            env.write("x/f3.txt", "f3\n");
            env.write("x/d/in.txt", "in\n");
            env.write("y/g.txt", "g\n");
            env.write("ne/z.txt", "z\n");
        },
        &[],
    );
    let p = |rel: &str| fx.p(rel);
    fs::write(p("x/o1.txt"), "o1\n").unwrap();
    fs::write(p("x/o2.txt"), "o2\n").unwrap();
    fs::create_dir_all(p("od/sub")).unwrap();
    fs::write(p("od/sub/k.txt"), "k\n").unwrap();

    // RENAME_NOREPLACE onto an existing name.
    for (from, to) in [
        ("x/f1.txt", "x/f2.txt"),
        ("x/o1.txt", "x/f2.txt"),
        ("x/f1.txt", "x/o2.txt"),
        ("x/o1.txt", "x/o2.txt"),
        ("od", "y"),
    ] {
        assert_eq!(
            errno(renameat2(&p(from), &p(to), libc::RENAME_NOREPLACE)),
            libc::EEXIST,
            "RENAME_NOREPLACE {from} onto {to}"
        );
    }
    assert_eq!(
        read(&p("x/f1.txt")),
        b"f1\n",
        "RENAME_NOREPLACE left the source"
    );
    assert_eq!(
        read(&p("x/f2.txt")),
        b"f2\n",
        "RENAME_NOREPLACE left the target"
    );
    renameat2(&p("x/f3.txt"), &p("x/f3b.txt"), libc::RENAME_NOREPLACE)
        .expect("RENAME_NOREPLACE onto a free name");
    assert_eq!(read(&p("x/f3b.txt")), b"f3\n", "RENAME_NOREPLACE moved");
    assert_eq!(
        errno(fs::metadata(p("x/f3.txt"))),
        libc::ENOENT,
        "RENAME_NOREPLACE source gone"
    );

    // RENAME_EXCHANGE of two files: host/host, host/made, made/made.
    for (a, b) in [
        ("x/f1.txt", "x/f2.txt"),
        ("x/f1.txt", "x/o1.txt"),
        ("x/o1.txt", "x/o2.txt"),
    ] {
        let (ca, cb) = (read(&p(a)), read(&p(b)));
        renameat2(&p(a), &p(b), libc::RENAME_EXCHANGE)
            .unwrap_or_else(|e| panic!("RENAME_EXCHANGE {a} {b}: {e}"));
        assert_eq!(read(&p(a)), cb, "RENAME_EXCHANGE {a} {b}: {a}");
        assert_eq!(read(&p(b)), ca, "RENAME_EXCHANGE {a} {b}: {b}");
    }
    // So far: f1 = "o1", f2 = "f1", o1 = "o2", o2 = "f2".
    // Across directories.
    renameat2(&p("x/f2.txt"), &p("y/g.txt"), libc::RENAME_EXCHANGE)
        .expect("RENAME_EXCHANGE across dirs");
    assert_eq!(read(&p("y/g.txt")), b"f1\n", "RENAME_EXCHANGE across dirs");
    assert_eq!(read(&p("x/f2.txt")), b"g\n", "RENAME_EXCHANGE across dirs");

    // RENAME_EXCHANGE of a file and a directory. The kernel engine answers
    // EXDEV for the host dir x/d and moves nothing; as `mv` would, the
    // directory is copied (into a made x/d2) and removed, and the file
    // exchanged with the copy, so both engines go on from the same tree.
    let r = renameat2(&p("x/f1.txt"), &p("x/d"), libc::RENAME_EXCHANGE);
    if kernel() {
        assert_eq!(
            errno(r),
            libc::EXDEV,
            "RENAME_EXCHANGE of a file and a host dir"
        );
        assert_eq!(read(&p("x/f1.txt")), b"o1\n", "EXDEV left the file");
        assert_eq!(names(&p("x/d")), ["in.txt"], "EXDEV left the dir");
        fs::create_dir(p("x/d2")).unwrap();
        fs::write(p("x/d2/in.txt"), read(&p("x/d/in.txt"))).unwrap();
        fs::remove_dir_all(p("x/d")).unwrap();
        renameat2(&p("x/f1.txt"), &p("x/d2"), libc::RENAME_EXCHANGE)
            .expect("RENAME_EXCHANGE of a file and a made dir");
        fs::rename(p("x/d2"), p("x/d")).expect("rename the exchanged file");
    } else {
        r.expect("RENAME_EXCHANGE of a file and a dir");
    }
    assert!(
        fs::metadata(p("x/f1.txt")).unwrap().is_dir(),
        "exchange: now a dir"
    );
    assert_eq!(
        names(&p("x/f1.txt")),
        ["in.txt"],
        "exchange: the dir's listing"
    );
    assert_eq!(
        read(&p("x/f1.txt/in.txt")),
        b"in\n",
        "exchange: the dir's file"
    );
    assert!(
        fs::metadata(p("x/d")).unwrap().is_file(),
        "exchange: now a file"
    );
    assert_eq!(read(&p("x/d")), b"o1\n", "exchange: the file's content");
    // And a made dir with a made file.
    renameat2(&p("x/o1.txt"), &p("od"), libc::RENAME_EXCHANGE)
        .expect("RENAME_EXCHANGE of a made file and a made dir");
    assert_eq!(list_tree(&p("x/o1.txt")), ["sub", "sub/k.txt"]);
    assert_eq!(read(&p("od")), b"o2\n", "exchange: the made file's content");
    assert_eq!(
        errno(renameat2(&p("x/d"), &p("x/missing"), libc::RENAME_EXCHANGE)),
        libc::ENOENT,
        "RENAME_EXCHANGE with a missing target"
    );

    // A directory into its own subdirectory.
    fs::create_dir(p("y/inner")).unwrap();
    assert_eq!(
        errno(fs::rename(p("y"), p("y/inner/y"))),
        libc::EINVAL,
        "rename a host dir into its own subdir"
    );
    assert_eq!(
        errno(fs::rename(p("x"), p("x/f1.txt/x"))),
        libc::EINVAL,
        "rename a host dir into its own subdir"
    );
    assert_eq!(
        errno(fs::rename(p("x/o1.txt"), p("x/o1.txt/sub/o"))),
        libc::EINVAL,
        "rename a made dir into its own subdir"
    );

    // A directory over a non-empty directory, over a file; a file over a dir.
    assert_eq!(
        errno(fs::rename(p("y"), p("ne"))),
        host_dir_rename_errno(libc::ENOTEMPTY),
        "host dir over host dir"
    );
    assert_eq!(
        errno(fs::rename(p("x/o1.txt"), p("ne"))),
        libc::ENOTEMPTY,
        "made dir over host dir"
    );
    assert_eq!(
        errno(fs::rename(p("ne"), p("x/o1.txt"))),
        host_dir_rename_errno(libc::ENOTEMPTY),
        "host dir over made dir"
    );
    assert_eq!(
        errno(fs::rename(p("y"), p("x/f2.txt"))),
        libc::ENOTDIR,
        "dir over file"
    );
    assert_eq!(
        errno(fs::rename(p("y"), p("od"))),
        libc::ENOTDIR,
        "dir over made file"
    );
    assert_eq!(
        errno(fs::rename(p("x/f2.txt"), p("y"))),
        libc::EISDIR,
        "file over dir"
    );
    assert_eq!(
        errno(fs::rename(p("od"), p("ne"))),
        libc::EISDIR,
        "made file over dir"
    );

    // A missing name.
    assert_eq!(
        errno(fs::rename(p("x/missing"), p("x/other"))),
        libc::ENOENT,
        "rename missing"
    );
    assert_eq!(
        errno(renameat2(
            &p("x/missing"),
            &p("x/other"),
            libc::RENAME_NOREPLACE
        )),
        libc::ENOENT,
        "RENAME_NOREPLACE missing"
    );
    assert_eq!(
        errno(fs::metadata(p("x/other"))),
        libc::ENOENT,
        "nothing made"
    );

    // Nothing moved on the failures.
    assert_eq!(list_tree(&p("ne")), ["z.txt"]);
    assert_eq!(list_tree(&p("y")), ["g.txt", "inner"]);
    assert_eq!(read(&p("x/f2.txt")), b"g\n");
    fx.host_unchanged();
}

// ---------------------------------------------------------------------------
// Links, metadata and xattrs.

#[test]
fn symlinks_and_hard_links() {
    let fx = Fx::new(
        |env| {
            env.write("l/target.txt", "target\n");
            env.link("l/host_link", "target.txt");
        },
        &[],
    );
    let p = |rel: &str| fx.p(rel);
    assert_eq!(
        fs::read_link(p("l/host_link")).unwrap(),
        Path::new("target.txt")
    );
    fs::create_dir(p("od")).unwrap();
    fs::write(p("od/made.txt"), "made\n").unwrap();

    for dir in ["l", "od"] {
        let rel = p(&format!("{dir}/rel"));
        symlink("../l/target.txt", &rel).unwrap_or_else(|e| panic!("symlink in {dir}: {e}"));
        assert!(
            fs::symlink_metadata(&rel).unwrap().file_type().is_symlink(),
            "symlink kind"
        );
        assert_eq!(
            fs::read_link(&rel).unwrap(),
            Path::new("../l/target.txt"),
            "readlink of a relative symlink in {dir}"
        );
        assert_eq!(read(&rel), b"target\n", "open through a symlink in {dir}");
        let abs = p(&format!("{dir}/abs"));
        symlink("/nonexistent/abs/target", &abs).unwrap();
        assert_eq!(
            fs::read_link(&abs).unwrap(),
            Path::new("/nonexistent/abs/target"),
            "readlink of an absolute symlink in {dir}"
        );
        assert_eq!(
            errno(symlink("x", &rel)),
            libc::EEXIST,
            "symlink onto an existing name"
        );
        let dangling = p(&format!("{dir}/dangling"));
        symlink("no/such/file", &dangling).unwrap();
        assert_eq!(
            errno(fs::metadata(&dangling)),
            libc::ENOENT,
            "stat of a dangling link"
        );
        assert_eq!(fs::read_link(&dangling).unwrap(), Path::new("no/such/file"));
    }
    // A link to a made file.
    symlink("made.txt", p("od/to_made")).unwrap();
    assert_eq!(
        read(&p("od/to_made")),
        b"made\n",
        "through a link to a made file"
    );
    // Renaming and removing links leaves their targets.
    fs::rename(p("l/host_link"), p("od/moved_link")).expect("rename a host symlink");
    assert_eq!(
        fs::read_link(p("od/moved_link")).unwrap(),
        Path::new("target.txt")
    );
    fs::remove_file(p("od/moved_link")).expect("unlink a host symlink");
    fs::remove_file(p("l/rel")).expect("unlink a made symlink");
    assert_eq!(read(&p("l/target.txt")), b"target\n", "target kept");
    assert_eq!(names(&p("l")), ["abs", "dangling", "target.txt"]);

    // Hard links to host and made files: one file under both names (the
    // rest of their rules: tests/hard_links.rs); none to a directory.
    for (from, to) in [("l/target.txt", "l/hard"), ("od/made.txt", "od/hard")] {
        fs::hard_link(p(from), p(to)).unwrap_or_else(|e| panic!("link {from}: {e}"));
        let (a, b) = (fs::metadata(p(from)).unwrap(), fs::metadata(p(to)).unwrap());
        assert_eq!((a.nlink(), b.nlink()), (2, 2), "link {from}: nlink");
        if kernel() && from == "l/target.txt" {
            // overlayfs without an inode index (index=off): the host file
            // is copied up and linked in the upper, but its old name keeps
            // reporting the lower's st_dev/st_ino (kept across copy-up for
            // a lower file of one link) and the new name the upper's.
            // README, "Two engines".
            assert_ne!(
                (a.dev(), a.ino()),
                (b.dev(), b.ino()),
                "link {from} on the kernel engine: the old name keeps the host file's numbers"
            );
        } else {
            assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "link {from}");
        }
        // One file whatever the numbers: a write through one name shows
        // through the other, and removing one leaves the other one link.
        let mut f = OpenOptions::new().append(true).open(p(to)).unwrap();
        f.write_all(b"more\n").unwrap();
        drop(f);
        assert!(
            read(&p(from)).ends_with(b"more\n"),
            "link {from}: shared data"
        );
        fs::remove_file(p(to)).unwrap();
        assert_eq!(fs::metadata(p(from)).unwrap().nlink(), 1, "unlink {to}");
        fs::hard_link(p(from), p(to)).unwrap_or_else(|e| panic!("link {from} again: {e}"));
        assert_eq!(fs::metadata(p(to)).unwrap().nlink(), 2, "link {from} again");
    }
    assert_eq!(errno(fs::hard_link(p("od"), p("od2"))), libc::EPERM);
    fx.host_unchanged();
}

#[test]
fn chmod_chown_utimens() {
    let fx = Fx::new(host_files("m"), &[]);
    fs::create_dir(fx.p("od")).unwrap();
    let mut targets: Vec<(&str, PathBuf)> = both(&fx, "m").into();
    targets.push(("host-origin dir", fx.p("m")));
    targets.push(("overlay-origin dir", fx.p("od")));
    for (origin, p) in &targets {
        let what = |call: &str| format!("{call} on a {origin}");
        let is_dir = fs::metadata(p).unwrap().is_dir();
        for mode in [
            0o600,
            0o751,
            0o4755 & !(if is_dir { 0o4000 } else { 0 }),
            0o644,
        ] {
            fs::set_permissions(p, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("{}: {e}", what("chmod")));
            assert_eq!(perm(p), mode, "{}", what(&format!("chmod {mode:o}")));
        }
        std::os::unix::fs::chown(p, Some(1234), Some(4321))
            .unwrap_or_else(|e| panic!("{}: {e}", what("chown")));
        let md = fs::metadata(p).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 4321), "{}", what("chown"));
        std::os::unix::fs::chown(p, None, Some(99))
            .unwrap_or_else(|e| panic!("{}: {e}", what("chgrp")));
        let md = fs::metadata(p).unwrap();
        assert_eq!((md.uid(), md.gid()), (1234, 99), "{}", what("chgrp"));

        utimens(
            p,
            (1_000_000_000, 123_456_789),
            (1_200_000_000, 987_654_321),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", what("utimensat")));
        let md = fs::symlink_metadata(p).unwrap();
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (1_000_000_000, 123_456_789),
            "{}",
            what("utimensat atime")
        );
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_200_000_000, 987_654_321),
            "{}",
            what("utimensat mtime")
        );
        // UTIME_OMIT keeps one; UTIME_NOW sets the other to now.
        utimens(p, (0, libc::UTIME_OMIT), (0, libc::UTIME_NOW)).unwrap();
        let md = fs::symlink_metadata(p).unwrap();
        assert_eq!(md.atime(), 1_000_000_000, "{}", what("UTIME_OMIT"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((md.mtime() - now).abs() < 60, "{}", what("UTIME_NOW"));
        if !is_dir {
            assert_eq!(
                read(p),
                INIT,
                "{}",
                what("metadata changes kept the content")
            );
        }
    }
    // A symlink's owner (lchown) and times.
    symlink("m/host.txt", fx.p("ln")).unwrap();
    std::os::unix::fs::lchown(fx.p("ln"), Some(55), Some(66)).expect("lchown");
    let md = fs::symlink_metadata(fx.p("ln")).unwrap();
    assert_eq!((md.uid(), md.gid()), (55, 66), "lchown of a symlink");
    assert_eq!(
        fs::metadata(fx.p("m/host.txt")).unwrap().uid(),
        1234,
        "lchown followed"
    );
    fx.host_unchanged();
}

#[test]
fn xattrs() {
    let kernel = kernel();
    let fx = Fx::new(host_files("x"), &[]);
    let host_xattrs = rustix::fs::setxattr(
        fx.env.host.join("x/host.txt"),
        "user.origin",
        b"host",
        XattrFlags::empty(),
    )
    .is_ok();
    if !host_xattrs {
        eprintln!("host filesystem lacks user xattrs; not checking their copy-up");
    }
    fs::create_dir(fx.p("od")).unwrap();
    let mut targets: Vec<(&str, PathBuf)> = both(&fx, "x").into();
    targets.push(("host-origin dir", fx.p("x")));
    targets.push(("overlay-origin dir", fx.p("od")));
    for (origin, p) in &targets {
        let what = |call: &str| format!("{call} on a {origin}");
        // The kernel engine's lower answers no xattr question, so none of
        // the host's reach the agent: a host file not copied up yet
        // answers EOPNOTSUPP, and its copy-up carries none of them.
        // (Its host dir `x` is copied up already: `made.txt` is in it.)
        let lower_only = kernel && *origin == "host-origin";
        let inherited: Vec<String> = if host_xattrs && *origin == "host-origin" && !kernel {
            vec!["user.origin".into()]
        } else {
            vec![]
        };
        if lower_only {
            let mut buf = vec![0u8; 4096];
            assert_eq!(
                xerrno(rustix::fs::listxattr(p, &mut buf[..])),
                libc::EOPNOTSUPP,
                "{}",
                what("listxattr before a copy-up (kernel engine)")
            );
            for name in ["user.a", "user.origin"] {
                assert_eq!(
                    xerrno(getx(p, name)),
                    libc::EOPNOTSUPP,
                    "{}",
                    what(&format!("getxattr {name} before a copy-up (kernel engine)"))
                );
            }
            assert_eq!(
                xerrno(rustix::fs::removexattr(p, "user.a")),
                libc::EOPNOTSUPP,
                "{}",
                what("removexattr before a copy-up (kernel engine)")
            );
        } else {
            assert_eq!(listx(p), inherited, "{}", what("listxattr before"));
            assert_eq!(
                xerrno(getx(p, "user.a")),
                libc::ENODATA,
                "{}",
                what("getxattr of a missing name")
            );
        }
        rustix::fs::setxattr(p, "user.a", b"alpha", XattrFlags::empty())
            .unwrap_or_else(|e| panic!("{}: {e}", what("setxattr")));
        rustix::fs::setxattr(p, "user.empty", b"", XattrFlags::CREATE)
            .unwrap_or_else(|e| panic!("{}: {e}", what("setxattr CREATE, empty value")));
        assert_eq!(getx(p, "user.a").unwrap(), b"alpha", "{}", what("getxattr"));
        assert_eq!(
            getx(p, "user.empty").unwrap(),
            b"",
            "{}",
            what("getxattr empty")
        );
        let size = rustix::fs::getxattr_query(p, "user.a").unwrap();
        assert_eq!(size, 5, "{}", what("getxattr size query"));
        let mut small = [0u8; 2];
        assert_eq!(
            xerrno(rustix::fs::getxattr(p, "user.a", &mut small[..])),
            libc::ERANGE,
            "{}",
            what("getxattr into a small buffer")
        );
        let mut want = inherited.clone();
        want.extend(["user.a".to_string(), "user.empty".to_string()]);
        want.sort();
        assert_eq!(listx(p), want, "{}", what("listxattr"));
        if host_xattrs && *origin == "host-origin" {
            if kernel {
                assert_eq!(
                    xerrno(getx(p, "user.origin")),
                    libc::ENODATA,
                    "{}",
                    what("the host's xattr after a copy-up (kernel engine: not carried)")
                );
            } else {
                assert_eq!(
                    getx(p, "user.origin").unwrap(),
                    b"host",
                    "{}",
                    what("copied-up xattr")
                );
            }
        }
        assert_eq!(
            xerrno(rustix::fs::setxattr(p, "user.a", b"x", XattrFlags::CREATE)),
            libc::EEXIST,
            "{}",
            what("setxattr CREATE on an existing name")
        );
        assert_eq!(
            xerrno(rustix::fs::setxattr(p, "user.b", b"x", XattrFlags::REPLACE)),
            libc::ENODATA,
            "{}",
            what("setxattr REPLACE on a missing name")
        );
        rustix::fs::setxattr(p, "user.a", b"beta", XattrFlags::REPLACE)
            .unwrap_or_else(|e| panic!("{}: {e}", what("setxattr REPLACE")));
        assert_eq!(
            getx(p, "user.a").unwrap(),
            b"beta",
            "{}",
            what("replaced value")
        );
        rustix::fs::removexattr(p, "user.a")
            .unwrap_or_else(|e| panic!("{}: {e}", what("removexattr")));
        assert_eq!(
            xerrno(getx(p, "user.a")),
            libc::ENODATA,
            "{}",
            what("getxattr after removexattr")
        );
        assert_eq!(
            xerrno(rustix::fs::removexattr(p, "user.a")),
            libc::ENODATA,
            "{}",
            what("removexattr of a missing name")
        );
        let mut want = inherited.clone();
        want.push("user.empty".into());
        want.sort();
        assert_eq!(listx(p), want, "{}", what("listxattr after removexattr"));
        // overlayfs' own attributes (origin, impure, opaque: the upper
        // holds them for copied-up files and dirs) are never listed or
        // read through the view.
        for name in [
            "trusted.overlay.origin",
            "trusted.overlay.impure",
            "trusted.overlay.opaque",
            "user.overlay.origin",
        ] {
            assert_eq!(
                xerrno(getx(p, name)),
                libc::ENODATA,
                "{}",
                what(&format!("getxattr {name}"))
            );
        }
        for name in ["trusted.x", "security.x"] {
            let set = rustix::fs::setxattr(p, name, b"1", XattrFlags::empty());
            if kernel {
                // The upper is ext4 and the agent root: overlayfs stores
                // them (they never reach a patch set).
                set.unwrap_or_else(|e| panic!("{}: {e}", what(&format!("setxattr {name}"))));
                assert_eq!(getx(p, name).unwrap(), b"1", "{}", what(name));
                rustix::fs::removexattr(p, name).unwrap();
            } else {
                assert_eq!(
                    xerrno(set),
                    libc::EOPNOTSUPP,
                    "{}",
                    what(&format!("setxattr {name}"))
                );
                assert_eq!(
                    xerrno(getx(p, name)),
                    libc::ENODATA,
                    "{}",
                    what(&format!("{name} was not set"))
                );
            }
        }
        assert_eq!(listx(p), want, "{}", what("listxattr at the end"));
    }
    // What an agent sets under overlayfs' names is its own attribute, not
    // the overlay's: a merged host dir marked opaque still shows the
    // host's files, and nothing is deleted from the patch set. On the fuse
    // engine `trusted.*` answers EOPNOTSUPP and `user.overlay.*` is an
    // ordinary user attribute.
    let x = fx.p("x");
    let opaque = rustix::fs::setxattr(&x, "trusted.overlay.opaque", b"y", XattrFlags::empty());
    if kernel {
        opaque.expect("setxattr trusted.overlay.opaque (stored escaped, the agent's own)");
        assert_eq!(getx(&x, "trusted.overlay.opaque").unwrap(), b"y");
    } else {
        assert_eq!(xerrno(opaque), libc::EOPNOTSUPP, "trusted.overlay.opaque");
    }
    rustix::fs::setxattr(&x, "user.overlay.opaque", b"y", XattrFlags::empty())
        .expect("setxattr user.overlay.opaque");
    assert_eq!(getx(&x, "user.overlay.opaque").unwrap(), b"y");
    let made = fx.make("x/empty-marked");
    fs::write(&made, "").unwrap();
    let whiteout =
        rustix::fs::setxattr(&made, "trusted.overlay.whiteout", b"", XattrFlags::empty());
    if kernel {
        whiteout.expect("setxattr trusted.overlay.whiteout (stored escaped)");
    } else {
        assert_eq!(
            xerrno(whiteout),
            libc::EOPNOTSUPP,
            "trusted.overlay.whiteout"
        );
    }
    assert_eq!(
        names(&x),
        ["empty-marked", "host.txt", "made.txt"],
        "x after the agent's overlay-named attributes"
    );
    assert_eq!(read(&fx.p("x/host.txt")), INIT);
    let set: Vec<(String, String)> = fx
        .exported()
        .into_iter()
        .map(|(path, op, _)| (path, op))
        .collect();
    assert_eq!(
        set,
        [
            ("x/empty-marked".to_string(), "create".to_string()),
            ("x/made.txt".to_string(), "create".to_string())
        ],
        "the patch set: the made files, no delete"
    );
    fx.host_unchanged();
}

// ---------------------------------------------------------------------------
// Errors of names and paths.

#[test]
fn errno_of_bad_names_and_paths() {
    let fx = Fx::new(host_files("e"), &[]);
    fs::create_dir(fx.p("od")).unwrap();
    let long = "n".repeat(256);
    let max = "m".repeat(255);
    for dir in ["e", "od", ""] {
        let at = |name: &str| fx.p(dir).join(name);
        let call = |c: &str| format!("{c} with a 256-byte name in {dir:?}");
        assert_eq!(
            errno(File::create(at(&long))),
            libc::ENAMETOOLONG,
            "{}",
            call("create")
        );
        assert_eq!(
            errno(fs::create_dir(at(&long))),
            libc::ENAMETOOLONG,
            "{}",
            call("mkdir")
        );
        assert_eq!(
            errno(symlink("x", at(&long))),
            libc::ENAMETOOLONG,
            "{}",
            call("symlink")
        );
        assert_eq!(
            errno(fs::rename(fx.p("e/host.txt"), at(&long))),
            libc::ENAMETOOLONG,
            "{}",
            call("rename to")
        );
        // 255 bytes is fine.
        fs::write(at(&max), "max").expect("create with a 255-byte name");
        assert_eq!(read(&at(&max)), b"max", "read with a 255-byte name");
        assert!(names(&fx.p(dir)).contains(&max), "255-byte name listed");
        fs::remove_file(at(&max)).expect("unlink with a 255-byte name");
    }

    // A missing parent.
    let call = |c: &str| format!("{c} under a missing parent");
    assert_eq!(
        errno(File::create(fx.p("nope/x.txt"))),
        libc::ENOENT,
        "{}",
        call("create")
    );
    assert_eq!(
        errno(fs::create_dir(fx.p("nope/d"))),
        libc::ENOENT,
        "{}",
        call("mkdir")
    );
    assert_eq!(
        errno(symlink("x", fx.p("nope/l"))),
        libc::ENOENT,
        "{}",
        call("symlink")
    );
    assert_eq!(
        errno(fs::metadata(fx.p("nope/x.txt"))),
        libc::ENOENT,
        "{}",
        call("stat")
    );
    assert_eq!(
        errno(fs::rename(fx.p("e/host.txt"), fx.p("nope/host.txt"))),
        libc::ENOENT,
        "{}",
        call("rename to")
    );
    assert_eq!(
        errno(fs::metadata(fx.p("nope"))),
        libc::ENOENT,
        "nothing made"
    );

    // A path component that is a file.
    fx.make("e/made.txt");
    for file in ["e/host.txt", "e/made.txt"] {
        let under = |name: &str| fx.p(file).join(name);
        let call = |c: &str| format!("{c} under the file {file}");
        assert_eq!(
            errno(File::create(under("x"))),
            libc::ENOTDIR,
            "{}",
            call("create")
        );
        assert_eq!(
            errno(File::open(under("x"))),
            libc::ENOTDIR,
            "{}",
            call("open")
        );
        assert_eq!(
            errno(fs::metadata(under("x"))),
            libc::ENOTDIR,
            "{}",
            call("stat")
        );
        assert_eq!(
            errno(fs::create_dir(under("d"))),
            libc::ENOTDIR,
            "{}",
            call("mkdir")
        );
        assert_eq!(
            errno(symlink("x", under("l"))),
            libc::ENOTDIR,
            "{}",
            call("symlink")
        );
        assert_eq!(
            errno(fs::read_dir(fx.p(file))),
            libc::ENOTDIR,
            "{}",
            call("opendir")
        );
        assert_eq!(
            errno(fs::rename(fx.p("od"), under("od"))),
            libc::ENOTDIR,
            "{}",
            call("rename to")
        );
    }
    assert_eq!(
        read(&fx.p("e/host.txt")),
        INIT,
        "the failures changed nothing"
    );
    assert_eq!(names(&fx.p("e")), ["host.txt", "made.txt"]);
    fx.host_unchanged();
}

/// Looking up a name longer than NAME_MAX is ENAMETOOLONG on Linux
/// filesystems (the kernel leaves the check to FUSE servers).
#[test]
fn lookup_of_an_overlong_name_is_enametoolong() {
    let fx = Fx::new(host_files("e"), &[]);
    let long = "n".repeat(256);
    for dir in ["e", ""] {
        let p = fx.p(dir).join(&long);
        assert_eq!(
            errno(fs::symlink_metadata(&p)),
            libc::ENAMETOOLONG,
            "lstat of a 256-byte name in {dir:?}"
        );
        assert_eq!(
            errno(File::open(&p)),
            libc::ENAMETOOLONG,
            "open of a 256-byte name in {dir:?}"
        );
        assert_eq!(
            errno(fs::remove_file(&p)),
            libc::ENAMETOOLONG,
            "unlink of a 256-byte name in {dir:?}"
        );
    }
    fx.host_unchanged();
}

// ---------------------------------------------------------------------------
// Set-user-id bits.

/// A write by a caller without CAP_FSETID clears S_ISUID, as on any Linux
/// filesystem. The mount admits only its owner (root), so the unprivileged
/// writer is a root shell with CAP_FSETID dropped from its bounding set.
#[test]
fn setuid_is_cleared_by_an_unprivileged_write() {
    const CAP_FSETID: libc::c_ulong = 4;
    let fx = Fx::new(host_files("s"), &[]);
    for (origin, p) in both(&fx, "s") {
        let what = |call: &str| format!("{call} on a {origin} file");
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(perm(&p), 0o4755, "{}", what("chmod 4755"));
        // chown of a regular file clears S_ISUID, even by root.
        std::os::unix::fs::chown(&p, Some(1001), None).unwrap();
        assert_eq!(perm(&p), 0o755, "{}", what("chown clears S_ISUID"));
        std::os::unix::fs::chown(&p, Some(1000), None).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o4755)).unwrap();
        assert_eq!(perm(&p), 0o4755, "{}", what("chmod 4755"));

        // A write by root (CAP_FSETID) keeps the bit.
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"root\n")
            .unwrap();
        assert_eq!(perm(&p), 0o4755, "{}", what("a root write keeps S_ISUID"));

        // A write by a caller without CAP_FSETID clears it.
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("echo x >> \"$1\" && grep CapEff /proc/$$/status")
            .arg("sh")
            .arg(&p);
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_CAPBSET_DROP, CAP_FSETID, 0, 0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            what("write without CAP_FSETID"),
            String::from_utf8_lossy(&out.stderr)
        );
        let caps = String::from_utf8(out.stdout).unwrap();
        let eff = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(
            eff & (1 << CAP_FSETID),
            0,
            "the writer still has CAP_FSETID"
        );
        assert_eq!(
            read(&p),
            [INIT, b"root\n", b"x\n"].concat(),
            "{}",
            what("write without CAP_FSETID")
        );
        assert_eq!(
            perm(&p),
            0o755,
            "{}",
            what("a write without CAP_FSETID clears S_ISUID")
        );
    }
    fx.host_unchanged();
}

/// The same with a real other user: on a mount made with `--allow-other`,
/// uid 1000 appends to a 04777 file owned by uid 1000 and the bit goes.
#[test]
fn setuid_is_cleared_by_another_users_write() {
    let fx = Fx::with_mount_args(host_files("s"), &[], &["--allow-other"]);
    // uid 1000 must reach the mount: the temp dir is 0700.
    fs::set_permissions(fx.env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for (origin, p) in both(&fx, "s") {
        let what = |call: &str| format!("{call} on a {origin} file");
        std::os::unix::fs::chown(&p, Some(1000), Some(1000)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o4777)).unwrap();
        assert_eq!(perm(&p), 0o4777, "{}", what("chmod 4777"));
        let out = Command::new("sh")
            .arg("-c")
            .arg("echo x >> \"$1\"")
            .arg("sh")
            .arg(&p)
            .uid(1000)
            .gid(1000)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            what("write as uid 1000"),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            read(&p),
            [INIT, b"x\n"].concat(),
            "{}",
            what("write as uid 1000")
        );
        assert_eq!(
            perm(&p),
            0o777,
            "{}",
            what("a write by uid 1000 clears S_ISUID")
        );
        let md = fs::metadata(&p).unwrap();
        assert_eq!((md.uid(), md.gid()), (1000, 1000), "{}", what("owner kept"));
    }
    // A file uid 1000 creates is theirs.
    let made = fx.p("s/by1000.txt");
    let st = Command::new("sh")
        .arg("-c")
        .arg(": > \"$1\" 2>/dev/null")
        .arg("sh")
        .arg(&made)
        .uid(1000)
        .gid(1000)
        .status()
        .unwrap();
    assert!(
        !st.success(),
        "uid 1000 may not create in a root-owned 0755 dir"
    );
    fs::set_permissions(fx.p("s"), fs::Permissions::from_mode(0o777)).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg(": > \"$1\"")
        .arg("sh")
        .arg(&made)
        .uid(1000)
        .gid(1000)
        .status()
        .unwrap();
    assert!(st.success(), "uid 1000 creates in a 0777 dir");
    let md = fs::metadata(&made).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (1000, 1000),
        "create as uid 1000: owner"
    );
    fx.host_unchanged();
}

// ---------------------------------------------------------------------------
// Where new names may appear.

#[test]
fn write_prefix_bounds_every_change() {
    let fx = Fx::new(
        |env| {
            env.write("top.txt", "top\n");
            env.write("out/old.txt", "old\n");
            env.write("src/lib.rs", "lib\n");
        },
        &["--write-prefix", "out"],
    );
    let p = |rel: &str| fx.p(rel);
    // The FUSE engine refuses each call (EACCES); the kernel engine's
    // overlay is read-only outside the prefixes (EROFS) and a rename or
    // link across the prefix's mount answers EXDEV.
    let kernel = test_engine() == "kernel";
    let outside = if kernel { libc::EROFS } else { libc::EACCES };
    let across = if kernel { libc::EXDEV } else { libc::EACCES };
    let before = names(&p(""));
    for (rel, call) in [
        ("x.txt", "create at the root"),
        ("src/x.rs", "create in src"),
    ] {
        assert_eq!(errno(File::create(p(rel))), outside, "{call}");
        assert_eq!(
            errno(fs::symlink_metadata(p(rel))),
            libc::ENOENT,
            "{call} left {rel}"
        );
    }
    assert_eq!(
        errno(fs::create_dir(p("newdir"))),
        outside,
        "mkdir outside out"
    );
    assert_eq!(
        errno(symlink("top.txt", p("ln"))),
        outside,
        "symlink outside out"
    );
    assert_eq!(names(&p("")), before, "nothing left behind at the root");
    assert_eq!(names(&p("src")), ["lib.rs"], "nothing left behind in src");

    fs::write(p("out/x.txt"), "x\n").expect("create under the write prefix");
    assert_eq!(read(&p("out/x.txt")), b"x\n");
    fs::create_dir_all(p("out/a/b")).expect("mkdir -p under the write prefix");
    fs::write(p("out/a/b/y.txt"), "y\n").expect("create deep under the prefix");
    assert_eq!(
        errno(fs::rename(p("out/x.txt"), p("x.txt"))),
        across,
        "rename out of out"
    );
    assert_eq!(
        read(&p("out/x.txt")),
        b"x\n",
        "refused rename left the source"
    );
    assert_eq!(
        errno(fs::symlink_metadata(p("x.txt"))),
        libc::ENOENT,
        "refused rename made x.txt"
    );
    assert_eq!(
        errno(fs::rename(p("out/a"), p("a"))),
        across,
        "rename a dir out of out"
    );
    assert_eq!(
        errno(fs::rename(p("top.txt"), p("top2.txt"))),
        outside,
        "rename to a new name outside out"
    );
    // Existing entries outside the prefix cannot change either: written,
    // removed, moved away (even into the prefix), chmod'ed.
    assert_eq!(
        errno(fs::write(p("top.txt"), "changed\n")),
        outside,
        "write outside out"
    );
    assert_eq!(read(&p("top.txt")), b"top\n");
    assert_eq!(
        errno(fs::remove_file(p("src/lib.rs"))),
        outside,
        "unlink outside out"
    );
    assert_eq!(
        errno(fs::rename(p("src/lib.rs"), p("out/lib.rs"))),
        across,
        "move into out"
    );
    assert_eq!(
        errno(fs::set_permissions(
            p("top.txt"),
            fs::Permissions::from_mode(0o600)
        )),
        outside,
        "chmod outside out"
    );
    assert_eq!(names(&p("src")), ["lib.rs"], "src unchanged");
    // Inside it: anything.
    fs::write(p("out/old.txt"), "changed\n").expect("write in out");
    fs::remove_file(p("out/old.txt")).expect("unlink in out");
    assert_eq!(names(&p("")), before, "the root listing at the end");
    let diff = fx.env.ok(&["diff", &fx.g, "--json"]);
    assert!(
        !diff.contains("\"out_of_scope\":\""),
        "nothing out of scope was let through: {diff}"
    );
    fx.host_unchanged();
}

/// A write prefix that is no directory in the view yet cannot be a mount
/// of its own on the kernel engine: there the create outside it succeeds,
/// and `wopfs diff` marks it and the commit refuses it (nothing written).
/// The FUSE engine refuses the create itself.
#[test]
fn a_write_prefix_not_yet_made_is_enforced_by_the_commit() {
    let fx = Fx::new(
        |env| {
            env.write("top.txt", "top\n");
        },
        &["--write-prefix", "gen/out"],
    );
    let p = |rel: &str| fx.p(rel);
    fs::create_dir_all(p("gen/out")).expect("mkdir -p of the prefix");
    fs::write(p("gen/out/a.txt"), "a\n").expect("create in the prefix");
    let stray = fs::write(p("stray.txt"), "s\n");
    if test_engine() == "kernel" {
        stray.expect("the kernel engine cannot refuse it now");
        let diff = fx.env.ok(&["diff", &fx.g, "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_str(&diff).unwrap();
        let marked: Vec<(&str, &str)> = rows
            .iter()
            .filter_map(|r| Some((r["path"].as_str()?, r["out_of_scope"].as_str()?)))
            .collect();
        assert_eq!(
            marked,
            [("stray.txt", "outside the write prefixes")],
            "{diff}"
        );
        let stat = fx.env.ok(&["diff", &fx.g, "--stat"]);
        assert!(stat.contains("1 path OUT OF SCOPE"), "{stat}");
        let Fx { m, env, before, g } = fx;
        drop(m);
        let err = env.fails(&["commit", &g, "--yes"]);
        assert!(
            err.contains("stray.txt") && err.contains("outside the write prefixes"),
            "{err}"
        );
        assert_eq!(tree_digest(&env.host), before, "the refused commit wrote");
    } else {
        assert_eq!(errno(stray), libc::EACCES, "create outside the prefix");
        fx.host_unchanged();
    }
}

/// The fuse engine refuses a denied name when it is made (EACCES). The
/// kernel engine cannot (overlayfs asks no one): there the names are made,
/// `wopfs diff` shows every one, and `wopfs commit` refuses each, naming
/// it, the host untouched (`denied_names_on_the_kernel_engine`).
#[test]
fn default_denies_refuse_new_names() {
    let fx = Fx::new(
        |env| {
            env.write("a/main.rs", "fn main() {}\n");
            env.write("README.md", "readme\n");
        },
        &["--deny", "generated"],
    );
    if kernel() {
        return denied_names_on_the_kernel_engine(fx);
    }
    let p = |rel: &str| fx.p(rel);
    for rel in [
        ".env",
        "a/.env",
        "a/.env.local",
        "a/id_rsa",
        "a/key.pem",
        ".envrc",
    ] {
        assert_eq!(errno(File::create(p(rel))), libc::EACCES, "create {rel}");
        assert_eq!(
            errno(fs::symlink_metadata(p(rel))),
            libc::ENOENT,
            "create left {rel}"
        );
        assert_eq!(
            errno(symlink("README.md", p(rel))),
            libc::EACCES,
            "symlink {rel}"
        );
        assert_eq!(
            errno(fs::rename(p("README.md"), p(rel))),
            libc::EACCES,
            "rename to {rel}"
        );
    }
    for rel in [".git", "a/.git", "generated"] {
        assert_eq!(errno(fs::create_dir(p(rel))), libc::EACCES, "mkdir {rel}");
        assert_eq!(
            errno(fs::symlink_metadata(p(rel))),
            libc::ENOENT,
            "mkdir left {rel}"
        );
    }
    assert_eq!(
        errno(fs::create_dir_all(p("a/.git/objects"))),
        libc::EACCES,
        "mkdir -p a/.git/objects"
    );
    assert_eq!(
        errno(File::create(p("a/.git/config"))),
        libc::ENOENT,
        "create a/.git/config"
    );
    // A directory may not be moved or renamed to a denied name either.
    fs::create_dir(p("b")).unwrap();
    fs::write(p("b/f.txt"), "f").unwrap();
    assert_eq!(
        errno(fs::rename(p("b"), p(".git"))),
        libc::EACCES,
        "rename a dir to .git"
    );
    assert_eq!(
        errno(fs::rename(p("b"), p("generated"))),
        libc::EACCES,
        "rename to generated"
    );
    assert_eq!(
        read(&p("README.md")),
        b"readme\n",
        "refused renames left the source"
    );
    assert_eq!(
        names(&p("")),
        ["README.md", "a", "b"],
        "nothing left at the root"
    );
    assert_eq!(names(&p("a")), ["main.rs"], "nothing left in a");
    fx.host_unchanged();
}

/// `default_denies_refuse_new_names` on the kernel engine: each way the
/// fuse engine refuses (create, symlink, rename of a file and of a
/// directory, mkdir -p) makes the name here; none of them gets through.
fn denied_names_on_the_kernel_engine(fx: Fx) {
    let p = |rel: &str| fx.p(rel);
    for rel in [".env", "a/.env", "a/id_rsa", "a/key.pem"] {
        fs::write(p(rel), "mine\n").unwrap_or_else(|e| panic!("create {rel}: {e}"));
    }
    symlink("README.md", p(".envrc")).expect("symlink .envrc");
    fs::write(p("a/notes.txt"), "notes\n").unwrap();
    fs::rename(p("a/notes.txt"), p("a/.env.local")).expect("rename to a/.env.local");
    fs::create_dir_all(p("a/.git/objects")).expect("mkdir -p a/.git/objects");
    fs::write(p("a/.git/config"), "[core]\n").expect("create a/.git/config");
    fs::create_dir(p("b")).unwrap();
    fs::write(p("b/f.txt"), "f").unwrap();
    fs::rename(p("b"), p("generated")).expect("rename a dir to generated");
    assert_eq!(
        names(&p("")),
        [".env", ".envrc", "README.md", "a", "generated"]
    );
    let denied = [
        ".env",
        ".envrc",
        "a/.env",
        "a/.env.local",
        "a/.git/config",
        "a/id_rsa",
        "a/key.pem",
        "generated/f.txt",
    ];
    // The approver sees every one of them.
    let want: Vec<(String, String)> = denied
        .iter()
        .map(|d| (d.to_string(), "create".to_string()))
        .collect();
    assert_eq!(diff_ops(&fx.env, &fx.g), want, "wopfs diff");
    let Fx { m, env, before, g } = fx;
    drop(m);
    // The session's set is refused, naming its first denied path; a set
    // of any one of them alone (exported, cut down, committed with
    // --from) is refused naming that path.
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(
        err.contains("patch .env (Create) is outside grant"),
        "commit: {err}"
    );
    let out = env.dir.path().join("set");
    env.ok(&["export", &g, "-o", out.to_str().unwrap(), "--inline"]);
    let set: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("patchset.json")).unwrap()).unwrap();
    let patches = set["patches"].as_array().unwrap();
    assert_eq!(patches.len(), denied.len(), "the exported set");
    for patch in patches {
        let rel = patch["path"].as_str().unwrap();
        let mut one = set.clone();
        one["patches"] = serde_json::json!([patch]);
        let dir = env
            .dir
            .path()
            .join(format!("one-{}", rel.replace('/', "_")));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join("patchset.json"), one.to_string()).unwrap();
        let err = env.fails(&["commit", &g, "--yes", "--from", dir.to_str().unwrap()]);
        assert!(
            err.contains(&format!("patch {rel} (Create) is outside grant")),
            "commit of {rel} alone: {err}"
        );
    }
    assert_eq!(
        tree_digest(&env.host),
        before,
        "the refused commits left the host"
    );
}

#[test]
fn denied_host_file_stays_hidden_after_moving_its_dir() {
    let fx = Fx::new(
        |env| {
            env.write("src/main.rs", "fn main() {}\n");
            env.write("src/.env", "SECRET=FAKE\n");
            env.write("src/private/key.txt", "FAKE\n");
            env.write("src/sub/.env.local", "FAKE\n");
            env.write("src/sub/mod.rs", "mod x;\n");
        },
        &["--deny", "src/private"],
    );
    let p = |rel: &str| fx.p(rel);
    assert_eq!(
        errno(fs::metadata(p("src/.env"))),
        libc::ENOENT,
        "denied before the move"
    );
    // On the kernel engine `mv` copies what the view shows, then removes it.
    fx.move_host_dir("src", "lib");
    for rel in [
        "lib/.env",
        "lib/private",
        "lib/private/key.txt",
        "lib/sub/.env.local",
    ] {
        assert_eq!(
            errno(fs::symlink_metadata(p(rel))),
            libc::ENOENT,
            "{rel} after mv"
        );
        assert_eq!(
            errno(File::open(p(rel))),
            libc::ENOENT,
            "open {rel} after mv"
        );
    }
    assert_eq!(
        list_tree(&p("lib")),
        ["main.rs", "sub", "sub/mod.rs"],
        "listing after mv"
    );
    assert_eq!(read(&p("lib/main.rs")), b"fn main() {}\n");
    // The patch set moves what the view showed, and only that: no denied
    // path, deleted or created, and no secret's bytes.
    let set = fx.exported();
    let ops: Vec<(&str, &str)> = set
        .iter()
        .map(|(path, op, _)| (path.as_str(), op.as_str()))
        .collect();
    assert_eq!(
        ops,
        [
            ("lib/main.rs", "create"),
            ("lib/sub/mod.rs", "create"),
            ("src/main.rs", "delete"),
            ("src/sub/mod.rs", "delete"),
        ],
        "the patch set after mv"
    );
    for (path, _, content) in &set {
        assert!(
            !content.windows(4).any(|w| w == b"FAKE"),
            "{path} carries a secret"
        );
    }
    // The old place is empty of everything, the denied file included.
    assert_eq!(errno(fs::metadata(p("src"))), libc::ENOENT, "src after mv");
    fs::create_dir(p("src")).expect("mkdir src again");
    assert!(names(&p("src")).is_empty(), "a new src holds nothing");
    assert_eq!(
        errno(fs::metadata(p("src/.env"))),
        libc::ENOENT,
        "src/.env in the new src"
    );
    // A new .env is refused when made (fuse), or made as the agent's own
    // file, which `default_denies_refuse_new_names` follows to the commit
    // (kernel); the host's never shows.
    let made = File::create(p("lib/.env"));
    if kernel() {
        made.expect("create lib/.env (kernel engine)");
        assert_eq!(read(&p("lib/.env")), b"", "lib/.env is the agent's own");
        fs::remove_file(p("lib/.env")).unwrap();
    } else {
        assert_eq!(errno(made), libc::EACCES, "create lib/.env");
    }
    // Moving back shows the same.
    fs::remove_dir(p("src")).unwrap();
    fs::rename(p("lib"), p("src")).expect("mv lib src");
    assert_eq!(
        list_tree(&p("src")),
        ["main.rs", "sub", "sub/mod.rs"],
        "listing after mv back"
    );
    assert_eq!(
        errno(fs::metadata(p("src/.env"))),
        libc::ENOENT,
        "src/.env after mv back"
    );
    assert_eq!(fx.exported(), [], "the patch set after mv back");
    assert_eq!(
        fs::read_to_string(fx.env.host.join("src/.env")).unwrap(),
        "SECRET=FAKE\n",
        "the denied host file is untouched"
    );
    fx.host_unchanged();
}

/// `mkfifo`, `mknod` of a device and binding a unix socket in the mount
/// all answer EPERM and leave no name behind on the fuse engine. The
/// kernel engine cannot refuse them when made: there they are made, and
/// no patch set carries one (`unfit_entries_on_the_kernel_engine`). The
/// host is untouched.
#[test]
fn fifos_sockets_and_devices_are_eperm() {
    use rustix::fs::{mknodat, FileType, Mode, CWD};
    let fx = Fx::new(host_files("e"), &[]);
    let kernel = kernel();
    for dir in ["", "e"] {
        let at = |name: &str| fx.p(dir).join(name);
        let mode = Mode::from_raw_mode(0o644);
        let fifo = mknodat(CWD, at("fifo"), FileType::Fifo, mode, 0).map_err(io::Error::from);
        let dev = mknodat(
            CWD,
            at("null"),
            FileType::CharacterDevice,
            mode,
            rustix::fs::makedev(1, 3),
        )
        .map_err(io::Error::from);
        let sock = std::os::unix::net::UnixListener::bind(at("sock"));
        if kernel {
            fifo.unwrap_or_else(|e| panic!("mkfifo in {dir:?}: {e}"));
            dev.unwrap_or_else(|e| panic!("mknod in {dir:?}: {e}"));
            sock.unwrap_or_else(|e| panic!("bind in {dir:?}: {e}"));
            // The view is mounted nodev.
            assert_eq!(
                errno(File::open(at("null"))),
                libc::EACCES,
                "open a device made in {dir:?}"
            );
        } else {
            assert_eq!(errno(fifo), libc::EPERM, "mkfifo in {dir:?}");
            assert_eq!(errno(dev), libc::EPERM, "mknod in {dir:?}");
            assert_eq!(errno(sock), libc::EPERM, "bind in {dir:?}");
        }
    }
    if kernel {
        return unfit_entries_on_the_kernel_engine(fx);
    }
    assert_eq!(names(&fx.p("")), vec!["e"]);
    assert_eq!(names(&fx.p("e")), vec!["host.txt"]);
    fx.host_unchanged();
}

/// The FIFOs, devices and sockets made on the kernel engine: `wopfs diff`,
/// `export` and `commit` refuse the session with one error naming every
/// one, what it is and how to be rid of them, the host untouched; once
/// they are removed in the view (mounted again) the session commits.
fn unfit_entries_on_the_kernel_engine(fx: Fx) {
    let made = [
        "e/fifo (a FIFO)",
        "e/null (a character device)",
        "e/sock (a socket)",
        "fifo (a FIFO)",
        "null (a character device)",
        "sock (a socket)",
    ];
    assert_eq!(names(&fx.p("")), ["e", "fifo", "null", "sock"]);
    assert_eq!(names(&fx.p("e")), ["fifo", "host.txt", "null", "sock"]);
    let refused = |what: &str, err: &str| {
        assert!(
            err.contains("the view holds 6 entries that cannot be committed")
                && err.contains(&made.join(", "))
                && err.contains("remove them in the view"),
            "{what}: {err}"
        );
    };
    refused("diff", &fx.env.fails(&["diff", &fx.g]));
    refused("export", &fx.env.fails(&["export", &fx.g]));
    refused("status GRANT", &fx.env.fails(&["status", &fx.g]));
    // One session's trouble never hides the other grants: the listing
    // names it on its row.
    let other = fx.env.grant(&["--mode", "read_only"]);
    let all: serde_json::Value = serde_json::from_str(&fx.env.ok(&["status", "--json"])).unwrap();
    let rows = all.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{all}");
    for r in rows {
        if r["grant_id"] == fx.g.as_str() {
            refused("status --json", r["error"].as_str().unwrap_or_default());
        } else {
            assert_eq!(r["grant_id"], other.as_str());
            assert!(r.get("error").is_none(), "{r}");
        }
    }
    let table = fx.env.ok(&["status"]);
    assert!(
        table.contains(&other) && table.contains("cannot be read"),
        "{table}"
    );
    let Fx { m, env, before, g } = fx;
    let mp = m.mp.clone();
    drop(m);
    refused("commit", &env.fails(&["commit", &g, "--yes"]));
    assert_eq!(
        tree_digest(&env.host),
        before,
        "the refused commit left the host"
    );

    let m = env.mount(&g, &mp, &[]);
    for name in ["fifo", "null", "sock", "e/fifo", "e/null", "e/sock"] {
        fs::remove_file(m.path(name)).unwrap_or_else(|e| panic!("rm {name}: {e}"));
    }
    fs::write(m.path("e/new.txt"), "new\n").unwrap();
    assert_eq!(
        diff_ops(&env, &g),
        [("e/new.txt".to_string(), "create".to_string())],
        "diff once removed"
    );
    drop(m);
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(
        list_tree(&env.host),
        ["e", "e/host.txt", "e/new.txt"],
        "the host after the commit"
    );
    assert_eq!(read(&env.host.join("e/new.txt")), b"new\n");
    assert_eq!(read(&env.host.join("e/host.txt")), INIT);
}
