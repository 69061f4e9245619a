//! Hard links: `link(2)` gives a file another name. The kernel must see
//! one inode under every name (one page cache, one passthrough backing
//! file), so every name answers with the file's own number (see
//! `tree.rs`). The checks are made here, the link by the upper layer
//! (`Upper::link`): in an overlay view a linked file is an overlay object
//! (a host file is copied up first) and the new name journals a `put` of
//! that object; in a direct view the link is made on the host and logged.
//!
//! The rules are ext4's, plus the view's: a directory or symlink cannot be
//! linked (`EPERM`; a patch set carries links between files only), the
//! new name follows `create`'s rules (`EEXIST`, `ENOENT`, `EACCES` outside
//! the write scope), the file must be one the agent may change (a write
//! through the new name changes it), and a policy that refuses hard links
//! (`allow_hardlinks = false`) refuses them here too (`EPERM`), so a commit
//! never makes what that policy would not grant.

use std::ffi::OsStr;

use super::write::valid_name;
use super::{Entry, Result, View, NO_LINKS, READ_ONLY};
use crate::error::Errno;
use crate::tree::{Ino, Kind, Tree};

impl View {
    /// `link(2)`: `newparent/newname` becomes another name of file `ino`;
    /// the upper layer makes it (`Upper::link`).
    pub fn link(&self, ino: Ino, newparent: Ino, newname: &OsStr) -> Result<Entry> {
        self.live()?;
        let Some(upper) = self.upper.as_deref() else {
            return Err(self.refuse_in(newparent, newname, "link", Errno::EROFS, READ_ONLY));
        };
        let newname = valid_name(newname)?;
        let (file, path) = {
            let tree = self.read_tree();
            let file = tree.inode_of(ino);
            let kind = tree.get(file).ok_or(Errno::ENOENT)?.kind;
            // Linux's order: the new name's directory and EEXIST, then
            // EPERM for a directory (the VFS's checks); then the view's
            // own refusals (a link to a symlink, the write scope).
            self.dir_and_path(&tree, newparent, newname)?;
            if tree.child(newparent, newname).is_some() {
                return Err(Errno(libc::EEXIST).into());
            }
            if kind != Kind::File {
                return Err(Errno::EPERM.into());
            }
            let path = match self.new_name(&tree, newparent, newname) {
                Err(e) if e == Errno::EACCES => {
                    let path = self.dir_and_path(&tree, newparent, newname)?;
                    drop(tree);
                    let why = self.create_reason(&path, Kind::File);
                    return Err(self.refuse(&path, "link", Errno::EACCES, None, why));
                }
                r => r?,
            };
            (file, path)
        };
        if !self.hard_links {
            return Err(self.refuse(&path, "link", Errno::EPERM, None, NO_LINKS));
        }
        self.check_change(file, "link")?;
        upper.link(self, file, newparent, newname)?;
        self.getattr(file)
    }

    /// The path of a new name, checked as `create` checks it.
    pub(super) fn new_name(&self, tree: &Tree, parent: Ino, name: &str) -> Result<String> {
        let path = self.dir_and_path(tree, parent, name)?;
        if tree.child(parent, name).is_some() {
            return Err(Errno(libc::EEXIST).into());
        }
        if !self.scope.may_create(&path, Kind::File) {
            return Err(Errno::EACCES.into());
        }
        Ok(path)
    }
}
