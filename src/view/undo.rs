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
    ///
    /// `restore` may also say which paths of the overlay directory it put
    /// back or removed (`Some`): then only nodes whose object is among them,
    /// or that are bound or held differently, are named for the kernel to
    /// forget; otherwise every node the session changed is.
    pub fn undo<R>(
        &self,
        restore: impl FnOnce(&Path) -> CmdResult<(R, Option<Vec<String>>)>,
    ) -> CmdResult<(R, Stale)> {
        let ov = self
            .overlay()
            .ok_or_else(|| CmdError::invalid("only an overlay view can be undone"))?;
        let mut tree = self.write_tree();
        let start = std::time::Instant::now();
        let restored = restore(ov.dir());
        let restore_ms = start.elapsed().as_secs_f64() * 1e3;
        let mut fresh = ov.base().clone();
        fresh.skip_to(tree.next_ino());
        let seen = match ov.reload(&mut fresh) {
            Ok(seen) => seen,
            Err(e) => {
                tracing::error!(error = %e, "undo: the layer was put back but the view cannot reload it; it answers EIO until mounted again");
                self.stranded
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                return Err(e);
            }
        };
        let reload_ms = start.elapsed().as_secs_f64() * 1e3 - restore_ms;
        let touched = match &restored {
            Ok((_, Some(paths))) => touched_objects(paths),
            _ => None,
        };
        let stale = stale(ov.base(), &tree, &fresh, touched.as_ref());
        *tree = fresh;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        drop(tree);
        tracing::debug!(
            restore_ms,
            reload_ms,
            stale_ms = start.elapsed().as_secs_f64() * 1e3 - restore_ms - reload_ms,
            "undo"
        );
        Ok((restored?.0, stale))
    }
}

/// The objects among `paths` of the overlay directory (`objects/2a/298`);
/// `None` if a path is neither an object nor the journal (then nothing is
/// known of which objects changed).
fn touched_objects(paths: &[String]) -> Option<std::collections::HashSet<u64>> {
    let mut out = std::collections::HashSet::new();
    for p in paths {
        if p == "journal.jsonl" {
            continue;
        }
        let obj = p
            .strip_prefix("objects/")?
            .split_once('/')?
            .1
            .parse()
            .ok()?;
        out.insert(obj);
    }
    Some(out)
}

/// What differs between the view's trees `old` and `new` (both made from
/// `base`, `new` numbered after `old`). Only nodes that are not the
/// grant's own, untouched, are looked at: the rest is bound alike in both.
fn stale(
    base: &Tree,
    old: &Tree,
    new: &Tree,
    touched: Option<&std::collections::HashSet<u64>>,
) -> Stale {
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
            // Held the same way in both trees, by an object the restore
            // left alone: the kernel's attributes and pages are still right.
            let same = match (old.get(ino), new.get(ino)) {
                (Some(a), Some(b)) => {
                    (a.parent, &a.name, &a.origin) == (b.parent, &b.name, &b.origin)
                }
                _ => false,
            };
            let untouched_object = match (&n.origin, touched) {
                (crate::tree::Origin::Upper(o), Some(t)) => !t.contains(o),
                _ => false,
            };
            let unchanged = same && untouched_object;
            if !n.removed && !unchanged {
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

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;
    use std::process::Command;

    use super::super::tests::no_backing;
    use super::super::write_tests::{fixture, fixture_with, ino, name, open_view, ROOTUSER};
    use super::*;
    use crate::view::{Lookup, ViewOptions};

    /// Makes `to` a copy of `from` in place, as a restore does: its
    /// directories stay, files are renamed over.
    fn sync(from: &Path, to: &Path) {
        let (from, to) = (format!("{}/", from.display()), format!("{}/", to.display()));
        let st = Command::new("rsync")
            .args(["-a", "--delete", "--ignore-times", &from, &to])
            .status()
            .unwrap();
        assert!(st.success());
    }

    fn read(v: &View, path: &str) -> Vec<u8> {
        let o = v.open(ino(v, path), libc::O_RDONLY, no_backing).unwrap();
        let data = v.read(o.fh, 0, 1 << 20).unwrap();
        v.release(o.fh);
        data
    }

    fn write(v: &View, parent: Ino, file: &str, data: &[u8]) -> Ino {
        let (e, o) = v
            .create(parent, name(file), 0o644, ROOTUSER, no_backing)
            .unwrap();
        v.write(o.fh, 0, data, false).unwrap();
        v.release(o.fh);
        e.attr.ino
    }

    fn absent(v: &View, parent: Ino, n: &str) -> bool {
        matches!(v.lookup(parent, name(n)), Ok(Lookup::Absent { .. }))
    }

    /// A checkpoint (here a plain copy of the overlay's directory) and an
    /// undo to it: the view shows the old state at once, new nodes get
    /// numbers never given before, what changed is named for the kernel,
    /// and a handle opened before reads what it had.
    #[test]
    fn undo_reloads_the_view_and_names_what_the_kernel_cached() {
        // `d.txt` sorts before `d/…` as a path but after `d` as a name: a
        // tree renumbered by a walk would give `d` another number.
        let fx = fixture_with(&[], &[("d.txt", "x")]);
        let v = open_view(&fx, ViewOptions::default());
        let saved = fx.session.join("saved");
        write(&v, ROOT, "kept.txt", b"turn 1");
        let a = ino(&v, "a.txt");
        let o = v
            .open(a, libc::O_WRONLY | libc::O_TRUNC, no_backing)
            .unwrap();
        v.write(o.fh, 0, b"alpha, turn 1", false).unwrap();
        v.release(o.fh);
        v.checkpoint(|dir| {
            sync(dir, &saved);
            Ok(())
        })
        .unwrap();

        // Turn 2: a new file, a deleted host file, an edit, a new directory.
        let held = v.open(a, libc::O_RDONLY, no_backing).unwrap();
        let o = v
            .open(a, libc::O_WRONLY | libc::O_TRUNC, no_backing)
            .unwrap();
        v.write(o.fh, 0, b"alpha, turn 2", false).unwrap();
        v.release(o.fh);
        let junk = write(&v, ROOT, "junk.txt", b"junk");
        let d = ino(&v, "d");
        v.unlink(d, name("b.txt")).unwrap();
        let made = v
            .mkdir(ROOT, name("made"), 0o755, ROOTUSER)
            .unwrap()
            .attr
            .ino;
        let before = v.read_tree().next_ino();

        let ((), stale) = v
            .undo(|dir| {
                sync(&saved, dir);
                Ok(((), None))
            })
            .unwrap();
        assert_eq!(read(&v, "a.txt"), b"alpha, turn 1");
        // The grant's own nodes keep their numbers (the kernel holds them).
        assert_eq!((ino(&v, "a.txt"), ino(&v, "d")), (a, d));
        assert_eq!(read(&v, "kept.txt"), b"turn 1");
        assert_eq!(read(&v, "d/b.txt"), b"beta\n");
        assert!(absent(&v, ROOT, "junk.txt") && absent(&v, ROOT, "made"));
        // The kernel must forget these names and these nodes.
        for (dir, n) in [
            (ROOT, "junk.txt"),
            (ROOT, "made"),
            (d, "b.txt"),
            (ROOT, "kept.txt"),
        ] {
            assert!(
                stale.entries.contains(&(dir, n.to_string())),
                "{n} not named: {stale:?}"
            );
        }
        for i in [a, junk, made, d, ROOT] {
            assert!(stale.inodes.contains(&i), "{i} not named: {stale:?}");
        }
        // A name bound to the same node in both states is left alone.
        assert!(
            !stale.entries.contains(&(ROOT, "a.txt".into())),
            "{stale:?}"
        );
        // Old numbers answer no more; new nodes are numbered after them.
        assert!(v.getattr(junk).is_err());
        assert!(ino(&v, "kept.txt") >= before);
        // The handle opened before keeps reading what it had.
        assert_eq!(v.read(held.fh, 0, 100).unwrap(), b"alpha, turn 2");
        v.release(held.fh);
        // The view goes on: a change after the undo, journaled.
        write(&v, ROOT, "after.txt", b"after");
        drop(v);
        let v = open_view(&fx, ViewOptions::default());
        assert_eq!(read(&v, "after.txt"), b"after");
        assert_eq!(read(&v, "a.txt"), b"alpha, turn 1");
        assert!(absent(&v, ROOT, "junk.txt"));
    }

    /// With the real store, which says what it put back: a node whose
    /// object the undo left alone is not named (its cached pages stay).
    #[test]
    fn only_what_the_restore_touched_is_named() {
        use crate::overlay::snapshot;
        let fx = fixture(&[]);
        let v = open_view(&fx, ViewOptions::default());
        // A host file copied up in turn 1 and left alone by turn 2. (A file
        // the session made gets a new number at every undo, as the tree is
        // rebuilt: its name is always named.)
        let kept = ino(&v, "d/b.txt");
        let o = v
            .open(kept, libc::O_WRONLY | libc::O_TRUNC, no_backing)
            .unwrap();
        v.write(o.fh, 0, b"beta, turn 1", false).unwrap();
        v.release(o.fh);
        let a = ino(&v, "a.txt");
        let o = v
            .open(a, libc::O_WRONLY | libc::O_TRUNC, no_backing)
            .unwrap();
        v.write(o.fh, 0, b"alpha, turn 1", false).unwrap();
        v.release(o.fh);
        // Older than the store's racy window: identities are trusted.
        std::thread::sleep(std::time::Duration::from_millis(80));
        let ckpt = fx.session.join("checkpoints").join("c1");
        fs::create_dir_all(ckpt.parent().unwrap()).unwrap();
        v.checkpoint(|dir| snapshot::snapshot(dir, &ckpt, None, &|r| r == "journal.jsonl.tmp"))
            .unwrap();
        let o = v
            .open(a, libc::O_WRONLY | libc::O_TRUNC, no_backing)
            .unwrap();
        v.write(o.fh, 0, b"alpha, turn 2", false).unwrap();
        v.release(o.fh);
        write(&v, ROOT, "junk.txt", b"junk");
        let (stats, stale) = v
            .undo(|dir| {
                let s = snapshot::restore(dir, &ckpt, &|r| r == "journal.jsonl.tmp")?;
                let t = s.touched.clone();
                Ok((s, Some(t)))
            })
            .unwrap();
        assert!(
            stats.touched.iter().any(|p| p.starts_with("objects/")),
            "{stats:?}"
        );
        assert_eq!(read(&v, "a.txt"), b"alpha, turn 1");
        assert!(stale.inodes.contains(&a), "{stale:?}");
        assert!(
            !stale.inodes.contains(&kept),
            "d/b.txt was not touched: {stale:?}"
        );
        assert_eq!(read(&v, "d/b.txt"), b"beta, turn 1");
        assert!(
            stale.entries.contains(&(ROOT, "junk.txt".into())),
            "{stale:?}"
        );
    }

    #[test]
    fn a_failed_restore_still_reloads_what_is_on_disk() {
        let fx = fixture(&[]);
        let v = open_view(&fx, ViewOptions::default());
        write(&v, ROOT, "new.txt", b"new");
        let r = v.undo(|dir| {
            // Half done: the journal is gone, then it fails.
            fs::remove_file(dir.join("journal.jsonl")).unwrap();
            Err::<((), _), _>(CmdError::invalid("disk full, say"))
        });
        assert!(r.unwrap_err().to_string().contains("disk full"));
        // The view shows what the layer on disk now holds: no new.txt.
        assert!(absent(&v, ROOT, "new.txt"));
        assert_eq!(read(&v, "a.txt"), b"alpha\n");
    }

    #[test]
    fn a_layer_the_view_cannot_reload_strands_it_until_remounted() {
        let fx = fixture(&[]);
        let v = open_view(&fx, ViewOptions::default());
        write(&v, ROOT, "new.txt", b"new");
        let r = v.undo(|dir| {
            fs::write(dir.join("journal.jsonl"), "{\"op\":\"warp\"}\n{}\n").unwrap();
            Ok(((), None))
        });
        assert!(r.unwrap_err().to_string().contains("damaged"));
        assert_eq!(v.getattr(ROOT).unwrap_err(), crate::error::Errno::EIO);
        assert!(v.lookup(ROOT, name("a.txt")).is_err());
    }

    #[test]
    fn a_read_only_view_has_no_checkpoints() {
        let fx = fixture(&[]);
        let mut grant = fx.grant.clone();
        grant.mode = crate::policy::Mode::ReadOnly;
        let v = View::new(&grant, None, ViewOptions::default()).unwrap();
        let e = v.checkpoint(|_| Ok(())).unwrap_err().to_string();
        assert!(e.contains("only an overlay view"), "{e}");
        let e = v.undo(|_| Ok(((), None))).unwrap_err().to_string();
        assert!(e.contains("only an overlay view"), "{e}");
    }
}
