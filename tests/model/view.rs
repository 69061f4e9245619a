//! Drives the view core (`wopfs::view::View`) as the kernel would over
//! FUSE, through its public methods only: paths are walked with
//! `lookup`/`readlink` (`walk.rs`), then the one request the kernel would
//! send is made. Also reads the whole view back as a `Picture`.

use std::ffi::OsStr;

use wopfs::view::{self, Caller, Ino, SetAttr, View, ViewOptions, ROOT};

use crate::fixture::Fixture;
use crate::ops::{self, Op};
use crate::picture::{self, Picture};
use crate::reference::{join, Model};
use crate::walk::{self, Kind, Namespace};

const ROOT_USER: Caller = Caller { uid: 0, gid: 0 };

/// The errno of a core answer: the one place that knows the core's error
/// type.
pub fn errno<T>(r: view::Result<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno().0)
}

/// `lookup` as the kernel sees it: an absent name (a negative entry) is
/// ENOENT.
fn lookup(v: &View, dir: Ino, n: &str) -> Result<view::Attr, i32> {
    match errno(v.lookup(dir, name(n)))? {
        view::Lookup::Found(e) => Ok(e.attr),
        view::Lookup::Absent { .. } => Err(libc::ENOENT),
    }
}

/// Opens are served by the daemon here: no passthrough backing file.
fn no_backing(_: &std::fs::File) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

fn kind(k: view::Kind) -> Kind {
    match k {
        view::Kind::Dir => Kind::Dir,
        view::Kind::File => Kind::File,
        view::Kind::Symlink => Kind::Symlink,
    }
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

pub struct Core<'a> {
    fx: &'a Fixture,
    /// Always `Some` but during a reopen (one overlay per session at a time).
    view: Option<View>,
}

impl Namespace for Core<'_> {
    type Id = Ino;

    fn root(&self) -> Ino {
        ROOT
    }

    fn lookup(&self, dir: &Ino, n: &str) -> Result<(Ino, Kind), i32> {
        lookup(self.view(), *dir, n).map(|a| (a.ino, kind(a.kind)))
    }

    fn readlink(&self, id: &Ino) -> Result<Vec<u8>, i32> {
        errno(self.view().readlink(*id))
    }
}

impl<'a> Core<'a> {
    pub fn open(fx: &'a Fixture) -> Core<'a> {
        let view = View::new(&fx.grant, Some(&fx.session), ViewOptions::default())
            .unwrap_or_else(|e| panic!("opening the view: {e}"));
        Core {
            fx,
            view: Some(view),
        }
    }

    fn view(&self) -> &View {
        self.view.as_ref().expect("a view is open")
    }

    /// Drops the view and opens it again from the session dir: the journal
    /// is replayed, then compacted (`Overlay::open`).
    pub fn reopen(&mut self) -> Result<(), String> {
        if let Some(v) = self.view.take() {
            v.shutdown();
        }
        let view = View::new(
            &self.fx.grant,
            Some(&self.fx.session),
            ViewOptions::default(),
        )
        .map_err(|e| format!("reopening the view: {e}"))?;
        self.view = Some(view);
        Ok(())
    }

    /// One operation, as the kernel would make it; the errno if refused.
    pub fn apply(&mut self, op: &Op) -> Result<(), i32> {
        let v = self.view();
        match op {
            Op::Create { path, mode } => {
                let (dir, n) = walk::resolve_parent(self, path)?;
                let (_, o) =
                    errno(v.create(dir, name(&n), libc::S_IFREG | mode, ROOT_USER, no_backing))?;
                v.release(o.fh);
                Ok(())
            }
            Op::Write { path, offset, data } => {
                let (ino, _) = walk::resolve(self, path, false)?;
                let o = errno(v.open(ino, libc::O_WRONLY | libc::O_NOFOLLOW, no_backing))?;
                // write(2) of nothing never reaches the filesystem.
                let r = match data.is_empty() {
                    true => Ok(()),
                    false => errno(v.write(o.fh, *offset, data, false)).map(drop),
                };
                v.release(o.fh);
                r
            }
            Op::Truncate { path, size } => {
                let (ino, _) = walk::resolve(self, path, true)?;
                let set = SetAttr {
                    size: Some(*size),
                    ..SetAttr::default()
                };
                errno(v.setattr(ino, None, set, ROOT_USER)).map(drop)
            }
            Op::Chmod { path, mode } => {
                let (ino, k) = walk::resolve(self, path, true)?;
                // chmod(2) passes the file type along with the new bits.
                let ftype = if k == Kind::Dir {
                    libc::S_IFDIR
                } else {
                    libc::S_IFREG
                };
                let set = SetAttr {
                    mode: Some(ftype | (mode & 0o7777)),
                    ..SetAttr::default()
                };
                errno(v.setattr(ino, None, set, ROOT_USER)).map(drop)
            }
            Op::SetXattr {
                path,
                name: n,
                value,
                mode,
            } => {
                let (ino, _) = walk::resolve(self, path, true)?;
                errno(v.setxattr(ino, name(n), value, mode.flags()))
            }
            Op::Unlink { path } => {
                let (dir, n) = walk::resolve_parent(self, path)?;
                errno(v.unlink(dir, name(&n)))
            }
            Op::Rmdir { path } => {
                let (dir, n) = walk::resolve_parent(self, path)?;
                errno(v.rmdir(dir, name(&n)))
            }
            Op::Mkdir { path, mode } => {
                let (dir, n) = walk::resolve_parent(self, path)?;
                // The kernel keeps only the permission and sticky bits.
                errno(v.mkdir(dir, name(&n), mode & 0o1777, ROOT_USER)).map(drop)
            }
            Op::Symlink { path, target } => {
                let (dir, n) = walk::resolve_parent(self, path)?;
                errno(v.symlink(dir, name(&n), target.as_bytes(), ROOT_USER)).map(drop)
            }
            Op::Link { from, to } => {
                let (ino, _) = walk::resolve(self, from, false)?;
                let (dir, n) = walk::resolve_parent(self, to)?;
                errno(v.link(ino, dir, name(&n))).map(drop)
            }
            Op::Rename { from, to, mode } => {
                let (dir, n) = walk::resolve_parent(self, from)?;
                let (new_dir, new_n) = walk::resolve_parent(self, to)?;
                errno(v.rename(dir, name(&n), new_dir, name(&new_n), mode.flags()))
            }
            Op::Reopen => {
                self.reopen().unwrap_or_else(|e| panic!("{e}"));
                Ok(())
            }
        }
    }

    /// The whole view, read through `opendir`/`readdir`, `lookup`, `open`/
    /// `read`, `readlink` and `listxattr`/`getxattr`.
    pub fn picture(&self) -> Result<Picture, String> {
        let mut pic = Picture::default();
        let mut inos = Vec::new();
        self.read_dir(ROOT, "", &mut pic, &mut inos)?;
        pic.set_links(inos);
        Ok(pic)
    }

    fn read_dir(
        &self,
        dir: Ino,
        path: &str,
        pic: &mut Picture,
        inos: &mut Vec<(Ino, String)>,
    ) -> Result<(), String> {
        let v = self.view();
        let at = |what: &str, e: i32| format!("{what} {path:?}: errno {e}");
        let fh = errno(v.opendir(dir)).map_err(|e| at("opendir", e))?.fh;
        let mut listed = Vec::new();
        let mut offset = 0;
        loop {
            let batch = errno(v.readdir(dir, fh, offset));
            let batch = batch.inspect_err(|_| v.releasedir(fh));
            let batch = batch.map_err(|e| at("readdir", e))?;
            let Some((last, _)) = batch.last() else { break };
            offset = *last;
            listed.extend(batch.into_iter().map(|(_, e)| e));
        }
        v.releasedir(fh);
        for e in listed
            .into_iter()
            .filter(|e| &*e.name != "." && &*e.name != "..")
        {
            let p = join(path, &e.name);
            let a = lookup(v, dir, &e.name).map_err(|er| at("lookup", er))?;
            let listed_as = (
                e.attr.ino,
                e.attr.kind,
                e.attr.perm,
                e.attr.size,
                e.attr.nlink,
            );
            if listed_as != (a.ino, a.kind, a.perm, a.size, a.nlink) {
                return Err(format!(
                    "{p}: readdir says {listed_as:?}, lookup says {:?}",
                    (a.ino, a.kind, a.perm, a.size, a.nlink)
                ));
            }
            let k = kind(a.kind);
            let content = match k {
                Kind::Dir => vec![],
                Kind::Symlink => errno(v.readlink(a.ino)).map_err(|er| at("readlink", er))?,
                Kind::File => self.read_file(a.ino).map_err(|er| at("read", er))?,
            };
            pic.entries.insert(
                p.clone(),
                picture::Entry {
                    kind: k,
                    perm: u32::from(a.perm),
                    size: (k != Kind::Dir).then_some(a.size),
                    nlink: a.nlink,
                    content,
                    xattrs: self.user_xattrs(a.ino).map_err(|er| at("xattrs", er))?,
                },
            );
            if k == Kind::Dir {
                self.read_dir(a.ino, &p, pic, inos)?;
            } else {
                inos.push((a.ino, p));
            }
        }
        Ok(())
    }

    fn read_file(&self, ino: Ino) -> Result<Vec<u8>, i32> {
        let v = self.view();
        let o = errno(v.open(ino, libc::O_RDONLY, no_backing))?;
        let mut data = Vec::new();
        let r = loop {
            match errno(v.read(o.fh, data.len() as u64, 4096)) {
                Ok(b) if b.is_empty() => break Ok(data),
                Ok(b) => data.extend(b),
                Err(e) => break Err(e),
            }
        };
        v.release(o.fh);
        r
    }

    fn user_xattrs(&self, ino: Ino) -> Result<std::collections::BTreeMap<String, Vec<u8>>, i32> {
        let v = self.view();
        let list = errno(v.listxattr(ino, || true))?;
        let mut out = std::collections::BTreeMap::new();
        for n in list.split(|b| *b == 0).filter(|n| n.starts_with(b"user.")) {
            let n = String::from_utf8_lossy(n).into_owned();
            let value = errno(v.getxattr(ino, name(&n), || true))?;
            out.insert(n, value);
        }
        Ok(out)
    }

    /// Looks up every name of the alphabet in every directory: what the
    /// model has is found, anything else (hidden names among them, and
    /// names a readdir would not show) answers ENOENT.
    pub fn check_lookups(&self, model: &Model) -> Result<(), String> {
        for d in model.dirs() {
            let (ino, _) = walk::resolve(self, &d, false)
                .map_err(|e| format!("directory {d:?} does not resolve: errno {e}"))?;
            for n in ops::names_used() {
                let p = join(&d, n);
                match (lookup(self.view(), ino, n), model.exists(&p)) {
                    (Ok(_), true) | (Err(libc::ENOENT), false) => {}
                    (got, _) => return Err(format!("lookup {p:?}: {:?}", got.map(|a| a.ino))),
                }
            }
        }
        Ok(())
    }
}
