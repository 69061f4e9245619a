//! The host tree every case starts from, its grant, and the same tree as
//! the model and as a plain directory (what the view shows of it).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use wopfs::grant::{resolve, Grant, GrantRequest};
use wopfs::policy::{Mode, Policy};

use crate::ops::Prefixes;
use crate::reference::{Inode, Model};
use crate::walk::Kind;

struct HostEntry {
    path: &'static str,
    kind: Kind,
    /// A file's data or a symlink's target.
    data: &'static str,
    perm: u32,
    xattrs: &'static [(&'static str, &'static str)],
    /// Denied by the grant (`.env` is a built-in deny): never in the view.
    hidden: bool,
}

const fn file(path: &'static str, data: &'static str, perm: u32) -> HostEntry {
    HostEntry {
        path,
        kind: Kind::File,
        data,
        perm,
        xattrs: &[],
        hidden: false,
    }
}

const fn dir(path: &'static str) -> HostEntry {
    HostEntry {
        path,
        kind: Kind::Dir,
        data: "",
        perm: 0o755,
        xattrs: &[],
        hidden: false,
    }
}

const fn link(path: &'static str, target: &'static str) -> HostEntry {
    HostEntry {
        path,
        kind: Kind::Symlink,
        data: target,
        perm: 0o777,
        xattrs: &[],
        hidden: false,
    }
}

const fn secret(path: &'static str) -> HostEntry {
    HostEntry {
        hidden: true,
        ..file(path, "SECRET=1\n", 0o600)
    }
}

/// Parents before children. `h` holds only a hidden file, so the view
/// does not show it either (it holds granted files and their directories).
const HOST: &[HostEntry] = &[
    HostEntry {
        xattrs: &[("user.x", "host")],
        ..file("a", "alpha\n", 0o644)
    },
    link("b", "a"),
    dir("d"),
    file("d/a", "da\n", 0o600),
    link("d/b", "nowhere"),
    dir("d/e"),
    file("d/e/a", "dea\n", 0o755),
    dir("ro"),
    file("ro/a", "roa\n", 0o644),
    secret(".env"),
    secret("d/.env"),
    HostEntry {
        hidden: true,
        ..dir("h")
    },
    secret("h/.env"),
];

/// The root's permission bits (the view shows the host root's).
pub const ROOT_PERM: u32 = 0o755;

/// Writes the host tree under `root` (an existing directory), hidden
/// entries only if `hidden`.
pub fn write_tree(root: &Path, hidden: bool) {
    fs::set_permissions(root, fs::Permissions::from_mode(ROOT_PERM)).expect("chmod root");
    for e in HOST.iter().filter(|e| hidden || !e.hidden) {
        let p = root.join(e.path);
        match e.kind {
            Kind::Dir => fs::create_dir(&p).expect("mkdir"),
            Kind::File => fs::write(&p, e.data).expect("write"),
            Kind::Symlink => symlink(e.data, &p).expect("symlink"),
        }
        if e.kind != Kind::Symlink {
            fs::set_permissions(&p, fs::Permissions::from_mode(e.perm)).expect("chmod");
        }
        for (k, v) in e.xattrs {
            rustix::fs::lsetxattr(&p, *k, v.as_bytes(), rustix::fs::XattrFlags::empty())
                .expect("setxattr");
        }
    }
}

/// The model of what the view shows at the start.
pub fn model(prefixes: Prefixes) -> Model {
    let entries = HOST
        .iter()
        .filter(|e| !e.hidden)
        .map(|e| {
            let inode = Inode {
                kind: e.kind,
                perm: e.perm,
                data: e.data.as_bytes().to_vec(),
                xattrs: e
                    .xattrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect::<BTreeMap<_, _>>(),
            };
            (e.path.to_string(), inode)
        })
        .collect();
    Model::new(ROOT_PERM, entries, prefixes)
}

/// A host tree, its grant (overlay mode) and a session dir.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub host: PathBuf,
    pub session: PathBuf,
    pub grant: Grant,
}

/// A temp dir on tmpfs where there is one (`WOPFS_TEST_SHM`, as
/// `scripts/test.sh` names it, or `/dev/shm`): each case opens the
/// overlay a few times, and every open fsyncs its journal, which costs a
/// disk flush on a disk filesystem. Elsewhere, `TMPDIR`.
fn temp_dir() -> tempfile::TempDir {
    let shm = std::env::var_os("WOPFS_TEST_SHM").filter(|v| !v.is_empty());
    let shm = shm.as_deref().map_or(Path::new("/dev/shm"), Path::new);
    let tmpfs = rustix::fs::statfs(shm)
        .is_ok_and(|s| i128::from(s.f_type) == i128::from(libc::TMPFS_MAGIC));
    let on_shm = tmpfs.then(|| {
        tempfile::Builder::new()
            .prefix("wopfs-model-")
            .tempdir_in(shm)
    });
    match on_shm {
        Some(Ok(d)) => d,
        _ => tempfile::tempdir().expect("tempdir"),
    }
}

impl Fixture {
    pub fn new(prefixes: Prefixes) -> Fixture {
        let dir = temp_dir();
        let host = dir.path().join("host");
        fs::create_dir(&host).expect("mkdir host");
        write_tree(&host, true);
        let req = GrantRequest {
            root: host.clone(),
            allow: vec![],
            deny: vec![],
            write_prefixes: prefixes.list(),
            mode: Mode::ReadWriteOverlay,
            purpose: "model test".into(),
            reason: None,
            ttl: None,
            max_files: None,
            include_ignored: false,
        };
        let policy = Policy::builtin_default().expect("built-in policy");
        let grant = resolve(&req, &policy, &wopfs::clock::SystemClock).expect("grant");
        let session = dir.path().join("session");
        fs::create_dir(&session).expect("mkdir session");
        Fixture {
            dir,
            host,
            session,
            grant,
        }
    }

    /// A plain directory holding what the view shows at the start.
    pub fn plain_copy(&self) -> PathBuf {
        let p = self.dir.path().join("plain");
        fs::create_dir(&p).expect("mkdir plain");
        write_tree(&p, false);
        p
    }
}
