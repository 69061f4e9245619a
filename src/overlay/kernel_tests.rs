//! The kernel engine's upper read back (`kernel.rs`), on upper directories
//! made by hand the way overlayfs leaves them (docs/design/kernel-engine.md
//! §3): whiteouts are 0/0 character devices sharing one inode, opaque
//! directories carry `trusted.overlay.opaque`. No mount needed (root).

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, StatxFlags, XattrFlags, CWD};

use super::engine::{self, Engine, EngineRecord, XattrNs};
use super::kernel::read_upper;
use crate::grant::{resolve, Grant, GrantRequest};
use crate::host::HostRoot;
use crate::patch::set::{build, WorkspacePatch};
use crate::patch::{changes, Op};
use crate::policy::{Mode as GrantMode, Policy};
use crate::tree::Tree;

/// The host tree every test starts from.
pub(super) const HOST: &[(&str, &str)] = &[
    ("a.txt", "alpha\n"),
    ("docs/readme.md", "read me\n"),
    ("docs/guide.md", "guide\n"),
    ("keep.txt", "keep\n"),
    ("src/b.txt", "beta\n"),
    ("src/c.txt", "gamma\n"),
    ("src/f.txt", "eff\n"),
    ("src/sub/d.txt", "delta\n"),
    ("src/sub/e.txt", "epsilon\n"),
];

pub(super) struct Fx {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    pub(super) host: PathBuf,
    pub(super) state: PathBuf,
    pub(super) grant: Grant,
}

/// A host tree (`HOST` plus the symlink `src/link` → `b.txt`) and its
/// `read_write_overlay` grant with `deny`.
pub(super) fn fixture(deny: &[&str]) -> Fx {
    let host_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = host_dir.path().to_path_buf();
    for (f, c) in HOST {
        fs::create_dir_all(host.join(f).parent().unwrap()).unwrap();
        fs::write(host.join(f), c).unwrap();
    }
    symlink("b.txt", host.join("src/link")).unwrap();
    fs::create_dir_all(host.join("secrets")).unwrap();
    fs::write(host.join("secrets/key.txt"), "hidden").unwrap();
    let req = GrantRequest {
        deny: deny.iter().map(|d| d.to_string()).collect(),
        ..GrantRequest::for_test(&host, GrantMode::ReadWriteOverlay)
    };
    let grant = resolve(
        &req,
        &Policy::builtin_default().unwrap(),
        &crate::clock::SystemClock,
    )
    .unwrap();
    Fx {
        state: state.path().to_path_buf(),
        _dirs: (host_dir, state),
        host,
        grant,
    }
}

/// An upper directory being made by hand, in a kernel session's layer.
pub(super) struct Upper {
    pub(super) dir: PathBuf,
    /// overlayfs' `work/`, where the shared whiteout inode lives.
    work: PathBuf,
}

impl Upper {
    /// A kernel session at `session` (its `engine.json` written) with an
    /// empty upper.
    pub(super) fn new(session: &Path, ns: XattrNs) -> Upper {
        fs::create_dir_all(session).unwrap();
        let rec = EngineRecord {
            engine: Engine::Kernel,
            xattrs: Some(ns),
        };
        engine::save_record(session, &rec).unwrap();
        let (dir, work) = (engine::upper_dir(session), engine::work_dir(session));
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(work.join("work")).unwrap();
        Upper { dir, work }
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    fn parent(&self, rel: &str) {
        fs::create_dir_all(self.at(rel).parent().unwrap()).unwrap();
    }

    pub(super) fn file(&self, rel: &str, data: &str, mode: u32) -> &Self {
        self.parent(rel);
        fs::write(self.at(rel), data).unwrap();
        fs::set_permissions(self.at(rel), fs::Permissions::from_mode(mode)).unwrap();
        self
    }

    pub(super) fn symlink(&self, rel: &str, target: &str) -> &Self {
        self.parent(rel);
        symlink(target, self.at(rel)).unwrap();
        self
    }

    pub(super) fn dir(&self, rel: &str) -> &Self {
        fs::create_dir_all(self.at(rel)).unwrap();
        self
    }

    pub(super) fn opaque(&self, rel: &str) -> &Self {
        self.dir(rel).xattr(rel, "trusted.overlay.opaque", b"y")
    }

    pub(super) fn xattr(&self, rel: &str, name: &str, value: &[u8]) -> &Self {
        rfs::lsetxattr(self.at(rel), name, value, XattrFlags::empty()).unwrap();
        self
    }

    /// A whiteout as overlayfs makes them: a link of the one 0/0 device in
    /// `work/work/` (so every whiteout has nlink > 1).
    pub(super) fn whiteout(&self, rel: &str) -> &Self {
        let shared = self.work.join("work/#wh");
        if !shared.exists() {
            mknod(&shared, FileType::CharacterDevice, 0, 0);
        }
        self.parent(rel);
        fs::hard_link(&shared, self.at(rel)).unwrap();
        self
    }

    pub(super) fn link(&self, from: &str, to: &str) -> &Self {
        self.parent(to);
        fs::hard_link(self.at(from), self.at(to)).unwrap();
        self
    }
}

fn mknod(path: &Path, kind: FileType, major: u32, minor: u32) {
    rfs::mknodat(CWD, path, kind, Mode::empty(), rfs::makedev(major, minor)).unwrap();
}

fn statx(path: &Path) -> rfs::Statx {
    let what = StatxFlags::BASIC_STATS | StatxFlags::BTIME;
    rfs::statx(CWD, path, AtFlags::SYMLINK_NOFOLLOW, what).unwrap()
}

/// Waits (up to a deadline) until an entry born now in `dir` is born
/// strictly after every entry of `changed` last changed: the file system's
/// clock has moved past them, so an upper entry made next is younger.
pub(super) fn tick_past(dir: &Path, changed: &[PathBuf]) {
    let last = changed
        .iter()
        .map(|p| statx(p).stx_ctime)
        .map(|t| (t.tv_sec, t.tv_nsec))
        .max()
        .unwrap();
    let probe = dir.join(".tick");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        fs::write(&probe, "").unwrap();
        let born = statx(&probe).stx_btime;
        fs::remove_file(&probe).unwrap();
        if (born.tv_sec, born.tv_nsec) > last {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the clock never moved past {last:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Every host file of the fixture (to tick past).
pub(super) fn host_files(fx: &Fx) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = HOST.iter().map(|(f, _)| fx.host.join(f)).collect();
    v.push(fx.host.join("src/link"));
    v
}

impl Fx {
    pub(super) fn session(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// The changes the upper at `upper` makes, as (path, op, link).
    fn changes_of(&self, upper: &Path, ns: XattrNs) -> Vec<(String, Op, Option<String>)> {
        let base = Tree::from_files(&self.grant.files);
        let mut fin = Tree::from_files(&self.grant.files);
        let host = HostRoot::open(&self.host).unwrap();
        read_upper(upper, ns, &host, &mut fin).unwrap();
        changes(&base, &fin)
            .into_iter()
            .map(|c| (c.path, c.op, c.link))
            .collect()
    }

    /// The patch set of a session, by path.
    pub(super) fn patches(&self, session: &Path) -> Vec<WorkspacePatch> {
        build(&self.grant, session, |_, _| Ok(())).unwrap().patches
    }
}

fn ops(list: &[(&str, Op)]) -> Vec<(String, Op, Option<String>)> {
    list.iter()
        .map(|(p, o)| (p.to_string(), *o, None))
        .collect()
}

fn hash(s: &str) -> Option<String> {
    Some(crate::patch::set::hash_hex(s.as_bytes()))
}

/// Each row of the research note's table (§3), in one upper.
#[test]
fn every_agent_action_becomes_its_change() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    up.dir("src")
        .xattr("src", "trusted.overlay.origin", b"")
        .xattr("src", "trusted.overlay.impure", b"y")
        // echo new > src/new.txt
        .file("src/new.txt", "new\n", 0o644)
        // echo more >> src/b.txt
        .file("src/b.txt", "beta\nmore\n", 0o644)
        .xattr("src/b.txt", "trusted.overlay.origin", b"")
        // chmod 755 docs/readme.md (a full copy-up)
        .file("docs/readme.md", "read me\n", 0o755)
        // touch keep.txt: a full copy-up, same content
        .file("keep.txt", "keep\n", 0o644)
        // : > src/c.txt (an empty regular file, not a whiteout)
        .file("src/c.txt", "", 0o644)
        // rm a.txt: a whiteout sharing its inode with the others
        .whiteout("a.txt")
        // rm -rf src/sub && mkdir src/sub && echo x > src/sub/x.txt
        .opaque("src/sub")
        .file("src/sub/x.txt", "x\n", 0o644)
        // mv src/link src/link2: the copy keeps its origin, the old name a whiteout
        .symlink("src/link2", "b.txt")
        .whiteout("src/link");
    assert!(statx(&up.at("a.txt")).stx_nlink >= 3);
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        ops(&[
            ("a.txt", Op::Delete),
            ("docs/readme.md", Op::Update),
            ("src/b.txt", Op::Update),
            ("src/c.txt", Op::Update),
            ("src/link", Op::Delete),
            ("src/link2", Op::Create),
            ("src/new.txt", Op::Create),
            ("src/sub/d.txt", Op::Delete),
            ("src/sub/e.txt", Op::Delete),
            ("src/sub/x.txt", Op::Create),
        ])
    );
}

/// `mv docs docs2` of a host directory: rename(2) is EXDEV, so mv copies
/// into a fresh directory and the old name becomes a whiteout.
#[test]
fn a_copied_directory_is_deletes_plus_creates() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    up.file("docs2/readme.md", "read me\n", 0o644)
        .file("docs2/guide.md", "guide\n", 0o644)
        .whiteout("docs");
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        ops(&[
            ("docs/guide.md", Op::Delete),
            ("docs/readme.md", Op::Delete),
            ("docs2/guide.md", Op::Create),
            ("docs2/readme.md", Op::Create),
        ])
    );
}

#[test]
fn a_file_that_became_a_directory_and_back() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    // rm src/f.txt; mkdir src/f.txt; echo > src/f.txt/in.txt
    up.opaque("src/f.txt")
        .file("src/f.txt/in.txt", "in\n", 0o644)
        // rm -rf src/sub; echo > src/sub
        .file("src/sub", "now a file\n", 0o644);
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        ops(&[
            ("src/f.txt", Op::Delete),
            ("src/f.txt/in.txt", Op::Create),
            ("src/sub", Op::Create),
            ("src/sub/d.txt", Op::Delete),
            ("src/sub/e.txt", Op::Delete),
        ])
    );
}

/// `rm -rf src && mkdir -p src/sub && echo d > src/sub/d.txt`: beneath an
/// opaque directory the lower is never merged, not even into a directory
/// of its own name, and what it hid has the opaque directory's birth as
/// the time the agent last saw it.
#[test]
fn beneath_an_opaque_directory_nothing_of_the_lower_is_merged() {
    let fx = fixture(&[]);
    let s = fx.session("k");
    let up = Upper::new(&s, XattrNs::Trusted);
    tick_past(&up.dir, &host_files(&fx));
    up.opaque("src");
    // The host changes after the delete, before the new file is made.
    fs::write(fx.host.join("src/sub/d.txt"), "DELTA\n").unwrap();
    tick_past(&up.dir, &[fx.host.join("src/sub/d.txt")]);
    up.file("src/sub/d.txt", "new d\n", 0o644);
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        ops(&[
            ("src/b.txt", Op::Delete),
            ("src/c.txt", Op::Delete),
            ("src/f.txt", Op::Delete),
            ("src/link", Op::Delete),
            ("src/sub/d.txt", Op::Update),
            ("src/sub/e.txt", Op::Delete),
        ])
    );
    let ps = fx.patches(&s);
    let base = |path: &str| ps.iter().find(|p| p.path == path).unwrap().base.clone();
    assert_eq!(base("src/sub/d.txt"), None, "changed after the delete");
    assert_eq!(base("src/sub/e.txt"), hash("epsilon\n"));
}

/// As root the agent can set `user.overlay.opaque`, and through the
/// overlay a `trusted.overlay.opaque` it sets lands escaped: both are its
/// own xattrs, never marks. In a `user` layer it is the other way round.
#[test]
fn only_the_layers_namespace_is_believed() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    up.dir("src/sub")
        .xattr("src/sub", "user.overlay.opaque", b"y")
        .dir("docs")
        .xattr("docs", "trusted.overlay.overlay.opaque", b"y")
        // Empty files marked as whiteouts in the wrong or an escaped name.
        .file("a.txt", "", 0o644)
        .xattr("a.txt", "user.overlay.whiteout", b"")
        .file("keep.txt", "", 0o644)
        .xattr("keep.txt", "trusted.overlay.overlay.whiteout", b"");
    let trusted = ops(&[("a.txt", Op::Update), ("keep.txt", Op::Update)]);
    assert_eq!(fx.changes_of(&up.dir, XattrNs::Trusted), trusted);
    // Read as a user layer, the user marks are the marks.
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::User),
        ops(&[
            ("a.txt", Op::Delete),
            ("keep.txt", Op::Update),
            ("src/sub/d.txt", Op::Delete),
            ("src/sub/e.txt", Op::Delete),
        ])
    );
}

/// An empty regular file with `<ns>.overlay.whiteout` is a whiteout too, a
/// lone 0/0 device (nlink 1, from RENAME_WHITEOUT) as well; an opaque mark
/// on the upper's root means nothing (overlayfs ignores it there).
#[test]
fn every_form_of_whiteout_deletes_and_the_root_is_never_opaque() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    up.file("a.txt", "", 0o644)
        .xattr("a.txt", "trusted.overlay.whiteout", b"")
        .dir("src")
        .xattr("", "trusted.overlay.opaque", b"y");
    mknod(&up.at("src/b.txt"), FileType::CharacterDevice, 0, 0);
    assert_eq!(statx(&up.at("src/b.txt")).stx_nlink, 1);
    // A whiteout of a name the grant does not have changes nothing.
    mknod(&up.at("src/nothing"), FileType::CharacterDevice, 0, 0);
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        ops(&[("a.txt", Op::Delete), ("src/b.txt", Op::Delete)])
    );
}

#[test]
fn devices_fifos_and_sockets_are_refused_by_path() {
    let fx = fixture(&[]);
    let host = HostRoot::open(&fx.host).unwrap();
    type Make = Box<dyn Fn(&Path)>;
    let cases: [(&str, &str, Make); 4] = [
        (
            "src/null",
            "a character device",
            Box::new(|p| mknod(p, FileType::CharacterDevice, 1, 3)),
        ),
        (
            "src/disk",
            "a block device",
            Box::new(|p| mknod(p, FileType::BlockDevice, 7, 0)),
        ),
        (
            "src/pipe",
            "a FIFO",
            Box::new(|p| mknod(p, FileType::Fifo, 0, 0)),
        ),
        (
            "src/sock",
            "a socket",
            Box::new(|p| drop(std::os::unix::net::UnixListener::bind(p).unwrap())),
        ),
    ];
    for (i, (rel, kind, make)) in cases.iter().enumerate() {
        let up = Upper::new(&fx.session(&format!("k{i}")), XattrNs::Trusted);
        up.dir("src");
        make(&up.at(rel));
        let mut fin = Tree::from_files(&fx.grant.files);
        let e = read_upper(&up.dir, XattrNs::Trusted, &host, &mut fin)
            .unwrap_err()
            .to_string();
        assert!(e.contains(rel) && e.contains(kind), "{rel}: {e}");
        assert!(
            e.contains("cannot be committed") && e.contains("remove it in the view"),
            "{rel}: {e}"
        );
    }
}

/// Every unfit entry of an upper is named in one error, sorted, with what
/// it is (a name that is not UTF-8 too, its subtree unread): one `wopfs
/// diff` shows the agent or the approver all of them, and the patch set
/// is refused as a whole. Past 20 the rest are counted.
#[test]
fn every_unfit_entry_is_named_in_one_error() {
    use std::os::unix::ffi::OsStrExt;
    let fx = fixture(&[]);
    let host = HostRoot::open(&fx.host).unwrap();
    let session = fx.session("k");
    let up = Upper::new(&session, XattrNs::Trusted);
    up.file("src/new.txt", "new\n", 0o644)
        .whiteout("keep.txt")
        .dir("docs");
    mknod(&up.at("src/pipe"), FileType::Fifo, 0, 0);
    mknod(&up.at("docs/null"), FileType::CharacterDevice, 1, 3);
    drop(std::os::unix::net::UnixListener::bind(up.at("sock")).unwrap());
    let bad = up
        .dir
        .join("src")
        .join(std::ffi::OsStr::from_bytes(b"bad\xff"));
    fs::create_dir(&bad).unwrap();
    mknod(&bad.join("unseen"), FileType::Fifo, 0, 0);
    let mut fin = Tree::from_files(&fx.grant.files);
    let e = read_upper(&up.dir, XattrNs::Trusted, &host, &mut fin)
        .unwrap_err()
        .to_string();
    let listed = "docs/null (a character device), sock (a socket), src/bad\u{fffd} (a name that is not UTF-8), src/pipe (a FIFO)";
    assert!(e.contains(listed), "{e}");
    assert!(
        e.contains("the view holds 4 entries that cannot be committed"),
        "{e}"
    );
    assert!(e.contains("remove them in the view (or rename"), "{e}");
    assert!(!e.contains("unseen"), "{e}");
    // The set, and so diff, export and commit, are refused with it.
    let set = build(&fx.grant, &session, |_, _| Ok(()))
        .unwrap_err()
        .to_string();
    assert!(set.contains(listed), "{set}");

    let up = Upper::new(&fx.session("many"), XattrNs::Trusted);
    up.dir("src");
    for i in 0..25 {
        mknod(&up.at(&format!("src/p{i:02}")), FileType::Fifo, 0, 0);
    }
    let mut fin = Tree::from_files(&fx.grant.files);
    let e = read_upper(&up.dir, XattrNs::Trusted, &host, &mut fin)
        .unwrap_err()
        .to_string();
    assert!(e.contains("25 entries"), "{e}");
    assert!(e.contains("src/p19 (a FIFO), and 5 more;"), "{e}");
    assert!(!e.contains("src/p20"), "{e}");
}

/// touch, chmod to the same mode, an xattr of the agent's, a symlink
/// copied up: the same kind, mode, size and bytes as the host are no
/// change. One byte or one mode bit more is.
#[test]
fn copy_ups_that_change_nothing_are_dropped() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    up.file("keep.txt", "keep\n", 0o644)
        .file("a.txt", "alpha\n", 0o644)
        .xattr("a.txt", "user.foo", b"bar")
        .symlink("src/link", "b.txt")
        // Same size, other bytes; same bytes, other mode.
        .file("src/b.txt", "BETA\n", 0o644)
        .file("src/c.txt", "gamma\n", 0o600);
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        ops(&[("src/b.txt", Op::Update), ("src/c.txt", Op::Update)])
    );
}

/// `ln src/c.txt src/c2.txt`: one inode under several names is one content
/// patch and link patches, though its content is the host's (the names
/// are the change); whiteouts share an inode too, and are not links.
#[test]
fn hard_links_are_one_file_and_whiteouts_are_not() {
    let fx = fixture(&[]);
    let up = Upper::new(&fx.session("k"), XattrNs::Trusted);
    up.file("src/c.txt", "gamma\n", 0o644)
        .link("src/c.txt", "src/c2.txt")
        .link("src/c.txt", "src/sub/d.txt")
        .whiteout("a.txt")
        .whiteout("keep.txt");
    let c = Some("src/c.txt".to_string());
    assert_eq!(
        fx.changes_of(&up.dir, XattrNs::Trusted),
        vec![
            ("a.txt".into(), Op::Delete, None),
            ("keep.txt".into(), Op::Delete, None),
            ("src/c.txt".into(), Op::Update, None),
            ("src/c2.txt".into(), Op::Create, c.clone()),
            ("src/sub/d.txt".into(), Op::Update, c),
        ]
    );
    let s = fx.session("k");
    let patches = fx.patches(&s);
    let first = &patches[2];
    assert_eq!(first.blob, hash("gamma\n"));
    for p in &patches[3..] {
        assert_eq!(p.link.as_deref(), Some("src/c.txt"), "{}", p.path);
        assert_eq!(p.blob, first.blob);
    }
}

/// The base of a covered host path is its content now iff the host entry
/// last changed strictly before the upper entry was born; otherwise it is
/// unknown.
#[test]
fn bases_come_from_the_birth_of_the_upper_entry() {
    let fx = fixture(&[]);
    let s = fx.session("k");
    let up = Upper::new(&s, XattrNs::Trusted);
    tick_past(&up.dir, &host_files(&fx));
    // Made after every host change: the bases are what the host had.
    up.file("src/b.txt", "beta\nmore\n", 0o644)
        .whiteout("a.txt")
        .opaque("src/sub")
        .whiteout("src/link");
    let base = |ps: &[WorkspacePatch], path: &str| {
        ps.iter().find(|p| p.path == path).unwrap().base.clone()
    };
    let ps = fx.patches(&s);
    assert_eq!(base(&ps, "src/b.txt"), hash("beta\n"));
    assert_eq!(base(&ps, "a.txt"), hash("alpha\n"));
    assert_eq!(base(&ps, "src/sub/d.txt"), hash("delta\n"));
    assert_eq!(base(&ps, "src/link"), hash("b.txt"));
    // The host changes after the upper entries were born: unknown, even
    // where it changes back to the same bytes.
    fs::write(fx.host.join("src/b.txt"), "beta\n").unwrap();
    fs::write(fx.host.join("a.txt"), "ALPHA\n").unwrap();
    fs::write(fx.host.join("src/sub/d.txt"), "DELTA\n").unwrap();
    let ps = fx.patches(&s);
    assert_eq!(base(&ps, "src/b.txt"), None);
    assert_eq!(base(&ps, "a.txt"), None);
    assert_eq!(base(&ps, "src/sub/d.txt"), None);
    assert_eq!(base(&ps, "src/sub/e.txt"), hash("epsilon\n"));
    assert_eq!(base(&ps, "src/link"), hash("b.txt"));
}

/// A kernel session that never mounted has no upper: nothing changed.
#[test]
fn a_kernel_session_without_an_upper_has_no_changes() {
    let fx = fixture(&[]);
    let s = fx.session("k");
    Upper::new(&s, XattrNs::Trusted);
    fs::remove_dir_all(engine::kernel_dir(&s)).unwrap();
    assert!(fx.patches(&s).is_empty());
    assert!(crate::patch::pending(&fx.grant, &s).unwrap().is_empty());
}
