//! Checkpoints and undo on a live overlay view of the FUSE engine
//! (`wopfs checkpoint`, `wopfs undo`). A checkpoint copies the overlay's
//! layer while the view is held still; an undo puts the layer on disk back
//! (the caller's `restore`), then the view replays it onto a clone of the
//! grant's tree and swaps that in, numbering new nodes after every number
//! the old tree gave out (the kernel may still hold those). What the
//! kernel may have cached that changed is returned for the adapter to
//! invalidate (`fuse::invalidate_stale`). Handles open before keep their
//! object file: they read and write what they had, as after a rename-over.

use std::collections::BTreeSet;
use std::path::Path;

use super::View;
use crate::error::{Error as CmdError, Result as CmdResult};
use crate::tree::{Ino, Tree, ROOT};

/// What the kernel may have cached that an undo changed.
#[derive(Debug, Default, PartialEq)]
pub struct Stale {
    /// Names (directory, name) now bound to another node, or to none.
    pub entries: Vec<(Ino, String)>,
    /// Nodes whose attributes or content may differ (and directories
    /// whose listing changed).
    pub inodes: Vec<Ino>,
}

impl View {
    /// Runs `copy` on the overlay's directory with the view held still: no
    /// namespace change and no journal append until it returns (writes
    /// through open handles go on; a checkpoint is for between turns).
    pub fn checkpoint<T>(&self, copy: impl FnOnce(&Path) -> CmdResult<T>) -> CmdResult<T> {
        let ov = self
            .overlay()
            .ok_or_else(|| CmdError::invalid("only an overlay view has checkpoints"))?;
        let _still = self.write_tree();
        ov.with_journal_still(|| copy(ov.dir()))
    }

    /// Puts the live view back to a checkpoint: `restore` puts the layer on
    /// disk back (the view held still meanwhile), then the view reloads it.
    /// If `restore` fails part way, the view still reloads what is on disk
    /// (never showing one state while holding another) and the error is
    /// returned.
    pub fn undo<R>(&self, restore: impl FnOnce(&Path) -> CmdResult<R>) -> CmdResult<(R, Stale)> {
        let ov = self
            .overlay()
            .ok_or_else(|| CmdError::invalid("only an overlay view can be undone"))?;
        let mut tree = self.write_tree();
        let restored = restore(ov.dir());
        let mut fresh = ov.base().clone();
        fresh.skip_to(tree.next_ino());
        let seen = ov.reload(&mut fresh)?;
        let stale = stale(ov.base(), &tree, &fresh);
        *tree = fresh;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        drop(tree);
        Ok((restored?, stale))
    }
}

/// What differs between the view's trees `old` and `new` (both made from
/// `base`, `new` numbered after `old`). Only nodes that are not the
/// grant's own, untouched, are looked at: the rest is bound alike in both.
fn stale(base: &Tree, old: &Tree, new: &Tree) -> Stale {
    let base_end = base.next_ino();
    // Candidate names: every binding a changed node has, or had, in either tree.
    let mut names: BTreeSet<(Ino, String)> = BTreeSet::new();
    let mut inodes: BTreeSet<Ino> = BTreeSet::new();
    for t in [old, new] {
        for ino in 1..t.next_ino() {
            let Some(n) = t.get_any(ino) else { continue };
            let untouched = ino < base_end
                && base.get(ino).is_some_and(|b| {
                    !n.removed && b.parent == n.parent && b.name == n.name && b.origin == n.origin
                });
            if untouched || (ino >= base_end && n.removed) || (ino != ROOT && n.name.is_empty()) {
                continue;
            }
            if ino != ROOT {
                names.insert((n.parent, n.name.to_string()));
            }
            if let Some(b) = (ino < base_end).then(|| base.get(ino)).flatten() {
                names.insert((b.parent, b.name.to_string()));
            }
            if !n.removed {
                inodes.insert(t.inode_of(ino));
            }
        }
    }
    let mut entries = Vec::new();
    for (parent, name) in names {
        let was = old.child(parent, &name).map(|i| old.inode_of(i));
        let is = new.child(parent, &name).map(|i| new.inode_of(i));
        // Bound to the same node in both: the name stays; its inode is in
        // `inodes` if it changed. A cwd in an unchanged directory stays put.
        if was != is {
            inodes.insert(parent);
            entries.push((parent, name));
        }
    }
    Stale {
        entries,
        inodes: inodes.into_iter().collect(),
    }
}
