//! The reference model: a plain in-memory tree, path → inode, written from
//! POSIX (and, where POSIX leaves the choice open, Linux) semantics, plus
//! the view's own rules: hidden names do not exist, and the write scope.
//!
//! Which error wins when several apply follows Linux, where the checks of a
//! call happen in two places: the kernel's VFS first (path walk, EEXIST,
//! ENOENT, EISDIR/ENOTDIR, the rename loop checks), then the filesystem.
//! The view's own refusals (write scope: EACCES; xattr namespaces other
//! than `user.`: EOPNOTSUPP) are the filesystem's first answer, so they
//! come after every VFS check and before what only the filesystem knows
//! (a directory not empty, an xattr present or not).

use std::collections::BTreeMap;

use crate::ops::{Op, Prefixes, RenameMode, XattrMode};
use crate::picture::{self, Picture};
use crate::walk::{self, Kind, Namespace};

/// How the model refuses a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub errno: i32,
    /// A refusal only the view makes (scope, xattr namespace): a plain
    /// filesystem would have done the call.
    pub view_only: bool,
}

pub type Answer = Result<(), Refusal>;

fn posix(errno: i32) -> Refusal {
    Refusal {
        errno,
        view_only: false,
    }
}

fn view(errno: i32) -> Refusal {
    Refusal {
        errno,
        view_only: true,
    }
}

#[derive(Clone, Debug)]
pub struct Inode {
    pub kind: Kind,
    pub perm: u32,
    /// A file's data or a symlink's target.
    pub data: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The write scope, as the grant documents it (`src/scope.rs`): with
/// write prefixes every change must be beneath one; new names never match
/// a deny pattern (here: a `.env` component).
#[derive(Clone, Debug)]
pub struct Scope {
    prefixes: Vec<String>,
}

fn beneath(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

impl Scope {
    pub fn new(p: Prefixes) -> Scope {
        Scope { prefixes: p.list() }
    }

    fn may_change(&self, path: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| path == p || beneath(path, p))
    }

    fn may_create(&self, path: &str, kind: Kind) -> bool {
        if path.split('/').any(|c| c == ".env") {
            return false;
        }
        self.prefixes.is_empty()
            || self
                .prefixes
                .iter()
                .any(|p| beneath(path, p) || kind == Kind::Dir && (path == p || beneath(p, path)))
    }
}

#[derive(Clone, Debug)]
pub struct Model {
    /// Every visible path ("" is the root) and its inode.
    entries: BTreeMap<String, u64>,
    inodes: BTreeMap<u64, Inode>,
    next: u64,
    scope: Scope,
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// The child of `anc` on the way to its descendant `path`.
fn child_toward(anc: &str, path: &str) -> String {
    let rest = if anc.is_empty() {
        path
    } else {
        &path[anc.len() + 1..]
    };
    join(anc, rest.split('/').next().unwrap_or(rest))
}

fn proper_ancestor(anc: &str, path: &str) -> bool {
    (anc.is_empty() && !path.is_empty()) || beneath(path, anc)
}

impl Namespace for Model {
    type Id = String;

    fn root(&self) -> String {
        String::new()
    }

    fn lookup(&self, dir: &String, name: &str) -> Result<(String, Kind), i32> {
        let p = join(dir, name);
        match self.entries.get(&p) {
            Some(i) => Ok((p, self.inodes[i].kind)),
            None => Err(libc::ENOENT),
        }
    }

    fn readlink(&self, id: &String) -> Result<Vec<u8>, i32> {
        Ok(self.inode(id).data.clone())
    }
}

impl Model {
    /// A model of the tree `entries` describes (path, inode), with `root`
    /// the root directory's permission bits.
    pub fn new(root_perm: u32, entries: Vec<(String, Inode)>, prefixes: Prefixes) -> Model {
        let mut m = Model {
            entries: BTreeMap::new(),
            inodes: BTreeMap::new(),
            next: 1,
            scope: Scope::new(prefixes),
        };
        m.add(
            String::new(),
            Inode {
                kind: Kind::Dir,
                perm: root_perm,
                data: vec![],
                xattrs: BTreeMap::new(),
            },
        );
        for (p, i) in entries {
            m.add(p, i);
        }
        m
    }

    fn add(&mut self, path: String, inode: Inode) {
        let n = self.next;
        self.next += 1;
        self.inodes.insert(n, inode);
        self.entries.insert(path, n);
    }

    fn inode(&self, path: &str) -> &Inode {
        &self.inodes[&self.entries[path]]
    }

    fn inode_mut(&mut self, path: &str) -> &mut Inode {
        let n = self.entries[path];
        self.inodes.get_mut(&n).expect("entries name live inodes")
    }

    fn kind(&self, path: &str) -> Option<Kind> {
        self.entries.get(path).map(|i| self.inodes[i].kind)
    }

    /// `path` and everything beneath it, parents first.
    fn subtree(&self, path: &str) -> Vec<String> {
        self.entries
            .keys()
            .filter(|k| *k == path || beneath(k, path) || (path.is_empty() && !k.is_empty()))
            .cloned()
            .collect()
    }

    fn has_children(&self, dir: &str) -> bool {
        self.subtree(dir).len() > 1
    }

    /// Unlinks one name; the inode goes with its last name.
    fn unlink_entry(&mut self, path: &str) {
        if let Some(n) = self.entries.remove(path) {
            if !self.entries.values().any(|v| *v == n) {
                self.inodes.remove(&n);
            }
        }
    }

    /// Moves the subtree at `from` to `to` (which must be free).
    fn move_subtree(&mut self, from: &str, to: &str) {
        let moved: Vec<(String, u64)> = self
            .subtree(from)
            .into_iter()
            .map(|p| {
                let n = self.entries.remove(&p).expect("listed");
                (format!("{to}{}", &p[from.len()..]), n)
            })
            .collect();
        self.entries.extend(moved);
    }

    /// Whether each entry of the subtree at `from` may appear at its
    /// place under `to`.
    fn may_move(&self, from: &str, to: &str) -> bool {
        self.subtree(from).iter().all(|p| {
            let kind = self.kind(p).expect("listed");
            self.scope
                .may_create(&format!("{to}{}", &p[from.len()..]), kind)
        })
    }

    /// A free name in an existing directory, for a new entry.
    fn new_entry(&self, path: &str, kind: Kind) -> Result<(String, String), Refusal> {
        let (dir, name) = walk::resolve_parent(self, path).map_err(posix)?;
        let full = join(&dir, &name);
        if self.entries.contains_key(&full) {
            return Err(posix(libc::EEXIST));
        }
        if !self.scope.may_create(&full, kind) {
            return Err(view(libc::EACCES));
        }
        Ok((dir, full))
    }

    /// An existing entry (`follow`: its last symlink followed).
    fn existing(&self, path: &str, follow: bool) -> Result<(String, Kind), Refusal> {
        walk::resolve(self, path, follow).map_err(posix)
    }

    fn may_change(&self, path: &str) -> Result<(), Refusal> {
        if self.scope.may_change(path) {
            Ok(())
        } else {
            Err(view(libc::EACCES))
        }
    }

    pub fn apply(&mut self, op: &Op) -> Answer {
        match op {
            Op::Create { path, mode } => {
                let (_, full) = self.new_entry(path, Kind::File)?;
                self.add(
                    full,
                    Inode {
                        kind: Kind::File,
                        perm: mode & 0o7777,
                        data: vec![],
                        xattrs: BTreeMap::new(),
                    },
                );
                Ok(())
            }
            Op::Mkdir { path, mode } => {
                let (dir, full) = self.new_entry(path, Kind::Dir)?;
                // mkdir(2) keeps only the permission and sticky bits; a
                // set-group-id parent passes its bit on.
                let perm = (mode & 0o1777) | (self.inode(&dir).perm & libc::S_ISGID);
                self.add(
                    full,
                    Inode {
                        kind: Kind::Dir,
                        perm,
                        data: vec![],
                        xattrs: BTreeMap::new(),
                    },
                );
                Ok(())
            }
            Op::Symlink { path, target } => {
                let (_, full) = self.new_entry(path, Kind::Symlink)?;
                self.add(
                    full,
                    Inode {
                        kind: Kind::Symlink,
                        perm: 0o777,
                        data: target.as_bytes().to_vec(),
                        xattrs: BTreeMap::new(),
                    },
                );
                Ok(())
            }
            Op::Write { path, offset, data } => {
                let (p, kind) = self.existing(path, false)?;
                match kind {
                    Kind::Symlink => return Err(posix(libc::ELOOP)), // O_NOFOLLOW
                    Kind::Dir => return Err(posix(libc::EISDIR)),
                    Kind::File => {}
                }
                self.may_change(&p)?;
                if data.is_empty() {
                    return Ok(()); // writes nothing, wherever
                }
                let f = &mut self.inode_mut(&p).data;
                let end = *offset as usize + data.len();
                if f.len() < end {
                    f.resize(end, 0);
                }
                f[*offset as usize..end].copy_from_slice(data);
                Ok(())
            }
            Op::Truncate { path, size } => {
                let (p, kind) = self.existing(path, true)?;
                if kind == Kind::Dir {
                    return Err(posix(libc::EISDIR));
                }
                self.may_change(&p)?;
                self.inode_mut(&p).data.resize(*size as usize, 0);
                Ok(())
            }
            Op::Chmod { path, mode } => {
                let (p, _) = self.existing(path, true)?;
                self.may_change(&p)?;
                self.inode_mut(&p).perm = mode & 0o7777;
                Ok(())
            }
            Op::SetXattr {
                path,
                name,
                value,
                mode,
            } => {
                let (p, _) = self.existing(path, true)?;
                self.may_change(&p)?;
                if !name.starts_with("user.") {
                    return Err(view(libc::EOPNOTSUPP));
                }
                let xattrs = &mut self.inode_mut(&p).xattrs;
                match (mode, xattrs.contains_key(*name)) {
                    (XattrMode::Create, true) => return Err(posix(libc::EEXIST)),
                    (XattrMode::Replace, false) => return Err(posix(libc::ENODATA)),
                    _ => {}
                }
                xattrs.insert(name.to_string(), value.clone());
                Ok(())
            }
            Op::Unlink { path } => {
                let (dir, name) = walk::resolve_parent(self, path).map_err(posix)?;
                let full = join(&dir, &name);
                match self.kind(&full) {
                    None => return Err(posix(libc::ENOENT)),
                    Some(Kind::Dir) => return Err(posix(libc::EISDIR)),
                    Some(_) => {}
                }
                self.may_change(&full)?;
                self.unlink_entry(&full);
                Ok(())
            }
            Op::Rmdir { path } => {
                let (dir, name) = walk::resolve_parent(self, path).map_err(posix)?;
                let full = join(&dir, &name);
                match self.kind(&full) {
                    None => return Err(posix(libc::ENOENT)),
                    Some(Kind::Dir) => {}
                    Some(_) => return Err(posix(libc::ENOTDIR)),
                }
                self.may_change(&full)?;
                if self.has_children(&full) {
                    return Err(posix(libc::ENOTEMPTY));
                }
                self.unlink_entry(&full);
                Ok(())
            }
            Op::Link { from, to } => {
                let (src, kind) = self.existing(from, false)?;
                let (dir, name) = walk::resolve_parent(self, to).map_err(posix)?;
                let full = join(&dir, &name);
                if self.entries.contains_key(&full) {
                    return Err(posix(libc::EEXIST));
                }
                if kind == Kind::Dir {
                    return Err(posix(libc::EPERM));
                }
                // The view's own: a patch set links files only; the new
                // name must be creatable, and the file changeable (a
                // write through the new name changes it).
                if kind == Kind::Symlink {
                    return Err(view(libc::EPERM));
                }
                if !self.scope.may_create(&full, kind) {
                    return Err(view(libc::EACCES));
                }
                self.may_change(&src)?;
                let n = self.entries[&src];
                self.entries.insert(full, n);
                Ok(())
            }
            Op::Rename { from, to, mode } => self.rename(from, to, *mode),
            Op::Reopen => Ok(()),
        }
    }

    /// `renameat2(2)`, its checks in the order of Linux's `do_renameat2`
    /// and `vfs_rename`.
    fn rename(&mut self, from: &str, to: &str, mode: RenameMode) -> Answer {
        let (old_dir, old_name) = walk::resolve_parent(self, from).map_err(posix)?;
        let (new_dir, new_name) = walk::resolve_parent(self, to).map_err(posix)?;
        let src = join(&old_dir, &old_name);
        let dst = join(&new_dir, &new_name);
        let Some(&src_ino) = self.entries.get(&src) else {
            return Err(posix(libc::ENOENT));
        };
        let dst_ino = self.entries.get(&dst).copied();
        match (mode, dst_ino) {
            (RenameMode::NoReplace, Some(_)) => return Err(posix(libc::EEXIST)),
            (RenameMode::Exchange, None) => return Err(posix(libc::ENOENT)),
            _ => {}
        }
        // A directory cannot move beneath itself, nor replace an ancestor
        // of the source (that one cannot be empty).
        if proper_ancestor(&old_dir, &new_dir) && child_toward(&old_dir, &new_dir) == src {
            return Err(posix(libc::EINVAL));
        }
        if proper_ancestor(&new_dir, &old_dir) && child_toward(&new_dir, &old_dir) == dst {
            return Err(posix(if mode == RenameMode::Exchange {
                libc::EINVAL
            } else {
                libc::ENOTEMPTY
            }));
        }
        if dst_ino == Some(src_ino) {
            return Ok(()); // one inode: nothing to do
        }
        let src_dir = self.kind(&src) == Some(Kind::Dir);
        let dst_kind = self.kind(&dst);
        if mode != RenameMode::Exchange {
            match (src_dir, dst_kind) {
                (true, Some(k)) if k != Kind::Dir => return Err(posix(libc::ENOTDIR)),
                (false, Some(Kind::Dir)) => return Err(posix(libc::EISDIR)),
                _ => {}
            }
        }
        let in_scope = self.scope.may_change(&src)
            && (dst_ino.is_none() || self.scope.may_change(&dst))
            && self.may_move(&src, &dst)
            && (mode != RenameMode::Exchange || self.may_move(&dst, &src));
        if !in_scope {
            return Err(view(libc::EACCES));
        }
        if mode == RenameMode::Exchange {
            let parked = "\u{0}parked";
            self.move_subtree(&dst, parked);
            self.move_subtree(&src, &dst);
            self.move_subtree(parked, &src);
            return Ok(());
        }
        if dst_kind == Some(Kind::Dir) && self.has_children(&dst) {
            return Err(posix(libc::ENOTEMPTY));
        }
        if dst_ino.is_some() {
            self.unlink_entry(&dst);
        }
        self.move_subtree(&src, &dst);
        Ok(())
    }

    /// The model as seen from outside (the root itself left out).
    pub fn picture(&self) -> Picture {
        let mut pic = Picture::default();
        for (path, n) in self.entries.iter().filter(|(p, _)| !p.is_empty()) {
            let i = &self.inodes[n];
            let (size, nlink) = match i.kind {
                Kind::Dir => {
                    let subdirs = self
                        .entries
                        .iter()
                        .filter(|(p, m)| {
                            beneath(p, path)
                                && !p[path.len() + 1..].contains('/')
                                && self.inodes[m].kind == Kind::Dir
                        })
                        .count();
                    (None, 2 + subdirs as u32)
                }
                _ => (
                    Some(i.data.len() as u64),
                    self.entries.values().filter(|v| *v == n).count() as u32,
                ),
            };
            pic.entries.insert(
                path.clone(),
                picture::Entry {
                    kind: i.kind,
                    perm: i.perm,
                    size,
                    nlink,
                    content: i.data.clone(),
                    xattrs: i.xattrs.clone(),
                },
            );
        }
        pic.set_links(
            self.entries
                .iter()
                .filter(|(_, n)| self.inodes[n].kind != Kind::Dir)
                .map(|(p, n)| (*n, p.clone())),
        );
        pic
    }

    pub fn exists(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// Every entry but the root.
    pub fn paths(&self) -> Vec<String> {
        self.entries.keys().skip(1).cloned().collect()
    }

    /// Every directory, the root ("") included.
    pub fn dirs(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter(|(_, n)| self.inodes[n].kind == Kind::Dir)
            .map(|(p, _)| p.clone())
            .collect()
    }
}
