//! Kernel sessions through everything that reads a session: the patch set
//! (the same as the FUSE engine's for the same agent actions), the commit
//! (unknown bases, hidden names), and the rebase after a partial commit.

use std::ffi::OsStr;
use std::fs;

use super::engine::XattrNs;
use super::kernel_tests::{fixture, host_files, tick_past, Fx, Upper};
use crate::controller::{self, CommitOptions};
use crate::error::ErrorKind;
use crate::grant::Grant;
use crate::patch::set::Loaded;
use crate::patch::Op;
use crate::state::StateDir;
use crate::view::{Caller, Lookup, SetAttr, View, ViewOptions, ROOT};

const ROOTUSER: Caller = Caller { uid: 0, gid: 0 };

fn no_backing(_: &fs::File) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

fn ino(v: &View, path: &str) -> u64 {
    let mut ino = ROOT;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        ino = match v.lookup(ino, OsStr::new(seg)).unwrap() {
            Lookup::Found(e) => e.ino,
            Lookup::Absent { .. } => panic!("{path}: no {seg}"),
        };
    }
    ino
}

fn split(path: &str) -> (&str, &OsStr) {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    (dir, OsStr::new(name))
}

fn create(v: &View, path: &str, data: &[u8]) {
    let (dir, name) = split(path);
    let (_, o) = v
        .create(ino(v, dir), name, 0o644, ROOTUSER, no_backing)
        .unwrap();
    v.write(o.fh, 0, data, false).unwrap();
    v.release(o.fh);
}

fn unlink(v: &View, path: &str) {
    let (dir, name) = split(path);
    v.unlink(ino(v, dir), name).unwrap();
}

fn mkdir(v: &View, path: &str) {
    let (dir, name) = split(path);
    v.mkdir(ino(v, dir), name, 0o755, ROOTUSER).unwrap();
}

fn rename(v: &View, from: &str, to: &str) {
    let ((fd, fname), (td, tname)) = (split(from), split(to));
    v.rename(ino(v, fd), fname, ino(v, td), tname, 0).unwrap();
}

fn setattr(v: &View, path: &str, set: SetAttr) {
    v.setattr(ino(v, path), None, set, ROOTUSER).unwrap();
}

fn no_change() -> SetAttr {
    SetAttr {
        mode: None,
        uid: None,
        gid: None,
        size: None,
        atime: None,
        mtime: None,
    }
}

/// The scripted session on the FUSE engine's core.
fn fuse_session(fx: &Fx, session: &std::path::Path) {
    fs::create_dir_all(session).unwrap();
    let v = View::new(&fx.grant, Some(session), ViewOptions::default()).unwrap();
    create(&v, "src/new.txt", b"new\n");
    let o = v
        .open(ino(&v, "src/b.txt"), libc::O_WRONLY, no_backing)
        .unwrap();
    v.write(o.fh, 5, b"more\n", false).unwrap();
    v.release(o.fh);
    let chmod = SetAttr {
        mode: Some(0o755),
        ..no_change()
    };
    setattr(&v, "docs/readme.md", chmod);
    unlink(&v, "a.txt");
    unlink(&v, "src/sub/d.txt");
    unlink(&v, "src/sub/e.txt");
    v.rmdir(ino(&v, "src"), OsStr::new("sub")).unwrap();
    mkdir(&v, "src/sub");
    create(&v, "src/sub/x.txt", b"x\n");
    rename(&v, "src/link", "src/link2");
    unlink(&v, "src/f.txt");
    mkdir(&v, "src/f.txt");
    create(&v, "src/f.txt/in.txt", b"in\n");
    v.link(ino(&v, "src/c.txt"), ino(&v, "src"), OsStr::new("c2.txt"))
        .unwrap();
    v.symlink(ino(&v, "src"), OsStr::new("newlink"), b"new.txt", ROOTUSER)
        .unwrap();
    rename(&v, "docs", "docs2");
}

/// What overlayfs leaves in the upper for the same session.
fn kernel_session(fx: &Fx, session: &std::path::Path) {
    let up = Upper::new(session, XattrNs::Trusted);
    tick_past(&up.dir, &host_files(fx));
    up.dir("src")
        .xattr("src", "trusted.overlay.origin", b"")
        .xattr("src", "trusted.overlay.impure", b"y")
        .file("src/new.txt", "new\n", 0o644)
        .file("src/b.txt", "beta\nmore\n", 0o644)
        // chmod, then the directory copied by mv (EXDEV).
        .file("docs2/readme.md", "read me\n", 0o755)
        .file("docs2/guide.md", "guide\n", 0o644)
        .whiteout("docs")
        .whiteout("a.txt")
        .opaque("src/sub")
        .file("src/sub/x.txt", "x\n", 0o644)
        .symlink("src/link2", "b.txt")
        .xattr("src/link2", "trusted.overlay.origin", b"")
        .whiteout("src/link")
        .opaque("src/f.txt")
        .file("src/f.txt/in.txt", "in\n", 0o644)
        .file("src/c.txt", "gamma\n", 0o644)
        .link("src/c.txt", "src/c2.txt")
        .symlink("src/newlink", "new.txt");
}

/// The differential test on the core: the same agent actions give the
/// same patch set on both engines, bases and hard links included. (Not a
/// `touch`: the FUSE engine copies the file up and reports an update of
/// the same content, where the kernel engine's no-op copy-up is no change.)
#[test]
fn a_kernel_session_gives_the_fuse_sessions_patch_set() {
    let fx = fixture(&[]);
    let (fuse, kernel) = (fx.session("fuse"), fx.session("kernel"));
    fuse_session(&fx, &fuse);
    kernel_session(&fx, &kernel);
    let f = Loaded::from_session(&fx.grant, &fuse).unwrap().set.patches;
    let k = Loaded::from_session(&fx.grant, &kernel)
        .unwrap()
        .set
        .patches;
    let paths: Vec<(&str, Op)> = k.iter().map(|p| (p.path.as_str(), p.operation)).collect();
    assert_eq!(
        paths,
        vec![
            ("a.txt", Op::Delete),
            ("docs/guide.md", Op::Delete),
            ("docs/readme.md", Op::Delete),
            ("docs2/guide.md", Op::Create),
            ("docs2/readme.md", Op::Create),
            ("src/b.txt", Op::Update),
            ("src/c.txt", Op::Update),
            ("src/c2.txt", Op::Create),
            ("src/f.txt", Op::Delete),
            ("src/f.txt/in.txt", Op::Create),
            ("src/link", Op::Delete),
            ("src/link2", Op::Create),
            ("src/new.txt", Op::Create),
            ("src/newlink", Op::Create),
            ("src/sub/d.txt", Op::Delete),
            ("src/sub/e.txt", Op::Delete),
            ("src/sub/x.txt", Op::Create),
        ]
    );
    assert!(k
        .iter()
        .all(|p| p.base.is_some() == (p.operation != Op::Create)));
    for (a, b) in f.iter().zip(&k) {
        assert_eq!(
            serde_json::to_value(a).unwrap(),
            serde_json::to_value(b).unwrap()
        );
    }
    assert_eq!(f.len(), k.len());
}

/// A kernel session recorded in a state dir, for the controller.
fn recorded(fx: &Fx) -> (StateDir, Grant, Upper) {
    let state = StateDir::open(&fx.session("state")).unwrap();
    let grant = state.create_grant(fx.grant.clone()).unwrap();
    let up = Upper::new(&state.session_dir(&grant.grant_id), XattrNs::Trusted);
    (state, grant, up)
}

fn commit(
    state: &StateDir,
    grant: &Grant,
    paths: &[&str],
) -> crate::error::Result<controller::Outcome> {
    let opts = CommitOptions {
        yes: true,
        dry_run: false,
        paths: paths.iter().map(|p| p.to_string()).collect(),
        approver: Some("tester".into()),
        from: None,
        confirm: None,
        progress: None,
    };
    controller::commit(state, grant, opts)
}

fn read(fx: &Fx, path: &str) -> String {
    fs::read_to_string(fx.host.join(path)).unwrap_or_else(|_| "<absent>".into())
}

/// A host file changed after the agent's copy was made has an unknown
/// base: never written over, unless the host already holds the result.
#[test]
fn an_unknown_base_is_a_conflict_unless_the_host_holds_the_result() {
    let fx = fixture(&[]);
    let (state, grant, up) = recorded(&fx);
    // A new content and mode (the mode keeps it a change below).
    up.file("src/b.txt", "beta\nmore\n", 0o600)
        .whiteout("a.txt");
    fs::write(fx.host.join("src/b.txt"), "BETA\n").unwrap();
    fs::write(fx.host.join("a.txt"), "ALPHA\n").unwrap();
    let e = commit(&state, &grant, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("src/b.txt") && msg.contains("a.txt") && msg.contains("unknown"),
        "{msg}"
    );
    assert_eq!(
        (read(&fx, "src/b.txt"), read(&fx, "a.txt")),
        ("BETA\n".into(), "ALPHA\n".into())
    );

    // The host comes to hold the session's contents: nothing is written.
    fs::write(fx.host.join("src/b.txt"), "beta\nmore\n").unwrap();
    fs::remove_file(fx.host.join("a.txt")).unwrap();
    let out = commit(&state, &grant, &[]).unwrap();
    assert!(out.applied.is_empty(), "{:?}", out.applied);
    assert_eq!(
        out.skipped,
        vec!["a.txt".to_string(), "src/b.txt".to_string()]
    );
}

/// A name the grant hides, made by the agent (the overlay cannot refuse
/// it when it happens): refused at commit, as a set from elsewhere is.
#[test]
fn a_hidden_name_made_in_the_upper_is_refused_at_commit() {
    let fx = fixture(&["secrets"]);
    let (state, grant, up) = recorded(&fx);
    up.file("secrets/key.txt", "mine", 0o644);
    let e = commit(&state, &grant, &[]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Forbidden, "{e}");
    assert!(e.to_string().contains("secrets/key.txt"), "{e}");
    assert_eq!(read(&fx, "secrets/key.txt"), "hidden");
}

/// After a partial commit the committed paths are no longer pending: their
/// upper entries go where the lower shows through, and stay (as no-op
/// copy-ups) beneath an opaque directory. A later edit gets a known base.
#[test]
fn a_partial_commit_leaves_only_the_rest_pending() {
    let fx = fixture(&[]);
    let (state, grant, up) = recorded(&fx);
    tick_past(&up.dir, &host_files(&fx));
    up.file("src/new.txt", "new\n", 0o644)
        .file("src/b.txt", "beta\nmore\n", 0o644)
        .whiteout("a.txt")
        .opaque("src/sub")
        .file("src/sub/x.txt", "x\n", 0o644)
        .file("src/c.txt", "gamma\n", 0o644)
        .link("src/c.txt", "src/c2.txt");
    let committed = [
        "src/new.txt",
        "src/b.txt",
        "src/sub/x.txt",
        "src/c.txt",
        "src/c2.txt",
    ];
    let out = commit(&state, &grant, &committed).unwrap();
    assert_eq!(out.applied.len(), 5, "{:?}", out.applied);
    assert_eq!(read(&fx, "src/b.txt"), "beta\nmore\n");
    for gone in ["src/new.txt", "src/b.txt", "src/c.txt", "src/c2.txt"] {
        assert!(!up.dir.join(gone).exists(), "{gone} is still in the upper");
    }
    assert!(up.dir.join("src/sub/x.txt").exists());

    let grant = state.load_grant(&grant.grant_id).unwrap();
    let session = state.session_dir(&grant.grant_id);
    let pending: Vec<(String, Op)> = crate::patch::pending(&grant, &session)
        .unwrap()
        .into_iter()
        .map(|p| (p.path, p.op))
        .collect();
    let want = [
        ("a.txt", Op::Delete),
        ("src/sub/d.txt", Op::Delete),
        ("src/sub/e.txt", Op::Delete),
    ];
    assert_eq!(pending, want.map(|(p, o)| (p.to_string(), o)));

    // The agent edits a committed file again: a fresh copy-up.
    tick_past(&up.dir, &[fx.host.join("src/b.txt")]);
    up.file("src/b.txt", "beta\nmore\nagain\n", 0o644);
    let set = Loaded::from_session(&grant, &session).unwrap().set;
    let b = set.patches.iter().find(|p| p.path == "src/b.txt").unwrap();
    assert_eq!(
        b.base.as_deref(),
        Some(crate::patch::set::hash_hex(b"beta\nmore\n").as_str())
    );
    commit(&state, &grant, &[]).unwrap();
    assert_eq!(read(&fx, "src/b.txt"), "beta\nmore\nagain\n");
    assert_eq!(read(&fx, "a.txt"), "<absent>");
}
